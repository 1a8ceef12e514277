"""The torch side of the core layers: the modules that ``core``'s factories make."""

from __future__ import annotations

import math

import torch
from torch import nn

from ._activation_modules import make_activation

__all__ = ["Dense", "PositionalEncoding", "Reshape", "Transpose"]


class Dense(nn.Linear):
    """The seed's dense layer, y = f(W x + b), over the last axis.

    Input shape: (batch, features) or (batch, time, features).
    Output shape: (batch, units) or (batch, time, units).
    """

    def __init__(self, in_features: int, units: int, activation: str | None = None, bias: bool = True) -> None:
        super().__init__(in_features, units, bias=bias)
        self.activation = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(super().forward(x))


class Reshape(nn.Module):
    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)  # (B, *shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class Transpose(nn.Module):
    """Swaps two axes of each sample (axes counted without the batch)."""

    def __init__(self, first: int, second: int) -> None:
        super().__init__()
        self.first, self.second = first, second

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(self.first + 1, self.second + 1)  # (B, ..., A, ..., C, ...) -> (B, ..., C, ..., A, ...)

    def extra_repr(self) -> str:
        return f"first={self.first}, second={self.second}"


class PositionalEncoding(nn.Module):
    """Adds a position vector to each step of a (batch, time, features) input."""

    def __init__(self, max_len: int, dim: int, kind: str) -> None:
        super().__init__()
        if kind == "learned":
            self.weight = nn.Parameter(torch.empty(max_len, dim))
            nn.init.normal_(self.weight, std=0.02)
        else:
            # Vaswani et al. (2017); recomputable, so not kept in the state dict.
            position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
            freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
            table = torch.zeros(max_len, dim)
            table[:, 0::2] = torch.sin(position * freq)
            table[:, 1::2] = torch.cos(position * freq[: dim // 2])
            self.register_buffer("weight", table, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight[: x.shape[1]]  # (B, T, D) + (T, D)
