"""Pairings of labelled sources, ``A+B`` (``fsdd+mnist``): one sample of each part per row, same label.

Written ``A+B`` (``load_dataset`` splits the name at every ``+``; each part keeps its own options,
``fsdd?test_speaker=george+mnist``), a pairing joins classification data sets of different
modalities into one data set of named inputs, ``{modality: array}`` (``audio`` ``(N, 8000)`` and
``image`` ``(N, 1, 28, 28)`` for ``fsdd+mnist``), for a graph-form spec with those ``inputs:``.

The pairing rule: the FIRST part drives. Its samples, targets, split, classes and order are kept
as they are. Each of its training samples gets a sample of the same class name drawn WITHOUT
replacement from every other part's training split, each test sample one from that part's test
split, so a sample of the other part never crosses from train to test. The draws come from one
``numpy.random.default_rng(SPLIT_SEED)``, class by class in the first part's class order, the train
split before the test split and part after part: the same name gives the same pairs every time.
Only where another part has fewer samples of a class in a split than the first part needs are
all of them used and the rest drawn with replacement, with a logged warning (MNIST has about 6,000
images of each digit, so ``fsdd+mnist`` never repeats one). Groups (FSDD's speakers) are the first
part's, or those of the first other part that has groups, carried along with its drawn samples.

Every part must be a classification data set of one array input with the same class names as the
first; a text data set, another task, named inputs or categorical fields, different classes, a
split with no sample of a class the first part needs, or two parts of the same modality (the
registry checks that) is a DataError naming the part.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np

from ._dataset import SPLIT_SEED, DataError, Dataset
from ._textset import TextDataset

__all__ = ["Part", "pair_datasets"]

logger = logging.getLogger("archlab")


class Part(NamedTuple):
    """One part of a pairing: the name it was written as, its modality (its input's name), its data."""

    text: str
    modality: str
    dataset: Dataset | TextDataset


def _check_part(name: str, part: Part, first: Part) -> None:
    where = f"dataset {name!r}: part {part.text!r}"
    ds = part.dataset
    if isinstance(ds, TextDataset):
        raise DataError(f"{where} is a text data set (sentences, not arrays); a pairing joins classification data "
                        "sets of arrays, e.g. 'fsdd+mnist'")
    if ds.task != "classification":
        raise DataError(f"{where} is a {ds.task} data set; a pairing joins classification data sets, whose class "
                        "names match the samples up")
    if ds.named or ds.fields is not None:
        kind = "named inputs" if ds.named else "categorical fields"
        raise DataError(f"{where} has {kind}; each part of a pairing is one array input, named by its modality "
                        f"({part.modality!r})")
    if part is not first and set(ds.classes) != set(first.dataset.classes):
        for lacking, other in ((part, first), (first, part)):
            missing = [c for c in other.dataset.classes if c not in set(lacking.dataset.classes)]
            if missing:
                raise DataError(f"dataset {name!r}: part {lacking.text!r} lacks the label(s) "
                                f"{', '.join(missing)} of part {other.text!r}; a pairing matches samples by class "
                                f"name, so every part needs the same classes ({', '.join(first.dataset.classes)} "
                                f"in {first.text!r})")


def _draw(y_first: np.ndarray, y_other: np.ndarray, rng: np.random.Generator, classes: tuple[str, ...],
          where: str) -> np.ndarray:
    """For each sample of ``y_first``, the index of a sample of ``y_other`` with the same class id.

    Both are class ids of the first part's classes. A class's indices are drawn without replacement
    (a permutation), and only when there are too few, every one of them plus the rest with replacement.
    """
    chosen = np.empty(len(y_first), np.int64)
    for c in np.unique(y_first):
        rows = np.flatnonzero(y_first == c)
        pool = np.flatnonzero(y_other == c)
        if not len(pool):
            raise DataError(f"{where} has no sample of label {classes[c]!r} to pair with the first part's "
                            f"{len(rows)}; give that part samples of every class in both splits")
        picks = rng.permutation(pool)[:len(rows)]
        if len(rows) > len(pool):
            logger.warning("%s has %d sample(s) of label %r for the first part's %d: drawing %d of them twice or "
                           "more (with replacement)", where, len(pool), classes[c], len(rows), len(rows) - len(pool))
            picks = np.concatenate([picks, rng.choice(pool, len(rows) - len(pool))])
        chosen[rows] = picks
    return chosen


def pair_datasets(name: str, parts: list[Part], seed: int = SPLIT_SEED) -> Dataset:
    """The pairing of ``parts`` (the first drives) by the module's rule, as one Dataset of named inputs.

    Args:
        name: the pairing's name, ``"fsdd+mnist"``, for the Dataset and messages.
        parts: two or more parts, each of a different modality.
        seed: the seed of the draws; fixed so that a name always gives the same pairs.

    Raises:
        DataError: a part cannot be paired (see the module docstring), naming it.

    Example:
        >>> a = Dataset("a", np.zeros((4, 3), np.float32), np.array([0, 1, 0, 1]), np.zeros((2, 3), np.float32),
        ...             np.array([0, 1]), "classification", ("x", "y"), "memory")
        >>> b = Dataset("b", np.ones((6, 1, 2, 2), np.float32), np.array([1, 0, 1, 0, 1, 0]),
        ...             np.ones((2, 1, 2, 2), np.float32), np.array([1, 0]), "classification", ("x", "y"), "memory")
        >>> pair_datasets("a+b", [Part("a", "audio", a), Part("b", "image", b)]).describe()
        'a+b: classification, inputs audio (3,), image (1, 2, 2), 4 train / 2 test samples, 2 classes: x, y'
    """
    if len(parts) < 2:
        raise DataError(f"dataset {name!r}: a pairing needs at least two parts, got {len(parts)}")
    first = parts[0]
    for part in parts:
        _check_part(name, part, first)
    lead: Dataset = first.dataset  # checked: a classification Dataset
    rng = np.random.default_rng(seed)
    x_train, x_test = {first.modality: lead.x_train}, {first.modality: lead.x_test}
    groups = None if lead.groups_train is None else (lead.groups_train, lead.groups_test)
    for part in parts[1:]:
        ds: Dataset = part.dataset
        # the other part's class ids, renumbered to the first part's (classes match by name)
        ids = np.array([lead.classes.index(c) for c in ds.classes], np.int64)
        train = _draw(lead.y_train, ids[ds.y_train], rng, lead.classes,
                      f"dataset {name!r}: part {part.text!r}, train split,")
        test = _draw(lead.y_test, ids[ds.y_test], rng, lead.classes,
                     f"dataset {name!r}: part {part.text!r}, test split,")
        x_train[part.modality], x_test[part.modality] = ds.x_train[train], ds.x_test[test]
        if groups is None and ds.groups_train is not None:
            groups = ds.groups_train[train], ds.groups_test[test]
    return Dataset(name, x_train, lead.y_train, x_test, lead.y_test, "classification", lead.classes,
                   " + ".join(p.dataset.source for p in parts),
                   groups_train=None if groups is None else groups[0],
                   groups_test=None if groups is None else groups[1])
