"""Text data sets: named splits of sentences, or of (source, target) sentence pairs.

Text is not an array data set: it becomes arrays only once a tokenizer, trained on its training
split, has encoded it (``archlab.text``). So text sources return a TextDataset, which the one
dataset registry accepts beside Dataset. Reading checks what breaks sequence training later: files
that are not UTF-8, empty lines, and parallel files whose lines do not pair up.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from ._dataset import SPLIT_SEED, TEST_SIZE, DataError

__all__ = ["TextDataset", "TextSplit", "read_lines", "read_parallel", "split_text"]

TextTask = Literal["seq2seq", "language_model"]


@dataclass(frozen=True)
class TextSplit:
    """One split: source sentences, and for a parallel corpus the aligned target sentences.

    Attributes:
        source: the sentences (a parallel corpus' source side, e.g. English).
        target: line i translates ``source[i]``; None for a plain corpus.
    """

    source: tuple[str, ...]
    target: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.target is not None and len(self.target) != len(self.source):
            raise DataError(f"a parallel split pairs each source sentence with one target sentence; got "
                            f"{len(self.source)} source and {len(self.target)} target sentences")

    def __len__(self) -> int:
        return len(self.source)


@dataclass(frozen=True, eq=False)
class TextDataset:
    """A text data set with named splits, as text sources return it.

    Attributes:
        name: the name it was loaded by (``"multi30k"``, ``"text:a.en,a.de"``).
        task: ``"seq2seq"`` for a parallel corpus, ``"language_model"`` for a plain one.
        splits: the splits by name; ``"train"`` always (the only one a tokenizer is trained on).
        source: where the text was read from (a folder or file), for run records.
        languages: the sides' language codes when known (``("en", "de")``), else ``()``.
        validation: the split to validate on, or None when validation comes out of ``train``
            (the recipe's ``validation_split``).
        test_splits: the held-out splits, the usual one first (``evaluate``'s default).

    Example:
        >>> ds = TextDataset("toy", "seq2seq", {"train": TextSplit(("a cat",), ("eine Katze",)),
        ...                  "test": TextSplit(("a dog",), ("ein Hund",))}, "memory", test_splits=("test",))
        >>> ds.describe()
        'toy: seq2seq, 1 train / 1 test sentence pairs'
        >>> ds.sentences("train")
        ('a cat',)
    """

    name: str
    task: TextTask
    splits: Mapping[str, TextSplit] = field(repr=False)
    source: str
    languages: tuple[str, ...] = ()
    validation: str | None = None
    test_splits: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = f"dataset {self.name!r}"
        if "train" not in self.splits:
            raise DataError(f"{where}: a text data set has a 'train' split; got {', '.join(self.splits) or 'none'}")
        for split in (self.validation, *self.test_splits):
            if split is not None and split not in self.splits:
                raise DataError(f"{where}: split {split!r} is named but not there (splits: {', '.join(self.splits)})")
        parallel = {name: s.target is not None for name, s in self.splits.items()}
        if set(parallel.values()) != {self.task == "seq2seq"}:
            raise DataError(f"{where}: a seq2seq data set has target sentences in every split and a language_model "
                            f"one in none; got task {self.task!r} with targets in "
                            f"{[n for n, p in parallel.items() if p] or 'no split'}")

    @property
    def parallel(self) -> bool:
        return self.task == "seq2seq"

    @property
    def test_split(self) -> str | None:
        """The usual held-out split (Multi30k's test_2016_flickr), or None when there is none."""
        return self.test_splits[0] if self.test_splits else None

    def sentences(self, split: str) -> tuple[str, ...]:
        """A split's source sentences: what a language model learns from a parallel corpus (its source
        side, Multi30k's English), or a plain corpus' sentences."""
        return self._split(split).source

    def pairs(self, split: str) -> list[tuple[str, str]]:
        """A parallel split's (source, target) pairs."""
        found = self._split(split)
        if found.target is None:
            raise DataError(f"dataset {self.name!r} is a plain corpus, without target sentences; a seq2seq task "
                            "needs a parallel one: 'text:SOURCE_FILE,TARGET_FILE'")
        return list(zip(found.source, found.target, strict=True))

    def for_task(self, task: str) -> TextDataset:
        """The data set as ``task`` trains on it: a language model on a parallel corpus learns its source
        side (Multi30k's English); a seq2seq task needs a parallel corpus (DataError otherwise)."""
        if task == "language_model" and self.parallel:
            splits = {name: TextSplit(s.source) for name, s in self.splits.items()}
            return replace(self, task="language_model", splits=splits, languages=self.languages[:1])
        if task == "seq2seq" and not self.parallel:
            raise DataError(f"dataset {self.name!r} is a plain corpus, without target sentences; task seq2seq "
                            "needs a parallel one ('text:SOURCE_FILE,TARGET_FILE' or multi30k), or set task.kind: "
                            "language_model")
        return self

    def _split(self, split: str) -> TextSplit:
        try:
            return self.splits[split]
        except KeyError:
            raise DataError(f"dataset {self.name!r} has no split {split!r} (splits: {', '.join(self.splits)})") \
                from None

    def describe(self) -> str:
        """One line for logs and run records: name, task, sentence counts per split."""
        counts = " / ".join(f"{len(s)} {n}" for n, s in self.splits.items())
        return f"{self.name}: {self.task}, {counts} " + ("sentence pairs" if self.parallel else "sentences")


def read_lines(path: Path) -> tuple[str, ...]:
    """The lines of a UTF-8 text file (gzip when it ends in ``.gz``), without line ends.

    Raises:
        DataError: the file cannot be read, is not UTF-8 (naming the line), or has an empty line
            (naming it: an empty sentence has no tokens to learn or translate).
    """
    try:
        blob = path.read_bytes()
        if path.suffix == ".gz":
            blob = gzip.decompress(blob)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot be read ({exc}); give a UTF-8 text file, one sentence per line "
                        "(gzip when its name ends in .gz)", path) from None
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = blob.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}, line {line}: not UTF-8 ({exc.reason}); convert the file to UTF-8 "
                        "(e.g. iconv -t utf-8)", path) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":  # the last line's own newline
        lines.pop()
    out = tuple(line.removesuffix("\r") for line in lines)
    if not out:
        raise DataError(f"{path}: the file is empty; give one sentence per line", path)
    for number, line in enumerate(out, 1):
        if not line.strip():
            raise DataError(f"{path}, line {number}: empty line; every line is one sentence (of a parallel "
                            "corpus, the translation of the other file's same line): remove the line, in both "
                            "files of a parallel corpus", path)
    return out


def read_parallel(source: Path, target: Path) -> TextSplit:
    """Two aligned files as one split; DataError naming both files and counts when they differ."""
    src, tgt = read_lines(source), read_lines(target)
    if len(src) != len(tgt):
        raise DataError(f"parallel files differ in length: {source} has {len(src)} lines but {target} has "
                        f"{len(tgt)}; line i of one is the translation of line i of the other, so both need "
                        "the same number of lines", source)
    return TextSplit(src, tgt)


def split_text(whole: TextSplit, test_size: float = TEST_SIZE) -> dict[str, TextSplit]:
    """A fixed seeded train/test split of one corpus (the same rule as array files: SPLIT_SEED, TEST_SIZE)."""
    n = len(whole)
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    cut = n - max(1, int(round(n * test_size))) if n > 1 else n
    parts = {"train": np.sort(order[:cut]), "test": np.sort(order[cut:])}

    def take(sentences: tuple[str, ...] | None, idx: np.ndarray) -> tuple[str, ...] | None:
        return None if sentences is None else tuple(sentences[i] for i in idx)

    return {name: TextSplit(take(whole.source, idx), take(whole.target, idx)) for name, idx in parts.items()
            if len(idx)}
