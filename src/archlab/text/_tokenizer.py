"""Subword tokenizers (BPE or unigram) trained with Hugging Face ``tokenizers`` on a training split.

Every tokenizer has the same special ids (``<pad>`` 0, ``<unk>`` 1, ``<s>`` 2, ``</s>`` 3), so that
specs, losses (pad is ignored) and decoders never ask which tokenizer made the ids. Text is NFKC
normalised (optionally lower-cased) and split at spaces the SentencePiece way (a ``▁`` marks a word's
start), so decoding gives the text back, detokenized, as sacreBLEU wants it. A character the training
split never had becomes ``<unk>``; ``unknown_characters`` counts them for the run summary.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from archlab._tokens import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID
from archlab.data import DataError, TextDataset

__all__ = ["BOS_ID", "EOS_ID", "PAD_ID", "SPECIAL_TOKENS", "TOKENIZER_FILES", "UNK_ID", "SubwordTokenizer",
           "TokenizerKind", "Tokenizers", "train_tokenizers"]

TokenizerKind = Literal["bpe", "unigram"]
#: A run directory's tokenizer files: one shared, or one per side.
TOKENIZER_FILES = {"shared": "tokenizer.json", "source": "tokenizer-source.json", "target": "tokenizer-target.json"}
_SPACE = "▁"  # SentencePiece's word-start mark


class SubwordTokenizer:
    """A trained ``tokenizers.Tokenizer`` with archlab's special ids, encoding and decoding.

    Example:
        >>> tok = SubwordTokenizer.train(["a cat sat", "a dog sat"], "bpe", 40)
        >>> tok.decode(tok.encode(["a cat"])[0])
        'a cat'
        >>> tok.unknown_characters(["a cow!"])
        {'w': 1, '!': 1}
    """

    def __init__(self, tokenizer: Tokenizer, where: str = "tokenizer") -> None:
        for expected, token in enumerate(SPECIAL_TOKENS):
            if tokenizer.token_to_id(token) != expected:
                raise DataError(f"{where}: {token} must have id {expected} (archlab's special ids: "
                                f"{', '.join(f'{t} {i}' for i, t in enumerate(SPECIAL_TOKENS))}), it has "
                                f"{tokenizer.token_to_id(token)}; train the tokenizer with archlab again")
        self.tokenizer = tokenizer
        # the characters the vocabulary can spell; any other one is <unk>
        self._alphabet = {c for token in tokenizer.get_vocab() if token not in SPECIAL_TOKENS for c in token}

    @classmethod
    def train(cls, sentences: Iterable[str], kind: TokenizerKind = "bpe", vocab_size: int = 8000,
              lowercase: bool = False) -> SubwordTokenizer:
        """A tokenizer of at most ``vocab_size`` tokens (specials included) learnt from ``sentences``.

        BPE keeps every character of the sentences, so a small corpus can end with fewer tokens than
        asked, and a tiny ``vocab_size`` with more (the characters); ``vocab_size`` tells the size made.
        """
        if kind == "bpe":
            tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
            trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                          show_progress=False)
        elif kind == "unigram":
            tokenizer = Tokenizer(models.Unigram())
            trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                              unk_token="<unk>", show_progress=False)
        else:
            raise ValueError(f"tokenizer kind is 'bpe' or 'unigram', got {kind!r}")
        steps = [normalizers.NFKC(), *([normalizers.Lowercase()] if lowercase else [])]
        tokenizer.normalizer = normalizers.Sequence(steps)
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_SPACE)
        tokenizer.decoder = decoders.Metaspace(replacement=_SPACE)
        tokenizer.train_from_iterator(sentences, trainer)
        # through its JSON once: the file rounds unigram scores in the last digit, and the run must use
        # exactly the tokenizer it saves (a rounded score can change how a tie segments)
        return cls(Tokenizer.from_str(tokenizer.to_str()))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, sentences: Sequence[str]) -> list[list[int]]:
        """Each sentence's token ids, without special tokens (the array helpers add ``<s>``/``</s>``)."""
        return [e.ids for e in self.tokenizer.encode_batch(list(sentences), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        """Detokenized text of ids up to the first ``</s>``; ``<pad>`` and ``<s>`` are dropped and an
        unknown piece reads ``<unk>``."""
        kept = []
        for i in map(int, ids):
            if i == EOS_ID:
                break
            if i not in (PAD_ID, BOS_ID):
                kept.append(i)
        return self.tokenizer.decode(kept, skip_special_tokens=False)

    def decode_batch(self, rows: Iterable[Iterable[int]]) -> list[str]:
        return [self.decode(row) for row in rows]

    def unknown_characters(self, sentences: Iterable[str]) -> dict[str, int]:
        """How often each character the vocabulary cannot spell occurs (each becomes ``<unk>``)."""
        counts: Counter[str] = Counter()
        normalize = self.tokenizer.normalizer.normalize_str
        for sentence in sentences:
            counts.update(c for c in normalize(sentence) if c not in self._alphabet and not c.isspace())
        return dict(counts)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        self.tokenizer.save(str(path))
        return path

    @classmethod
    def load(cls, path: str | Path) -> SubwordTokenizer:
        """The tokenizer saved at ``path``; DataError naming the file when it is missing or not one."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no tokenizer file; a run of a text task keeps its tokenizer there "
                            "(train it again, or copy the run directory whole)", path)
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
            raise DataError(f"{path}: not a tokenizer file ({exc}); train the run again", path) from None
        return cls(tokenizer, str(path))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SubwordTokenizer) and self.tokenizer.to_str() == other.tokenizer.to_str()

    def __hash__(self) -> int:
        return hash(self.tokenizer.to_str())


@dataclass(frozen=True, eq=False)
class Tokenizers:
    """The source and target tokenizers of a task; the same object when the vocabulary is shared
    (and for a language model, which has one side)."""

    source: SubwordTokenizer
    target: SubwordTokenizer

    @property
    def shared(self) -> bool:
        return self.source is self.target

    def files(self) -> dict[str, SubwordTokenizer]:
        """The file names a run directory holds them in."""
        if self.shared:
            return {TOKENIZER_FILES["shared"]: self.source}
        return {TOKENIZER_FILES["source"]: self.source, TOKENIZER_FILES["target"]: self.target}

    def save(self, run_dir: str | Path) -> list[Path]:
        """Write ``tokenizer.json`` (shared) or ``tokenizer-source.json`` and ``tokenizer-target.json``."""
        return [tok.save(Path(run_dir) / name) for name, tok in self.files().items()]

    @staticmethod
    def saved_in(run_dir: str | Path) -> bool:
        """Whether ``run_dir`` holds tokenizers (``save``): what marks a run of a text task."""
        return any((Path(run_dir) / name).is_file() for name in TOKENIZER_FILES.values())

    @classmethod
    def load(cls, run_dir: str | Path) -> Tokenizers:
        """The tokenizers a run directory holds; DataError saying which files are missing."""
        run_dir = Path(run_dir)
        shared = run_dir / TOKENIZER_FILES["shared"]
        if shared.is_file():
            tok = SubwordTokenizer.load(shared)
            return cls(tok, tok)
        sides = [run_dir / TOKENIZER_FILES[s] for s in ("source", "target")]
        if not any(p.is_file() for p in sides):
            raise DataError(f"{run_dir}: holds no tokenizer ({', '.join(TOKENIZER_FILES.values())}); only runs "
                            "of text tasks (seq2seq, language_model) have one", run_dir)
        return cls(*(SubwordTokenizer.load(p) for p in sides))


def train_tokenizers(dataset: TextDataset, kind: TokenizerKind = "bpe", vocab_size: int = 8000,
                     shared: bool = True, lowercase: bool = False) -> Tokenizers:
    """The tokenizers of ``dataset``, trained on its ``train`` split only (held-out text stays unseen).

    ``shared``: one vocabulary for both sides of a parallel corpus (needed to tie the source and
    target embeddings); else one per side. A plain corpus has one side, so one tokenizer.

    Example:
        >>> from archlab.data import TextSplit
        >>> ds = TextDataset("toy", "seq2seq", {"train": TextSplit(("a cat",), ("eine Katze",))}, "memory")
        >>> toks = train_tokenizers(ds, vocab_size=30)
        >>> toks.shared, toks.source.decode(toks.source.encode(["eine Katze"])[0])
        (True, 'eine Katze')
    """
    train = dataset.splits["train"]
    if train.target is None or shared:
        return Tokenizers(*[SubwordTokenizer.train([*train.source, *(train.target or ())], kind, vocab_size,
                                                   lowercase)] * 2)
    return Tokenizers(SubwordTokenizer.train(train.source, kind, vocab_size, lowercase),
                      SubwordTokenizer.train(train.target, kind, vocab_size, lowercase))
