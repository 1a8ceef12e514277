"""The streaming data path: a training split kept on disk as a memory-mapped .npy and read batch
by batch by a DataLoader (optionally with worker processes), for data that does not fit in memory.

The batches are the in-memory path's: the Engine draws the epoch's order from its own shuffle
generator in the main process and the loader reads exactly those rows, so both paths train on the
same batches in the same order, and a resume (which restores that generator) is bit-identical.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from archlab._inputs import SINGLE, as_named, first_input, is_named, map_inputs

__all__ = ["MappedSplit", "STREAM_FRACTION", "choose_loading", "spill"]

#: Auto streams a training split larger than this fraction of the available memory: the rest is
#: left to the model, the optimizer state and the evaluation splits.
STREAM_FRACTION = 0.5


def choose_loading(mode: str, nbytes: int, available: int | None) -> tuple[str, str]:
    """``memory`` or ``stream`` for ``train.data_loading`` = ``mode``, and why."""
    if mode != "auto":
        return mode, f"train.data_loading is {mode}"
    if available is None:
        return "memory", "auto: the available memory is unknown"
    share = f"{STREAM_FRACTION:g} of the available memory ({available:,} bytes)"
    if nbytes > STREAM_FRACTION * available:
        return "stream", f"auto: the training split ({nbytes:,} bytes) is over {share}"
    return "memory", f"auto: the training split ({nbytes:,} bytes) fits in {share}"


class MappedSplit(torch.utils.data.Dataset):
    """Training rows in .npy files (one per named input, or one), opened memory-mapped in each
    process that reads them (a memmap is not pickled to workers), with their targets (small) in
    memory. Indexed by a whole batch of row indices, so one read per batch and input."""

    def __init__(self, paths: Path | dict[str, Path], y: torch.Tensor) -> None:
        self.paths, self.y = map_inputs(Path, paths), y.cpu()
        self.named = is_named(paths)
        self._x: Any = None
        self.shape = tuple(np.load(first_input(self.paths), mmap_mode="r").shape)

    def __len__(self) -> int:
        return self.shape[0]

    def dim(self) -> int:
        return len(self.shape)

    def __getitem__(self, index: torch.Tensor) -> tuple[Any, torch.Tensor]:
        if self._x is None:
            self._x = map_inputs(lambda p: np.load(p, mmap_mode="r"), self.paths)
        rows = index.numpy()
        return map_inputs(lambda a: torch.from_numpy(np.ascontiguousarray(a[rows])), self._x), self.y[index]


class EpochBatches(torch.utils.data.Sampler):
    """The current epoch's batches of row indices; the Engine sets ``order`` before each epoch.
    Iterated in the main process, so persistent workers read every epoch's new order."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size, self.order = batch_size, torch.empty(0, dtype=torch.long)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.order.split(self.batch_size))

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)


def loader(split: MappedSplit, batches: EpochBatches, workers: int, pin: bool) -> torch.utils.data.DataLoader:
    """A loader that yields whole batches (``batch_size=None``: the sampler's items are batches).
    Its own generator: a DataLoader draws its workers' base seed each epoch, from the global RNG
    otherwise, which would shift dropout's draws away from the in-memory path's (and the workers
    draw nothing random)."""
    return torch.utils.data.DataLoader(split, sampler=batches, batch_size=None, num_workers=workers,
                                       persistent_workers=workers > 0, pin_memory=pin,
                                       generator=torch.Generator().manual_seed(0))


def spill(x: Any, y: torch.Tensor, folder: Path | None) -> tuple[MappedSplit, Path]:
    """Write the training rows (one tensor, or named tensors) once as .npy files in a new folder
    under ``folder`` (the run directory; the system's temporary folder when None) and return them
    memory-mapped, with the folder to remove after training."""
    where = Path(tempfile.mkdtemp(prefix="archlab-stream-", dir=folder))
    try:
        paths = {}
        for name, tensor in as_named(x).items():
            paths[name] = where / f"x_train-{name}.npy"
            np.save(paths[name], tensor.cpu().numpy())
        return MappedSplit(paths if is_named(x) else paths[SINGLE], y), where
    except BaseException:
        shutil.rmtree(where, ignore_errors=True)
        raise
