"""Fixtures for the dataset tests: no test reads the real cache, sees a stray ARCHLAB_DATA, or
touches the network; tiny MNIST-format folders are written on demand."""

from __future__ import annotations

import gzip
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import platformdirs
import pytest

#: The repository's sibling folder with the real MNIST copy (see shared/data/README.md).
SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the user cache into tmp_path, unset ARCHLAB_DATA and make every download fail."""
    cache = tmp_path / "user-cache"
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda *args, **kwargs: str(cache))
    monkeypatch.delenv("ARCHLAB_DATA", raising=False)

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    return cache


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real MNIST copy's parent folder, or a skip when this checkout has none beside it."""
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"no real MNIST copy at {SHARED_DATA / 'mnist'} (the repository's sibling shared/data)")
    return SHARED_DATA.resolve()


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """An IDX file: big-endian magic (0x0803 for 3-D, 0x0801 for 1-D uint8), dims, then the bytes."""
    array = np.asarray(array, dtype=np.uint8)
    magic = (0x0800 | array.ndim) if magic is None else magic
    return magic.to_bytes(4, "big") + np.array(array.shape, dtype=">u4").tobytes() + array.tobytes()


def tiny_mnist(folder: Path, *, n_train: int = 20, n_test: int = 10, gz: bool = True, seed: int = 0) -> dict:
    """Write four small, well-formed MNIST files into ``folder``; return the arrays written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        arrays[f"{split}-images-idx3-ubyte"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}-labels-idx1-ubyte"] = np.arange(n, dtype=np.uint8) % 10
    for stem, array in arrays.items():
        blob = idx_bytes(array)
        (folder / (f"{stem}.gz" if gz else stem)).write_bytes(gzip.compress(blob) if gz else blob)
    return arrays


@pytest.fixture
def make_mnist() -> Callable[..., dict]:
    return tiny_mnist


@pytest.fixture
def idx() -> Callable[..., bytes]:
    return idx_bytes
