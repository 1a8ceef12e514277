"""The torch side of the attention layers: the modules that ``attention``'s factories make."""

from __future__ import annotations

import torch
from torch import nn

from ._masking import MaskReader, padding_of

__all__ = ["AdditiveAttention", "AdditiveCrossAttention", "SelfAttention", "TransformerBlock"]


class AdditiveAttention(nn.Module):
    """The seed's additive (Bahdanau) attention over states s_1..s_T:

    e_t = v^T tanh(W_h h + W_s s_t + b),  alpha = softmax(e),  c = sum_t alpha_t s_t.

    ``h`` is the last state (query='last') or a learned vector (query='learned'). The weights
    alpha of the latest forward pass are kept in ``last_alpha`` for explanation.

    Input shape: (batch, time, dim). Output shape: (batch, dim).
    """

    padding: MaskReader | None = None  # set by the builder for a spec with pad_id (_masking)

    def __init__(self, dim: int, units: int, query: str) -> None:
        super().__init__()
        self.W_s = nn.Linear(dim, units)  # carries the bias b
        self.W_h = nn.Linear(dim, units, bias=False)
        self.v = nn.Linear(units, 1, bias=False)
        self.query = nn.Parameter(torch.randn(dim) * 0.02) if query == "learned" else None
        self.last_alpha: torch.Tensor | None = None

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        pad = padding_of(self)  # (B, T), True at padding; None: every step is real
        if self.query is not None:
            h = self.query.expand(states.shape[0], -1)  # (B, D)
        elif pad is None:
            h = states[:, -1]
        else:  # the last real step, the one the sentence alone would end with
            last = ((~pad).sum(dim=1) - 1).clamp(min=0)
            h = states[torch.arange(states.shape[0], device=states.device), last]
        scores = self.v(torch.tanh(self.W_h(h).unsqueeze(1) + self.W_s(states))).squeeze(-1)  # (B, T)
        if pad is not None:
            scores = scores.masked_fill(pad, float("-inf"))
        alpha = torch.softmax(scores, dim=1)  # (B, T)
        self.last_alpha = alpha.detach()
        return (alpha.unsqueeze(-1) * states).sum(dim=1)  # (B, D)


def _causal_mask(steps: int, device: torch.device) -> torch.Tensor:
    return nn.Transformer.generate_square_subsequent_mask(steps, device=device)  # (T, T), -inf above


def _causal_bool(steps: int, device: torch.device) -> torch.Tensor:
    """The causal mask as booleans (True above the diagonal), the type of a key-padding mask:
    torch deprecates mixing a float attention mask with a boolean padding mask."""
    return torch.ones(steps, steps, dtype=torch.bool, device=device).triu(1)


class SelfAttention(nn.Module):
    """Multi-head self-attention (torch.nn.MultiheadAttention), optionally causal."""

    padding: MaskReader | None = None  # set by the builder for a spec with pad_id (_masking)

    def __init__(self, dim: int, heads: int, dropout: float, causal: bool) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = padding_of(self)  # (B, T): padded keys are ignored by every query
        if pad is None:
            mask = _causal_mask(x.shape[1], x.device) if self.causal else None
        else:
            mask = _causal_bool(x.shape[1], x.device) if self.causal else None
        out, _ = self.attn(x, x, x, attn_mask=mask, key_padding_mask=pad, need_weights=False,
                           is_causal=self.causal)
        return out  # (B, T, D)


class TransformerBlock(nn.Module):
    """torch.nn.TransformerEncoderLayer / DecoderLayer, batch first, with an optional causal mask."""

    padding: MaskReader | None = None  # set by the builder for a spec with pad_id (_masking)

    def __init__(self, kind: str, dim: int, heads: int, ff_dim: int, dropout: float, activation: str,
                 norm_first: bool, causal: bool) -> None:
        super().__init__()
        cls = nn.TransformerEncoderLayer if kind == "encoder" else nn.TransformerDecoderLayer
        self.block = cls(dim, heads, ff_dim, dropout, activation, batch_first=True, norm_first=norm_first)
        self.causal = causal

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        # self-attention ignores x's padded steps; cross-attention the memory's (the source's)
        pad, memory_pad = padding_of(self, 0), (padding_of(self, 1) if memory is not None else None)
        if pad is None and memory_pad is None:
            mask = _causal_mask(x.shape[1], x.device) if self.causal else None
        else:
            mask = _causal_bool(x.shape[1], x.device) if self.causal else None
        if memory is None:
            return self.block(x, src_mask=mask, src_key_padding_mask=pad, is_causal=self.causal)
        return self.block(x, memory, tgt_mask=mask, tgt_key_padding_mask=pad, memory_key_padding_mask=memory_pad,
                          tgt_is_causal=self.causal)


class AdditiveCrossAttention(nn.Module):
    """Additive attention of each decoder state over the encoder states (``additive_cross_attention``).

    Input shapes: queries (batch, T, D), memory (batch, S, E). Output: contexts (batch, T, E). The
    weights of the latest forward pass are kept in ``last_alpha`` (batch, T, S) for explanation.
    """

    def __init__(self, dim: int, memory_dim: int, units: int) -> None:
        super().__init__()
        self.W_h = nn.Linear(dim, units, bias=False)
        self.W_s = nn.Linear(memory_dim, units)  # carries the bias b
        self.v = nn.Linear(units, 1, bias=False)
        self.last_alpha: torch.Tensor | None = None

    padding: MaskReader | None = None  # set by the builder for a spec with pad_id (_masking)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        pairs = torch.tanh(self.W_h(queries).unsqueeze(2) + self.W_s(memory).unsqueeze(1))  # (B, T, S, U)
        scores = self.v(pairs).squeeze(-1)  # (B, T, S)
        memory_pad = padding_of(self, 1)  # the source's padded steps get no weight
        if memory_pad is not None:
            scores = scores.masked_fill(memory_pad.unsqueeze(1), float("-inf"))
        alpha = torch.softmax(scores, dim=-1)
        self.last_alpha = alpha.detach()
        return alpha @ memory  # (B, T, E)
