"""What the planner reads from a spec: its Transformer blocks (the layers whose ``transformer`` trait
gives a ``TransformerShape``), how many times each runs, where the other parameters sit, and the
analysis's parameter counts. Shape arithmetic only: no weight is allocated."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from archlab.analysis import Analysis, analyze
from archlab.builder import LayerNode, Node, ParsedSpec, RepeatNode, parse
from archlab.builder._nodes import weight_shape
from archlab.exceptions import SpecError
from archlab.layers import LayerType, TransformerShape, get_layer, list_layers
from archlab.spec import Spec

__all__ = ["BlockGroup", "ModelShape", "model_shape"]


@dataclass(frozen=True)
class BlockGroup:
    """Transformer blocks of one shape at one place in the spec.

    Attributes:
        shape: the blocks' TransformerShape.
        count: how many times such a block runs (a repeat's ``times``).
        params: the parameters these blocks hold together (a weight-sharing repeat holds one block's).
        active_params: parameters one token passes through in ONE of these blocks (a mixture of
            experts: the router, its top-k and shared experts; otherwise all of the block's).
        path: the spec path of the first such block.
    """

    shape: TransformerShape
    count: int
    params: int
    active_params: int
    path: str


@dataclass(frozen=True)
class ModelShape:
    """A Transformer stack as the planner sees it.

    Attributes:
        name: the spec's name.
        blocks: the block groups, in run order.
        total_params: every parameter, a tied or shared weight once (``archlab.analyze``).
        active_params: the parameters one token passes through (``Analysis.active_params`` where the
            analysis has it, else ``total_params``), plus each further pass through a shared
            (``share_weights``) block: the N of 6N.
        embedding_params: the token embeddings' parameters (layers that look up ids).
        vocab: the largest id table (an embedding's ``input_dim``), else the output's last axis.
        before_params: parameters of the layers before the first block (embeddings): pipeline stage 0 holds them.
        after_params: parameters of the layers after the last block (final norm, head), a tied head's
            weight included: the last pipeline stage keeps its own copy, as Megatron-LM does.
    """

    name: str
    blocks: tuple[BlockGroup, ...]
    total_params: int
    active_params: int
    embedding_params: int
    vocab: int
    before_params: int
    after_params: int
    analysis: Analysis = field(repr=False, compare=False)

    @property
    def layers(self) -> int:
        """L: the Transformer blocks a token passes through."""
        return sum(g.count for g in self.blocks)

    @property
    def groups(self) -> list[tuple[TransformerShape, int]]:
        """(shape, how many blocks run with it): the planner's inference and scaling functions take these."""
        return [(g.shape, g.count) for g in self.blocks]

    @property
    def block_params(self) -> int:
        return sum(g.params for g in self.blocks)

    @property
    def seq_len(self) -> int:
        return max(g.shape.seq_len for g in self.blocks)

    @property
    def hidden(self) -> int:
        return self.blocks[0].shape.hidden


class _Walker:
    """Visits every layer with how many times it runs and how many copies of its weights exist."""

    def __init__(self, rows: dict[str, int]) -> None:
        self.rows = rows  # node key -> parameters, as the analysis counted them
        self.blocks: list[BlockGroup] = []
        self.before = self.after = self.embedding = self.reuse = 0
        self.vocab = 0

    def walk(self, node: Node, runs: int, copies: int) -> None:
        if isinstance(node, RepeatNode):
            for i, iteration in enumerate(node.distinct):
                # the last distinct iteration stands for every identical one after it
                k = node.times - len(node.distinct) + 1 if i == len(node.distinct) - 1 else 1
                shared = node.share_weights
                self.walk(iteration, runs * k, 0 if shared and i > 0 else copies * (1 if shared else k))
        elif isinstance(node, LayerNode):
            self.layer(node, runs, copies)
        else:
            for child in node.children():
                self.walk(child, runs, copies)

    def layer(self, node: LayerNode, runs: int, copies: int) -> None:
        lt = node.layer_type
        params = self.rows.get(node.key, 0) * copies
        shape = lt.transformer(node.params, node.input)
        if shape is not None:
            count_active = getattr(lt, "count_active_params", None)  # the MoE layers' rule (issue 13)
            one = self.rows.get(node.key, 0)
            active = count_active(node.params, node.input) if count_active is not None else None
            active = one if active is None else active
            self.reuse += active * (runs - copies)  # passes through a shared block's weights
            self.blocks.append(BlockGroup(shape, runs, params, active, node.path))
            return
        if lt.id_bound is not None:
            self.embedding += params
            self.vocab = max(self.vocab, getattr(node.params, lt.id_bound))
        if not self.blocks:
            self.before += params
        else:
            tied = math.prod(weight_shape(node, node.path)) * copies if node.tie is not None else 0
            self.after += params + tied


def model_shape(spec: Spec | dict | str | ParsedSpec) -> ModelShape:
    """The Transformer blocks of ``spec`` with their counts, and where its other parameters sit.

    Raises:
        SpecError: the spec has no layer that is one Transformer block.

    Example:
        >>> shape = model_shape("examples/gpt2-small.yaml")
        >>> shape.layers, shape.hidden, shape.vocab, shape.total_params
        (12, 768, 50257, 124439808)
    """
    parsed = spec if isinstance(spec, ParsedSpec) else parse(spec)
    analysis = analyze(parsed)
    walker = _Walker({row.path: row.params for row in analysis.layers})
    for node in parsed.top_nodes():
        walker.walk(node, 1, 1)
    if not walker.blocks:
        blocks = [n for n in list_layers() if type(get_layer(n)).transformer is not LayerType.transformer]
        raise SpecError(f"plan sizes Transformer stacks, and this spec has no Transformer block: build it from "
                        f"{', '.join(blocks)} (the layers whose shape the planner reads)")
    active = getattr(analysis, "active_params", None)  # issue 13's mixture-of-experts count, where present
    active = analysis.total_params if active is None else active
    vocab = walker.vocab or (parsed.output_infos[-1].shape[-1] if parsed.output_infos[-1].shape else 0)
    return ModelShape(parsed.spec.name, tuple(walker.blocks), analysis.total_params, active + walker.reuse,
                      walker.embedding, vocab, walker.before, walker.after, analysis)
