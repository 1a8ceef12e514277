"""The blocks of today's large language models: gated MLPs (SwiGLU, GeGLU; Shazeer 2020),
mixtures of gated experts (Mixtral, DeepSeekMoE) and the pre-norm Transformer block of LLaMA,
Mistral, Mixtral and GPT-2 composed from the registered layers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, ValidationError, model_validator

from archlab._lazy import lazy_attributes
from archlab.exceptions import ShapeError, SpecError

from ._activations import activation_flops
from ._params import Epsilon, NonNegInt, PosInt, Rate
from ._registry import (
    SEQUENCE_STATIC,
    Cost,
    InputRule,
    KerasStyle,
    LayerParams,
    LayerType,
    Quantization,
    TensorInfo,
    TransformerShape,
    get_layer,
    register_layer,
)

if TYPE_CHECKING:
    from torch import nn

    from ._llm_modules import Attention, DecoderBlock, GatedMLP, MixtureOfExperts

# torch is heavy and validate/schema never build: the modules live in _llm_modules, which each
# module() imports when called; archlab.layers.llm.GatedMLP still reaches them.
__getattr__, __dir__ = lazy_attributes(__name__, dict.fromkeys(
    ("Attention", "DecoderBlock", "GatedMLP", "MixtureOfExperts"), "archlab.layers._llm_modules"))

__all__ = ["Attention", "DecoderBlock", "GatedMLP", "GatedMLPParams", "MixtureOfExperts", "MoEConfig", "MoEParams",
           "TransformerBlockParams"]

#: the activation of the gate: silu makes SwiGLU (LLaMA, Mistral), gelu GeGLU (Gemma, T5 v1.1)
GateActivation = Literal["silu", "gelu"]


class GatedMLPParams(LayerParams):
    ff_dim: PosInt
    activation: GateActivation = "silu"
    use_bias: bool = False


@register_layer("gated_mlp")
class GatedMLPLayer(LayerType):
    """down(act(gate(x)) * up(x)) over the last axis (Shazeer 2020, "GLU Variants Improve
    Transformer"): LLaMA's MLP. Three weight matrices where a plain MLP has two, so LLaMA sizes
    ff_dim at about 8/3 of the width for a plain 4x MLP's parameters.

    Input shape: (..., D). Output shape: (..., D).
    """

    Params = GatedMLPParams
    accepts = InputRule(dtype="float", hints={0: "add 'reshape: {shape: [1]}' before it"})
    time_wise = True
    summary = "down(act(gate(x)) * up(x)) over the last axis: SwiGLU (silu) or GeGLU (gelu)"
    # three Linear layers: ONNX Runtime quantizes their MatMuls as dense's
    quantization = Quantization(static=True, dynamic=True)
    keras = KerasStyle("GatedMLP", ("ff_dim",))

    def output(self, p: GatedMLPParams, x: TensorInfo) -> TensorInfo:
        if x.rank == 0:
            raise ShapeError("needs at least one axis but receives a scalar ()")
        return x

    def cost(self, p: GatedMLPParams, x: TensorInfo, y: TensorInfo) -> Cost:
        positions, d = x.numel // x.shape[-1], x.shape[-1]
        macs = 3 * positions * d * p.ff_dim  # gate, up (d -> ff) and down (ff -> d)
        hidden = positions * p.ff_dim
        return Cost(macs, 2 * macs + activation_flops(p.activation, hidden) + hidden)  # + the gate's product

    def count_params(self, p: GatedMLPParams, x: TensorInfo) -> int:
        d = x.shape[-1]
        return 3 * d * p.ff_dim + ((2 * p.ff_dim + d) if p.use_bias else 0)

    def saved_elements(self, p: GatedMLPParams, x: TensorInfo, y: TensorInfo) -> int:
        hidden = x.numel // x.shape[-1] * p.ff_dim
        return x.numel + 4 * hidden  # input; gate pre- and post-activation, up, their product (down's input)

    def module(self, p: GatedMLPParams, x: TensorInfo) -> nn.Module:
        from ._llm_modules import GatedMLP

        return GatedMLP(x.shape[-1], p.ff_dim, p.activation, p.use_bias)


# -- mixture of experts (Mixtral, DeepSeekMoE) ----------------------------------------------------

class MoEParams(LayerParams):
    num_experts: PosInt
    top_k: PosInt = 2
    #: each expert's hidden width (a gated MLP's ff_dim)
    ff_dim: PosInt
    activation: GateActivation = "silu"
    #: experts every token passes through besides its top_k routed ones (DeepSeekMoE)
    shared_experts: NonNegInt = 0
    use_bias: bool = False

    @model_validator(mode="after")
    def _top_k_within_experts(self) -> MoEParams:
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k {self.top_k} is more than num_experts {self.num_experts}: a token is routed to "
                             f"top_k distinct experts; lower top_k to at most {self.num_experts} or add experts")
        return self

    def expert(self) -> GatedMLPParams:
        """The parameters of one expert, a gated_mlp: the experts' counts are that layer's own."""
        return GatedMLPParams(ff_dim=self.ff_dim, activation=self.activation, use_bias=self.use_bias)


@register_layer("moe")
class MoELayer(LayerType):
    """A mixture of gated-MLP experts over the last axis (Mixtral, Jiang et al. 2024): a router
    scores the experts per position, each position goes to its top_k experts, whose outputs are
    summed weighted by the renormalised router probabilities; ``shared_experts`` process every
    position (DeepSeekMoE, Dai et al. 2024). Parameters grow with num_experts, the work per token
    only with top_k + shared_experts: ``count_active_params`` and ``cost`` are per token ACTIVE.

    Input shape: (..., D). Output shape: (..., D).
    """

    Params = MoEParams
    accepts = GatedMLPLayer.accepts
    time_wise = True
    summary = "mixture of gated-MLP experts over the last axis: top-k routing (Mixtral), optional shared experts"
    # dynamic int8 turns the router's and experts' MatMuls into MatMulInteger (measured: 16 of 16 for 4 + 1
    # experts); static calibration of the top-k routing is not checked
    quantization = Quantization(static="use --quantize dynamic for moe (static calibration of its top-k routing "
                                       "is not checked)", dynamic=True)
    keras = KerasStyle("MixtureOfExperts", ("num_experts", "ff_dim"))

    def output(self, p: MoEParams, x: TensorInfo) -> TensorInfo:
        return get_layer("gated_mlp").output(p.expert(), x)

    def cost(self, p: MoEParams, x: TensorInfo, y: TensorInfo) -> Cost:
        positions, d = x.numel // x.shape[-1], x.shape[-1]
        scores = positions * p.num_experts
        router = Cost(scores * d, 2 * scores * d)  # d -> num_experts per position
        experts = get_layer("gated_mlp").cost(p.expert(), x, y) * (p.top_k + p.shared_experts)
        # softmax over the scores; top-k: one comparison per score; renormalise: k - 1 adds, k divides
        routing = activation_flops("softmax", scores) + scores + positions * (2 * p.top_k - 1)
        # scale each routed output by its weight (k), sum the routed and shared outputs (k + shared - 1)
        combine = positions * d * (2 * p.top_k - 1 + p.shared_experts)
        return router + experts + Cost(flops=routing + combine)

    def count_params(self, p: MoEParams, x: TensorInfo) -> int:
        return x.shape[-1] * p.num_experts + (p.num_experts + p.shared_experts) * self._expert_params(p, x)

    def count_active_params(self, p: MoEParams, x: TensorInfo) -> int:
        return x.shape[-1] * p.num_experts + (p.top_k + p.shared_experts) * self._expert_params(p, x)

    @staticmethod
    def _expert_params(p: MoEParams, x: TensorInfo) -> int:
        return get_layer("gated_mlp").count_params(p.expert(), x)

    def saved_elements(self, p: MoEParams, x: TensorInfo, y: TensorInfo) -> int:
        scores = x.numel // x.shape[-1] * p.num_experts
        expert = get_layer("gated_mlp").saved_elements(p.expert(), x, y)
        # input; router logits and probabilities; every position's experts; the routed outputs (for their weights)
        return x.numel + 2 * scores + (p.top_k + p.shared_experts) * expert + p.top_k * x.numel

    def module(self, p: MoEParams, x: TensorInfo) -> nn.Module:
        from ._llm_modules import MixtureOfExperts

        return MixtureOfExperts(x.shape[-1], p.ff_dim, p.num_experts, p.top_k, p.shared_experts, p.activation,
                                p.use_bias)


# -- the Transformer block (LLaMA, Mistral, Mixtral, GPT-2) -----------------------------------------

class MoEConfig(LayerParams):
    """A block's MLP as a mixture of experts (the ``moe`` layer); the block's ff_dim is each expert's."""

    num_experts: PosInt
    top_k: PosInt = 2
    shared_experts: NonNegInt = 0


class TransformerBlockParams(LayerParams):
    num_heads: PosInt
    ff_dim: PosInt
    num_kv_heads: PosInt | None = None
    head_dim: PosInt | None = None
    #: swiglu / geglu: gated_mlp (LLaMA, Gemma); gelu / relu: two matrices, GPT-2's c_fc and c_proj
    mlp: Literal["swiglu", "geglu", "gelu", "relu"] = "swiglu"
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    norm_eps: Epsilon = 1e-5
    rotary: bool = True
    rope_theta: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 10000.0
    use_bias: bool = False
    sliding_window: PosInt | None = None
    causal: bool = True
    dropout: Rate = 0.0
    moe: MoEConfig | None = None


@dataclass(frozen=True)
class _Part:
    """One sub-layer of a block: the registered type, its parameters and its input."""

    name: str
    layer: LayerType
    params: LayerParams
    x: TensorInfo

    @property
    def y(self) -> TensorInfo:
        return self.layer.output(self.params, self.x)


def _params_of(type_name: str, values: dict, where: str) -> LayerParams:
    """``type_name``'s Params from the block's values; its own rule's message, at the block's key."""
    try:
        return get_layer(type_name).Params.model_validate(values)
    except ValidationError as exc:
        msg = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise SpecError(msg, where) from None


@register_layer("transformer_block")
class TransformerBlockLayer(LayerType):
    """One pre-norm Transformer block, h = x + attn(norm(x)), y = h + mlp(norm(h)): LLaMA's
    (rmsnorm, rotary grouped-query attention, SwiGLU), Mistral's (sliding_window), Mixtral's (moe)
    or GPT-2's (layernorm, mlp: gelu, use_bias, rotary: false). Its counts, cost and module are
    those of its sub-layers (multi_head_attention, rmsnorm / layernorm, gated_mlp / dense / moe),
    asked through the registry, plus the two residual additions.

    Input shape: (time, D). Output shape: (time, D).
    """

    Params = TransformerBlockParams
    accepts = InputRule(ranks={2: "(time, features)"},
                        hints={1: "add 'embedding' (token ids) or 'reshape: {shape: [T, F]}' before it",
                               3: "add 'reshape' to (time, features) before it"})
    time_wise = True
    reads_mask = True  # its attention's: the builder's reader is handed on to it
    summary = "pre-norm x + attn(norm(x)), h + mlp(norm(h)): LLaMA / Mistral / Mixtral / GPT-2 block"
    quantization = Quantization(static=SEQUENCE_STATIC, dynamic=True)
    keras = KerasStyle("TransformerBlock", ("num_heads", "ff_dim"))
    regularization = "dropout"

    def _parts(self, p: TransformerBlockParams, x: TensorInfo) -> list[_Part]:
        """attn_norm, attn, mlp_norm, then the MLP's parts (mlp; or c_fc, c_proj), as the module has them."""
        d = x.shape[-1]
        norm, norm_params = get_layer(p.norm), _params_of(p.norm, {"epsilon": p.norm_eps}, "norm_eps")
        attn = _params_of("multi_head_attention", {
            "num_heads": p.num_heads, "dropout": p.dropout, "causal": p.causal, "num_kv_heads": p.num_kv_heads,
            "head_dim": p.head_dim, "rotary": p.rotary, "rope_theta": p.rope_theta, "use_bias": p.use_bias,
            "sliding_window": p.sliding_window}, "num_heads")
        parts = [_Part("attn_norm", norm, norm_params, x), _Part("attn", get_layer("multi_head_attention"), attn, x),
                 _Part("mlp_norm", norm, norm_params, x)]
        if p.moe is not None:
            if p.mlp not in _GATE:
                raise SpecError(f"moe's experts are gated MLPs, so mlp must be swiglu or geglu, not {p.mlp}", "mlp")
            moe = _params_of("moe", {**p.moe.model_dump(), "ff_dim": p.ff_dim, "use_bias": p.use_bias,
                                     "activation": _GATE[p.mlp]}, "moe")
            return [*parts, _Part("mlp", get_layer("moe"), moe, x)]
        if p.mlp in _GATE:
            mlp = _params_of("gated_mlp", {"ff_dim": p.ff_dim, "activation": _GATE[p.mlp], "use_bias": p.use_bias},
                             "ff_dim")
            return [*parts, _Part("mlp", get_layer("gated_mlp"), mlp, x)]
        dense = get_layer("dense")
        c_fc = _params_of("dense", {"units": p.ff_dim, "activation": p.mlp, "use_bias": p.use_bias}, "ff_dim")
        c_proj = _params_of("dense", {"units": d, "use_bias": p.use_bias}, "ff_dim")
        fc = _Part("c_fc", dense, c_fc, x)
        return [*parts, fc, _Part("c_proj", dense, c_proj, fc.y)]

    def output(self, p: TransformerBlockParams, x: TensorInfo) -> TensorInfo:
        for part in self._parts(p, x):  # each sub-layer's own rules check its parameters
            part.layer.check_input(part.params, part.x)
            part.layer.output(part.params, part.x)
        return x

    def cost(self, p: TransformerBlockParams, x: TensorInfo, y: TensorInfo) -> Cost:
        total = Cost(flops=2 * x.numel)  # the two residual additions
        for part in self._parts(p, x):
            total = total + part.layer.cost(part.params, part.x, part.y)
        return total

    def count_params(self, p: TransformerBlockParams, x: TensorInfo) -> int:
        return sum(part.layer.count_params(part.params, part.x) for part in self._parts(p, x))

    def count_active_params(self, p: TransformerBlockParams, x: TensorInfo) -> int:
        return sum(_active(part) for part in self._parts(p, x))

    def saved_elements(self, p: TransformerBlockParams, x: TensorInfo, y: TensorInfo) -> int:
        # each sub-layer's, and the two residual sums (kept as a residual block's are, docs/analysis.md)
        return sum(part.layer.saved_elements(part.params, part.x, part.y) for part in self._parts(p, x)) + 2 * x.numel

    def transformer(self, p: TransformerBlockParams, x: TensorInfo) -> TransformerShape:
        t, d = x.shape
        return TransformerShape(
            hidden=d, seq_len=t, heads=p.num_heads, kv_heads=p.num_kv_heads or p.num_heads,
            head_dim=p.head_dim or d // p.num_heads, ff_dim=p.ff_dim, gated=p.mlp in _GATE, causal=p.causal,
            window=p.sliding_window, dropout=p.dropout > 0,
            experts=p.moe.num_experts if p.moe else 1, top_k=p.moe.top_k if p.moe else 1,
            shared_experts=p.moe.shared_experts if p.moe else 0)

    def module(self, p: TransformerBlockParams, x: TensorInfo) -> nn.Module:
        from ._llm_modules import DecoderBlock, DenseMLP

        parts = {part.name: part.layer.module(part.params, part.x) for part in self._parts(p, x)}
        mlp = parts["mlp"] if "mlp" in parts else DenseMLP(parts["c_fc"], parts["c_proj"])
        return DecoderBlock(parts["attn_norm"], parts["attn"], parts["mlp_norm"], mlp, p.dropout)


def _active(part: _Part) -> int:
    """The parameters a token passes through in ``part``: its type's active count, else all of them."""
    active = part.layer.count_active_params(part.params, part.x)
    return part.layer.count_params(part.params, part.x) if active is None else active


#: the gated MLPs' activation: swiglu gates with silu, geglu with gelu
_GATE = {"swiglu": "silu", "geglu": "gelu"}
