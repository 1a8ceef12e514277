"""Incremental decoding: each step runs the target-dependent part of the graph on the new ids only,
with the keys and values of earlier steps kept for every causal transformer block.

The parts that do not depend on the ids being decoded (a seq2seq model's encoder) run once. This is
exact for the layers listed in ``_POSITIONWISE`` plus positions, residuals, repeats, causal
transformer blocks (torch's TransformerEncoderLayer / DecoderLayer), causal self-attention and
``transformer_block`` (LLaMA's ``Attention``: rotary positions offset by the cached length, grouped
key/value heads, the sliding window; its MLPs and mixtures of experts work per position): a model
with anything else decodes through the full forward pass instead (``use_cache=None``) or is refused
(``use_cache=True``).
A block's step follows torch's own ``forward`` through its ``_sa_block`` parts (``_mha_block``,
``_ff_block``), so ``tests/generation/test_cache.py`` compares the two paths on every torch upgrade.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..builder import ArchlabModel
from ..builder._modules import GraphNet, GraphNode, Repeat, Residual
from ..layers._attention_modules import SelfAttention, TransformerBlock
from ..layers._core_modules import Dense, PositionalEncoding
from ..layers._llm_modules import Attention, DecoderBlock, DenseMLP, GatedMLP, MixtureOfExperts
from ..layers._masking import holding
from ._common import GenerationError

__all__ = ["CachedStep", "FullStep", "GraphSplit", "make_step", "split_graph"]

# layers that treat every position alone, so running them on the new positions only is exact
_POSITIONWISE = (nn.Embedding, nn.Linear, nn.LayerNorm, nn.RMSNorm, nn.Dropout, nn.Identity, nn.ReLU, nn.GELU, nn.Tanh,
                 nn.Sigmoid, nn.SiLU, nn.LeakyReLU, nn.ELU)


@dataclass(frozen=True)
class GraphSplit:
    """A graph's nodes in two, each part in the graph's (dependency) order.

    Attributes:
        fixed: the nodes that do not depend on the decoded ids: they run once (a seq2seq model's encoder).
        step: the nodes that do: they run at every step (the decoder).
        reads: what the step reads from outside itself: fixed nodes (the encoder's memory) or inputs.
        output: the graph's one output when it is a step node, else None.
    """

    fixed: list[str]
    step: list[str]
    reads: list[str]
    output: str | None


def split_graph(net: GraphNet, step_name: str) -> GraphSplit:
    """Split a graph at the input ``step_name`` (``target``, ``tokens``): the one place that decides
    what a decode runs once and what it runs per step, for the KV cache and for the ONNX export."""
    dynamic, fixed, step = {step_name}, [], []
    for name, node in net.nodes.items():
        if any(s in dynamic for s in node.sources):
            dynamic.add(name)
            step.append(name)
        else:
            fixed.append(name)
    reads = [s for s in dict.fromkeys(s for name in step for s in net.nodes[name].sources) if s not in dynamic]
    output = net.outputs[0] if len(net.outputs) == 1 and net.outputs[0] in dynamic else None
    return GraphSplit(fixed, step, reads, output)


class FullStep:
    """Next-token log-probabilities from the whole model on the whole prefix (the model as a black box)."""

    def __init__(self, model: nn.Module, static: dict[str, torch.Tensor], step_name: str) -> None:
        self.model, self.static, self.step_name = model, static, step_name
        self.rows = torch.arange(len(next(iter(static.values()))), device=next(iter(static.values())).device) \
            if static else None

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep (and repeat) the given rows of the batch, as beam search's next beams."""
        if self.rows is not None:
            self.rows = self.rows[rows]

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        static = {name: value[self.rows] for name, value in self.static.items()}
        logits = self.model(**static, **{self.step_name: ids})  # (R, t, V)
        return torch.log_softmax(logits[:, -1].float(), dim=-1)  # (R, V)


def _unsupported(module: nn.Module, path: str) -> str | None:
    """Why the module cannot run step by step (``path`` names it), or None when it can."""
    if isinstance(module, nn.Sequential):
        return next((r for i, m in enumerate(module) if (r := _unsupported(m, f"{path}[{i}]"))), None)
    if isinstance(module, Repeat):
        return next((r for i, m in enumerate(module.blocks) if (r := _unsupported(m, f"{path}.{i}"))), None)
    if isinstance(module, Residual):
        return next((r for part in ("layers", "shortcut", "post")
                     if (r := _unsupported(getattr(module, part), f"{path}.{part}"))), None)
    if isinstance(module, TransformerBlock):
        attn = module.block.self_attn
        if not module.causal:
            return f"{path} is a transformer block without 'causal: true', so earlier steps see later ones"
        if not (attn.batch_first and attn._qkv_same_embed_dim):
            return f"{path}'s attention is not torch's batch-first packed form"
        return None
    if isinstance(module, (Attention, SelfAttention)):
        if not module.causal:
            return f"{path} is self-attention without 'causal: true', so earlier steps see later ones"
        return None
    if isinstance(module, DecoderBlock):
        return _unsupported(module.attn, f"{path}.attn")  # its norms and MLP work per position
    if isinstance(module, (GatedMLP, DenseMLP, MixtureOfExperts)):
        return None  # per position: a mixture of experts routes each token alone
    if isinstance(module, Dense):
        return _unsupported(module.activation, f"{path}.activation")
    if isinstance(module, (PositionalEncoding, *_POSITIONWISE)) or (isinstance(module, nn.Softmax)
                                                                  and module.dim == -1):
        return None
    return f"{path} ({type(module).__name__}) mixes positions and has no step-by-step form here"


class CachedStep:
    """Next-token log-probabilities from the new ids only, reusing the keys and values of earlier steps."""

    def __init__(self, model: ArchlabModel, static: dict[str, torch.Tensor], step_name: str) -> None:
        net = getattr(model, "net", None)
        if not isinstance(model, ArchlabModel) or not isinstance(net, GraphNet) or model.permute is not None:
            raise GenerationError("use_cache: only graph-form specs with long inputs decode step by step")
        split = split_graph(net, step_name)
        dynamic = {step_name, *split.step}
        for name in split.step:  # checked before any work
            reason = self._node_unsupported(name, net.nodes[name], dynamic)
            if reason:
                raise GenerationError(f"use_cache: {reason}; decode with use_cache=False")
        if split.output is None:
            raise GenerationError("use_cache: the model needs one output that depends on the ids decoded")
        self.plan: list[tuple[str, GraphNode]] = [(name, net.nodes[name]) for name in split.step]
        self.output, self.step_name = split.output, step_name
        scope = model.masks  # the fixed inputs' padding, as the model's own forward computes it
        padding = {} if scope is None else scope.of(static)
        with holding(scope, padding):
            values = net.run(dict(static), split.fixed)  # once: e.g. the encoder's memory
        self.static = {name: values[name] for name in split.reads}
        #: per fixed input with a pad_id, its padding: what cross-attention over the memory ignores
        self.padding = padding
        self.kv: list[tuple[torch.Tensor, torch.Tensor]] = []  # per block application: (R, heads, t, d)
        self.length = 0  # the ids seen so far
        self._block_index = 0  # the next block application within a step (a shared block has one per use)

    @staticmethod
    def _node_unsupported(name: str, node: GraphNode, dynamic: set[str]) -> str | None:
        if node.merge is not None:
            if node.merge.kind == "concat" or not all(s in dynamic for s in node.sources):
                return f"graph.{name} merges ({node.merge.kind}) across positions or with a fixed input"
        elif len(node.sources) > 1:
            first = node.layers[0]
            if not isinstance(first, TransformerBlock) or any(s in dynamic for s in node.sources[1:]):
                return f"graph.{name} reads several inputs that depend on the ids decoded"
        return _unsupported(node.layers, f"graph.{name}.layers")

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep (and repeat) the given rows, with their cached keys and values."""
        self.static = {name: value[rows] for name, value in self.static.items()}
        self.padding = {name: value[rows] for name, value in self.padding.items()}
        self.kv = [(k[rows], v[rows]) for k, v in self.kv]

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        new = ids[:, self.length:]  # (R, n): the ids not seen yet
        self._block_index = 0
        values = {**self.static, self.step_name: new}
        for name, node in self.plan:
            tensors = [values[s] for s in node.sources]
            if node.merge is not None:
                values[name] = self._run(node.layers, node.merge(tensors))
            elif len(tensors) == 1:
                values[name] = self._run(node.layers, tensors[0])
            else:
                first, *rest = list(node.layers)
                x = self._block(first, tensors[0], tensors[1])
                for layer in rest:
                    x = self._run(layer, x)
                values[name] = x
        self.length = ids.shape[1]
        return torch.log_softmax(values[self.output][:, -1].float(), dim=-1)  # (R, V)

    def _run(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if isinstance(module, nn.Sequential):
            for layer in module:
                x = self._run(layer, x)
            return x
        if isinstance(module, Repeat):
            for i in range(module.times):
                x = self._run(module.blocks[i % len(module.blocks)], x)
            return x
        if isinstance(module, Residual):
            return self._run(module.post, self._run(module.layers, x) + self._run(module.shortcut, x))
        if isinstance(module, PositionalEncoding):
            return x + module.weight[self.length: self.length + x.shape[1]]  # (R, n, D) + (n, D)
        if isinstance(module, TransformerBlock):
            return self._block(module, x, None)
        if isinstance(module, DecoderBlock):  # as its forward, with the attention stepped
            h = x + module.drop(self._run(module.attn, module.attn_norm(x)))
            return h + module.drop(module.mlp(module.mlp_norm(h)))
        if isinstance(module, SelfAttention):
            return self._self_attention(module.attn, x)
        if isinstance(module, Attention):
            return self._attention(module, x)
        return module(x)

    def _cached(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The keys and values the next attention application cached at earlier steps, if any."""
        return self.kv[self._block_index] if self._block_index < len(self.kv) else None

    def _keep(self, kv: tuple[torch.Tensor, torch.Tensor]) -> None:
        if self._block_index < len(self.kv):
            self.kv[self._block_index] = kv
        else:
            self.kv.append(kv)
        self._block_index += 1

    def _attention(self, attn: Attention, x: torch.Tensor) -> torch.Tensor:
        """LLaMA's attention on the new positions: its own ``attend`` rotates them from the cached
        length on and masks causally (and by the window) over the cached keys and the new ones. All
        keys are kept, so the rotary offset is the cache's length."""
        out, kv = attn.attend(x, past=self._cached())  # kv: (R, kv_heads, L + n, hd) each
        self._keep(kv)
        return out

    def _self_attention(self, attn: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
        rows, n, dim = x.shape
        heads = attn.num_heads
        q, k, v = (t.view(rows, n, heads, dim // heads).transpose(1, 2)  # (R, h, n, d)
                   for t in F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1))
        past = self._cached()
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (R, h, L + n, d)
        self._keep((k, v))
        # new query j (position L + j) sees the keys up to L + j; one new id sees them all
        mask = None if n == 1 else torch.ones(n, k.shape[2], dtype=torch.bool, device=x.device).tril(k.shape[2] - n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (R, h, n, d)
        return attn.out_proj(out.transpose(1, 2).reshape(rows, n, dim))

    def _block(self, module: TransformerBlock, x: torch.Tensor, memory: torch.Tensor | None) -> torch.Tensor:
        b = module.block

        def sa(h: torch.Tensor) -> torch.Tensor:
            return b.dropout1(self._self_attention(b.self_attn, h))

        if memory is None:  # TransformerEncoderLayer, as its forward does
            if b.norm_first:
                x = x + sa(b.norm1(x))
                return x + b._ff_block(b.norm2(x))
            x = b.norm1(x + sa(x))
            return b.norm2(x + b._ff_block(x))
        # the input whose padding marks the memory's time axis, as the block's forward reads it
        memory_input = module.padding.sources[1] if module.padding is not None else None
        memory_pad = self.padding.get(memory_input) if memory_input is not None else None
        if b.norm_first:  # TransformerDecoderLayer, as its forward does
            x = x + sa(b.norm1(x))
            x = x + b._mha_block(b.norm2(x), memory, None, memory_pad)
            return x + b._ff_block(b.norm3(x))
        x = b.norm1(x + sa(x))
        x = b.norm2(x + b._mha_block(x, memory, None, memory_pad))
        return b.norm3(x + b._ff_block(x))


def make_step(model: nn.Module, static: dict[str, torch.Tensor], step_name: str,
              use_cache: bool | None) -> FullStep | CachedStep:
    """The step function a decode uses: cached when ``use_cache`` (refused with the reason when the
    model has no step-by-step form), full when not, and cached where it can be when None.

    """
    if use_cache is False:
        return FullStep(model, static, step_name)
    try:
        return CachedStep(model, static, step_name)  # type: ignore[arg-type]
    except GenerationError:
        if use_cache:
            raise
        return FullStep(model, static, step_name)
