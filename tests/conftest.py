"""Fixtures shared by every test folder."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on one intra-op thread: on a busy machine torch's thread pool makes them a hundred
    times slower (its threads wait for cores that other processes hold), and tiny layers gain
    nothing from it. Restored after the module; modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_mlp() -> dict:
    """A dense model for the 8x8 digits (2,410 parameters) with two quick epochs and a validation
    split: the trained run that the export, bench and shrink tests start from. Shared by every test
    that asks, so copy it before changing it."""
    return {
        "name": "tiny",
        "input": [1, 8, 8],
        "task": {"kind": "classification", "classes": 10},
        "layers": ["flatten", {"dense": {"units": 32, "activation": "relu"}},
                   {"dense": {"units": 10, "activation": "softmax"}}],
        "train": {"data": "digits", "epochs": 2, "batch_size": 64, "device": "cpu", "validation_split": 0.2},
    }
