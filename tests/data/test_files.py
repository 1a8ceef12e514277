"""csv:PATH and npz:PATH: target choice, task guess, split, and every error naming the file."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from archlab.data import DataError, load_dataset


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def table(n: int = 30, *, target: str = "label", values=None, header: bool = True) -> str:
    """A CSV with two features a, b and a target column between them (to test target choice)."""
    values = values if values is not None else [i % 3 for i in range(n)]
    rows = ([f"a,{target},b"] if header else []) + [f"{i},{v},{i * 0.5}" for i, v in enumerate(values)]
    return "\n".join(rows) + "\n"


# --- csv: target and task -----------------------------------------------------------------

def test_csv_named_target_column_and_classification(tmp_path):
    path = write(tmp_path / "t.csv", table())
    ds = load_dataset(f"csv:{path}")
    assert ds.task == "classification" and ds.classes == ("0", "1", "2")
    assert ds.x_train.shape == (24, 2) and ds.x_test.shape == (6, 2) and ds.input_shape == (2,)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.source == str(path.resolve()) and ds.name == f"csv:{path}"
    # the features are a and b, never the label: b == a / 2 in every row
    np.testing.assert_allclose(ds.x_train[:, 1], ds.x_train[:, 0] / 2)
    assert np.bincount(ds.y_test).tolist() == [2, 2, 2]  # stratified


@pytest.mark.parametrize("name", ["target", "Class", "y"])
def test_csv_recognised_target_names(tmp_path, name):
    ds = load_dataset(f"csv:{write(tmp_path / 't.csv', table(target=name))}")
    assert ds.num_classes == 3 and ds.input_shape == (2,)


def test_csv_last_column_is_the_default_target(tmp_path):
    path = write(tmp_path / "t.csv", "p,q,r\n" + "".join(f"{i},{i + 1},{i % 2}\n" for i in range(10)))
    ds = load_dataset(f"csv:{path}")
    assert ds.classes == ("0", "1")
    np.testing.assert_array_equal(ds.x_train[:, 1] - ds.x_train[:, 0], 1)


def test_csv_explicit_target_by_name_and_index(tmp_path):
    path = write(tmp_path / "t.csv", table())
    by_name = load_dataset(f"csv:{path}?target=a")
    by_index = load_dataset(f"csv:{path}?target=0")
    assert by_name.task == "classification" and by_name.num_classes == 30 // 1  # a = 0..29, each once
    np.testing.assert_array_equal(by_name.x_train, by_index.x_train)


def test_csv_text_and_float_targets(tmp_path):
    words = write(tmp_path / "w.csv", table(values=["setosa", "virginica", "versicolor"] * 10))
    ds = load_dataset(f"csv:{words}")
    assert ds.classes == ("setosa", "versicolor", "virginica")
    floats = write(tmp_path / "f.csv", table(values=[i / 7 for i in range(30)]))
    ds = load_dataset(f"csv:{floats}")
    assert ds.task == "regression" and ds.classes is None and ds.num_classes is None
    assert ds.y_train.dtype == np.float32 and ds.y_train.shape == (24,)
    whole = write(tmp_path / "whole.csv", table(values=[f"{i % 2}.0" for i in range(30)]))
    assert load_dataset(f"csv:{whole}").classes == ("0", "1")
    assert load_dataset(f"csv:{whole}?task=regression").task == "regression"
    assert load_dataset(f"csv:{floats}?task=classification&target=label").num_classes == 30


def test_csv_numeric_class_names_sort_as_numbers(tmp_path):
    path = write(tmp_path / "t.csv", table(values=[10, 9, -1] * 10))
    ds = load_dataset(f"csv:{path}")
    assert ds.classes == ("-1", "9", "10")


def test_csv_without_header_gzip_tsv_and_data_dir(tmp_path):
    plain = table(header=False)
    write(tmp_path / "no_header.csv", plain)
    ds = load_dataset("csv:no_header.csv?target=1", data_dir=tmp_path)  # relative to data_dir
    assert ds.num_classes == 3 and ds.input_shape == (2,)
    with gzip.open(tmp_path / "t.tsv.gz", "wt") as file:
        file.write(table().replace(",", "\t"))
    assert load_dataset(f"csv:{tmp_path / 't.tsv.gz'}").num_classes == 3


def test_csv_split_is_deterministic(tmp_path):
    path = write(tmp_path / "t.csv", table(n=50))
    a, b = load_dataset(f"csv:{path}"), load_dataset(f"csv:{path}")
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)


# --- csv: errors --------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "pattern"), [
    ("a,label\n1,0\nx1,1\n", r"line 3, column 'a': 'x1' is not a number"),
    ("a,b,label\n1,2,0\n3,,1\n", r"line 3, column 'b': is empty"),
    ("a,label\n1,0\nnan,1\n", r"line 3, column 'a': 'nan' is not a finite number"),
    ("a,label\n1,0\n2,1,5\n", r"line 3: has 3 cells, but the header has 2"),
    ("a,label\n1,0\n2,\n", r"line 3, column 'label': the target is empty"),
    ("label\n1\n2\n", r"has 1 column"),
    ("", r"is empty"),
    ("a,label\n", r"no data rows"),
])
def test_csv_errors_name_the_file_and_place(tmp_path, text, pattern):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError, match=pattern) as info:
        load_dataset(f"csv:{path}")
    assert "bad.csv" in str(info.value)


def test_csv_option_errors(tmp_path):
    path = write(tmp_path / "t.csv", table())
    with pytest.raises(DataError, match=r"no column 'lable'.*did you mean 'label'.*columns: a, label, b"):
        load_dataset(f"csv:{path}?target=lable")
    with pytest.raises(DataError, match=r"bad option 'traget=a'; did you mean 'target'"):
        load_dataset(f"csv:{path}?traget=a")
    with pytest.raises(DataError, match=r"task is 'classification', 'binary' or 'regression'"):
        load_dataset(f"csv:{path}?task=ranking")
    with pytest.raises(DataError, match=r"regression target must be numeric"):
        load_dataset(f"csv:{write(tmp_path / 'w.csv', table(values=['x', 'y'] * 15))}?task=regression")


def test_csv_missing_file_and_missing_path(tmp_path):
    with pytest.raises(DataError, match=r"file not found: looked for .*nope\.csv"):
        load_dataset(f"csv:{tmp_path / 'nope.csv'}")
    with pytest.raises(DataError, match=r"needs an argument: write 'csv:PATH'"):
        load_dataset("csv:")
    path = tmp_path / "latin.csv"
    path.write_bytes("a,label\n\xe9,1\n1,0\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.csv: cannot be read as a CSV file .*save it as UTF-8"):
        load_dataset(f"csv:{path}")


# --- npz ----------------------------------------------------------------------------------

def test_npz_without_test_split_is_split_and_stratified(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(40 * 6, dtype=np.float64).reshape(40, 2, 3), y=np.arange(40) % 2)
    ds = load_dataset(f"npz:{path}")
    assert ds.x_train.shape == (32, 2, 3) and ds.x_test.shape == (8, 2, 3) and ds.x_train.dtype == np.float32
    assert ds.classes == ("0", "1") and np.bincount(ds.y_test).tolist() == [4, 4]


def test_npz_with_test_split_keeps_it(tmp_path):
    path = tmp_path / "d.npz"
    x, y = np.random.default_rng(0).random((10, 4)), np.array([3, 5] * 5)
    np.savez(path, x=x, y=y, x_test=x[:3], y_test=np.array([5, 5, 7]))
    ds = load_dataset(f"npz:{path}")
    np.testing.assert_allclose(ds.x_train, x.astype(np.float32))
    assert ds.classes == ("3", "5", "7")  # over train and test together
    assert ds.y_train.tolist() == [0, 1] * 5 and ds.y_test.tolist() == [1, 1, 2]


def test_npz_float_targets_are_regression_and_1d_x_is_one_feature(tmp_path):
    path = tmp_path / "r.npz"
    np.savez(path, x=np.arange(20.0), y=np.linspace(0, 1, 20))
    ds = load_dataset(f"npz:{path}")
    assert ds.task == "regression" and ds.input_shape == (1,) and ds.y_train.dtype == np.float32
    two = tmp_path / "two.npz"
    np.savez(two, x=np.ones((20, 3)), y=np.ones((20, 2)))
    assert load_dataset(f"npz:{two}").y_train.shape == (16, 2)


@pytest.mark.parametrize(("arrays", "pattern"), [
    ({"x": np.ones((4, 2))}, r"lacks array\(s\) 'y'; it holds 'x'"),
    ({"features": np.ones((4, 2)), "labels": np.ones(4)}, r"lacks array\(s\) 'x', 'y'; it holds 'features', 'labels'"),
    ({"x": np.ones((4, 2)), "y": np.ones(4), "x_test": np.ones((2, 2))}, r"lacks array\(s\) 'y_test'"),
    ({"x": np.ones((4, 2)), "y": np.arange(3)}, r"x has shape \(4, 2\) and y \(3,\)"),
    ({"x": np.ones((4, 2)), "y": np.arange(4), "x_test": np.ones((2, 3)), "y_test": np.arange(2)}, r"must match"),
    ({"x": np.array(["a", "b"]), "y": np.arange(2)}, r"array 'x' has dtype <U1; inputs must be numbers"),
    ({"x": np.array([[1.0], [np.nan]]), "y": np.arange(2)}, r"array 'x' holds nan at index \(1, 0\)"),
    ({"x": np.ones((4, 2)), "y": np.array([1.0, np.inf, 0, 0])}, r"y holds NaN or inf"),
    ({"x": np.ones((4, 2)), "y": np.ones((4, 3), dtype=int)}, r"class labels are one per sample"),
])
def test_npz_errors_name_the_file(tmp_path, arrays, pattern):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=pattern) as info:
        load_dataset(f"npz:{path}")
    assert "bad.npz" in str(info.value)


def test_npz_refuses_pickled_objects_and_non_npz_files(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object), y=np.arange(2))
    with pytest.raises(DataError, match=r"obj.npz: array 'x' cannot be read without pickle"):
        load_dataset(f"npz:{path}")
    text = write(tmp_path / "text.npz", "not a zip file")
    with pytest.raises(DataError, match=r"text.npz: cannot be read as an .npz file"):
        load_dataset(f"npz:{text}")
    single = tmp_path / "single.npy"
    np.save(single, np.ones(3))
    with pytest.raises(DataError, match=r"single.npy: holds a single array"):
        load_dataset(f"npz:{single}")
