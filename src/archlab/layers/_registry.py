"""The layer registry: every layer type, built-in or a user's own, is one LayerType here.

A layer type is a small class with four parts, kept apart as Keras keeps a layer's lifecycle:
a declarative parameter model (pydantic, which also gives validation and the JSON Schema),
a shape rule (``output``), a FLOP rule (``cost``) and a module factory (``module``).
Building and analysis only ever talk to layer types through this interface, so a registered
user layer takes part in both exactly like a built-in one.

Its traits are declarative data on the class too, read by the packages that transform models:
``structured`` and ``keeps_channels`` (structured pruning, compress), ``unstructured`` (magnitude
pruning), ``lowrank`` (low-rank factorization), ``quantization`` (int8, deploy) and ``keras``
(the Keras-style constructors). They default to "takes no part", so a plugin layer that sets them
is pruned, quantized and constructed exactly like the built-in it imitates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from archlab._inputs import fmt_shape
from archlab._registry import Registry
from archlab.exceptions import RegistryError, ShapeError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["Cost", "InputRule", "KeepsChannels", "KerasStyle", "LayerParams", "LayerRegistry", "LayerType", "NoParams",
           "Quantization", "StructuredPruning", "TensorInfo", "TransformerShape", "fmt_shape", "get_layer",
           "list_layers", "register_layer", "registry"]

DType = Literal["float", "long"]


@dataclass(frozen=True)
class TensorInfo:
    """What is known about a tensor before any data flows: its shape without the batch
    dimension, and whether it holds real numbers or integer ids."""

    shape: tuple[int, ...]
    dtype: DType = "float"
    #: where the tensor comes from, for messages ("layers[4] (maxpool2d)"); not part of equality
    origin: str = field(default="", compare=False)
    #: the id that pads this input's sequences (``pad_id`` of a long input); inputs only
    pad_id: int | None = field(default=None, compare=False)
    #: the input whose padding marks this tensor's first (time) axis, position by position: the
    #: layers that mix positions mask the padded ones by it. None: no padding mask applies.
    mask: str | None = field(default=None, compare=False)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def rank(self) -> int:
        return len(self.shape)

    def __str__(self) -> str:
        return (fmt_shape(self.shape) + (" long" if self.dtype == "long" else "")
                + (f" pad_id {self.pad_id}" if self.pad_id is not None else ""))

    @property
    def described(self) -> str:
        """The shape, and where it comes from when known: "(64, 5, 5) from layers[4] (maxpool2d)"."""
        return fmt_shape(self.shape) + (f" from {self.origin}" if self.origin else "")


@dataclass(frozen=True)
class Cost:
    """Forward cost of one sample: multiply-accumulates of matmuls/convolutions, and FLOPs
    (2 per MAC plus the elementwise work; conventions in docs/analysis.md)."""

    macs: int = 0
    flops: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.macs + other.macs, self.flops + other.flops)

    def __mul__(self, k: int) -> Cost:
        return Cost(self.macs * k, self.flops * k)


@dataclass(frozen=True)
class InputRule:
    """The inputs a layer accepts, declared as data so one checker writes every shape message.

    Attributes:
        ranks: accepted ranks (without batch) and how to describe each, e.g. {1: "(features,)"}.
        dtype: "float", "long" or "any".
        hints: a fix to suggest for a received rank, e.g. {3: "add 'flatten' before it"}.
    """

    ranks: dict[int, str] | None = None
    dtype: DType | Literal["any"] = "float"
    hints: dict[int, str] = field(default_factory=dict)

    def check(self, x: TensorInfo) -> None:
        if self.dtype == "long" and x.dtype != "long":
            raise ShapeError(f"needs integer ids (dtype long) but receives float {x.described}: "
                             "declare the input as {shape: [...], dtype: long}")
        if self.dtype == "float" and x.dtype == "long":
            raise ShapeError(f"needs real-valued input but receives integer ids {x.described}: "
                             "add 'embedding' before it")
        if self.ranks is not None and x.rank not in self.ranks:
            needs = " or ".join(self.ranks.values())
            hint = self.hints.get(x.rank)
            raise ShapeError(f"needs {needs} but receives {x.described}" + (f": {hint}" if hint else ""))


@dataclass(frozen=True)
class StructuredPruning:
    """Trait of a layer whose outputs (filters, units) structured pruning may remove.

    Attributes:
        width: the Params field that counts the outputs (``filters``, ``units``); pruning lowers it.
        weight: the module parameter holding one slice per output on axis 0 (scored by its L1 norm).
        input_axis: the axis of ``weight`` that runs over the input channels, sliced when the
            layer before lost some (1 for a convolution's (out, in, *k), -1 for dense's (out, in)).
        bias: the per-output parameter sliced with the outputs, if any.
        last_axis: the layer maps the last axis of its input to the last axis of its output
            (dense). Pruning follows channels on axis 0 (channels first), so such a layer is
            pruned only on 1-D ``(features,)`` tensors, where the two axes are one.
    """

    width: str
    weight: str = "weight"
    input_axis: int = -1
    bias: str | None = "bias"
    last_axis: bool = False


@dataclass(frozen=True)
class KeepsChannels:
    """Trait of a layer a pruned channel passes through: its output has the channels of its
    input on axis 0 (channels first), in the same order, so pruning the layer before it prunes
    them here too.

    Attributes:
        state: per-channel tensors of the module (parameters or buffers, one value per channel
            on axis 0) that are sliced with the channels: batchnorm's weight, bias and running
            statistics. Empty for layers without weights along the channel axis.
        score: the tensor of ``state`` whose magnitude scores the channels of the layer just
            before it (batchnorm's |gamma|); None: that layer's own weights score them.
        flattens: the layer flattens (C, *rest) channels first, so channel c becomes the run of
            outputs c*prod(rest) ... (c+1)*prod(rest) - 1.
    """

    state: tuple[str, ...] = ()
    score: str | None = None
    flattens: bool = False


@dataclass(frozen=True)
class Quantization:
    """Trait: what ONNX Runtime's int8 methods (``archlab.deploy.quantize_onnx``) do with a layer.

    Attributes:
        static: True when static (QDQ, calibrated) quantization handles the layer, or it carries
            no weights and passes through; False when it is not covered; a string when it is
            refused for a reason worth telling, and what to use instead.
        dynamic: True when dynamic quantization turns its weights into int8; False when it has no
            weights that method reads; a string when its weights stay float, and why.
    """

    static: bool | str = False
    dynamic: bool | str = False


@dataclass(frozen=True)
class KerasStyle:
    """Trait: the Keras-style constructor of a layer type (``archlab.layers.Dense(10)``).

    Attributes:
        name: the class name, as Keras spells it (``Conv2D``).
        args: the positional arguments, in Keras' order (``("filters", "kernel_size")``).
        defaults: values Keras gives where the spec has none (``MaxPooling2D`` pools 2 by default).
        renames: Keras keyword -> spec key (``target_shape`` -> ``shape``).
        aliases: other names Keras accepts for the same class (``MaxPool2D``).
    """

    name: str
    args: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)
    renames: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class TransformerShape:
    """Trait value: the shape of one Transformer block, what a planner sizing a large-model run reads
    (``archlab.plan``: activations per Korthikanti et al. 2022, the KV cache, the attention FLOPs of
    PaLM's 6N + 12·L·h·s) without knowing the layer type. A block is attention then an MLP (or
    mixture of experts), each with its norm and residual.

    Attributes:
        hidden: the model width h (the block's input and output features).
        seq_len: query positions s of one sample.
        heads: attention (query) heads a.
        kv_heads: key/value heads (``heads`` for multi-head, 1 for multi-query, between for grouped).
        head_dim: features per head (usually hidden / heads).
        ff_dim: the MLP's hidden width (per expert for a mixture of experts).
        gated: the MLP is gated (SwiGLU, GeGLU): three weight matrices, two of them h x ff_dim in.
        causal: queries see only earlier keys (a decoder); None of the KV cache applies otherwise.
        window: sliding-window self-attention: each query sees at most this many keys; None: all.
        memory_len: a decoder block that also attends over an encoder's memory: its positions
            (the source's length); None: no cross-attention.
        dropout: the block applies dropout (attention probabilities, after attention and the MLP):
            the dropout masks are part of what training keeps.
        experts: experts of a mixture-of-experts MLP (1: a dense MLP).
        top_k: experts each token is routed to.
        shared_experts: experts every token passes through besides its routed ones.
    """

    hidden: int
    seq_len: int
    heads: int
    kv_heads: int
    head_dim: int
    ff_dim: int
    gated: bool = False
    causal: bool = True
    window: int | None = None
    memory_len: int | None = None
    dropout: bool = True
    experts: int = 1
    top_k: int = 1
    shared_experts: int = 0

    @property
    def keys(self) -> int:
        """Key positions each self-attention query may see at most (``seq_len``, capped by the window)."""
        return self.seq_len if self.window is None else min(self.seq_len, self.window)


#: Why static int8 refuses attention, recurrent and embedding layers (their ``Quantization.static``).
SEQUENCE_STATIC = ("use --quantize dynamic for attention, recurrent and embedding layers (int8 weights, "
                   "activations quantized at run time)")
#: A layer without weights that static int8 passes through (pooling, activations, reshaping).
PASSES_QUANTIZATION = Quantization(static=True)


class LayerParams(BaseModel):
    """Base of every layer's parameter model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class NoParams(LayerParams):
    """For layer types that take no parameters (``flatten``, ``relu``)."""


class LayerType:
    """One kind of layer. Subclass it, set ``Params`` and ``accepts``, implement the rules,
    and register it with ``@register_layer("name")``.

    Example:
        >>> import torch
        >>> @register_layer("scale_by_two", override=True)
        ... class ScaleByTwo(LayerType):
        ...     accepts = InputRule(dtype="float")
        ...     def output(self, p, x): return x
        ...     def cost(self, p, x, y): return Cost(flops=x.numel)
        ...     def module(self, p, x): return torch.nn.Identity()
        >>> "scale_by_two" in list_layers()
        True
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type[LayerParams]] = NoParams
    accepts: ClassVar[InputRule] = InputRule()
    #: How many tensors the layer reads; 2 for transformer_decoder (x, memory).
    num_inputs: ClassVar[int] = 1
    #: A one-line description for ``archlab layers`` and docs.
    summary: ClassVar[str] = ""

    # -- traits: declarative data for compress, deploy and the Keras-style constructors ----------
    #: Structured pruning may remove this layer's outputs (dense, conv); None: it makes no
    #: prunable outputs, and a pruned channel cannot reach it unless ``keeps_channels`` is set.
    structured: ClassVar[StructuredPruning | None] = None
    #: A pruned channel passes through this layer (activations, pooling, dropout, batchnorm, flatten).
    keeps_channels: ClassVar[KeepsChannels | None] = None
    #: Magnitude pruning zeroes this layer's weight matrices and kernels (parameters of 2 or more
    #: dimensions). False for lookup tables (embeddings), whose rows are not weights of a product.
    unstructured: ClassVar[bool] = True
    #: Low-rank factorization may replace this layer by two thinner ones of the same type: it is
    #: a linear map over the last axis with a (out, in) ``weight``, an optional ``bias`` and the
    #: Params fields ``units`` and ``use_bias`` (dense).
    lowrank: ClassVar[bool] = False
    #: What int8 quantization does with the layer; the default refuses static and quantizes nothing.
    quantization: ClassVar[Quantization] = Quantization()
    #: The Keras-style constructor archlab.layers offers for the type; None: none.
    keras: ClassVar[KerasStyle | None] = None
    #: The Params field that sets how strongly the layer regularizes while training, larger being
    #: stronger (dropout's ``rate``): cv's diagnosis reads a sweep of it as regularization. None: none.
    regularization: ClassVar[str | None] = None
    #: The Params field that bounds the integer ids the layer looks up (``input_dim`` of an
    #: embedding): training checks it against the data's id count. None: it takes no ids.
    id_bound: ClassVar[str | None] = None
    #: The output's first axis is the input's time axis, position by position (embedding, dense,
    #: attention), so the input's padding mask carries over to it; see ``keeps_time``.
    time_wise: ClassVar[bool] = False
    #: The module mixes positions and reads the padding masks of its inputs: the builder hands it a
    #: ``MaskReader`` (archlab.layers._masking) as ``module.padding``.
    reads_mask: ClassVar[bool] = False

    def transformer(self, p: Any, x: Any) -> TransformerShape | None:
        """The block's shape when this layer is one Transformer block (attention + MLP), for the
        planner (``archlab.plan``); None, the default, for every other layer."""
        return None

    def keeps_time(self, p: Any, x: Any) -> bool:
        """Whether the output keeps the input's time axis for params ``p`` and input ``x``;
        ``time_wise`` by default (a recurrent layer keeps it only with return_sequences)."""
        return self.time_wise

    def check_input(self, p: Any, x: TensorInfo | tuple[TensorInfo, ...]) -> None:
        """Raise ShapeError when the layer cannot take ``x``; the default applies ``accepts``."""
        for item in (x if isinstance(x, tuple) else (x,)):
            self.accepts.check(item)

    def output(self, p: Any, x: Any) -> TensorInfo:
        """Shape rule: the output TensorInfo for params ``p`` and input ``x`` (no data flows)."""
        raise NotImplementedError(f"layer type {self.name!r} has no shape rule")

    def cost(self, p: Any, x: Any, y: TensorInfo) -> Cost:
        """FLOP rule: forward MACs and FLOPs of one sample."""
        raise NotImplementedError(f"layer type {self.name!r} has no FLOP rule")

    def module(self, p: Any, x: Any) -> nn.Module:
        """Module factory: a torch module taking (batch, *x.shape) to (batch, *y.shape)."""
        raise NotImplementedError(f"layer type {self.name!r} has no module factory")

    def count_params(self, p: Any, x: Any) -> int | None:
        """Parameter count by arithmetic; None means: count the module built on the meta device."""
        return None

    def count_active_params(self, p: Any, x: Any) -> int | None:
        """Parameters one token passes through, the count a sparse model is quoted by (Mixtral
        8x7B: 12.9 B active of 46.7 B); ``Analysis.active_params`` totals them. None, the default:
        every parameter (``count_params``, or the meta-device count). A mixture of experts returns
        its router, top_k and shared experts; a layer composed of others (a Transformer block) sums
        its parts' ``count_active_params``, each part's ``count_params`` where that is None."""
        return None

    def weight_shape(self, p: Any, x: Any) -> tuple[int, ...] | None:
        """Shape of the trainable ``weight`` a ``tie`` shares; None means: read it off the module
        built on the meta device."""
        return None

    def count_buffers(self, p: Any, x: Any) -> int:
        """Elements of persistent buffers (BatchNorm running statistics); 0 by default."""
        return 0

    def saved_elements(self, p: Any, x: Any, y: TensorInfo) -> int:
        """Elements of one sample this layer keeps for the backward pass; its output by default."""
        return y.numel


ENTRY_POINT_GROUP = "archlab.layers"


class LayerRegistry(Registry[LayerType]):
    """All layer types by name; one object, not module globals.

    Packages can also contribute layer types through the ``archlab.layers`` entry-point group:
    each entry point names a module (or object) whose import registers its types. They are
    loaded the first time a name is missing or the list of types is asked for.
    """

    def __init__(self) -> None:
        super().__init__("layer type", ENTRY_POINT_GROUP, plugin_label="layer")

    def register(self, name: str, layer_type: type[LayerType], *, override: bool = False) -> None:
        layer_type.name = name
        self.add(name, layer_type(), override=override)

    def get(self, name: str) -> LayerType:
        found = self.find(name)
        if found is None:
            raise RegistryError(self.unknown(name))
        return found


registry = LayerRegistry()


def register_layer(name: str, *, override: bool = False) -> Callable[[type[LayerType]], type[LayerType]]:
    """Class decorator adding a LayerType to the registry under ``name``."""

    def decorate(cls: type[LayerType]) -> type[LayerType]:
        registry.register(name, cls, override=override)
        return cls

    return decorate


def get_layer(name: str) -> LayerType:
    """The registered layer type called ``name``; RegistryError with a suggestion if unknown."""
    return registry.get(name)


def list_layers() -> list[str]:
    """Names of every registered layer type, sorted."""
    return list(registry)
