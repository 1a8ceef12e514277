"""Shared pieces of the selection tests: a tiny CNN spec and a small digits subset."""

from __future__ import annotations

import dataclasses

import pytest

TINY_CNN = {
    "name": "tiny-cnn",
    "input": [1, 8, 8],
    "task": {"kind": "classification", "classes": 10},
    "layers": [
        {"conv2d": {"filters": 2, "kernel_size": 3, "padding": "same", "activation": "relu"}},
        {"maxpool2d": {"pool_size": 2}},
        "flatten",
        {"dense": {"units": 10, "activation": "softmax"}},
    ],
    "train": {"epochs": 2, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.01}},
}


@pytest.fixture(autouse=True, scope="module")
def _every_test_on_one_thread(one_thread):
    """Every test in this folder runs on one thread (tests/conftest.py says why)."""


@pytest.fixture(scope="session")
def small_digits():
    """The first 300 digits training samples (about 30 per class)."""
    from archlab.data import load_dataset

    ds = load_dataset("digits")
    return dataclasses.replace(ds, x_train=ds.x_train[:300], y_train=ds.y_train[:300])


@pytest.fixture(scope="session")
def tiny_cnn() -> dict:
    return TINY_CNN
