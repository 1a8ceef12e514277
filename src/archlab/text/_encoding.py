"""Sentences to the arrays sequence specs take, and the arrays back to text.

The layout is the common one of every sequence part of archlab (specs, tasks, decoders):

* seq2seq: ``source`` ``(N, S)`` the source tokens then ``</s>``; ``target`` ``(N, T)`` the decoder's
  input, ``<s>`` then the target tokens (teacher forcing); ``y`` ``(N, T)`` the target tokens then
  ``</s>``: ``target`` shifted left by one.
* language model: ``tokens`` ``(N, T)`` ``<s>`` then the sentence's tokens; ``y`` ``(N, T)`` the tokens
  then ``</s>``: the next token at every position.

Everything is int64, padded with ``<pad>`` = 0 (which the loss ignores). A sentence longer than its
array is cut; a cut target has no ``</s>`` (it did not end there). The cuts are counted per input,
so that a run can report them instead of failing on them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from archlab.data import DataError, TextDataset

from ._tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizers

__all__ = ["EncodedText", "SequenceArrays", "encode_for_spec", "encode_text", "lm_arrays", "pad_sequences",
           "seq2seq_arrays", "source_array"]


def pad_sequences(sequences: Sequence[Sequence[int]], length: int) -> tuple[np.ndarray, int]:
    """``(N, length)`` int64 of the sequences, cut or padded with 0, and how many were cut.

    Example:
        >>> ids, cut = pad_sequences([[5, 6, 7], [8]], 2)
        >>> ids.tolist(), cut
        ([[5, 6], [8, 0]], 1)
    """
    if length < 1:
        raise ValueError(f"a padded length is at least 1, got {length}")
    out = np.full((len(sequences), length), PAD_ID, dtype=np.int64)
    cut = 0
    for row, seq in enumerate(sequences):
        cut += len(seq) > length
        kept = seq[:length]
        out[row, :len(kept)] = kept
    return out, cut


@dataclass(frozen=True)
class SequenceArrays:
    """One split as a sequence spec takes it.

    Attributes:
        inputs: the named inputs: ``{"source", "target"}`` (seq2seq) or ``{"tokens"}`` (language model).
        y: the targets ``(N, T)``: the next token at each position, 0 at padding.
        truncated: per input, how many sentences were longer than the input and were cut.
    """

    inputs: dict[str, np.ndarray] = field(repr=False)
    y: np.ndarray = field(repr=False)
    truncated: dict[str, int]

    def __len__(self) -> int:
        return len(self.y)


def _shifted(ids: Sequence[Sequence[int]], length: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Teacher forcing: the input ``<s> t1 .. tn`` and the target ``t1 .. tn </s>``, both ``length`` wide."""
    whole = [[BOS_ID, *seq, EOS_ID] for seq in ids]
    inputs, cut = pad_sequences([s[:-1] for s in whole], length)
    y, _ = pad_sequences([s[1:] for s in whole], length)
    return inputs, y, cut


def seq2seq_arrays(source_ids: Sequence[Sequence[int]], target_ids: Sequence[Sequence[int]], source_length: int,
                   target_length: int) -> SequenceArrays:
    """The ``source``, ``target`` and ``y`` arrays of sentence pairs (see the module's layout).

    Example:
        >>> a = seq2seq_arrays([[7, 8]], [[9]], 4, 3)
        >>> a.inputs["source"].tolist(), a.inputs["target"].tolist(), a.y.tolist()
        ([[7, 8, 3, 0]], [[2, 9, 0]], [[9, 3, 0]])
    """
    if len(source_ids) != len(target_ids):
        raise ValueError(f"{len(source_ids)} source and {len(target_ids)} target sentences: they come in pairs")
    source, cut_source = source_array(source_ids, source_length)
    target, y, cut_target = _shifted(target_ids, target_length)
    return SequenceArrays({"source": source, "target": target}, y, {"source": cut_source, "target": cut_target})


def source_array(source_ids: Sequence[Sequence[int]], length: int) -> tuple[np.ndarray, int]:
    """The ``source`` input alone (the tokens then ``</s>``), as a decoder starts from it, and how many
    sentences were cut.

    Example:
        >>> ids, cut = source_array([[7, 8], [7, 8, 9]], 3)
        >>> ids.tolist(), cut
        ([[7, 8, 3], [7, 8, 9]], 1)
    """
    return pad_sequences([[*seq, EOS_ID] for seq in source_ids], length)


def lm_arrays(ids: Sequence[Sequence[int]], length: int) -> SequenceArrays:
    """The ``tokens`` and ``y`` arrays of a language model's sentences, one sentence per row.

    Example:
        >>> a = lm_arrays([[7, 8]], 4)
        >>> a.inputs["tokens"].tolist(), a.y.tolist()
        ([[2, 7, 8, 0]], [[7, 8, 3, 0]])
    """
    tokens, y, cut = _shifted(ids, length)
    return SequenceArrays({"tokens": tokens}, y, {"tokens": cut})


@dataclass(frozen=True, eq=False)
class EncodedText:
    """A TextDataset encoded by its tokenizers: each split as SequenceArrays, with what a run
    reports about the encoding. It is what the seq2seq and language_model tasks check data against.

    Attributes:
        name, task: the text data set's.
        tokenizers: the tokenizers that made the ids (trained on the train split).
        splits: each split's arrays.
        unknown: per split, the characters the tokenizers could not spell (each became ``<unk>``),
            with counts; splits without any are left out.
        validation, test_splits: the text data set's.
    """

    name: str
    task: str
    tokenizers: Tokenizers
    splits: dict[str, SequenceArrays] = field(repr=False)
    unknown: dict[str, dict[str, int]]
    validation: str | None = None
    test_splits: tuple[str, ...] = ()
    #: the sentences it encodes: the references of decoded metrics (BLEU)
    corpus: TextDataset | None = field(default=None, repr=False)

    @property
    def vocab_size(self) -> int:
        """The output vocabulary (the target tokenizer's): the V of the spec's ``(T, V)`` logits."""
        return self.tokenizers.target.vocab_size

    @property
    def source_vocab_size(self) -> int:
        return self.tokenizers.source.vocab_size

    @property
    def vocab_sizes(self) -> dict[str, int]:
        """Per named input, the vocabulary its ids come from: the ``input_dim`` its embedding needs."""
        if self.task == "seq2seq":
            return {"source": self.source_vocab_size, "target": self.vocab_size}
        return {"tokens": self.vocab_size}

    @property
    def truncated(self) -> dict[str, dict[str, int]]:
        """Per split and input, the sentences cut to the input's length (splits without cuts left out)."""
        return {name: {k: v for k, v in s.truncated.items() if v}
                for name, s in self.splits.items() if any(s.truncated.values())}

    # -- the array data set view: what check_fit, prepare_splits and evaluation read ---------------
    named = True
    classes = None
    num_classes = None
    fields = None
    oov = None

    @property
    def source(self) -> str:
        return self.name

    @property
    def x_train(self) -> dict[str, np.ndarray]:
        return self.splits["train"].inputs

    @property
    def y_train(self) -> np.ndarray:
        return self.splits["train"].y

    def _held_out(self) -> SequenceArrays:
        if not self.test_splits:
            raise DataError(f"dataset {self.name!r} has no test split")
        return self.splits[self.test_splits[0]]

    @property
    def x_test(self) -> dict[str, np.ndarray]:
        return self._held_out().inputs

    @property
    def y_test(self) -> np.ndarray:
        return self._held_out().y

    @property
    def x_val(self) -> dict[str, np.ndarray] | None:
        """The data set's own validation split's inputs (Multi30k's val), or None (then the recipe's
        ``validation_split`` carves it out of train)."""
        return None if self.validation is None else self.splits[self.validation].inputs

    @property
    def y_val(self) -> np.ndarray | None:
        return None if self.validation is None else self.splits[self.validation].y

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape[1:]) for k, v in self.x_train.items()}

    @property
    def train_samples(self) -> int:
        return len(self.y_train)

    @property
    def test_samples(self) -> int:
        return len(self.y_test) if self.test_splits else 0

    def describe(self) -> str:
        return (f"{self.name}: {self.task}, inputs " + ", ".join(f"{k} {v}" for k, v in self.input_shapes.items())
                + f", {self.train_samples} train / {self.test_samples} test sequences, vocabulary {self.vocab_size}")

    def summary(self) -> dict[str, object]:
        """What a run records about its text: vocabularies, truncated sentences, unknown characters."""
        return {"vocab_size": self.vocab_size, "source_vocab_size": self.source_vocab_size,
                "shared_vocabulary": self.tokenizers.shared, "truncated": self.truncated,
                "unknown_characters": {s: sum(c.values()) for s, c in self.unknown.items()},
                "unknown_most_common": dict(sum((Counter(c) for c in self.unknown.values()), Counter()).most_common(5))}


def encode_text(dataset: TextDataset, tokenizers: Tokenizers, lengths: Mapping[str, int]) -> EncodedText:
    """Every split of ``dataset`` as the arrays of its task, each input ``lengths[name]`` wide.

    Args:
        lengths: the spec's input lengths: ``{"source": S, "target": T}`` for seq2seq,
            ``{"tokens": T}`` for a language model.

    Raises:
        DataError: ``lengths`` does not name the task's inputs.
    """
    wanted = ("source", "target") if dataset.parallel else ("tokens",)
    if set(lengths) != set(wanted):
        raise DataError(f"dataset {dataset.name!r} ({dataset.task}) fills the inputs {', '.join(wanted)}; got "
                        f"lengths for {', '.join(lengths) or 'none'}: declare each as a long input of shape [length]")
    splits, unknown = {}, {}
    for name, split in dataset.splits.items():
        source_ids = tokenizers.source.encode(split.source)
        if split.target is not None:
            splits[name] = seq2seq_arrays(source_ids, tokenizers.target.encode(split.target), lengths["source"],
                                          lengths["target"])
        else:
            splits[name] = lm_arrays(source_ids, lengths["tokens"])
        chars = Counter(tokenizers.source.unknown_characters(split.source))
        if split.target is not None:
            chars.update(tokenizers.target.unknown_characters(split.target))
        if chars:
            unknown[name] = dict(chars)
    return EncodedText(dataset.name, dataset.task, tokenizers, splits, unknown, dataset.validation,
                       dataset.test_splits, dataset)


def encode_for_spec(dataset: TextDataset, parsed: Any, task: str, config: Any = None,
                    tokenizers: Tokenizers | None = None) -> EncodedText:
    """A text data set as a sequence spec trains on it: the task's view of the corpus
    (``TextDataset.for_task``), tokenized by ``tokenizers`` (a run's own) or by new ones trained on
    the train split with ``config`` (``train.tokenizer``; None: the defaults), each input as long
    as the spec declares it (``source``/``target``, or the language model's one input).

    Raises:
        SpecError: a seq2seq spec without the ``source`` and ``target`` inputs, or a language
            model's spec with more than one input.
    """
    from archlab.exceptions import SpecError

    from ._tokenizer import train_tokenizers

    dataset = dataset.for_task(task)
    inputs = {name: info.shape for name, info in parsed.raw_inputs.items()}
    wanted = ("source", "target") if dataset.parallel else ("tokens",)
    if dataset.parallel:
        missing = [n for n in wanted if n not in inputs]
        if missing:
            raise SpecError(f"task seq2seq reads the inputs source (the sentence to translate) and target (the "
                            f"decoder's input, <s> then the translation); the spec lacks {', '.join(missing)}: "
                            "declare both as long inputs, e.g. source: {shape: [64], dtype: long}, and let the "
                            "decoder read [target, memory]", "inputs")
        lengths = {n: inputs[n][0] for n in wanted}
    else:
        if len(inputs) != 1:
            raise SpecError(f"a language model reads one input of token ids; the spec has {', '.join(inputs)}",
                            "inputs")
        lengths = {"tokens": next(iter(inputs.values()))[0]}
    if tokenizers is None:
        options = {} if config is None else config.model_dump()
        tokenizers = train_tokenizers(dataset, **options)
    return encode_text(dataset, tokenizers, lengths)
