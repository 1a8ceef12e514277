"""Elementwise activations, usable as layer items (``- relu``) and as ``activation:`` params."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import nn

from archlab.exceptions import ShapeError

from ._params import Finite
from ._registry import Cost, InputRule, LayerParams, LayerType, TensorInfo, register_layer

__all__ = ["ACTIVATIONS", "ActivationName", "activation_flops", "make_activation"]

ActivationName = Literal["relu", "gelu", "tanh", "sigmoid", "softmax", "silu", "leaky_relu", "linear"]

# name -> (module factory, FLOPs per element). One FLOP per element for every pointwise
# nonlinearity (the ptflops convention); softmax costs exp, sum and divide: 3 per element.
ACTIVATIONS: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "relu": (nn.ReLU, 1),
    "gelu": (nn.GELU, 1),
    "tanh": (nn.Tanh, 1),
    "sigmoid": (nn.Sigmoid, 1),
    "softmax": (lambda: nn.Softmax(dim=-1), 3),
    "silu": (nn.SiLU, 1),
    "leaky_relu": (nn.LeakyReLU, 1),
    "linear": (nn.Identity, 0),
}


def make_activation(name: str | None) -> nn.Module:
    """The module for an ``activation:`` value; None and 'linear' give Identity."""
    return ACTIVATIONS[name or "linear"][0]()


def activation_flops(name: str | None, elements: int) -> int:
    return ACTIVATIONS[name or "linear"][1] * elements


class _Elementwise(LayerType):
    accepts = InputRule(dtype="float")
    summary = "elementwise activation; shape unchanged"

    def output(self, p, x: TensorInfo) -> TensorInfo:
        return x

    def cost(self, p, x: TensorInfo, y: TensorInfo) -> Cost:
        return Cost(flops=activation_flops(self.name, x.numel))

    def module(self, p, x: TensorInfo) -> nn.Module:
        return make_activation(self.name)

    def count_params(self, p, x) -> int:
        return 0


class GeluParams(LayerParams):
    approximate: Literal["none", "tanh"] = "none"


class LeakyReluParams(LayerParams):
    negative_slope: Finite = 0.01


for _name in ("relu", "tanh", "sigmoid", "silu"):
    register_layer(_name)(type(_name.title(), (_Elementwise,), {}))


@register_layer("softmax")
class Softmax(_Elementwise):
    summary = "softmax over the last axis"

    def output(self, p, x: TensorInfo) -> TensorInfo:
        if x.rank == 0:  # the last axis of a (batch,) tensor is the batch: it would mix samples
            raise ShapeError("needs at least one axis but receives a scalar (): add 'reshape: {shape: [1]}' "
                             "before it")
        return x


@register_layer("gelu")
class Gelu(_Elementwise):
    Params = GeluParams
    summary = "GELU; approximate: tanh gives GPT-2's variant"

    def module(self, p: GeluParams, x: TensorInfo) -> nn.Module:
        return nn.GELU(approximate=p.approximate)


@register_layer("leaky_relu")
class LeakyRelu(_Elementwise):
    Params = LeakyReluParams

    def module(self, p: LeakyReluParams, x: TensorInfo) -> nn.Module:
        return nn.LeakyReLU(p.negative_slope)
