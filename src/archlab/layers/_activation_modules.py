"""The torch side of the activations: the module each ``activation:`` name makes."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["make_activation"]

_FACTORIES: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softmax": lambda: nn.Softmax(dim=-1),
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
    "linear": nn.Identity,
}


def make_activation(name: str | None) -> nn.Module:
    """The module for an ``activation:`` value; None and 'linear' give Identity."""
    return _FACTORIES[name or "linear"]()
