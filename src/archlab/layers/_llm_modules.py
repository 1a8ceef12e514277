"""The torch side of the large-model blocks: the modules that ``llm``'s factories make."""

from __future__ import annotations

import torch
from torch import nn

from ._activation_modules import make_activation

__all__ = ["GatedMLP", "MixtureOfExperts"]


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
