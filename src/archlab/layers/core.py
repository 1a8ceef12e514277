"""Core layers: dense, flatten, reshape, transpose, dropout, spatial dropout, normalization, embeddings."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from archlab._lazy import lazy_attributes
from archlab.exceptions import ShapeError

from ._activations import ActivationName, activation_flops
from ._params import Epsilon, Momentum, PosInt, Rate
from ._registry import (
    PASSES_QUANTIZATION,
    SEQUENCE_STATIC,
    Cost,
    InputRule,
    KeepsChannels,
    KerasStyle,
    LayerParams,
    LayerType,
    NoParams,
    Quantization,
    StructuredPruning,
    TensorInfo,
    fmt_shape,
    register_layer,
)

if TYPE_CHECKING:
    from torch import nn

    from ._core_modules import Dense, PositionalEncoding

# torch is heavy and validate/schema never build: the modules live in _core_modules, which each
# module() imports when called; archlab.layers.core.Dense still reaches them.
__getattr__, __dir__ = lazy_attributes(__name__, dict.fromkeys(("Dense", "PositionalEncoding"),
                                                                "archlab.layers._core_modules"))

__all__ = ["Dense", "PositionalEncoding"]


class DenseParams(LayerParams):
    units: PosInt
    activation: ActivationName | None = None
    use_bias: bool = True


@register_layer("dense")
class DenseLayer(LayerType):
    Params = DenseParams
    time_wise = True
    accepts = InputRule(ranks={1: "(features,)", 2: "(time, features)"},
                        hints={0: "add 'reshape: {shape: [1]}' before it",
                               3: "add 'flatten' before it", 4: "add 'flatten' before it"})
    summary = "y = f(Wx + b) over the last axis"
    structured = StructuredPruning(width="units", input_axis=-1, last_axis=True)  # torch's Linear weight: (out, in)
    lowrank = True
    quantization = Quantization(static=True, dynamic=True)
    keras = KerasStyle("Dense", ("units",))

    def output(self, p: DenseParams, x: TensorInfo) -> TensorInfo:
        return TensorInfo((*x.shape[:-1], p.units))

    def cost(self, p: DenseParams, x: TensorInfo, y: TensorInfo) -> Cost:
        macs = y.numel * x.shape[-1]
        return Cost(macs, 2 * macs + activation_flops(p.activation, y.numel))

    def count_params(self, p: DenseParams, x: TensorInfo) -> int:
        return x.shape[-1] * p.units + (p.units if p.use_bias else 0)

    def weight_shape(self, p: DenseParams, x: TensorInfo) -> tuple[int, ...]:
        return (p.units, x.shape[-1])  # torch's Linear layout: (out, in)

    def module(self, p: DenseParams, x: TensorInfo) -> nn.Module:
        from ._core_modules import Dense

        return Dense(x.shape[-1], p.units, p.activation, p.use_bias)


class _Reshaping(LayerType):
    accepts = InputRule(dtype="any")
    quantization = PASSES_QUANTIZATION

    def cost(self, p, x, y) -> Cost:
        return Cost()

    def count_params(self, p, x) -> int:
        return 0

    def saved_elements(self, p, x, y) -> int:
        return 0  # a view of its input: nothing new is kept


@register_layer("flatten")
class FlattenLayer(_Reshaping):
    summary = "(d1, d2, ...) -> (d1*d2*...,)"
    keeps_channels = KeepsChannels(flattens=True)
    keras = KerasStyle("Flatten")

    def output(self, p: NoParams, x: TensorInfo) -> TensorInfo:
        return TensorInfo((x.numel,), x.dtype)

    def module(self, p: NoParams, x: TensorInfo) -> nn.Module:
        from torch import nn

        from ._core_modules import Reshape

        return nn.Flatten() if x.rank else Reshape((1,))  # nn.Flatten needs a (batch, ...) axis to start at


class ReshapeParams(LayerParams):
    shape: list[int]


@register_layer("reshape")
class ReshapeLayer(_Reshaping):
    Params = ReshapeParams
    summary = "to any shape with the same number of elements; one dimension may be -1"
    keras = KerasStyle("Reshape", ("shape",), renames={"target_shape": "shape"})

    def output(self, p: ReshapeParams, x: TensorInfo) -> TensorInfo:
        shape = list(p.shape)
        if shape.count(-1) > 1 or any(d == 0 or d < -1 for d in shape):
            raise ShapeError(f"shape {p.shape} must hold positive sizes and at most one -1")
        known = math.prod(d for d in shape if d != -1)
        if -1 in shape:
            if x.numel % known:
                raise ShapeError(f"cannot reshape {fmt_shape(x.shape)} ({x.numel} elements) to {p.shape}: "
                                 f"{x.numel} is not a multiple of {known}")
            shape[shape.index(-1)] = x.numel // known
        elif known != x.numel:
            raise ShapeError(f"cannot reshape {fmt_shape(x.shape)} ({x.numel} elements) to "
                             f"{fmt_shape(tuple(shape))} ({known} elements)")
        return TensorInfo(tuple(shape), x.dtype)

    def module(self, p: ReshapeParams, x: TensorInfo) -> nn.Module:
        from ._core_modules import Reshape

        return Reshape(self.output(p, x).shape)


class TransposeParams(LayerParams):
    #: the two axes (batch excluded) to swap; negative counts from the end
    axes: Annotated[list[int], Field(min_length=2, max_length=2)] = [0, 1]


@register_layer("transpose")
class TransposeLayer(_Reshaping):
    """Swaps two axes: (features, frames) from conv1d or log_mel becomes lstm's (time, features),
    and back. Not time_wise: the time axis moves, so a padding mask does not follow it.

    Input shape: (..., A, ..., B, ...). Output shape: (..., B, ..., A, ...).
    """

    Params = TransposeParams
    summary = "swaps two axes, e.g. (channels, length) <-> (time, features)"
    keras = KerasStyle("Transpose", ("axes",))

    def _axes(self, p: TransposeParams, x: TensorInfo) -> tuple[int, int]:
        if x.rank < 2:
            raise ShapeError(f"swaps two axes but receives {x.described}; it needs at least 2 axes")
        if any(not -x.rank <= a < x.rank for a in p.axes):
            raise ShapeError(f"axes {p.axes} are out of range for {x.described}: use axes from {-x.rank} to "
                             f"{x.rank - 1}")
        first, second = (a % x.rank for a in p.axes)
        if first == second:
            raise ShapeError(f"axes {p.axes} name the same axis of {x.described}; give two different axes")
        return first, second

    def output(self, p: TransposeParams, x: TensorInfo) -> TensorInfo:
        first, second = self._axes(p, x)
        shape = list(x.shape)
        shape[first], shape[second] = shape[second], shape[first]
        return TensorInfo(tuple(shape), x.dtype)

    def module(self, p: TransposeParams, x: TensorInfo) -> nn.Module:
        from ._core_modules import Transpose

        return Transpose(*self._axes(p, x))


class DropoutParams(LayerParams):
    rate: Rate


@register_layer("dropout")
class DropoutLayer(LayerType):
    Params = DropoutParams
    time_wise = True
    accepts = InputRule(dtype="float")
    summary = "zeroes a fraction `rate` of elements while training"
    keeps_channels = KeepsChannels()
    quantization = PASSES_QUANTIZATION
    keras = KerasStyle("Dropout", ("rate",))
    regularization = "rate"

    def output(self, p: DropoutParams, x: TensorInfo) -> TensorInfo:
        return x

    def cost(self, p, x, y) -> Cost:
        return Cost()  # identity at inference

    def count_params(self, p, x) -> int:
        return 0

    def module(self, p: DropoutParams, x: TensorInfo) -> nn.Module:
        from torch import nn

        return nn.Dropout(p.rate)


@register_layer("spatial_dropout")
class SpatialDropoutLayer(DropoutLayer):
    """Drops whole channels while training (Tompson et al. 2015; Keras SpatialDropout1D/2D): nearby
    pixels or steps of one feature map are correlated, so element-wise dropout hardly regularizes a
    convolution's output; each sample loses a fraction ``rate`` of its channels instead, the others
    scaled by 1/(1-rate). The identity in eval, costing nothing, as ``dropout``.

    Input shape: (channels, length) or (channels, height, width). Output shape: the same.
    """

    time_wise = False  # channels-first maps: no (time, features) axis for a padding mask to follow
    accepts = InputRule(ranks={2: "(channels, length)", 3: "(channels, height, width)"},
                        hints={1: "use 'dropout' on vectors"})
    summary = "zeroes a fraction `rate` of whole channels while training (conv feature maps)"
    keras = KerasStyle("SpatialDropout2D", ("rate",), aliases=("SpatialDropout1D",))

    def module(self, p: DropoutParams, x: TensorInfo) -> nn.Module:
        from torch import nn

        return nn.Dropout2d(p.rate) if x.rank == 3 else nn.Dropout1d(p.rate)


class BatchNormParams(LayerParams):
    momentum: Momentum = 0.1
    epsilon: Epsilon = 1e-5


@register_layer("batchnorm")
class BatchNormLayer(LayerType):
    Params = BatchNormParams
    accepts = InputRule(ranks={1: "(features,)", 2: "(channels, length)", 3: "(channels, height, width)"})
    summary = "normalizes each channel (axis 0) over the batch; 1-D or 2-D from the input's rank"
    keeps_channels = KeepsChannels(state=("weight", "bias", "running_mean", "running_var"), score="weight")
    quantization = PASSES_QUANTIZATION  # folded into the convolution before it
    keras = KerasStyle("BatchNormalization")

    def output(self, p, x: TensorInfo) -> TensorInfo:
        return x

    def cost(self, p, x: TensorInfo, y: TensorInfo) -> Cost:
        return Cost(flops=2 * x.numel)  # inference: one scale and one shift per element

    def count_params(self, p, x: TensorInfo) -> int:
        return 2 * x.shape[0]

    def count_buffers(self, p, x: TensorInfo) -> int:
        return 2 * x.shape[0] + 1  # running mean, running var, num_batches_tracked

    def module(self, p: BatchNormParams, x: TensorInfo) -> nn.Module:
        from torch import nn

        cls = nn.BatchNorm2d if x.rank == 3 else nn.BatchNorm1d
        return cls(x.shape[0], eps=p.epsilon, momentum=p.momentum)


class LayerNormParams(LayerParams):
    epsilon: Epsilon = 1e-5


class _LastAxisNorm(LayerType):
    """What layernorm and rmsnorm share: a float tensor of any rank normalised over its last axis,
    position by position, its shape kept."""

    time_wise = True
    accepts = InputRule(dtype="float", hints={0: "add 'reshape: {shape: [1]}' before it"})
    quantization = PASSES_QUANTIZATION

    def output(self, p, x: TensorInfo) -> TensorInfo:
        if x.rank == 0:
            raise ShapeError("needs at least one axis but receives a scalar ()")
        return x


@register_layer("layernorm")
class LayerNormLayer(_LastAxisNorm):
    Params = LayerNormParams
    summary = "normalizes over the last axis"
    keras = KerasStyle("LayerNormalization")

    def cost(self, p, x: TensorInfo, y: TensorInfo) -> Cost:
        return Cost(flops=5 * x.numel)  # mean, subtract, variance, normalize, affine (fvcore's count)

    def count_params(self, p, x: TensorInfo) -> int:
        return 2 * x.shape[-1]

    def module(self, p: LayerNormParams, x: TensorInfo) -> nn.Module:
        from torch import nn

        return nn.LayerNorm(x.shape[-1], eps=p.epsilon)


class RMSNormParams(LayerParams):
    #: LLaMA's 1e-5 (LLaMA-2 uses 1e-5, LLaMA-1 1e-6)
    epsilon: Epsilon = 1e-5


@register_layer("rmsnorm")
class RMSNormLayer(_LastAxisNorm):
    """x / sqrt(mean(x^2) + eps) * weight over the last axis (Zhang and Sennrich 2019): LayerNorm
    without the mean and the bias, the norm of LLaMA-style blocks."""

    Params = RMSNormParams
    summary = "normalizes over the last axis by the root mean square, one scale per feature, no bias"
    keras = KerasStyle("RMSNormalization")

    def cost(self, p, x: TensorInfo, y: TensorInfo) -> Cost:
        return Cost(flops=4 * x.numel)  # square, mean, scale by the rsqrt, weight (layernorm's 5 less the mean)

    def count_params(self, p, x: TensorInfo) -> int:
        return x.shape[-1]

    def module(self, p: RMSNormParams, x: TensorInfo) -> nn.Module:
        from torch import nn

        return nn.RMSNorm(x.shape[-1], eps=p.epsilon)


class EmbeddingParams(LayerParams):
    input_dim: PosInt
    output_dim: PosInt
    #: vectors start as normal(0, init_std); None keeps PyTorch's normal(0, 1), which makes a sum
    #: over many fields (a factorization machine, DeepFM) start far from zero
    init_std: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None


@register_layer("embedding")
class EmbeddingLayer(LayerType):
    Params = EmbeddingParams
    time_wise = True
    accepts = InputRule(dtype="long")
    summary = "token ids (...) -> vectors (..., output_dim)"
    unstructured = False  # a row is a token's whole representation, looked up, not multiplied
    quantization = Quantization(static=SEQUENCE_STATIC, dynamic=True)
    keras = KerasStyle("Embedding", ("input_dim", "output_dim"))
    id_bound = "input_dim"

    def output(self, p: EmbeddingParams, x: TensorInfo) -> TensorInfo:
        return TensorInfo((*x.shape, p.output_dim))

    def cost(self, p, x, y) -> Cost:
        return Cost()  # a table lookup

    def count_params(self, p: EmbeddingParams, x) -> int:
        return p.input_dim * p.output_dim

    def weight_shape(self, p: EmbeddingParams, x) -> tuple[int, ...]:
        return (p.input_dim, p.output_dim)

    def module(self, p: EmbeddingParams, x: TensorInfo) -> nn.Module:
        from torch import nn

        module = nn.Embedding(p.input_dim, p.output_dim)
        if p.init_std is not None:
            nn.init.normal_(module.weight, std=p.init_std)
        return module


class PositionalEmbeddingParams(LayerParams):
    max_len: PosInt
    kind: Literal["learned", "sinusoidal"] = "learned"


@register_layer("positional_embedding")
class PositionalEmbeddingLayer(LayerType):
    Params = PositionalEmbeddingParams
    time_wise = True
    accepts = InputRule(ranks={2: "(time, features)"}, hints={1: "add 'embedding' before it"})
    summary = "adds learned or sinusoidal position vectors to (time, features)"
    unstructured = False  # a lookup table of positions, as an embedding's
    quantization = Quantization(static=SEQUENCE_STATIC)
    keras = KerasStyle("PositionalEmbedding", ("max_len",))

    def output(self, p: PositionalEmbeddingParams, x: TensorInfo) -> TensorInfo:
        if x.shape[0] > p.max_len:
            raise ShapeError(f"receives {x.shape[0]} time steps but max_len is {p.max_len}: "
                             f"raise max_len to at least {x.shape[0]}")
        return x

    def cost(self, p, x: TensorInfo, y: TensorInfo) -> Cost:
        return Cost(flops=x.numel)

    def count_params(self, p: PositionalEmbeddingParams, x: TensorInfo) -> int:
        return p.max_len * x.shape[-1] if p.kind == "learned" else 0

    def saved_elements(self, p, x, y) -> int:
        return 0  # the gradient of an addition needs no saved tensor

    def module(self, p: PositionalEmbeddingParams, x: TensorInfo) -> nn.Module:
        from ._core_modules import PositionalEncoding

        return PositionalEncoding(p.max_len, x.shape[-1], p.kind)
