"""The blocks of today's large language models: gated MLPs (SwiGLU, GeGLU; Shazeer 2020) and
mixtures of gated experts (Mixtral, DeepSeekMoE)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import model_validator

from archlab._lazy import lazy_attributes
from archlab.exceptions import ShapeError

from ._activations import activation_flops
from ._params import NonNegInt, PosInt
from ._registry import (
    Cost,
    InputRule,
    KerasStyle,
    LayerParams,
    LayerType,
    Quantization,
    TensorInfo,
    get_layer,
    register_layer,
)

if TYPE_CHECKING:
    from torch import nn

    from ._llm_modules import GatedMLP, MixtureOfExperts

# torch is heavy and validate/schema never build: the modules live in _llm_modules, which each
# module() imports when called; archlab.layers.llm.GatedMLP still reaches them.
__getattr__, __dir__ = lazy_attributes(__name__, dict.fromkeys(("GatedMLP", "MixtureOfExperts"),
                                                                   "archlab.layers._llm_modules"))

__all__ = ["GatedMLP", "GatedMLPParams", "MixtureOfExperts", "MoEParams"]

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
