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
