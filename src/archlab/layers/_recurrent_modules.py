"""The torch side of the recurrent layers: the modules that ``recurrent``'s factories make."""

from __future__ import annotations

import math

import torch
from torch import nn

from ._activation_modules import make_activation
from ._masking import MaskReader, padding_of

__all__ = ["ElmanCell", "ElmanRNN", "GatedRNN"]


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

    def forward(self, x: torch.Tensor, activation: nn.Module, reverse: bool,
                real: torch.Tensor | None = None) -> torch.Tensor:
        """``real``: (B, T, 1), True at real steps; a padded step leaves the state as it is, so each
        sequence's state is the one it has alone (backward: it starts at its last real step)."""
        # The input projection of every step in one matmul; only the recurrence is sequential.
        projected = x @ self.weight_xh.T + self.bias_h  # (B, T, H)
        h = x.new_zeros(x.shape[0], self.weight_hh.shape[0])  # (B, H)
        steps = range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1])
        outputs: list[torch.Tensor] = [h] * x.shape[1]
        for t in steps:
            step = activation(projected[:, t] + h @ self.weight_hh.T)
            h = step if real is None else torch.where(real[:, t], step, h)
            outputs[t] = h
        return torch.stack(outputs, dim=1)  # (B, T, H)


class ElmanRNN(nn.Module):
    """Stacked, optionally bidirectional Elman network (simple_rnn)."""

    padding: MaskReader | None = None  # set by the builder for a spec with pad_id (_masking)

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
        pad = padding_of(self)
        real = None if pad is None else ~pad.unsqueeze(-1)  # (B, T, 1)
        finals: list[torch.Tensor] = []
        for first in range(0, len(self.cells), self.directions):
            runs = [self.cells[first + d](x, self.activation, reverse=d == 1, real=real)
                    for d in range(self.directions)]
            # the final state of the backward direction is the one at t = 0; padded steps carry the
            # forward one's final state to t = T - 1
            finals = [run[:, -1] if d == 0 else run[:, 0] for d, run in enumerate(runs)]
            x = torch.cat(runs, dim=-1)  # (B, T, H * directions)
        return x if self.return_sequences else torch.cat(finals, dim=-1)


class GatedRNN(nn.Module):
    """torch.nn.LSTM / GRU, batch first, returning the sequence or the final states."""

    padding: MaskReader | None = None  # set by the builder for a spec with pad_id (_masking)

    def __init__(self, kind: str, input_size: int, units: int, num_layers: int, bidirectional: bool,
                 return_sequences: bool) -> None:
        super().__init__()
        cls = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = cls(input_size, units, num_layers=num_layers, bidirectional=bidirectional, batch_first=True)
        self.directions = 2 if bidirectional else 1
        self.return_sequences = return_sequences

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = padding_of(self)
        if pad is not None and self.directions == 2 and torch.compiler.is_exporting():
            return self._bidirectional_unpacked(x, pad)
        if pad is not None and self.directions == 1 and torch.compiler.is_exporting():
            # torch.export cannot pack (the lengths are data); one direction needs no packing: a step's
            # output depends on earlier steps only, so the last real step's output is the final state
            output, _ = self.rnn(x)
            if self.return_sequences:
                return output
            last = ((~pad).sum(dim=1) - 1).clamp(min=0)
            return output[torch.arange(x.shape[0], device=x.device), last]
        if pad is None:
            output, state = self.rnn(x)
        else:
            # packed: each sequence runs over its real steps only, so its final state is its last
            # real token's (the backward direction starts there); torch restores the batch order
            lengths = (~pad).sum(dim=1).clamp(min=1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            output, state = self.rnn(packed)
            if self.return_sequences:
                output, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=True, total_length=x.shape[1])
        if self.return_sequences:
            return output  # (B, T, H * directions)
        h_n = state[0] if isinstance(state, tuple) else state  # (layers * directions, B, H)
        return torch.cat(list(h_n[-self.directions:]), dim=-1)  # (B, H * directions)

    def _direction(self, x: torch.Tensor, layer: int, suffix: str) -> torch.Tensor:
        """One layer's one direction over the whole (B, T, F) input, with its own weights: torch's
        functional form of the module's forward, for one layer and direction."""
        names = [f"weight_ih_l{layer}{suffix}", f"weight_hh_l{layer}{suffix}"]
        if self.rnn.bias:
            names += [f"bias_ih_l{layer}{suffix}", f"bias_hh_l{layer}{suffix}"]
        weights = [getattr(self.rnn, name) for name in names]
        h0 = x.new_zeros(1, x.shape[0], self.rnn.hidden_size)
        if isinstance(self.rnn, nn.LSTM):
            return torch.lstm(x, (h0, h0), weights, self.rnn.bias, 1, 0.0, False, False, True)[0]
        return torch.gru(x, h0, weights, self.rnn.bias, 1, 0.0, False, False, True)[0]

    def _bidirectional_unpacked(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """The packed forward pass without packing, which torch.export cannot trace (the lengths are
        data): the backward direction runs over each sequence reversed within its real length, so
        it starts at the last real step, exactly as packed; padded outputs are 0, as packed ones."""
        lengths = (~pad).sum(dim=1).clamp(min=1)[:, None]  # (B, 1), as the packed path counts them
        steps = torch.arange(x.shape[1], device=x.device)[None, :]  # (1, T)
        real = steps < lengths  # (B, T)
        order = torch.where(real, lengths - 1 - steps, steps)  # its own inverse; padding stays in place

        def reverse(t: torch.Tensor) -> torch.Tensor:
            return t.gather(1, order[..., None].expand(-1, -1, t.shape[2]))

        for layer in range(self.rnn.num_layers):  # dropout between layers is training-only
            forward = self._direction(x, layer, "")
            backward = reverse(self._direction(reverse(x), layer, "_reverse"))
            x = torch.cat([forward, backward], dim=-1) * real[..., None]  # (B, T, 2H)
        if self.return_sequences:
            return x
        hidden = self.rnn.hidden_size
        last = torch.arange(x.shape[0], device=x.device), lengths[:, 0] - 1
        # final states: forward at the last real step, backward at the first (where it ends)
        return torch.cat([x[last][:, :hidden], x[:, 0, hidden:]], dim=-1)  # (B, 2H)
