"""The dataset registry and the Dataset object: names, suggestions, plugins, consistency checks."""

from __future__ import annotations

import numpy as np
import pytest

from archlab.data import DataError, Dataset, find_data_dir, list_datasets, load_dataset, register_dataset, registry
from archlab.exceptions import ArchlabError


def toy(name: str = "toy", classes=("a", "b"), task="classification", **arrays) -> Dataset:
    x = np.zeros((4, 3), np.float32)
    y = np.array([0, 1, 0, 1])
    fields = {"x_train": x, "y_train": y, "x_test": x[:2], "y_test": y[:2], **arrays}
    return Dataset(name, fields["x_train"], fields["y_train"], fields["x_test"], fields["y_test"], task, classes,
                   "memory")


def test_data_error_is_an_archlab_error_and_a_value_error():
    assert issubclass(DataError, ArchlabError) and issubclass(DataError, ValueError)


def test_list_datasets_has_the_built_in_sources():
    assert {"csv", "digits", "mnist", "npz"} <= set(list_datasets())
    assert list_datasets() == sorted(list_datasets())


def test_help_texts_name_every_built_in_source():
    # --help reads archlab._data_names without importing the data package: its list must be the registry's
    from archlab._data_names import BUILTIN_SOURCES, data_sources

    assert list(BUILTIN_SOURCES) == registry.usages()
    register_dataset("extra", override=True)(lambda request: None)
    try:  # once the data package is loaded, a source registered later is named too
        assert data_sources() == ("audio:DIR, criteo-sample, csv:PATH, digits, extra, fsdd, mnist, movielens-100k, "
                                  "multi30k, npy:DIR, npz:PATH or text:PATH[,PATH]")
    finally:
        registry.unregister("extra")


@pytest.mark.parametrize(("name", "pattern"), [
    ("mnsit", r"unknown dataset 'mnsit'; did you mean 'mnist'\? "
              r"\(known: audio:DIR, criteo-sample, csv:PATH, digits, fsdd, mnist, movielens-100k, multi30k, npy:DIR, "
              r"npz:PATH, text:PATH\[,PATH\]\)"),
    ("cifar10", r"unknown dataset 'cifar10' \(known: "),
    ("iris.csv", r"prefix the source: 'csv:iris.csv'"),
    ("digits:extra", r"the 'digits' source takes no argument"),
    ("digits?rate=1", r"the 'digits' source takes no '\?' options; write 'digits'"),
    ("npz", r"needs an argument: write 'npz:PATH'"),
    ("", r"a dataset name is a non-empty string"),
])
def test_bad_names(name, pattern):
    with pytest.raises(DataError, match=pattern):
        load_dataset(name)


def test_names_are_case_insensitive_and_find_data_dir_checks_names():
    assert load_dataset("Digits").num_classes == 10
    with pytest.raises(DataError, match="did you mean 'mnist'"):
        find_data_dir("minst")


def test_register_a_source_and_replace_it():
    @register_dataset("toy_source")
    def first(request):
        return toy(request.name)

    try:
        assert "toy_source" in list_datasets()
        assert load_dataset("toy_source").describe().startswith("toy_source: classification, input (3,)")
        with pytest.warns(UserWarning, match="registered before"):
            register_dataset("toy_source")(lambda request: "not a dataset")
        with pytest.raises(DataError, match="returned str, not a Dataset"):
            load_dataset("toy_source")
        with pytest.raises(DataError, match="lower case letters, digits"):
            register_dataset("Bad-Name")(first)
    finally:
        registry.unregister("toy_source")


def test_dataset_properties_describe_and_repr():
    ds = toy()
    assert ds.input_shape == (3,) and ds.num_classes == 2
    assert ds.describe() == "toy: classification, input (3,), 4 train / 2 test samples, 2 classes: a, b"
    many = toy(classes=tuple(f"c{i}" for i in range(100)))
    assert many.describe().endswith("100 classes: c0, c1, c2, c3, c4, ..., c98, c99")
    reg = toy(classes=None, task="regression", y_train=np.zeros((4, 2), np.float32),
              y_test=np.zeros((2, 2), np.float32))
    assert reg.num_classes is None and reg.describe().endswith("2 targets")
    assert "x_train" not in repr(ds) and "input_shape=(3,)" in repr(ds)


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"task": "ranking"}, "task is one of 'classification', 'binary', 'regression'"),
    ({"classes": None}, "a classification or binary dataset has class names"),
    ({"task": "regression"}, "a classification or binary dataset has class names"),
    ({"y_train": np.zeros(3)}, r"x_train \(4, 3\) and y_train \(3,\)"),
    ({"x_test": np.zeros((2, 5), np.float32)}, r"must have the same input shape"),
    ({"x_train": [[0.0]]}, "x_train must be a numpy array, got list"),
])
def test_dataset_refuses_inconsistent_arrays(kwargs, pattern):
    with pytest.raises(DataError, match=pattern):
        toy(**kwargs)
