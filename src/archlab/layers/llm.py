"""The blocks of today's large language models: gated MLPs (SwiGLU, GeGLU; Shazeer 2020)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from archlab._lazy import lazy_attributes
from archlab.exceptions import ShapeError

from ._activations import activation_flops
from ._params import PosInt
from ._registry import (
    Cost,
    InputRule,
    KerasStyle,
    LayerParams,
    LayerType,
    Quantization,
    TensorInfo,
    register_layer,
)

if TYPE_CHECKING:
    from torch import nn

    from ._llm_modules import GatedMLP

# torch is heavy and validate/schema never build: the modules live in _llm_modules, which each
# module() imports when called; archlab.layers.llm.GatedMLP still reaches them.
__getattr__, __dir__ = lazy_attributes(__name__, dict.fromkeys(("GatedMLP",), "archlab.layers._llm_modules"))

__all__ = ["GatedMLP", "GatedMLPParams"]

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
