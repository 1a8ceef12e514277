"""Shared pieces of the training tests, as fixtures (the tests import nothing from here): tiny
specs, the digits data set loaded once, and helpers that compare runs (metrics rows without their
timing columns, safetensors files tensor by tensor)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

#: Columns of metrics.jsonl that measure the machine, not the training.
TIMING = ("seconds", "samples_per_s")

#: A dense model for the 8x8 digits: fast enough to train for a few epochs in a test.
TINY = {
    "name": "tiny",
    "input": [1, 8, 8],
    "task": {"kind": "classification", "classes": 10},
    "layers": [
        "flatten",
        {"dense": {"units": 32, "activation": "relu"}},
        {"dense": {"units": 10, "activation": "softmax"}},
    ],
}

#: A small CNN with dropout (the global RNG) for determinism and resume tests.
SMALL_CNN = {
    "name": "small-cnn",
    "input": [1, 8, 8],
    "task": {"kind": "classification", "classes": 10},
    "layers": [
        {"conv2d": {"filters": 8, "kernel_size": 3, "padding": "same", "activation": "relu"}},
        {"maxpool2d": {"pool_size": 2}},
        "flatten",
        {"dropout": {"rate": 0.25}},
        {"dense": {"units": 32, "activation": "relu"}},
        {"dense": {"units": 10, "activation": "softmax"}},
    ],
}


def spec_with(base: dict, **train: object) -> dict:
    """A copy of ``base`` with a ``train:`` section."""
    spec = copy.deepcopy(base)
    spec["train"] = dict(train)
    return spec


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def assert_same_tensors(a: Path, b: Path) -> None:
    """Two safetensors files hold the same keys with bit-identical tensors."""
    left, right = load_file(str(a)), load_file(str(b))
    assert sorted(left) == sorted(right)
    for key in left:
        assert torch.equal(left[key], right[key]), f"{key} differs between {a} and {b}"


def model_weights(engine) -> dict[str, torch.Tensor]:
    """A copy of an Engine's model weights, to compare runs."""
    return {k: v.detach().clone() for k, v in engine.model.state_dict().items()}


def assert_resume_is_exact(tmp_path: Path, make_engine, x, y) -> None:
    """Two epochs straight and one epoch then ``fit(resume=True)`` to two end with bit-identical
    checkpoints; ``make_engine(run_dir, epochs)`` builds the same Engine each time."""
    (tmp_path / "whole").mkdir()
    (tmp_path / "split").mkdir()
    make_engine(tmp_path / "whole", 2).fit(x, y)
    make_engine(tmp_path / "split", 1).fit(x, y)
    make_engine(tmp_path / "split", 2).fit(x, y, resume=True)
    assert_same_tensors(tmp_path / "whole" / "last.safetensors", tmp_path / "split" / "last.safetensors")


class Helpers:
    tiny = TINY
    small_cnn = SMALL_CNN
    timing = TIMING
    spec_with = staticmethod(spec_with)
    without_timing = staticmethod(without_timing)
    assert_same_tensors = staticmethod(assert_same_tensors)
    model_weights = staticmethod(model_weights)
    assert_resume_is_exact = staticmethod(assert_resume_is_exact)


@pytest.fixture(autouse=True, scope="module")
def _every_test_on_one_thread(one_thread):
    """Every test in this folder runs on one thread (tests/conftest.py says why)."""


@pytest.fixture(scope="session")
def helpers() -> type[Helpers]:
    return Helpers


@pytest.fixture(scope="session")
def digits():
    from archlab.data import load_dataset

    return load_dataset("digits")
