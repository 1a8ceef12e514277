"""The torch side of the large-model blocks: the modules that ``llm``'s factories make."""

from __future__ import annotations

import torch
from torch import nn

from ._activation_modules import make_activation

__all__ = ["GatedMLP"]


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)); the submodules are named as Hugging Face's LLaMA names them
    (gate_proj, up_proj, down_proj without the suffix), so weights map one to one.

    Input shape: (batch, ..., dim). Output shape: (batch, ..., dim).
    """

    def __init__(self, dim: int, ff_dim: int, activation: str, bias: bool) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, ff_dim, bias=bias)
        self.up = nn.Linear(dim, ff_dim, bias=bias)
        self.down = nn.Linear(ff_dim, dim, bias=bias)
        self.activation = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.activation(self.gate(x)) * self.up(x))  # (B, ..., ff) -> (B, ..., D)
