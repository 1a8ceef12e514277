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
    memory. Indexed by a whole batch of row indices, so one read per batch and input.

    The rows are ``start .. start + len(y) - 1`` of each file: a data set's own memory-mapped
    files (``npy:DIR``) are read in place, its validation rows cut off by the length. ``shapes``
    and ``dtypes`` (per input) give the rows as the model takes them: a file of shape (N,) read as
    (N, 1), integer ids widened to int64; ``reason`` says why the split streams.
    """

    def __init__(self, paths: Path | dict[str, Path], y: torch.Tensor, *, start: int = 0,
                 shapes: tuple[int, ...] | dict[str, tuple[int, ...]] | None = None,
                 dtypes: np.dtype | dict[str, np.dtype] | None = None, reason: str = "") -> None:
        self.paths, self.y = map_inputs(Path, paths), y.cpu()
        self.named = is_named(paths)
        self.start, self.reason = start, reason
        self._x: Any = None
        files = map_inputs(lambda p: np.load(p, mmap_mode="r"), self.paths)  # headers only: nothing is read
        self.shapes = map_inputs(lambda a: tuple(a.shape[1:]), files) if shapes is None else shapes
        self.dtypes = map_inputs(lambda a: a.dtype, files) if dtypes is None else dtypes
        self.shape = (len(self.y), *first_input(self.shapes))

    @property
    def nbytes(self) -> int:
        """Bytes the rows take as the model reads them (``input_bytes``; ``choose_loading``)."""
        sizes = map_inputs(lambda shape: int(np.prod(shape, dtype=np.int64)), self.shapes)
        return sum(len(self.y) * size * np.dtype(dtype).itemsize
                   for size, dtype in zip(as_named(sizes).values(), as_named(self.dtypes).values(), strict=True))

    def __len__(self) -> int:
        return self.shape[0]

    def dim(self) -> int:
        return len(self.shape)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_x": None}  # each worker maps the files itself

    def __getitem__(self, index: torch.Tensor) -> tuple[Any, torch.Tensor]:
        if self._x is None:
            self._x = map_inputs(lambda p: np.load(p, mmap_mode="r"), self.paths)
        rows = index.numpy() + self.start
        shapes, dtypes = as_named(self.shapes), as_named(self.dtypes)
        batch = {name: torch.from_numpy(np.ascontiguousarray(array[rows].reshape(len(rows), *shapes[name]),
                                                             dtype=dtypes[name]))
                 for name, array in as_named(self._x).items()}
        return (batch if self.named else batch[SINGLE]), self.y[index]


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
