"""digits: shapes, scaling, counts, and a split that is fixed, stratified and sklearn's own."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from archlab.data import load_dataset


def test_shapes_types_and_scaling():
    ds = load_dataset("digits")
    assert ds.x_train.shape == (1437, 1, 8, 8) and ds.x_test.shape == (360, 1, 8, 8)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    assert ds.classes == tuple("0123456789") and ds.num_classes == 10 and ds.input_shape == (1, 8, 8)
    assert "scikit-learn" in ds.source and ds.name == "digits"


def test_split_is_the_documented_one_and_identical_across_calls():
    a, b = load_dataset("digits"), load_dataset("digits")
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    # Oracle: the documented call, made directly.
    bunch = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(bunch.data / 16, bunch.target, test_size=0.2, random_state=0,
                                                        stratify=bunch.target)
    np.testing.assert_allclose(a.x_test.reshape(-1, 64), x_test, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(a.y_train, y_train)
    np.testing.assert_array_equal(a.y_test, y_test)


def test_split_is_stratified():
    ds = load_dataset("digits")
    total = np.bincount(np.concatenate([ds.y_train, ds.y_test]), minlength=10)
    in_test = np.bincount(ds.y_test, minlength=10)
    assert np.all(np.abs(in_test - 0.2 * total) <= 1)
