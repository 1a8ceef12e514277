"""Padding masks for one forward pass, where the layers that mix time steps read them.

Layers pass one tensor to the next, and a spec's blocks (residual, parallel, repeat, graph nodes)
are plain torch modules, so a mask cannot travel beside its tensor without changing every module's
signature. It is decided statically instead: parsing marks each tensor that still has a long
input's time axis with that input's name (``TensorInfo.mask``), and the builder hands each module
that needs a mask a ``MaskReader`` naming the inputs of its own input tensors. The model runner
computes the masks from the long inputs once per forward (``ids == pad_id``) into the model's
``MaskScope``; the readers look them up there. A model without ``pad_id`` has no scope and does no
work, and the masks are tensor operations on the inputs, so tracing (ONNX export) records them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["MaskReader", "MaskScope", "holding", "padding_mask", "padding_of"]


def padding_mask(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(B, T) True where ``ids`` hold the pad id; a row of padding only (an empty sentence) keeps its
    first step, as attention over no key at all is NaN and would make the whole batch's loss NaN."""
    import torch

    pad = ids == pad_id
    return torch.cat([pad[:, :1] & ~pad.all(dim=1, keepdim=True), pad[:, 1:]], dim=1)


class MaskScope:
    """The padding masks of the forward pass under way: input name -> (batch, time) bool tensor,
    True where the input holds its pad id. Empty between passes, so no tensor outlives one."""

    def __init__(self, pad_ids: dict[str, int]) -> None:
        self.pad_ids = pad_ids
        self.masks: dict[str, torch.Tensor] = {}

    def of(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The padding masks of those of ``inputs`` that declare a pad id."""
        return {name: padding_mask(inputs[name], pad) for name, pad in self.pad_ids.items() if name in inputs}


@contextmanager
def holding(scope: MaskScope | None, masks: dict[str, torch.Tensor]) -> Iterator[None]:
    """``scope`` holds ``masks`` while the block runs part of a model, and none after it (no tensor
    of a pass outlives it); without a scope (no input declares a pad id) it does nothing. The
    model's forward runs under it, and so do the parts that decoding and export run alone."""
    if scope is None:
        yield
        return
    scope.masks = masks
    try:
        yield
    finally:
        scope.masks = {}


class MaskReader:
    """What a module holds: the scope and, for each tensor it reads, the input whose padding
    marks that tensor's time axis (None: that tensor is not masked)."""

    def __init__(self, scope: MaskScope, sources: tuple[str | None, ...]) -> None:
        self.scope = scope
        self.sources = sources

    def __call__(self, index: int = 0) -> torch.Tensor | None:
        """The padding mask of the module's ``index``-th input tensor, or None."""
        name = self.sources[index]
        return None if name is None else self.scope.masks.get(name)

    def __repr__(self) -> str:
        return f"MaskReader({', '.join(map(str, self.sources))})"


def padding_of(module: object, index: int = 0) -> torch.Tensor | None:
    """The padding mask a module built with ``reads_mask`` receives for its ``index``-th input."""
    reader = getattr(module, "padding", None)
    return None if reader is None else reader(index)
