"""Recurrent layers over (time, features): the seed's Elman recurrence, LSTM and GRU."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from archlab._lazy import lazy_attributes

from ._activations import ActivationName, activation_flops
from ._params import PosInt
from ._registry import (
    SEQUENCE_STATIC,
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

    from ._recurrent_modules import ElmanCell, ElmanRNN, GatedRNN

# torch is heavy and validate/schema never build: the modules live in _recurrent_modules, which each
# module() imports when called; archlab.layers.recurrent.ElmanRNN still reaches them.
__getattr__, __dir__ = lazy_attributes(__name__, dict.fromkeys(("ElmanCell", "ElmanRNN", "GatedRNN"),
                                                                "archlab.layers._recurrent_modules"))

__all__ = ["ElmanCell", "ElmanRNN", "GatedRNN"]

_ACCEPTS = InputRule(ranks={2: "(time, features)"},
                     hints={1: "add 'reshape: {shape: [-1, 1]}' before it (one feature per step) "
                               "or 'embedding' for token ids",
                            3: "add 'reshape' to (time, features) before it"})


class RecurrentParams(LayerParams):
    units: PosInt
    activation: ActivationName | None = "tanh"
    return_sequences: bool = False
    bidirectional: bool = False
    num_layers: PosInt = 1


class GatedParams(RecurrentParams):
    activation: Literal["tanh"] = "tanh"  # PyTorch's fused LSTM/GRU kernels fix tanh


class _RecurrentLayer(LayerType):
    Params = RecurrentParams
    accepts = _ACCEPTS
    gates = 1
    pointwise_per_step = 0  # elementwise FLOPs per unit per step besides the matmuls
    saved_per_step = 2  # elements per unit per step kept for backward
    quantization = Quantization(static=SEQUENCE_STATIC, dynamic=True)
    reads_mask = True

    def keeps_time(self, p: RecurrentParams, x: TensorInfo) -> bool:
        return p.return_sequences

    def output(self, p: RecurrentParams, x: TensorInfo) -> TensorInfo:
        width = p.units * (2 if p.bidirectional else 1)
        return TensorInfo((x.shape[0], width) if p.return_sequences else (width,))

    def _runs(self, p: RecurrentParams, x: TensorInfo) -> list[tuple[int, int]]:
        """(input width, how many runs) of the (layer, direction) runs, in closed form: the first
        layer's runs read the features, every later one ``units x directions``; a count, never a
        list as long as ``num_layers``."""
        directions = 2 if p.bidirectional else 1
        return [(x.shape[1], directions), (p.units * directions, (p.num_layers - 1) * directions)]

    def cost(self, p: RecurrentParams, x: TensorInfo, y: TensorInfo) -> Cost:
        steps, h = x.shape[0], p.units
        total = Cost()
        for width, runs in self._runs(p, x):
            macs = steps * self.gates * h * (width + h)
            total += Cost(macs, 2 * macs + steps * h * self.pointwise_per_step) * runs
        if self.name == "simple_rnn":
            total += Cost(flops=activation_flops(p.activation, steps * h) * self._count(p))
        return total

    def _count(self, p: RecurrentParams) -> int:
        return p.num_layers * (2 if p.bidirectional else 1)

    def count_params(self, p: RecurrentParams, x: TensorInfo) -> int:
        biases = 1 if self.name == "simple_rnn" else 2  # torch's LSTM/GRU keep b_ih and b_hh
        return sum(runs * self.gates * (p.units * (width + p.units) + biases * p.units)
                   for width, runs in self._runs(p, x))

    def saved_elements(self, p: RecurrentParams, x: TensorInfo, y: TensorInfo) -> int:
        return self._count(p) * x.shape[0] * p.units * self.saved_per_step


@register_layer("simple_rnn")
class SimpleRNNLayer(_RecurrentLayer):
    pointwise_per_step = 1  # adding the two projections
    summary = "Elman RNN: h_t = f(W_xh x_t + W_hh h_(t-1) + b_h)"
    keras = KerasStyle("SimpleRNN", ("units",))

    def module(self, p: RecurrentParams, x: TensorInfo) -> nn.Module:
        from ._recurrent_modules import ElmanRNN

        return ElmanRNN(x.shape[1], p.units, p.activation, p.num_layers, p.bidirectional, p.return_sequences)


@register_layer("lstm")
class LSTMLayer(_RecurrentLayer):
    Params = GatedParams
    gates = 4
    # add projections 4, gate nonlinearities 4, c = f*c + i*g 3, tanh(c) 1, h = o*tanh(c) 1
    pointwise_per_step = 13
    saved_per_step = 7
    summary = "LSTM (torch.nn.LSTM)"
    keras = KerasStyle("LSTM", ("units",))

    def module(self, p: GatedParams, x: TensorInfo) -> nn.Module:
        from ._recurrent_modules import GatedRNN

        return GatedRNN("lstm", x.shape[1], p.units, p.num_layers, p.bidirectional, p.return_sequences)


@register_layer("gru")
class GRULayer(_RecurrentLayer):
    Params = GatedParams
    gates = 3
    # r, z: add 2 + sigmoid 2; n: r*(.) 1, add 1, tanh 1; h = (1-z)*n + z*h: 4
    pointwise_per_step = 11
    saved_per_step = 5
    summary = "GRU (torch.nn.GRU)"
    quantization = Quantization(static=SEQUENCE_STATIC, dynamic="ONNX Runtime has no int8 GRU kernel")
    keras = KerasStyle("GRU", ("units",))

    def module(self, p: GatedParams, x: TensorInfo) -> nn.Module:
        from ._recurrent_modules import GatedRNN

        return GatedRNN("gru", x.shape[1], p.units, p.num_layers, p.bidirectional, p.return_sequences)
