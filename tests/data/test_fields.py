"""Categorical fields as global ids (encode_fields, discretise) and movielens-100k on the real files."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest

from archlab.data import DataError, Dataset, Field, load_dataset
from archlab.data._fields import discretise, encode_fields


def test_encode_fields_offsets_vocabulary_from_train_and_one_oov_id_per_field():
    x_train, x_test, fields, oov = encode_fields(
        ["colour", "size"],
        [np.array(["red", "blue", "red"]), np.array(["S", "M", "L"])],
        [np.array(["green", "blue"]), np.array(["XL", "XXL"])])
    # colour: blue 0, red 1, OOV 2 ; size: offset 3, L 3, M 4, S 5, OOV 6
    assert fields == (Field("colour", 3, 0), Field("size", 4, 3))
    assert x_train.tolist() == [[1, 5], [0, 4], [1, 3]]
    assert x_test.tolist() == [[2, 6], [0, 6]]
    assert oov == {"test": {"colour": 1, "size": 2}}
    assert x_train.dtype == np.int64 and fields[1].oov_id == 6


def test_discretise_follows_the_criteo_rule():
    values = np.array([-1.0, 0.0, 1.0, 2.0, 3.0, 7.0, 8.0, 1000.0, np.nan])
    # floor(ln(x)^2): ln 3 = 1.10 -> 1 ; ln 7 = 1.95 -> 3 ; ln 8 = 2.08 -> 4 ; ln 1000 = 6.91 -> 47
    assert discretise(values).tolist() == ["-1", "0", "1", "2", "b1", "b3", "b4", "b47", "missing"]


def test_dataset_binary_task_checks_its_targets():
    x = np.zeros((3, 2), np.int64)
    with pytest.raises(DataError, match="binary targets are 0 or 1, but y_train holds 2"):
        Dataset("t", x, np.array([0, 1, 2]), x, np.array([0, 1, 1]), "binary", ("0", "1"), "memory")
    fields = (Field("a", 2, 0), Field("b", 2, 2))
    with pytest.raises(DataError, match=r"int64 ids in 0\.\.3"):
        Dataset("t", x + 4, np.array([0, 1, 1]), x, np.array([0, 1, 1]), "binary", ("0", "1"), "memory",
                fields=fields)
    ds = Dataset("t", x, np.array([0, 1, 1]), x, np.array([0, 1, 1]), "binary", ("0", "1"), "memory", fields=fields)
    assert ds.vocab_size == 4
    assert ds.describe().endswith("2 classes: 0, 1, 2 categorical fields, vocabulary 4 ids")


@pytest.fixture
def movielens(shared_data):
    if not (shared_data / "ml-100k").is_dir():
        pytest.skip("no MovieLens 100K copy in shared/data/ml-100k")
    return shared_data


def test_movielens_100k_fields_split_and_labels(movielens):
    ds = load_dataset("movielens-100k", movielens)
    assert ds.task == "binary" and ds.classes == ("0", "1")
    assert (len(ds.x_train), len(ds.x_test)) == (80_000, 20_000)
    names = [f.name for f in ds.fields]
    assert names[:6] == ["user", "item", "age", "gender", "occupation", "zip"] and len(names) == 25
    assert names[6] == "genre_unknown" and names[-1] == "genre_Western"
    sizes = {f.name: f.size for f in ds.fields}
    # every user is in the training split (943 + OOV); 2 genders; 21 occupations; 7 age groups; genres 0/1
    assert (sizes["user"], sizes["gender"], sizes["occupation"], sizes["age"]) == (944, 3, 22, 8)
    assert all(sizes[n] == 3 for n in names[6:])
    assert ds.vocab_size == sum(sizes.values()) == 2707
    offsets = [f.offset for f in ds.fields]
    assert offsets == list(np.cumsum([0] + [f.size for f in ds.fields[:-1]]))
    # positives: ratings 4 and 5 are 34,174 + 21,201 of the 100,000
    assert int(ds.y_train.sum() + ds.y_test.sum()) == 55_375
    assert ds.oov == {"test": {"item": int((ds.x_test[:, 1] == ds.fields[1].oov_id).sum())}}
    assert ds.oov["test"]["item"] > 0 and "train" not in ds.oov
    again = load_dataset("movielens-100k", movielens)
    assert np.array_equal(again.x_test, ds.x_test) and np.array_equal(again.y_train, ds.y_train)


def test_movielens_first_rating_is_encoded_from_the_files(movielens):
    # u.data's first line: user 196, item 242, rating 3 (negative); user 196: 49, M, writer, 55105
    ds = load_dataset("movielens-100k", movielens)
    order = np.random.default_rng(0).permutation(100_000)
    split, row = ("train", int(np.where(order == 0)[0][0])) if np.where(order == 0)[0][0] < 80_000 else \
        ("test", int(np.where(order == 0)[0][0]) - 80_000)
    x, y = (ds.x_train, ds.y_train) if split == "train" else (ds.x_test, ds.y_test)
    f = {field.name: field for field in ds.fields}
    assert y[row] == 0
    assert x[row, 2] - f["age"].offset == 4  # 49 is in the 45-49 group: the 5th bound passed
    assert x[row, 3] - f["gender"].offset == 1  # F 0, M 1
    assert x[row, 5] - f["zip"].offset == 5  # zip areas sort 0..9 then letters


def test_movielens_missing_or_changed_files_say_what_to_do(movielens, tmp_path):
    with pytest.raises(DataError, match=r"(?s)never downloads them.*grouplens.org.*Searched"):
        load_dataset("movielens-100k", tmp_path)
    copy = tmp_path / "ml-100k"
    shutil.copytree(movielens / "ml-100k", copy)
    (copy / "u.user.gz").chmod(0o644)
    (copy / "u.user.gz").write_bytes(gzip.compress(b"1|24|M|technician|85711\n"))
    with pytest.raises(DataError, match=r"u.user.gz: its content differs from GroupLens' u.user"):
        load_dataset("movielens-100k", tmp_path)
