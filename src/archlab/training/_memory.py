"""Will a training fit in memory? The analysis's estimate against the device's free memory, checked
before a model is built, so a spec that cannot fit is refused with numbers instead of ending in an
allocator's error (or a C++ stack) minutes later."""

from __future__ import annotations

from typing import Any

import torch

from archlab.analysis import analyze, available_memory
from archlab.exceptions import MemoryLimitError

from ._recipe import Recipe

__all__ = ["check_memory", "training_memory"]

GIB = 1024 ** 3


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
            needed=parts["total"], available=free)
    return parts
