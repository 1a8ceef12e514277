"""Capacity analysis: parameters, FLOPs and memory of a spec, by shape arithmetic alone.

No weight is ever allocated: built-in layer types count their parameters by formula, and a
user's layer type without a formula is built on the meta device. So a 175-billion-parameter
spec is analysed in well under a second. Conventions are in docs/analysis.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from archlab.builder import (
    GraphBlock,
    LayerNode,
    Node,
    ParallelNode,
    ParsedSpec,
    RepeatNode,
    ResidualNode,
    SequenceNode,
    parse,
)
from archlab.builder._nodes import weight_shape
from archlab.layers import Cost
from archlab.spec import Spec
from archlab.tasks import get_task

__all__ = ["SCHEMA_VERSION", "Analysis", "LayerStats", "analyze"]

SCHEMA_VERSION = 1
FP32 = 4
BYTES_PER_ELEMENT = {"fp32": 4, "bf16": 2, "int8": 1}


@dataclass
class LayerStats:
    """One row of the per-node table. Counts are per sample, except ``activation_bytes``
    (the node's output for the whole batch at fp32)."""

    path: str
    type: str
    depth: int
    output_shape: list[int]
    params: int
    trainable_params: int
    #: the parameters one token passes through (``LayerType.count_active_params``): ``params``
    #: except under a mixture of experts, whose unrouted experts it leaves out
    active_params: int
    macs: int
    flops: int
    activation_bytes: int
    note: str = ""


@dataclass
class Analysis:
    """The capacity of one spec. ``to_dict()`` is the stable JSON schema of ``archlab summary --json``."""

    name: str
    batch_size: int
    inputs: dict[str, dict]
    outputs: list[dict]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    #: parameters one token passes through: ``total_params`` less the experts a mixture does not
    #: route it to (Mixtral 8x7B: 12.9 B of 46.7 B); the FLOPs are those of these parameters
    active_params: int
    buffers: int
    macs: int
    flops: int
    model_bytes: dict[str, int]
    training_memory_bytes: dict[str, int]
    layers: list[LayerStats] = field(default_factory=list)
    #: for a task that predicts tokens (seq2seq, language_model): FLOPs per target position, see ``_per_token``
    per_target_token: dict | None = None

    @property
    def flops_per_batch(self) -> int:
        return self.flops * self.batch_size

    def to_dict(self) -> dict:
        out = {"schema_version": SCHEMA_VERSION, **asdict(self)}
        out["flops_per_batch"] = self.flops_per_batch
        return out

    def summary(self, depth: int | None = 3) -> str:
        """The table and totals as plain text (what ``archlab summary`` prints)."""
        from ._report import render_text

        return render_text(self, depth)

    def __str__(self) -> str:
        return self.summary()


@dataclass
class _Totals:
    params: int = 0
    trainable: int = 0
    buffers: int = 0
    cost: Cost = field(default_factory=Cost)
    saved: int = 0  # elements per sample kept for backward
    active: int = 0  # parameters one token passes through

    def __iadd__(self, other: _Totals) -> _Totals:
        self.params += other.params
        self.trainable += other.trainable
        self.buffers += other.buffers
        self.cost = self.cost + other.cost
        self.saved += other.saved
        self.active += other.active
        return self

    def times(self, k: int) -> _Totals:
        """These totals ``k`` times over (``k`` identical iterations)."""
        return _Totals(self.params * k, self.trainable * k, self.buffers * k, self.cost * k, self.saved * k,
                       self.active * k)

    def drop_weights(self) -> None:
        """Count no weights here: they are another part's (a repeat's shared iteration 0)."""
        self.params = self.trainable = self.buffers = self.active = 0


def _meta_counts(node: LayerNode) -> tuple[int, int]:
    """Parameters and persistent buffers of a layer's module built on the meta device."""
    import torch  # only a layer type without a formula needs it; torch is heavy and summary seldom does

    with torch.device("meta"):
        module = node.layer_type.module(node.params, node.input)
    params = sum(p.numel() for p in module.parameters())
    state = module.state_dict(keep_vars=True)
    buffers = sum(t.numel() for name, t in state.items() if not isinstance(t, torch.nn.Parameter))
    return params, buffers


class _Walker:
    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.rows: list[LayerStats] = []

    def row(self, node: Node, depth: int, kind: str, note: str = "") -> int:
        shape = list(node.output.shape)
        self.rows.append(LayerStats(node.key, kind, depth, shape, 0, 0, 0, 0, 0,
                                    self.batch_size * node.output.numel * FP32, note))
        return len(self.rows) - 1

    def fill(self, index: int, totals: _Totals) -> None:
        row = self.rows[index]
        row.params, row.trainable_params, row.active_params = totals.params, totals.trainable, totals.active
        row.macs, row.flops = totals.cost.macs, totals.cost.flops

    def node(self, node: Node, depth: int) -> _Totals:
        if isinstance(node, LayerNode):
            return self.layer(node, depth)
        if isinstance(node, SequenceNode):
            index = self.row(node, depth, "sequential") if node.name else None
            totals = self.inline(node, depth + (index is not None))
            if index is not None:
                self.fill(index, totals)
            return totals
        index = self.row(node, depth, node.kind)
        totals = _Totals()
        if isinstance(node, ResidualNode):
            totals += self.inline(node.body, depth + 1)
            if node.shortcut is not None:
                totals += self.labelled(node.shortcut, depth + 1, "shortcut")
            totals += _Totals(cost=Cost(flops=node.body.output.numel), saved=node.body.output.numel)  # the add
            if node.post is not None:
                totals += self.inline(node.post, depth + 1)
        elif isinstance(node, ParallelNode):
            for branch in node.branches:
                totals += self.labelled(branch, depth + 1, "branch")
            totals += _Totals(cost=node.merge.cost([b.output for b in node.branches], node.output),
                              saved=node.output.numel)
        elif isinstance(node, RepeatNode):
            totals += self.repeat(node, index, depth)
        elif isinstance(node, GraphBlock):
            if node.merge is not None:
                totals += _Totals(cost=node.merge.cost(node.source_infos, node.input), saved=node.input.numel)
            totals += self.inline(node.body, depth + 1)
        self.fill(index, totals)
        return totals

    def repeat(self, node: RepeatNode, index: int, depth: int) -> _Totals:
        """The distinct iterations row by row, then one row for the identical rest, counted by
        multiplication: the table and the time do not grow with ``times``."""
        totals = part = _Totals()
        # one identical iteration left is shown as itself: a row "iterations 2-2" would say less
        shown = node.iterations[:node.times] if node.times == len(node.distinct) + 1 else node.distinct
        for i, iteration in enumerate(shown):
            shared = node.share_weights and i > 0
            part = self.labelled(iteration, depth + 1, "iteration", "shares iteration 0's weights" if shared else "")
            if shared:  # the weights were counted in iteration 0: rows and totals agree
                part.drop_weights()
                self._zero_params(iteration, depth + 1)
            totals += part
        done, rest = len(shown), node.times - len(shown)
        if rest:
            tail = part.times(rest)
            note = f"iterations {done + 1:,}-{node.times:,}: identical, x{rest:,}"
            if node.share_weights:
                tail.drop_weights()
                note += "; share iteration 0's weights"
            last = shown[-1]
            self.rows.append(LayerStats(f"{node.key}.repeat[{done}-{node.times - 1}]", "iterations", depth + 1,
                                        list(last.output.shape), 0, 0, 0, 0, 0,
                                        self.batch_size * last.output.numel * FP32, note))
            self.fill(len(self.rows) - 1, tail)
            totals += tail
        if node.share_weights:
            self.rows[index].note = f"one block, {node.times:,} times"
        return totals

    def _zero_params(self, node: SequenceNode, depth: int) -> None:
        """Clear the parameter columns of the rows just written for ``node`` (a shared iteration)."""
        for row in reversed(self.rows):
            if not row.path.startswith(node.key):
                break
            row.params = row.trainable_params = row.active_params = 0

    def labelled(self, node: SequenceNode, depth: int, kind: str, note: str = "") -> _Totals:
        index = self.row(node, depth, kind, note)
        totals = self.inline(node, depth + 1)
        self.fill(index, totals)
        return totals

    def inline(self, node: SequenceNode, depth: int) -> _Totals:
        totals = _Totals()
        for item in node.items:
            totals += self.node(item, depth)
        return totals

    def layer(self, node: LayerNode, depth: int) -> _Totals:
        lt, p, x, y = node.layer_type, node.params, node.input, node.output
        params = lt.count_params(p, x)
        buffers = lt.count_buffers(p, x)
        if params is None:
            params, buffers = _meta_counts(node)
        active = lt.count_active_params(p, x)
        active = params if active is None else active
        note = ""
        if node.tie is not None:  # the tied weight is counted (and passed through) where it is defined
            tied = math.prod(weight_shape(node, node.path))
            params, active = params - tied, active - tied
            note = f"weight tied to {node.tie.name}"
        if not node.trainable:
            note = (note + "; " if note else "") + "frozen"
        totals = _Totals(params, params if node.trainable else 0, buffers, lt.cost(p, x, y), lt.saved_elements(p, x, y),
                         active)
        index = self.row(node, depth, node.kind, note)
        self.fill(index, totals)
        return totals


def analyze(spec: Spec | dict | str | ParsedSpec, batch_size: int = 1) -> Analysis:
    """Measure a spec's capacity without allocating its weights.

    Args:
        spec: a Spec, dict, YAML/JSON path or text, or an already parsed spec.
        batch_size: the batch the training-memory estimate is for.

    Example:
        >>> a = analyze({"input": [8], "layers": [{"dense": {"units": 4}}]})
        >>> a.total_params, a.macs, a.flops
        (36, 32, 64)
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    parsed = spec if isinstance(spec, ParsedSpec) else parse(spec)
    walker = _Walker(batch_size)
    totals = _Totals()
    for node in parsed.top_nodes():
        totals += walker.node(node, 1)
    input_elements = sum(info.numel for info in parsed.inputs.values())
    saved = totals.saved + input_elements
    weights = (totals.params + totals.buffers) * FP32
    gradients = totals.trainable * FP32
    optimizer = 2 * totals.trainable * FP32  # Adam's first and second moments
    activations = batch_size * saved * FP32
    return Analysis(
        name=parsed.spec.name,
        batch_size=batch_size,
        inputs={n: {"shape": list(i.shape), "dtype": i.dtype} | ({"pad_id": i.pad_id} if i.pad_id is not None else {})
                for n, i in parsed.raw_inputs.items()},
        outputs=[{"shape": list(i.shape), "dtype": i.dtype} for i in parsed.output_infos],
        total_params=totals.params,
        trainable_params=totals.trainable,
        non_trainable_params=totals.params - totals.trainable,
        active_params=totals.active,
        buffers=totals.buffers,
        macs=totals.cost.macs,
        flops=totals.cost.flops,
        model_bytes={k: (totals.params + totals.buffers) * b for k, b in BYTES_PER_ELEMENT.items()},
        training_memory_bytes={"weights": weights, "gradients": gradients, "optimizer": optimizer,
                               "activations": activations, "total": weights + gradients + optimizer + activations},
        layers=walker.rows,
        per_target_token=_per_token(parsed, totals.cost.flops),
    )


#: training ~ forward + backward, the backward pass taking about twice the forward's FLOPs (gradients
#: of the activations and of the weights): the usual 3x (Kaplan et al. 2020's 6N per token is 3 x 2N)
TRAINING_FLOPS_FACTOR = 3


def _per_token(parsed: ParsedSpec, flops: int) -> dict | None:
    """A sample's forward FLOPs over the T positions of the input the spec's ``task.kind`` predicts
    (``TaskKind.target_input``): seq2seq's ``target``, whose share includes the encoder's run over
    the source, amortised over T; a language model's tokens. T is the declared length, so padding
    counts as positions. None for other tasks, or a spec without ``task.kind``."""
    kind = (parsed.spec.to_dict().get("task") or {}).get("kind")
    if kind is None:
        return None
    shapes = {name: tuple(info.shape) for name, info in parsed.raw_inputs.items()}
    name = get_task(kind, "task.kind").target_input(shapes)
    if name is None or len(shapes[name]) != 1:
        return None
    tokens = shapes[name][0]
    return {"task": kind, "input": name, "tokens": tokens, "encoder_included": len(shapes) > 1,
            "flops": flops / tokens, "training_flops": TRAINING_FLOPS_FACTOR * flops / tokens}
