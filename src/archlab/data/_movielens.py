"""MovieLens 100K (GroupLens) as click-through-style binary data: does a user rate a movie 4 or 5?

Each of the 100,000 ratings is one sample of 25 categorical fields: user, item, age group,
gender, occupation, zip area, and one 0/1 field per genre (19), the one-hot-per-field layout
factorization machines and DeepFM take. The files are read from the ``ml-100k/`` folder
(``data_dir``, ``$ARCHLAB_DATA/ml-100k`` or the cache; gzip or not) and never downloaded:
GroupLens forbids redistribution, so each user fetches ml-100k.zip from grouplens.org.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

from ._dataset import DataError, Dataset
from ._fields import encode_fields
from ._paths import describe_search, find_file
from ._registry import DatasetRequest, find_data_dir, register_dataset

__all__ = ["AGE_GROUPS", "FILES", "POSITIVE_RATING", "SPLIT_SEED", "load_movielens_100k"]

#: A rating at least this high is the positive class (the usual "liked" threshold).
POSITIVE_RATING = 4
#: Seed of the fixed 80/20 split: ``numpy.random.default_rng(0).permutation(100000)``, first 80% train.
SPLIT_SEED = 0
_TEST_SIZE = 0.2
#: Lower bounds of the age groups (MovieLens 1M's groups: under 18, 18-24, 25-34, ..., 56+).
AGE_GROUPS = (18, 25, 35, 45, 50, 56)
#: file -> SHA-256 of the uncompressed original (GroupLens' files; /work/shared/data/README.md).
FILES = {
    "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
    "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
    "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
    "u.genre": "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb",
}
_FIX = "replace it with the file from ml-100k.zip (https://grouplens.org/datasets/movielens/100k/)"


def _read(folder: Path, stem: str, verify: bool) -> str:
    path = find_file(folder, stem)
    if path is None:  # removed since find_data_dir looked
        raise DataError(f"{folder}: lacks {stem}[.gz]; {_FIX}", folder)
    try:
        blob = path.read_bytes()
        if path.suffix == ".gz":
            blob = gzip.decompress(blob)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot be read ({exc}); {_FIX}", path) from None
    if verify and hashlib.sha256(blob).hexdigest() != FILES[stem]:
        raise DataError(f"{path}: its content differs from GroupLens' {stem} (SHA-256 "
                        f"{hashlib.sha256(blob).hexdigest()[:12]}..., expected {FILES[stem][:12]}...); {_FIX}", path)
    return blob.decode("latin-1")  # u.item is ISO-8859-1; the other files are ASCII


def _rows(text: str, sep: str) -> list[list[str]]:
    return [line.split(sep) for line in text.splitlines() if line.strip()]


@register_dataset("movielens-100k", files=tuple(FILES), folder="ml-100k")
def load_movielens_100k(request: DatasetRequest) -> Dataset:
    """100,000 ratings as x (N, 25) int64 global ids and y 1 when the rating is 4 or 5 (task binary).

    Fields, in order: ``user``, ``item``, ``age`` (group, see AGE_GROUPS), ``gender``,
    ``occupation``, ``zip`` (its first character, the US postal area; letters for Canada), then
    ``genre_<name>`` (0/1) for the 19 genres of u.genre. The split is a fixed seeded permutation
    (seed 0): 80,000 train and 20,000 test ratings. Vocabularies are fitted on the training split,
    and each field keeps one id for values only the test split has (counted in ``oov``).
    """
    folder = find_data_dir("movielens-100k", request.data_dir)
    if folder is None:
        raise DataError("dataset 'movielens-100k': the MovieLens 100K files were not found. "
                        "GroupLens does not allow redistribution, so archlab never downloads them: unzip "
                        "ml-100k.zip from https://grouplens.org/datasets/movielens/100k/.\n"
                        + describe_search("ml-100k", request.data_dir, list(FILES)))
    ratings = np.array(_rows(_read(folder, "u.data", request.verify), "\t"), dtype=np.int64)  # user, item, rating, t
    users = {int(r[0]): r for r in _rows(_read(folder, "u.user", request.verify), "|")}
    items = {int(r[0]): r for r in _rows(_read(folder, "u.item", request.verify), "|")}
    genres = [r[0] for r in _rows(_read(folder, "u.genre", request.verify), "|")]

    user_of = np.array([users[u] for u in ratings[:, 0]], dtype=object)  # (N, 5): id, age, gender, occupation, zip
    genre_flags = np.array([items[i][5:] for i in ratings[:, 1]], dtype=np.int64)  # (N, 19)
    if genre_flags.shape[1] != len(genres):
        raise DataError(f"{folder}: u.item has {genre_flags.shape[1]} genre flags but u.genre names "
                        f"{len(genres)} genres; {_FIX}", folder)
    ages = np.digitize(user_of[:, 1].astype(np.int64), AGE_GROUPS)
    columns = {"user": ratings[:, 0], "item": ratings[:, 1], "age": ages, "gender": user_of[:, 2].astype(str),
               "occupation": user_of[:, 3].astype(str), "zip": np.array([z[:1] for z in user_of[:, 4]])}
    columns.update({f"genre_{name}": genre_flags[:, g] for g, name in enumerate(genres)})
    y = (ratings[:, 2] >= POSITIVE_RATING).astype(np.int64)

    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    cut = int(round(len(y) * (1 - _TEST_SIZE)))
    train, test = order[:cut], order[cut:]
    x_train, x_test, fields, oov = encode_fields(list(columns), [c[train] for c in columns.values()],
                                                 [c[test] for c in columns.values()])
    return Dataset(request.name, x_train, y[train], x_test, y[test], "binary", ("0", "1"),
                   str(folder.resolve()), fields=fields, oov=oov)
