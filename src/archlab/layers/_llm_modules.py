"""The torch side of the large-model blocks: the modules that ``llm``'s factories make."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._activation_modules import make_activation
from ._masking import MaskReader, padding_of

__all__ = ["Attention", "DecoderBlock", "DenseMLP", "GatedMLP", "MixtureOfExperts", "apply_rotary", "rotary_tables"]


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)); the submodules are named as Hugging Face's LLaMA names them
    (gate_proj, up_proj, down_proj without the suffix), so weights map one to one.

    Input shape: (batch, ..., dim). Output shape: (batch, ..., dim).
    """

    def __init__(self, dim: int, ff_dim: int, activation: str, bias: bool) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, ff_dim, bias=bias)
        self.up = nn.Linear(dim, ff_dim, bias=bias)
        self.down = nn.Linear(ff_dim, dim, bias=bias)
        self.activation = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.activation(self.gate(x)) * self.up(x))  # (B, ..., ff) -> (B, ..., D)


class MixtureOfExperts(nn.Module):
    """Mixtral's sparse block (Hugging Face MixtralSparseMoeBlock): router logits -> softmax ->
    each token's top_k experts, their probabilities renormalised to sum to 1 -> the weighted sum of
    those experts' outputs; plus the ``shared`` experts' outputs for every token (DeepSeekMoE).
    Each expert runs on its routed tokens only.

    After each forward, ``aux_loss`` holds the load-balancing loss of that batch (Switch
    Transformer, Fedus et al. 2022, as Mixtral's): E * sum_i f_i * P_i, with f_i the fraction of
    tokens routed to expert i (among their top_k; the f_i sum to top_k) and P_i the mean router
    probability of expert i. It is top_k when the routing is balanced; training may add it,
    scaled, to the loss (before backward: it shares the router's graph) so that the router keeps
    every expert in use.

    Input shape: (batch, ..., dim). Output shape: (batch, ..., dim).
    """

    aux_loss: torch.Tensor | None

    def __init__(self, dim: int, ff_dim: int, num_experts: int, top_k: int, shared_experts: int, activation: str,
                 bias: bool) -> None:
        super().__init__()
        self.top_k = top_k
        self.router = nn.Linear(dim, num_experts, bias=False)
        self.experts = nn.ModuleList(GatedMLP(dim, ff_dim, activation, bias) for _ in range(num_experts))
        self.shared = nn.ModuleList(GatedMLP(dim, ff_dim, activation, bias) for _ in range(shared_experts))
        self.aux_loss = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.reshape(-1, x.shape[-1])  # (B, ..., D) -> (N, D)
        # in fp32 as Mixtral's, so that bf16 logits do not tie or round the routing weights
        probs = self.router(tokens).softmax(-1, dtype=torch.float32)  # (N, E)
        weights, chosen = probs.topk(self.top_k, dim=-1)  # (N, k) each
        weights = (weights / weights.sum(-1, keepdim=True)).to(tokens.dtype)
        out = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            # the tokens routed to e and in which of their k slots; an expert no token chose still runs on
            # none, so that its weights get a zero gradient, not None
            rows, slots = (chosen == e).nonzero(as_tuple=True)  # (n_e,) each
            out.index_add_(0, rows, expert(tokens.index_select(0, rows)) * weights[rows, slots].unsqueeze(-1))
        for expert in self.shared:
            out = out + expert(tokens)
        self.aux_loss = load_balancing_loss(probs, chosen)
        return out.reshape(x.shape)


def load_balancing_loss(probs: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """E * sum_i f_i * P_i of router probabilities ``probs`` (N, E) and the experts ``chosen``
    (N, k): the auxiliary loss of Switch Transformer with top-k routing, as Hugging Face's Mixtral
    computes it. Only P_i carries a gradient (f_i counts choices)."""
    num_experts = probs.shape[-1]
    routed = torch.zeros_like(probs).scatter_(1, chosen, 1.0)  # (N, E): 1 where a token chose the expert
    return num_experts * (routed.mean(0) * probs.mean(0)).sum()


def rotary_tables(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of each position's rotation angles (Su et al. 2021), (T, head_dim): feature pair
    (i, i + head_dim/2) turns by position · theta^(-2i/head_dim), Hugging Face LLaMA's layout.
    Computed in float32 and recomputed per call, so nothing enters the state dict."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float()
                               / head_dim)  # (head_dim / 2,)
    angles = positions.float()[:, None] * inv_freq[None, :]  # (T, head_dim / 2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, head_dim): both halves of a pair turn alike
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x rotated: x·cos + rotate_half(x)·sin, rotate_half(x) = (-x2, x1) of x's two halves."""
    x1, x2 = x.chunk(2, dim=-1)  # (..., T, head_dim / 2) each
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Attention(nn.Module):
    """Self-attention as LLaMA and Mistral have it: q, k, v, o projections (Hugging Face's q_proj ...
    without the suffix, so weights map one to one), grouped key/value heads, rotary positions, an
    optional causal sliding window, torch's scaled_dot_product_attention.

    Input shape: (batch, time, dim). Output shape: (batch, time, dim).
    """

    padding: MaskReader | None = None  # set by the builder for a spec with pad_id (_masking)

    def __init__(self, dim: int, heads: int, kv_heads: int, head_dim: int, *, bias: bool, dropout: float,
                 causal: bool, window: int | None, rope_theta: float | None) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.q = nn.Linear(dim, heads * head_dim, bias=bias)
        self.k = nn.Linear(dim, kv_heads * head_dim, bias=bias)
        self.v = nn.Linear(dim, kv_heads * head_dim, bias=bias)
        self.o = nn.Linear(heads * head_dim, dim, bias=bias)
        self.dropout, self.causal, self.window, self.rope_theta = dropout, causal, window, rope_theta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.attend(x, padding_of(self))
        return out

    def attend(self, x: torch.Tensor, pad: torch.Tensor | None = None,
               past: tuple[torch.Tensor, torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The output for the new positions x, which follow the ``past`` keys and values (a KV
        cache's, already rotated), and the keys and values of all positions so far.

        Args:
            x: (B, T, D), positions L .. L + T - 1 where L is the past's length.
            pad: (B, T) True at padded positions (keys no query reads), or None; a forward's, so
                without ``past`` (a KV cache decodes unpadded steps).
            past: keys and values (B, kv_heads, L, head_dim) of the positions before x, or None.
        """
        b, t, _ = x.shape
        start = 0 if past is None else past[0].shape[2]
        q = self.q(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)  # (B, a, T, hd)
        k = self.k(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, kv, T, hd)
        v = self.v(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, kv, T, hd)
        if self.rope_theta is not None:
            positions = torch.arange(start, start + t, device=x.device)
            cos, sin = rotary_tables(positions, self.head_dim, self.rope_theta, q.dtype)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (B, kv, L + T, hd)
        mask = self._mask(t, start, pad, x.device)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
            is_causal=mask is None and self.causal and past is None,  # torch's fast causal kernel
            enable_gqa=self.kv_heads != self.heads)  # (B, a, T, hd): each kv head serves a / kv query heads
        return self.o(out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim)), (k, v)  # (B, T, D)

    def _mask(self, t: int, start: int, pad: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
        """(B or 1, 1, T, L + T) True where query i (position start + i) may read key j; None: all
        of them (or plain causal, which the kernel masks itself)."""
        if pad is None and self.window is None and (not self.causal or (start == 0)):
            return None
        query = torch.arange(start, start + t, device=device)[:, None]  # (T, 1) positions
        key = torch.arange(start + t, device=device)[None, :]  # (1, L + T)
        allowed = torch.ones(t, start + t, dtype=torch.bool, device=device)
        if self.causal:
            allowed &= key <= query
        if self.window is not None:  # itself and the window - 1 keys before it (Mistral)
            allowed &= key > query - self.window
        allowed = allowed[None, None]  # (1, 1, T, L + T)
        if pad is not None:  # padded keys are read by no query but themselves: a padded row is never empty
            allowed = allowed & (~pad[:, None, None, :] | (key == query)[None, None])  # (B, 1, T, T)
        return allowed


class DenseMLP(nn.Module):
    """GPT-2's MLP, c_proj(act(c_fc(x))): two ``dense`` modules, the activation in c_fc.

    Input shape: (batch, ..., dim). Output shape: (batch, ..., dim).
    """

    def __init__(self, c_fc: nn.Module, c_proj: nn.Module) -> None:
        super().__init__()
        self.c_fc, self.c_proj = c_fc, c_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.c_fc(x))  # (B, ..., D) -> (B, ..., ff) -> (B, ..., D)


class DecoderBlock(nn.Module):
    """Pre-norm block h = x + drop(attn(attn_norm(x))), y = h + drop(mlp(mlp_norm(h))), from modules
    the registered layers made (``transformer_block``); LLaMA names them self_attn, input_layernorm,
    post_attention_layernorm and mlp.

    Input shape: (batch, time, dim). Output shape: (batch, time, dim).
    """

    def __init__(self, attn_norm: nn.Module, attn: nn.Module, mlp_norm: nn.Module, mlp: nn.Module,
                 dropout: float) -> None:
        super().__init__()
        self.attn_norm, self.attn, self.mlp_norm, self.mlp = attn_norm, attn, mlp_norm, mlp
        self.drop = nn.Dropout(dropout)

    @property
    def padding(self) -> MaskReader | None:
        """The builder's padding reader (``reads_mask``), which is the attention's: only it mixes positions."""
        return self.attn.padding

    @padding.setter
    def padding(self, reader: MaskReader | None) -> None:
        self.attn.padding = reader

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + self.drop(self.attn(self.attn_norm(x)))
        return h + self.drop(self.mlp(self.mlp_norm(h)))  # (B, T, D)
