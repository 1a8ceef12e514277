"""The torch side of convolution: the modules that ``conv``'s factories make."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Conv1d", "Conv2d"]


class _ConvMixin:
    """Adds Keras-style asymmetric 'same' padding and an activation to a torch convolution."""

    pad: tuple[int, ...] | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is not None:
            x = F.pad(x, self.pad)
        return self.activation(super().forward(x))


class Conv1d(_ConvMixin, nn.Conv1d):
    """y = f(W * x + b) over (batch, channels, length)."""


class Conv2d(_ConvMixin, nn.Conv2d):
    """y = f(W * x + b) over (batch, channels, height, width)."""
