"""Elementwise activations, usable as layer items (``- relu``) and as ``activation:`` params."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from archlab.exceptions import ShapeError

from ._params import Finite
from ._registry import (
    PASSES_QUANTIZATION,
    Cost,
    InputRule,
    KeepsChannels,
    KerasStyle,
    LayerParams,
    LayerType,
    TensorInfo,
    register_layer,
)

if TYPE_CHECKING:
    from torch import nn

# torch is heavy and validate/schema never build: the modules live in _activation_modules,
# which each module() imports when called.

__all__ = ["ACTIVATION_FLOPS", "ActivationName", "activation_flops"]

ActivationName = Literal["relu", "gelu", "tanh", "sigmoid", "softmax", "silu", "leaky_relu", "linear"]

# FLOPs per element. One FLOP per element for every pointwise nonlinearity (the ptflops
# convention); softmax costs exp, sum and divide: 3 per element.
ACTIVATION_FLOPS: dict[str, int] = {
    "relu": 1,
    "gelu": 1,
    "tanh": 1,
    "sigmoid": 1,
    "softmax": 3,
    "silu": 1,
    "leaky_relu": 1,
    "linear": 0,
}


def activation_flops(name: str | None, elements: int) -> int:
    return ACTIVATION_FLOPS[name or "linear"] * elements


class _Elementwise(LayerType):
    accepts = InputRule(dtype="float")
    time_wise = True
    summary = "elementwise activation; shape unchanged"
    keeps_channels = KeepsChannels()
    quantization = PASSES_QUANTIZATION

    def output(self, p, x: TensorInfo) -> TensorInfo:
        return x

    def cost(self, p, x: TensorInfo, y: TensorInfo) -> Cost:
        return Cost(flops=activation_flops(self.name, x.numel))

    def module(self, p, x: TensorInfo) -> nn.Module:
        from ._activation_modules import make_activation

        return make_activation(self.name)

    def count_params(self, p, x) -> int:
        return 0


class GeluParams(LayerParams):
    approximate: Literal["none", "tanh"] = "none"


class LeakyReluParams(LayerParams):
    negative_slope: Finite = 0.01


for _name, _keras in (("relu", KerasStyle("ReLU")), ("tanh", None), ("sigmoid", None), ("silu", None)):
    register_layer(_name)(type(_name.title(), (_Elementwise,), {"keras": _keras}))


@register_layer("softmax")
class Softmax(_Elementwise):
    summary = "softmax over the last axis"
    keras = KerasStyle("Softmax")

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
        from torch import nn

        return nn.GELU(approximate=p.approximate)


@register_layer("leaky_relu")
class LeakyRelu(_Elementwise):
    Params = LeakyReluParams

    def module(self, p: LeakyReluParams, x: TensorInfo) -> nn.Module:
        from torch import nn

        return nn.LeakyReLU(p.negative_slope)
