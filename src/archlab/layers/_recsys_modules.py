"""The torch side of the recommendation layers: the modules that ``recsys``'s factories make."""

from __future__ import annotations

import torch
from torch import nn

from ._masking import MaskReader, padding_of

__all__ = ["Bias", "FactorizationMachine", "Reduce"]


class FactorizationMachine(nn.Module):
    """Rendle's (2010) second-order interactions of field embeddings, in O(F k):
    sum over pairs f < g of <v_f, v_g> = 0.5 * sum_k((sum_f v_fk)^2 - sum_f v_fk^2).

    Input shape: (batch, fields, factors).
    Output shape: (batch, 1).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        square_of_sum = x.sum(dim=1).square()  # (B, k)
        sum_of_squares = x.square().sum(dim=1)  # (B, k)
        return 0.5 * (square_of_sum - sum_of_squares).sum(dim=1, keepdim=True)  # (B, 1)


class Reduce(nn.Module):
    """Sum, mean or max over one axis of each sample; a vector reduces to (batch, 1)."""

    padding: MaskReader | None = None  # set by the builder for a spec with pad_id (_masking)

    def __init__(self, op: str, axis: int) -> None:
        super().__init__()
        self.op, self.axis = op, axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = padding_of(self) if self.axis == 0 else None  # pooling over time: padded steps left out
        if pad is not None:
            return self._over_real_steps(x, pad)
        keep = x.dim() == 2  # (B, n) -> (B, 1): one number per sample keeps a feature axis
        if self.op == "max":
            return x.amax(dim=self.axis + 1, keepdim=keep)
        return getattr(x, self.op)(dim=self.axis + 1, keepdim=keep)

    def _over_real_steps(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        pad = pad.reshape(*pad.shape, *([1] * (x.dim() - 2)))  # (B, T, 1, ...)
        if self.op == "max":
            return x.masked_fill(pad, float("-inf")).amax(dim=1, keepdim=x.dim() == 2)
        keep = x.dim() == 2
        total = x.masked_fill(pad, 0.0).sum(dim=1, keepdim=keep)
        return total if self.op == "sum" else total / (~pad).sum(dim=1, keepdim=keep).clamp(min=1)

    def extra_repr(self) -> str:
        return f"op={self.op}, axis={self.axis}"


class Bias(nn.Module):
    """y = x + b, one learned offset per feature of the last axis, starting at zero.

    Input shape: (batch, ..., features).
    Output shape: as the input.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias
