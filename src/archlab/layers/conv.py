"""Convolution and pooling over 1-D (channels, length) and 2-D (channels, height, width) inputs."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pydantic import model_validator

from archlab._lazy import lazy_attributes
from archlab.exceptions import ShapeError, SpecError

from ._activations import ActivationName, activation_flops
from ._params import Padding, PosInt, Size, as_tuple
from ._registry import (
    PASSES_QUANTIZATION,
    Cost,
    InputRule,
    KeepsChannels,
    KerasStyle,
    LayerParams,
    LayerType,
    Quantization,
    StructuredPruning,
    TensorInfo,
    fmt_shape,
    register_layer,
)

if TYPE_CHECKING:
    from torch import nn

    from ._conv_modules import Conv1d, Conv2d

# torch is heavy and validate/schema never build: the modules live in _conv_modules, which each
# module() imports when called; archlab.layers.conv.Conv2d still reaches them.
__getattr__, __dir__ = lazy_attributes(__name__, dict.fromkeys(("Conv1d", "Conv2d"), "archlab.layers._conv_modules"))

__all__ = ["Conv1d", "Conv2d", "same_padding"]

_RANK_DESC = {1: "(channels, length)", 2: "(channels, height, width)"}
_HINTS = {
    1: {1: "add 'reshape: {shape: [1, -1]}' before it to give it one channel",
        3: "use conv2d for images, or add 'reshape' to (channels, length)"},
    2: {1: "add 'reshape: {shape: [C, H, W]}' before it",
        2: "add 'reshape: {shape: [1, H, W]}' before it, or use conv1d for sequences"},
}


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """(before, after) padding that gives ceil(size / stride) outputs, extra on the after side
    as Keras/TensorFlow do; PyTorch's padding='same' refuses strides > 1."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def _out_size(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    return (size + pad - dilation * (kernel - 1) - 1) // stride + 1


class ConvParams(LayerParams):
    filters: PosInt
    kernel_size: Size
    strides: Size = 1
    padding: Padding = "valid"
    dilation_rate: Size = 1
    groups: PosInt = 1
    activation: ActivationName | None = None
    use_bias: bool = True

    @model_validator(mode="after")
    def _groups_divide_filters(self) -> ConvParams:
        if self.filters % self.groups:
            raise ValueError(f"filters ({self.filters}) must be a multiple of groups ({self.groups})")
        return self


class _ConvLayer(LayerType):
    Params = ConvParams
    dims = 2
    # ORT's ConvInteger made a small digits CNN 8x slower than fp32 (docs in deploy/_quantize.py)
    quantization = Quantization(static=True, dynamic="ORT's ConvInteger is slower than float convolution")

    @property
    def accepts(self) -> InputRule:  # type: ignore[override]
        return InputRule(ranks={self.dims + 1: _RANK_DESC[self.dims]}, hints=_HINTS[self.dims])

    def _geometry(self, p: ConvParams, x: TensorInfo):
        k = as_tuple(p.kernel_size, self.dims, "kernel_size")
        s = as_tuple(p.strides, self.dims, "strides")
        d = as_tuple(p.dilation_rate, self.dims, "dilation_rate")
        spatial = x.shape[1:]
        if p.padding == "same":
            pads = [same_padding(n, ki, si, di) for n, ki, si, di in zip(spatial, k, s, d, strict=True)]
        elif p.padding == "valid":
            pads = [(0, 0)] * self.dims
        else:
            pads = [(q, q) for q in as_tuple(p.padding, self.dims, "padding")]
        return k, s, d, pads

    def output(self, p: ConvParams, x: TensorInfo) -> TensorInfo:
        if x.shape[0] % p.groups:
            raise ShapeError(f"receives {x.shape[0]} channels, which groups={p.groups} does not divide")
        k, s, d, pads = self._geometry(p, x)
        out = [_out_size(n, ki, si, sum(pi), di) for n, ki, si, di, pi in zip(x.shape[1:], k, s, d, pads, strict=True)]
        if min(out) < 1:
            raise ShapeError(f"receives {fmt_shape(x.shape)}, smaller than its kernel {k} "
                             f"(dilation {d}): use padding: same, a smaller kernel, or less downsampling before it")
        return TensorInfo((p.filters, *out))

    def cost(self, p: ConvParams, x: TensorInfo, y: TensorInfo) -> Cost:
        k = as_tuple(p.kernel_size, self.dims, "kernel_size")
        macs = y.numel * (x.shape[0] // p.groups) * math.prod(k)
        return Cost(macs, 2 * macs + activation_flops(p.activation, y.numel))

    def count_params(self, p: ConvParams, x: TensorInfo) -> int:
        k = as_tuple(p.kernel_size, self.dims, "kernel_size")
        return p.filters * (x.shape[0] // p.groups) * math.prod(k) + (p.filters if p.use_bias else 0)

    def module(self, p: ConvParams, x: TensorInfo) -> nn.Module:
        from ._activation_modules import make_activation
        from ._conv_modules import Conv1d, Conv2d

        k, s, d, pads = self._geometry(p, x)
        symmetric = all(a == b for a, b in pads)
        cls = Conv2d if self.dims == 2 else Conv1d
        conv = cls(x.shape[0], p.filters, k, stride=s, padding=tuple(a for a, _ in pads) if symmetric else 0,
                   dilation=d, groups=p.groups, bias=p.use_bias)
        # F.pad takes the last axis first: (left, right, top, bottom)
        conv.pad = None if symmetric else tuple(v for pair in reversed(pads) for v in pair)
        conv.activation = make_activation(p.activation)
        return conv


@register_layer("conv1d")
class Conv1dLayer(_ConvLayer):
    dims = 1
    summary = "1-D convolution over (channels, length)"
    keras = KerasStyle("Conv1D", ("filters", "kernel_size"))


@register_layer("conv2d")
class Conv2dLayer(_ConvLayer):
    dims = 2
    summary = "2-D convolution over (channels, height, width)"
    structured = StructuredPruning(width="filters", input_axis=1)  # weight: (out, in / groups, kh, kw)
    keras = KerasStyle("Conv2D", ("filters", "kernel_size"))


class PoolParams(LayerParams):
    pool_size: Size
    strides: Size | None = None
    padding: Size | int = 0


class _PoolLayer(LayerType):
    Params = PoolParams
    dims = 2
    op = "max"
    keeps_channels = KeepsChannels()
    quantization = PASSES_QUANTIZATION

    @property
    def accepts(self) -> InputRule:  # type: ignore[override]
        return InputRule(ranks={self.dims + 1: _RANK_DESC[self.dims]}, hints=_HINTS[self.dims])

    def _geometry(self, p: PoolParams):
        k = as_tuple(p.pool_size, self.dims, "pool_size")
        s = as_tuple(p.strides, self.dims, "strides") if p.strides is not None else k
        pad = as_tuple(p.padding, self.dims, "padding")
        if any(2 * q > ki for q, ki in zip(pad, k, strict=True)):
            raise SpecError(f"padding {list(pad)} must be at most half of pool_size {list(k)}", "padding")
        return k, s, pad

    def output(self, p: PoolParams, x: TensorInfo) -> TensorInfo:
        k, s, pad = self._geometry(p)
        out = [_out_size(n, ki, si, 2 * q) for n, ki, si, q in zip(x.shape[1:], k, s, pad, strict=True)]
        if min(out) < 1:
            raise ShapeError(f"receives {fmt_shape(x.shape)}, smaller than pool_size {list(k)}: "
                             "remove a pooling step before it or use a smaller pool_size")
        return TensorInfo((x.shape[0], *out))

    def cost(self, p: PoolParams, x: TensorInfo, y: TensorInfo) -> Cost:
        k, _, _ = self._geometry(p)
        return Cost(flops=y.numel * math.prod(k))  # one compare or add per window element

    def count_params(self, p, x) -> int:
        return 0

    def module(self, p: PoolParams, x: TensorInfo) -> nn.Module:
        from torch import nn

        k, s, pad = self._geometry(p)
        cls = {("max", 1): nn.MaxPool1d, ("max", 2): nn.MaxPool2d,
               ("avg", 1): nn.AvgPool1d, ("avg", 2): nn.AvgPool2d}[self.op, self.dims]
        return cls(k, s, pad)


class _GlobalPoolLayer(LayerType):
    dims = 2
    op = "avg"
    keeps_channels = KeepsChannels()
    quantization = PASSES_QUANTIZATION

    @property
    def accepts(self) -> InputRule:  # type: ignore[override]
        return InputRule(ranks={self.dims + 1: _RANK_DESC[self.dims]}, hints=_HINTS[self.dims])

    def output(self, p, x: TensorInfo) -> TensorInfo:
        return TensorInfo((x.shape[0],))

    def cost(self, p, x: TensorInfo, y: TensorInfo) -> Cost:
        return Cost(flops=x.numel)

    def count_params(self, p, x) -> int:
        return 0

    def module(self, p, x: TensorInfo) -> nn.Module:
        from torch import nn

        cls = {("max", 1): nn.AdaptiveMaxPool1d, ("max", 2): nn.AdaptiveMaxPool2d,
               ("avg", 1): nn.AdaptiveAvgPool1d, ("avg", 2): nn.AdaptiveAvgPool2d}[self.op, self.dims]
        return nn.Sequential(cls(1), nn.Flatten())


_KERAS_OP = {"max": "Max", "avg": "Average"}
for _op in ("max", "avg"):
    for _dims in (1, 2):
        register_layer(f"{_op}pool{_dims}d")(type(f"{_op.title()}Pool{_dims}dLayer", (_PoolLayer,), {
            "dims": _dims, "op": _op, "summary": f"{_op} pooling over {_RANK_DESC[_dims]}",
            "keras": KerasStyle(f"{_KERAS_OP[_op]}Pooling{_dims}D", ("pool_size", "strides"), {"pool_size": 2},
                                aliases=(f"{_op.title()}Pool{_dims}D",))}))
        register_layer(f"global_{_op}pool{_dims}d")(type(f"Global{_op.title()}Pool{_dims}dLayer", (_GlobalPoolLayer,), {
            "dims": _dims, "op": _op, "summary": f"global {_op} pooling: {_RANK_DESC[_dims]} -> (channels,)",
            "keras": KerasStyle(f"Global{_KERAS_OP[_op]}Pooling{_dims}D")}))
