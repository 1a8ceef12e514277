"""Will a training fit in memory? The analysis's estimate against the device's free memory, checked
before a model is built, so a spec that cannot fit is refused with numbers instead of ending in an
allocator's error (or a C++ stack) minutes later."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from archlab.analysis import analyze
from archlab.exceptions import SpecError

from ._recipe import Recipe

__all__ = ["MemoryLimitError", "available_memory", "check_memory", "training_memory"]

GIB = 1024 ** 3


class MemoryLimitError(SpecError):
    """A training's estimated memory is more than its device has available.

    Attributes:
        needed, available: bytes.
    """

    def __init__(self, message: str, needed: int, available: int) -> None:
        super().__init__(message)
        self.needed, self.available = needed, available


def available_memory(device: torch.device) -> int | None:
    """Bytes a new allocation can take on ``device`` now, or None where that cannot be known (MPS,
    a CPU without /proc/meminfo or psutil)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    try:  # MemAvailable: what the kernel can give without swapping (page cache included)
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the file counts kB
    except OSError:
        pass
    try:
        import psutil  # not a dependency: macOS and Windows have no /proc
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def training_memory(spec: Any, recipe: Recipe) -> dict[str, int]:
    """The analysis's training-memory estimate at the recipe's batch size, with the optimizer's
    share for the recipe's optimizer (the analysis counts Adam's two moments; SGD keeps one buffer
    with momentum, none without)."""
    parts = dict(analyze(spec, batch_size=recipe.batch_size).training_memory_bytes)
    cfg = recipe.optimizer
    if cfg.name == "sgd":
        parts["optimizer"] = parts["optimizer"] // 2 if cfg.momentum > 0 else 0
    parts["total"] = parts["weights"] + parts["gradients"] + parts["optimizer"] + parts["activations"]
    return parts


def check_memory(spec: Any, recipe: Recipe, device: torch.device, *, what: str = "training") -> dict[str, int]:
    """Refuse a training whose estimate exceeds the device's available memory.

    Args:
        spec: a Spec, dict, path or ParsedSpec (nothing is allocated).
        recipe: its batch size and optimizer count.
        device: where it would train.
        what: the name of the job in the message ("training", "fine-tuning").

    Returns:
        The estimate (bytes per part and ``total``).

    Raises:
        MemoryLimitError: with the numbers and the ways out.
    """
    parts = training_memory(spec, recipe)
    free = available_memory(device)
    if free is not None and parts["total"] > free:
        optimizer = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}[recipe.optimizer.name]
        raise MemoryLimitError(
            f"{what} needs about {parts['total'] / GIB:.1f} GiB (weights {parts['weights'] / GIB:.1f}, gradients "
            f"{parts['gradients'] / GIB:.1f}, {optimizer} {parts['optimizer'] / GIB:.1f}, activations "
            f"{parts['activations'] / GIB:.1f} at batch {recipe.batch_size}) but {device} has {free / GIB:.1f} GiB "
            "available: lower --batch-size, use fewer or smaller layers, or another --device",
            parts["total"], free)
    return parts
