"""The Dataset every source returns, DataError, and the helpers sources share.

Sources differ in where their bytes come from, but they all hand the training engine the same
thing: float32 inputs (channels first) or int64 ids of categorical fields, integer class ids
or float targets, and a fixed train/test split. Keeping the split and the label encoding here means a CSV file, an .npz
archive and a built-in dataset are split and encoded the same way.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from archlab._inputs import SINGLE, as_named, fmt_shape, is_named
from archlab.exceptions import ArchlabError

__all__ = ["TEST_SIZE", "SPLIT_SEED", "DataError", "Dataset", "Field", "Task", "encode_labels", "split_train_test"]

logger = logging.getLogger("archlab")

Task = Literal["classification", "binary", "regression"]
_TASKS = ("classification", "binary", "regression")
_INPUT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Fraction of the samples held out as the test set when a source has no test split of its own.
TEST_SIZE = 0.2
#: ``random_state`` of that split, fixed so the same file always gives the same split.
SPLIT_SEED = 0


class DataError(ArchlabError, ValueError):
    """A dataset cannot be found, read or trusted: unknown name, missing or corrupt file, bad cell.

    Attributes:
        path: the file or folder the error is about, or ``None`` when it is about no single file.
    """

    def __init__(self, message: str, path: object = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(message)


@dataclass(frozen=True)
class Field:
    """One categorical field of a table whose inputs are ids in one global id space.

    Field ``f``'s values are the ids ``offset .. offset + size - 1``; the last of them,
    ``offset + size - 1``, is the field's out-of-vocabulary id (a value unseen in training).

    Attributes:
        name: the column, e.g. ``"user"`` or ``"genre_Comedy"``.
        size: the field's vocabulary size, its out-of-vocabulary id included.
        offset: the field's first id: the sum of the sizes of the fields before it.
    """

    name: str
    size: int
    offset: int

    @property
    def oov_id(self) -> int:
        return self.offset + self.size - 1


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset split into train and test arrays, ready for the training engine.

    Inputs are float32 and channels first, ``(N, *input_shape)``: MNIST is ``(60000, 1, 28, 28)``
    scaled to [0, 1], a table is ``(N, features)``; a table of categorical fields is int64 ids
    ``(N, F)`` (``fields``). Targets are int64 class ids (indices into ``classes``) for
    classification and binary, and float32 for regression.

    Attributes:
        name: the name it was loaded by, e.g. ``"mnist"`` or ``"csv:iris.csv"``.
        x_train: training inputs, float32 ``(N, *input_shape)`` (int64 ``(N, F)`` with ``fields``).
        y_train: training targets, int64 ``(N,)`` or float32 ``(N,)`` / ``(N, k)``.
        x_test: test inputs, float32 ``(M, *input_shape)``.
        y_test: test targets, as ``y_train``.
        task: ``"classification"``, ``"binary"`` (two classes, ids 0 and 1, one output unit) or
            ``"regression"``.
        classes: class names in id order, e.g. ``("0", ..., "9")``; ``None`` for regression.
        source: where the data was read from (a path), for run records.
        fields: for a table of categorical fields (``x`` int64 ids, ``(N, F)``), each field's
            name, vocabulary size and offset; ``None`` for other inputs.
        oov: per split and field, how many values were not in the training vocabulary, e.g.
            ``{"test": {"zip": 12}}`` (fields without any are left out); ``None`` without fields.
        fields_input: with named inputs, the one that holds the fields' ids (``input`` otherwise).
        groups_train: the group of each training sample (int or str array ``(N,)``), e.g. the speaker
            of a recording (``fsdd``, ``audio:``), so that splits can keep a group on one side;
            ``None`` for sources without groups.
        groups_test: the same for the test samples; given together with ``groups_train``.

    Named inputs (for a graph-form spec): each of ``x_train`` and ``x_test`` is a dict of arrays
    by input name, e.g. ``{"categorical": int64 (N, F), "dense": float32 (N, D)}``, every array
    with the same N as the targets (``archlab._inputs``).

    Inputs may be memory-mapped (``np.memmap``, as ``npy:DIR`` opens them): the checks here read
    only their shapes and dtypes, and field ids in chunks of ``CHECK_ROWS`` rows, never the whole array.

    Example:
        >>> import numpy as np
        >>> ds = Dataset("toy", np.zeros((4, 3), np.float32), np.array([0, 1, 0, 1]),
        ...              np.zeros((2, 3), np.float32), np.array([0, 1]), "classification", ("no", "yes"), "memory")
        >>> ds.input_shape, ds.num_classes
        ((3,), 2)
        >>> ds.describe()
        'toy: classification, input (3,), 4 train / 2 test samples, 2 classes: no, yes'
    """

    name: str
    x_train: np.ndarray | dict[str, np.ndarray] = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    x_test: np.ndarray | dict[str, np.ndarray] = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    task: Task
    classes: tuple[str, ...] | None
    source: str
    fields: tuple[Field, ...] | None = None
    oov: dict[str, dict[str, int]] | None = None
    fields_input: str = SINGLE
    groups_train: np.ndarray | None = field(default=None, repr=False)
    groups_test: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # A source that hands the engine inconsistent arrays is a bug there; say so here, not
        # later as a shape error deep inside a training step.
        where = f"dataset {self.name!r}"
        if self.task not in _TASKS:
            raise DataError(f"{where}: task is one of {', '.join(map(repr, _TASKS))}, got {self.task!r}")
        if (self.task != "regression") != (self.classes is not None):
            raise DataError(f"{where}: a classification or binary dataset has class names and a regression one "
                            f"has classes=None; got task={self.task!r}, classes={self.classes!r}")
        if self.task == "binary":
            if len(self.classes) != 2:
                raise DataError(f"{where}: a binary dataset has two classes (negative, positive), got "
                                f"{self.classes!r}")
            for split, y in (("train", self.y_train), ("test", self.y_test)):
                if y.size and not np.isin(y, (0, 1)).all():
                    raise DataError(f"{where}: binary targets are 0 or 1, but y_{split} holds "
                                    f"{y[~np.isin(y, (0, 1))].flat[0].item()!r}")
        if is_named(self.x_train) != is_named(self.x_test) or (
                is_named(self.x_train) and list(self.x_train) != list(self.x_test)):
            raise DataError(f"{where}: x_train and x_test must both be one array or both the same named arrays")
        if is_named(self.x_train) and not (self.x_train and all(_INPUT_NAME.match(str(n)) for n in self.x_train)):
            raise DataError(f"{where}: named inputs are a non-empty dict whose names are identifiers (a spec's "
                            f"inputs: names), got {list(self.x_train)!r}")
        for split, xs, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if not isinstance(y, np.ndarray):
                raise DataError(f"{where}: y_{split} must be a numpy array, got {type(y).__name__}")
            for key, x in as_named(xs).items():
                label = f"x_{split}" + (f"[{key!r}]" if is_named(xs) else "")
                if not isinstance(x, np.ndarray):
                    raise DataError(f"{where}: {label} must be a numpy array, got {type(x).__name__}")
                if x.ndim < 2 or len(x) != len(y):
                    raise DataError(f"{where}: {label} {fmt_shape(x.shape)} and y_{split} {fmt_shape(y.shape)} "
                                    "must be (N, *input_shape) and (N, ...) with the same N")
        if (self.groups_train is None) != (self.groups_test is None):
            raise DataError(f"{where}: give groups_train and groups_test both (a group per sample of each split) "
                            "or neither")
        for split, groups, y in (("train", self.groups_train, self.y_train), ("test", self.groups_test, self.y_test)):
            if groups is not None and (not isinstance(groups, np.ndarray) or groups.shape != (len(y),)
                                       or groups.dtype.kind not in "iuU"):
                got = fmt_shape(groups.shape) if isinstance(groups, np.ndarray) else type(groups).__name__
                raise DataError(f"{where}: groups_{split} must be an int or str array of one group per sample, "
                                f"({len(y)},), got {got}")
        for key, shape in self.input_shapes.items():
            test_shape = as_named(self.x_test)[key].shape[1:]
            if shape != test_shape:
                label = "" if not self.named else f"[{key!r}]"
                raise DataError(f"{where}: x_train{label} {fmt_shape(shape)} and x_test{label} "
                                f"{fmt_shape(test_shape)} must have the same input shape")
        if self.fields is not None:
            ids = self.fields_input
            if ids not in self.input_shapes or self.input_shapes[ids] != (len(self.fields),):
                raise DataError(f"{where}: {len(self.fields)} fields need the input {ids!r} of shape "
                                f"({len(self.fields)},), got {self.input_shapes.get(ids)}")
            for split, xs in (("train", self.x_train), ("test", self.x_test)):
                x = as_named(xs)[ids]
                if x.dtype != np.int64 or (x.size and not _within(x, self.vocab_size)):
                    raise DataError(f"{where}: x_{split} must be int64 ids in 0..{self.vocab_size - 1}"
                                    + (f" (its input {ids!r})" if self.named else ""))

    @property
    def named(self) -> bool:
        """Whether the inputs are named arrays (for a graph-form spec's ``inputs``)."""
        return is_named(self.x_train)

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each input's shape without the batch dimension, by name; the one input is ``input``."""
        return {key: tuple(x.shape[1:]) for key, x in as_named(self.x_train).items()}

    @property
    def vocab_size(self) -> int | None:
        """All fields' vocabularies together: the ``input_dim`` of the embedding over the ids."""
        return None if self.fields is None else sum(f.size for f in self.fields)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input without the batch dimension, as a spec's ``input`` gives it.

        Raises:
            DataError: the data set has named inputs (see ``input_shapes``).
        """
        if self.named:
            raise DataError(f"dataset {self.name!r} has named inputs ({', '.join(self.x_train)}), not one input "
                            "shape; see input_shapes")
        return tuple(self.x_train.shape[1:])

    @property
    def train_samples(self) -> int:
        return len(self.y_train)

    @property
    def test_samples(self) -> int:
        return len(self.y_test)

    @property
    def num_classes(self) -> int | None:
        """How many classes; ``None`` for regression."""
        return None if self.classes is None else len(self.classes)

    def describe(self) -> str:
        """One line for logs and run records: name, task, shapes, counts, classes."""
        shapes = (", ".join(f"{k} {fmt_shape(s)}" for k, s in self.input_shapes.items()) if self.named
                  else fmt_shape(self.input_shape))
        text = (f"{self.name}: {self.task}, input{'s' if self.named else ''} {shapes}, "
                f"{self.train_samples} train / {self.test_samples} test samples")
        if self.classes is not None:
            shown = list(self.classes) if len(self.classes) <= 12 else [*self.classes[:5], "...", *self.classes[-2:]]
            text += f", {len(self.classes)} classes: " + ", ".join(shown)
        elif self.y_train.ndim > 1:
            text += f", {self.y_train.shape[1]} targets"
        if self.fields is not None:
            text += f", {len(self.fields)} categorical fields, vocabulary {self.vocab_size} ids"
        return text

    def __repr__(self) -> str:
        shapes = self.input_shapes if self.named else self.input_shape
        return (f"Dataset(name={self.name!r}, task={self.task!r}, input_shape{'s' if self.named else ''}={shapes}, "
                f"train={self.train_samples}, test={self.test_samples}, source={self.source!r})")


#: Rows per read when a memory-mapped array is checked, so the check never holds the whole array.
CHECK_ROWS = 1 << 16


def _within(x: np.ndarray, size: int) -> bool:
    """Whether every value of ``x`` is in 0..size-1; a memory-mapped array is read in chunks of rows."""
    if not isinstance(x, np.memmap):
        return bool(x.min() >= 0 and x.max() < size)
    return all(bool(c.min() >= 0 and c.max() < size) for c in
               (np.asarray(x[i:i + CHECK_ROWS]) for i in range(0, len(x), CHECK_ROWS)) if c.size)


def encode_labels(values: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map labels to class ids 0..k-1 in sorted order and name the classes.

    Numbers sort numerically (so ``10`` comes after ``9``) and whole numbers are named without
    a decimal point (``2.0`` is class ``"2"``); text sorts as text.

    Example:
        >>> ids, classes = encode_labels(np.array([10, 2, 9, 2]))
        >>> ids.tolist(), classes
        ([2, 0, 1, 0], ('2', '9', '10'))
    """
    values = np.asarray(values)
    uniques, ids = np.unique(values, return_inverse=True)
    if uniques.dtype.kind in "iub":
        names = tuple(str(int(v)) for v in uniques)
    elif uniques.dtype.kind == "f":
        names = tuple(str(int(v)) if float(v).is_integer() else repr(float(v)) for v in uniques)
    else:
        names = tuple(str(v) for v in uniques)
    return ids.reshape(-1).astype(np.int64), names


def split_train_test(x: np.ndarray, y: np.ndarray, *, stratify: bool,
                     where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hold out 20% as the test set with scikit-learn's ``train_test_split(random_state=0)``.

    The split is fixed so that every run on the same file trains and tests on the same samples.
    Classification splits are stratified (each class keeps its share in both parts); when a
    class is too small for that, the split falls back to a plain shuffled one and says so.

    Returns:
        ``x_train, x_test, y_train, y_test``, as ``train_test_split`` orders them.
    """
    from sklearn.model_selection import train_test_split  # scikit-learn is slow to import

    if len(x) < 2:
        raise DataError(f"{where}: needs at least 2 samples to split into train and test, got {len(x)}; "
                        "add samples, or give the test set yourself (x_test, y_test in an .npz)", where)
    if stratify:
        try:
            return train_test_split(x, y, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=y)
        except ValueError as exc:  # a class with one sample, or fewer test samples than classes
            logger.warning("%s: cannot stratify the train/test split (%s); using a plain shuffled split", where, exc)
    return train_test_split(x, y, test_size=TEST_SIZE, random_state=SPLIT_SEED)
