"""The sequence arrays: seq2seq and language-model layouts (shifts, pads) and counted truncation."""

from __future__ import annotations

import numpy as np
import pytest

from archlab.data import DataError, TextDataset, TextSplit
from archlab.text import (
    BOS_ID,
    EOS_ID,
    encode_text,
    lm_arrays,
    pad_sequences,
    seq2seq_arrays,
    source_array,
    train_tokenizers,
)


def test_pad_sequences_pads_with_zero_and_counts_cuts() -> None:
    ids, cut = pad_sequences([[4, 5, 6], [7], [8, 9, 10, 11]], 3)
    assert ids.dtype == np.int64 and ids.tolist() == [[4, 5, 6], [7, 0, 0], [8, 9, 10]]
    assert cut == 1  # exactly 3 fits
    with pytest.raises(ValueError, match="at least 1"):
        pad_sequences([[4]], 0)


def test_seq2seq_layout_shifts_target_and_y_by_one() -> None:
    a = seq2seq_arrays([[10, 11], [12, 13, 14, 15]], [[20, 21, 22], [23]], source_length=4, target_length=5)
    assert a.inputs["source"].tolist() == [[10, 11, EOS_ID, 0], [12, 13, 14, 15]]  # the second cut: no </s>
    assert a.inputs["target"].tolist() == [[BOS_ID, 20, 21, 22, 0], [BOS_ID, 23, 0, 0, 0]]
    assert a.y.tolist() == [[20, 21, 22, EOS_ID, 0], [23, EOS_ID, 0, 0, 0]]
    assert all(v.dtype == np.int64 for v in (*a.inputs.values(), a.y))
    # teacher forcing: y is the decoder input shifted left wherever the input is not padding
    t, y = a.inputs["target"], a.y
    assert (y[:, :-1][t[:, 1:] != 0] == t[:, 1:][t[:, 1:] != 0]).all()
    assert a.truncated == {"source": 1, "target": 0}


def test_seq2seq_truncated_target_has_no_end_token_and_is_counted() -> None:
    a = seq2seq_arrays([[10]], [[20, 21, 22, 23]], source_length=3, target_length=3)
    assert a.inputs["target"].tolist() == [[BOS_ID, 20, 21]]
    assert a.y.tolist() == [[20, 21, 22]]
    assert a.truncated == {"source": 0, "target": 1}


def test_lm_layout_is_next_token() -> None:
    a = lm_arrays([[5, 6, 7], [8]], 4)
    assert a.inputs["tokens"].tolist() == [[BOS_ID, 5, 6, 7], [BOS_ID, 8, 0, 0]]
    assert a.y.tolist() == [[5, 6, 7, EOS_ID], [8, EOS_ID, 0, 0]]
    assert a.truncated == {"tokens": 0}
    assert lm_arrays([[5, 6, 7, 9]], 4).truncated == {"tokens": 1}


def test_encode_text_counts_truncated_sentences_per_split_and_checks_the_inputs() -> None:
    src = ("a b", "a b a b a b a b", "b a")
    tgt = ("x y", "y x", "x y x y x y x y x y")
    ds = TextDataset("toy", "seq2seq", {"train": TextSplit(src, tgt), "test": TextSplit(src[:1], tgt[:1])}, "memory",
                     test_splits=("test",))
    toks = train_tokenizers(ds, vocab_size=12)
    widths = {"source": max(map(len, toks.source.encode(src[:1]))) + 1,
              "target": max(map(len, toks.target.encode(tgt[:2]))) + 1}
    enc = encode_text(ds, toks, widths)
    assert enc.truncated == {"train": {"source": 1, "target": 1}}
    assert enc.splits["train"].inputs["source"].shape == (3, widths["source"])
    assert enc.vocab_size == toks.target.vocab_size and enc.task == "seq2seq"
    assert enc.vocab_sizes == {"source": toks.source.vocab_size, "target": toks.target.vocab_size}
    # a decoder's source, encoded alone, is the pair's source row
    alone, cut = source_array(toks.source.encode(src), widths["source"])
    assert (alone == enc.splits["train"].inputs["source"]).all() and cut == 1
    lm = encode_text(ds.for_task("language_model"), toks, {"tokens": 3})
    assert set(lm.splits["train"].inputs) == {"tokens"} and lm.task == "language_model"
    assert lm.vocab_sizes == {"tokens": toks.target.vocab_size}
    with pytest.raises(DataError, match="fills the inputs source, target; got lengths for tokens"):
        encode_text(ds, toks, {"tokens": 8})
