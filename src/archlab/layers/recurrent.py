"""Recurrent layers over (time, features): the seed's Elman recurrence, LSTM and GRU."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from ._activations import ActivationName, activation_flops, make_activation
from ._params import PosInt
from ._registry import Cost, InputRule, LayerParams, LayerType, TensorInfo, register_layer

__all__ = ["ElmanRNN", "GatedRNN"]

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


class ElmanCell(nn.Module):
    """One direction of one layer: h_t = f(W_xh x_t + W_hh h_(t-1) + b_h), as the seed writes it
    (a single bias, as in Keras SimpleRNN; torch.nn.RNN carries two)."""

    def __init__(self, input_size: int, units: int) -> None:
        super().__init__()
        self.weight_xh = nn.Parameter(torch.empty(units, input_size))
        self.weight_hh = nn.Parameter(torch.empty(units, units))
        self.bias_h = nn.Parameter(torch.empty(units))
        bound = 1.0 / math.sqrt(units)
        for weight in (self.weight_xh, self.weight_hh, self.bias_h):
            nn.init.uniform_(weight, -bound, bound)

    def forward(self, x: torch.Tensor, activation: nn.Module, reverse: bool) -> torch.Tensor:
        # The input projection of every step in one matmul; only the recurrence is sequential.
        projected = x @ self.weight_xh.T + self.bias_h  # (B, T, H)
        h = x.new_zeros(x.shape[0], self.weight_hh.shape[0])  # (B, H)
        steps = range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1])
        outputs: list[torch.Tensor] = [h] * x.shape[1]
        for t in steps:
            h = activation(projected[:, t] + h @ self.weight_hh.T)
            outputs[t] = h
        return torch.stack(outputs, dim=1)  # (B, T, H)


class ElmanRNN(nn.Module):
    """Stacked, optionally bidirectional Elman network (simple_rnn)."""

    def __init__(self, input_size: int, units: int, activation: str | None, num_layers: int,
                 bidirectional: bool, return_sequences: bool) -> None:
        super().__init__()
        self.directions = 2 if bidirectional else 1
        self.return_sequences = return_sequences
        self.activation = make_activation(activation)
        self.cells = nn.ModuleList(
            ElmanCell(input_size if layer == 0 else units * self.directions, units)
            for layer in range(num_layers) for _ in range(self.directions))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        finals: list[torch.Tensor] = []
        for first in range(0, len(self.cells), self.directions):
            runs = [self.cells[first + d](x, self.activation, reverse=d == 1) for d in range(self.directions)]
            # the final state of the backward direction is the one at t = 0
            finals = [run[:, -1] if d == 0 else run[:, 0] for d, run in enumerate(runs)]
            x = torch.cat(runs, dim=-1)  # (B, T, H * directions)
        return x if self.return_sequences else torch.cat(finals, dim=-1)


class GatedRNN(nn.Module):
    """torch.nn.LSTM / GRU, batch first, returning the sequence or the final states."""

    def __init__(self, kind: str, input_size: int, units: int, num_layers: int, bidirectional: bool,
                 return_sequences: bool) -> None:
        super().__init__()
        cls = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = cls(input_size, units, num_layers=num_layers, bidirectional=bidirectional, batch_first=True)
        self.directions = 2 if bidirectional else 1
        self.return_sequences = return_sequences

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output, state = self.rnn(x)
        if self.return_sequences:
            return output  # (B, T, H * directions)
        h_n = state[0] if isinstance(state, tuple) else state  # (layers * directions, B, H)
        return torch.cat(list(h_n[-self.directions:]), dim=-1)  # (B, H * directions)


class _RecurrentLayer(LayerType):
    Params = RecurrentParams
    accepts = _ACCEPTS
    gates = 1
    pointwise_per_step = 0  # elementwise FLOPs per unit per step besides the matmuls
    saved_per_step = 2  # elements per unit per step kept for backward

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

    def module(self, p: RecurrentParams, x: TensorInfo) -> nn.Module:
        return ElmanRNN(x.shape[1], p.units, p.activation, p.num_layers, p.bidirectional, p.return_sequences)


@register_layer("lstm")
class LSTMLayer(_RecurrentLayer):
    Params = GatedParams
    gates = 4
    # add projections 4, gate nonlinearities 4, c = f*c + i*g 3, tanh(c) 1, h = o*tanh(c) 1
    pointwise_per_step = 13
    saved_per_step = 7
    summary = "LSTM (torch.nn.LSTM)"

    def module(self, p: GatedParams, x: TensorInfo) -> nn.Module:
        return GatedRNN("lstm", x.shape[1], p.units, p.num_layers, p.bidirectional, p.return_sequences)


@register_layer("gru")
class GRULayer(_RecurrentLayer):
    Params = GatedParams
    gates = 3
    # r, z: add 2 + sigmoid 2; n: r*(.) 1, add 1, tanh 1; h = (1-z)*n + z*h: 4
    pointwise_per_step = 11
    saved_per_step = 5
    summary = "GRU (torch.nn.GRU)"

    def module(self, p: GatedParams, x: TensorInfo) -> nn.Module:
        return GatedRNN("gru", x.shape[1], p.units, p.num_layers, p.bidirectional, p.return_sequences)
