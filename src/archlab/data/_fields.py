"""Categorical fields as ids in one global id space: the input of factorization machines and DeepFM.

A table of F categorical fields becomes x (N, F) int64. Field f's values get the ids
``offset_f .. offset_f + size_f - 1``, where ``offset_f`` is the sum of the sizes of the fields
before it, so one ``embedding`` over all the ids (``input_dim`` = the sum of the sizes) holds
every field's vectors. Each vocabulary is fitted on the training split only, and each field
reserves its last id for a value training never saw, so the test split cannot leak into the
vocabulary and unseen values are counted rather than silently mapped onto a known one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._dataset import Field

__all__ = ["MISSING", "discretise", "encode_column", "encode_fields"]

#: The token of a missing numeric value: its own bucket, apart from every number.
MISSING = "missing"


def discretise(values: np.ndarray) -> np.ndarray:
    """Numeric values as bucket tokens, by the rule of the Criteo contest's winners.

    ``x > 2`` goes to bucket ``floor(ln(x)^2)``, other values stay themselves (so -1, 0, 1 and 2
    keep their own buckets), and a missing value (NaN) is the bucket ``"missing"``. The buckets
    grow with x, so a heavy-tailed count becomes a few dozen categories.

    Example:
        >>> discretise(np.array([-1.0, 0.0, 2.0, 3.0, 100.0, np.nan])).tolist()
        ['-1', '0', '2', 'b1', 'b21', 'missing']
    """
    values = np.asarray(values, dtype=np.float64)
    out = np.full(values.shape, MISSING, dtype=object)
    present = ~np.isnan(values)
    big = present & (values > 2)
    small = present & ~big
    # 'b' keeps a bucket of large values apart from a small value with the same number.
    out[big] = ["b" + str(int(v)) for v in np.floor(np.log(values[big]) ** 2)]
    out[small] = [str(int(v)) if float(v).is_integer() else repr(float(v)) for v in values[small]]
    return out


def encode_column(vocab: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, int]:
    """One field's values as ids into its sorted ``vocab`` (``np.unique`` of the training values),
    a value not in it as the out-of-vocabulary id ``len(vocab)``; and how many were not in it.
    Separate from ``encode_fields`` so that a file can be encoded chunk by chunk with one vocabulary.

    Example:
        >>> ids, unseen = encode_column(np.array(["u", "v"]), np.array(["v", "w", "u"]))
        >>> ids.tolist(), unseen
        ([1, 2, 0], 1)
    """
    values = np.asarray(values)
    ids = np.searchsorted(vocab, values)
    known = (ids < len(vocab)) & (vocab[np.minimum(ids, len(vocab) - 1)] == values)
    ids[~known] = len(vocab)  # the field's out-of-vocabulary id
    return ids.astype(np.int64), int((~known).sum())


def encode_fields(names: Sequence[str], train: Sequence[np.ndarray], test: Sequence[np.ndarray]
                  ) -> tuple[np.ndarray, np.ndarray, tuple[Field, ...], dict[str, dict[str, int]]]:
    """Encode categorical columns as global ids, vocabularies fitted on ``train`` only.

    Args:
        names: the field names, in column order.
        train: one array of values per field for the training split (any type that sorts: text, ints).
        test: as ``train``, for the test split.

    Returns:
        ``x_train, x_test`` int64 ``(N, F)``, the fields, and the out-of-vocabulary counts
        per split and field (fields without any left out).

    Example:
        >>> x_tr, x_te, fields, oov = encode_fields(["a", "b"], [np.array(["u", "v"]), np.array([3, 3])],
        ...                                         [np.array(["v", "w"]), np.array([3, 4])])
        >>> x_tr.tolist(), x_te.tolist(), [(f.name, f.size, f.offset) for f in fields], oov
        ([[0, 3], [1, 3]], [[1, 3], [2, 4]], [('a', 3, 0), ('b', 2, 3)], {'test': {'a': 1, 'b': 1}})
    """
    fields: list[Field] = []
    columns: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    oov: dict[str, dict[str, int]] = {}
    offset = 0
    for name, train_values, test_values in zip(names, train, test, strict=True):
        vocab = np.unique(np.asarray(train_values))
        for split, values in (("train", train_values), ("test", test_values)):
            ids, unseen = encode_column(vocab, values)
            if unseen:
                oov.setdefault(split, {})[name] = unseen
            columns[split].append(ids + offset)
        fields.append(Field(name, len(vocab) + 1, offset))
        offset += len(vocab) + 1
    x_train, x_test = (np.stack(columns[s], axis=1) if columns[s] else np.zeros((0, 0), np.int64)
                       for s in ("train", "test"))
    return x_train, x_test, tuple(fields), oov
