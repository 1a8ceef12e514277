"""Structured pruning on specs: remove whole blocks, or slice filters/units out of layers.

Every function takes a spec and a state dict of the model ``archlab.build`` makes from it, and
returns a NEW, SMALLER spec plus a state dict for it: real smaller layers, never masks.

Which layers take part is each layer type's traits (``archlab.layers.LayerType``): a type with
``structured`` has outputs that can be removed (dense units, conv2d filters), a type with
``keeps_channels`` lets a pruned channel through (activations, pooling, dropout, batchnorm,
flatten), and any other type stops it. A plugin layer that sets them is pruned like a built-in.

Channel criterion (``channel_scores``): an output is scored by |gamma| of the batchnorm (any
``keeps_channels`` layer with a ``score``) that directly follows it, else by the L1 norm of its
weights for that output.
Channels that meet at a residual ``add`` are pruned together: the block's body keeps exactly the
channels of the block input (identity shortcut), so the layer that starts such a residual stream
(e.g. a stem conv) decides the kept channels of the whole stream. Parallel branches keep all their
outputs (their inputs are sliced), so both concat and add merges stay consistent.
In the graph form each node's layers are pruned inside the node: a node keeps its inputs and its
output width (other nodes and the outputs read it), so merges between nodes never change.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from archlab.builder import build_parsed, parse
from archlab.builder._nodes import LayerNode, ParallelNode, RepeatNode, ResidualNode, SequenceNode
from archlab.exceptions import SpecError
from archlab.layers import KeepsChannels
from archlab.spec import Spec, get_at

__all__ = ["BlockRef", "block_candidates", "bypass", "channel_scores", "prunable_layers", "prune_channels",
           "remove_blocks"]

_NOTSET: Any = object()


class _Unprunable(SpecError):
    """A plan that would make channels disagree (e.g. two sides of an add)."""


def _as_dict(spec: Spec | dict) -> dict:
    return copy.deepcopy(spec.to_dict() if isinstance(spec, Spec) else spec)


def _parsed(spec: Spec | dict):
    return parse(Spec.from_dict(spec) if isinstance(spec, dict) else spec)


def _child_keys(seq: SequenceNode) -> list[str]:
    """The names build() gives the children of a sequence (item name, else its index)."""
    keys: list[str] = []
    for i, item in enumerate(seq.items):
        keys.append(item.name if item.name and item.name not in keys else str(i))
    return keys


# -- blocks ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BlockRef:
    """A removable block: a shape-preserving residual item of a sequence, or one repeat iteration.

    ``module`` is its module path under the model (``net.stage1.blocks.2``), ``path`` the spec path
    of the item (the residual, or the repeat), ``iteration`` the repeat iteration (else None)."""

    module: str
    path: str
    iteration: int | None = None

    def __str__(self) -> str:
        return self.path + (f" (iteration {self.iteration})" if self.iteration is not None else "")


def block_candidates(spec: Spec | dict) -> list[BlockRef]:
    """Residual blocks with an identity shortcut and repeat iterations that keep the shape
    (so bypassing them is well defined). Blocks inside repeat bodies are not listed (all
    iterations share one spec); a repeat keeps at least one iteration."""
    parsed = _parsed(spec)
    found: list[BlockRef] = []

    def walk(seq: SequenceNode, prefix: str) -> None:
        for key, item in zip(_child_keys(seq), seq.items, strict=True):
            here = f"{prefix}.{key}"
            if isinstance(item, ResidualNode):
                if item.shortcut is None and item.input.shape == item.output.shape:
                    found.append(BlockRef(here, item.path))
                walk(item.body, here + ".layers")
            elif isinstance(item, RepeatNode):
                same = all(it.input.shape == it.output.shape for it in item.iterations)
                if not item.share_weights and len(item.iterations) > 1 and same:
                    found.extend(BlockRef(f"{here}.blocks.{i}", item.path, i) for i in range(len(item.iterations)))
            elif isinstance(item, SequenceNode):
                walk(item, here)

    for sequence, prefix in _sequences(parsed):
        walk(sequence, prefix)
    return found


def _sequences(parsed: Any) -> list[tuple[SequenceNode, str]]:
    """The top-level layer sequences with their module paths: the sequential form's one, or each
    graph node's (``net.nodes.<name>.layers``, as ``GraphNode`` holds them)."""
    if parsed.root is not None:
        return [(parsed.root, "net")]
    return [(block.body, f"net.nodes.{name}.layers") for name, block in parsed.graph.items()]


def _module_at(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    parent_path, _, name = path.rpartition(".")
    return model.get_submodule(parent_path), name


class bypass:  # noqa: N801  (a context manager used like a function)
    """Temporarily replace a block of a built model by the identity (its output := its input)."""

    def __init__(self, model: nn.Module, block: BlockRef) -> None:
        self.parent, self.name = _module_at(model, block.module)
        self.saved: nn.Module | None = None

    def __enter__(self) -> None:
        self.saved = self.parent._modules[self.name]
        self.parent._modules[self.name] = nn.Identity()

    def __exit__(self, *exc: object) -> None:
        self.parent._modules[self.name] = self.saved


def remove_blocks(spec: Spec | dict, state_dict: dict[str, torch.Tensor],
                  blocks: list[BlockRef]) -> tuple[Spec, dict[str, torch.Tensor]]:
    """A spec without ``blocks`` (from ``block_candidates``) and the state dict for it.

    Residual items are deleted from their list; a repeat loses one iteration per block (its
    ``times`` drops and the remaining iterations keep their own weights, renumbered).

    Example:
        >>> spec = {"input": [4], "layers": [{"dense": {"units": 4}},
        ...         {"residual": {"layers": [{"dense": {"units": 4}}]}}, {"dense": {"units": 2}}]}
        >>> model = build_parsed(parse(Spec.from_dict(spec)))
        >>> small, sd = remove_blocks(spec, model.state_dict(), block_candidates(spec))
        >>> len(small.to_dict()["layers"]), sorted(sd)
        (2, ['net.0.bias', 'net.0.weight', 'net.1.bias', 'net.1.weight'])
    """
    data = _as_dict(spec)
    model = build_parsed(_parsed(spec), device="meta")
    # Structural surgery on a meta model carrying the real tensors, then match by order: build()
    # registers modules in spec order, so the surgically reduced model and the new spec agree.
    tensors = dict(state_dict)
    marker = {k: i for i, k in enumerate(model.state_dict())}
    if set(marker) != set(tensors):
        missing, extra = sorted(set(marker) - set(tensors))[:3], sorted(set(tensors) - set(marker))[:3]
        raise SpecError(f"the state dict does not belong to this spec's model (missing {missing}, extra {extra})")
    removed: set[str] = set()
    repeats: dict[str, list[int]] = {}
    list_drops: dict[str, list[int]] = {}
    for block in blocks:
        removed.add(block.module + ".")
        if block.iteration is not None:
            repeats.setdefault(block.path, []).append(block.iteration)
        else:
            parent, _, index = block.path.rpartition("[")
            list_drops.setdefault(parent, []).append(int(index.rstrip("]")))
    for path, iterations in repeats.items():
        item = get_at(data, path)
        times = item["repeat"]["times"] - len(set(iterations))
        if times < 1:
            raise SpecError(f"{path}: removing {len(set(iterations))} iterations would leave none; keep at least one")
        item["repeat"]["times"] = times
    for parent, indexes in sorted(list_drops.items(), key=lambda kv: -len(kv[0])):  # deepest lists first
        items = get_at(data, parent)
        for index in sorted(set(indexes), reverse=True):
            del items[index]
    kept_keys = [k for k in sorted(tensors, key=marker.__getitem__) if not any(k.startswith(p) for p in removed)]
    new_spec = Spec.from_dict(data)
    new_model = build_parsed(_parsed(new_spec), device="meta")
    new_keys = list(new_model.state_dict())
    if len(new_keys) != len(kept_keys):
        raise SpecError(f"removing {', '.join(map(str, blocks))} left {len(kept_keys)} tensors for a model of "
                        f"{len(new_keys)}")
    new_sd = {}
    for new_key, old_key in zip(new_keys, kept_keys, strict=True):
        want = tuple(new_model.state_dict()[new_key].shape)
        if tuple(tensors[old_key].shape) != want:
            raise SpecError(f"{old_key} {tuple(tensors[old_key].shape)} does not fit {new_key} {want}")
        new_sd[new_key] = tensors[old_key]
    return new_spec, new_sd


# -- channels --------------------------------------------------------------------------------------

def _keeps(node: Any) -> KeepsChannels | None:
    """The ``keeps_channels`` trait of a layer item (None for other layers and for connections)."""
    return node.layer_type.keeps_channels if isinstance(node, LayerNode) and node.layer_type is not None else None


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(torch.equal(a, b))


@dataclass
class _Walk:
    sd: dict[str, torch.Tensor]
    data: dict
    keep: dict[str, int]  # spec path -> outputs to keep
    free: list[tuple[str, int]] = field(default_factory=list)  # prunable (spec path, width), in order
    edit: bool = True

    def model(self, parsed: Any) -> None:
        """Walk the whole model; every top-level sequence keeps its input and output channels."""
        for sequence, prefix in _sequences(parsed):
            self.seq(sequence, prefix, None, None)

    def seq(self, seq: SequenceNode, prefix: str, keep_in: torch.Tensor | None, forced: Any) -> torch.Tensor | None:
        keys = _child_keys(seq)
        # the last item that decides the sequence's output channels (what follows only passes them on)
        last = max((i for i, it in enumerate(seq.items) if _keeps(it) is None), default=-1)
        for i, (key, item) in enumerate(zip(keys, seq.items, strict=True)):
            nxt = seq.items[i + 1] if i + 1 < len(seq.items) else None
            keep_in = self.item(item, f"{prefix}.{key}", keep_in, forced if i == last else _NOTSET,
                                f"{prefix}.{keys[i + 1]}" if _keeps(nxt) is not None else None, _keeps(nxt))
        if forced is not _NOTSET and not _same(keep_in, forced):
            raise _Unprunable(f"{seq.path}: its output channels must match the other side of a merge")
        return keep_in

    def item(self, node: Any, prefix: str, keep_in: torch.Tensor | None, forced: Any,
             next_prefix: str | None = None, after: KeepsChannels | None = None) -> torch.Tensor | None:
        if isinstance(node, LayerNode):
            return self.layer(node, prefix, keep_in, forced, next_prefix, after)
        if isinstance(node, SequenceNode):
            return self.seq(node, prefix, keep_in, forced)
        if isinstance(node, ResidualNode):
            side = keep_in if node.shortcut is None else (None if forced is _NOTSET or node.post else forced)
            self.seq(node.body, prefix + ".layers", keep_in, side)
            if node.shortcut is not None:
                self.seq(node.shortcut, prefix + ".shortcut", keep_in, side)
            return self.seq(node.post, prefix + ".post", side, forced) if node.post else side
        if isinstance(node, RepeatNode):
            bodies = node.iterations[:1] if node.share_weights else node.iterations
            for i, body in enumerate(bodies):
                last = i == len(bodies) - 1
                want = keep_in if node.share_weights else (forced if last else _NOTSET)
                keep_in = self.seq(body, f"{prefix}.blocks.{i}", keep_in, want)
            return keep_in
        if isinstance(node, ParallelNode):
            for j, branch in enumerate(node.branches):
                self.seq(branch, f"{prefix}.branches.{j}", keep_in, None)
            return None
        raise _Unprunable(f"{node.path}: cannot prune through a {node.kind} node")

    def _slice(self, key: str, dim: int, index: torch.Tensor | None) -> None:
        if index is not None and key in self.sd:
            self.sd[key] = self.sd[key].index_select(dim, index.to(self.sd[key].device))

    def layer(self, node: LayerNode, prefix: str, keep_in: torch.Tensor | None, forced: Any,
              next_prefix: str | None, after: KeepsChannels | None) -> torch.Tensor | None:
        """Prune one layer; ``after`` is the trait of the layer that follows it (at ``next_prefix``)
        when that one passes channels on, and may score this layer's outputs."""
        kind = node.kind
        keeps = _keeps(node)
        if keeps is not None:
            for name in keeps.state:
                self._slice(f"{prefix}.{name}", 0, keep_in)
            if not keeps.flattens or keep_in is None:
                return keep_in
            shape = node.input.shape  # (C, *spatial): channels first inside the model
            inner = int(torch.tensor(shape[1:]).prod()) if len(shape) > 1 else 1
            return (keep_in[:, None] * inner + torch.arange(inner)[None, :]).reshape(-1)
        trait = node.layer_type.structured if node.layer_type is not None else None
        if trait is None:
            if keep_in is not None or node.layer_type is None:
                raise _Unprunable(f"{node.path}: cannot slice the input of a {kind} layer")
            return None
        if getattr(node.params, "groups", 1) != 1:
            raise _Unprunable(f"{node.path}: grouped convolutions are not pruned")
        if node.tie is not None:
            raise _Unprunable(f"{node.path}: tied weights are not pruned")
        if trait.last_axis and (node.input.rank != 1 or node.output.rank != 1):
            # its outputs lie on the last axis, where the layers after it (batchnorm, pooling,
            # flatten) do not look for channels: keep them all
            if keep_in is not None:
                raise _Unprunable(f"{node.path}: a {kind} layer over {node.input} reads its last axis, not channels")
            return None
        weight = f"{prefix}.{trait.weight}"
        self._slice(weight, trait.input_axis, keep_in)
        width = self.sd[weight].shape[0]
        if forced is not _NOTSET:
            keep = forced
        else:
            if (node.path, width) not in self.free:  # a repeat visits its body's layers once per iteration
                self.free.append((node.path, width))
            count = self.keep.get(node.path, width)
            if count >= width:
                keep = None
            else:
                scored = after is not None and after.score is not None
                scores = channel_scores(self.sd, prefix, next_prefix if scored else None, weight=trait.weight,
                                        score=after.score if scored else "weight")
                keep = torch.topk(scores, max(1, count)).indices.sort().values
        if keep is not None:
            self._slice(weight, 0, keep)
            if trait.bias is not None:
                self._slice(f"{prefix}.{trait.bias}", 0, keep)
            if self.edit:
                item = get_at(self.data, node.path)
                item[kind][trait.width] = int(len(keep))
        return keep


def channel_scores(state_dict: dict[str, torch.Tensor], prefix: str, bn_prefix: str | None = None, *,
                   weight: str = "weight", score: str = "weight") -> torch.Tensor:
    """Importance of each output of the layer at module path ``prefix``: |gamma| of the batchnorm
    at ``bn_prefix`` when one follows (and is affine), else the L1 norm of the output's weights.

    ``weight`` and ``score`` name the tensors (the layer's ``StructuredPruning.weight``, the
    batchnorm's ``KeepsChannels.score``)."""
    if bn_prefix is not None and f"{bn_prefix}.{score}" in state_dict:
        return state_dict[f"{bn_prefix}.{score}"].detach().abs().float().cpu()
    tensor = state_dict[f"{prefix}.{weight}"].detach().float().cpu()
    return tensor.abs().reshape(tensor.shape[0], -1).sum(1)


def prunable_layers(spec: Spec | dict) -> dict[str, int]:
    """The layers whose outputs can be pruned (types with the ``structured`` trait: conv2d,
    dense), as {spec path: width}.

    Excluded: the model's output layer, layers whose outputs meet another side at an add (they
    follow the stream's source), grouped or tied layers, and layers feeding one prune cannot pass."""
    parsed = _parsed(spec)
    model = build_parsed(parsed)
    walk = _Walk(dict(model.state_dict()), _as_dict(spec), {}, edit=False)
    walk.model(parsed)
    result = {}
    for path, width in walk.free:  # check each one alone: prune one output and see the plan hold
        if width < 2:
            continue
        try:
            _Walk(dict(model.state_dict()), _as_dict(spec), {path: width - 1}, edit=False).model(parsed)
        except _Unprunable:
            continue
        result[path] = width
    return result


def prune_channels(spec: Spec | dict, state_dict: dict[str, torch.Tensor], *, ratio: float | None = None,
                   keep: dict[str, int] | None = None) -> tuple[Spec, dict[str, torch.Tensor]]:
    """Remove the least important outputs (``channel_scores``) of the prunable layers.

    Args:
        spec: the spec the state dict belongs to.
        state_dict: the weights of ``build(spec)``.
        ratio: the fraction of outputs to remove from every prunable layer (at least one is kept).
        keep: or, per layer, how many outputs to keep, by spec path (``prunable_layers`` lists them).

    Returns:
        The smaller spec (``filters``/``units`` reduced) and its state dict: the next layer's
        inputs and the batchnorm parameters and statistics in between are sliced to match.

    Example:
        >>> spec = {"input": [4], "layers": [{"dense": {"units": 8}}, {"dense": {"units": 2}}]}
        >>> model = build_parsed(parse(Spec.from_dict(spec)))
        >>> small, sd = prune_channels(spec, model.state_dict(), ratio=0.5)
        >>> small.to_dict()["layers"][0]["dense"]["units"], tuple(sd["net.1.weight"].shape)
        (4, (2, 4))
    """
    if (ratio is None) == (keep is None):
        raise ValueError("prune_channels takes ratio or keep, exactly one")
    if ratio is not None and not 0 <= ratio < 1:
        raise ValueError(f"ratio is a fraction in [0, 1), got {ratio}")
    parsed = _parsed(spec)
    layers = prunable_layers(spec)
    if keep is None:
        keep = {p: max(1, round(w * (1 - ratio))) for p, w in layers.items()}  # type: ignore[operator]
    unknown = sorted(set(keep) - set(layers))
    if unknown:
        raise SpecError(f"{unknown[0]}: not a prunable layer; prunable: {', '.join(layers) or 'none'}")
    walk = _Walk({k: v.detach().clone() for k, v in state_dict.items()}, _as_dict(spec), dict(keep))
    walk.model(parsed)
    new_spec = Spec.from_dict(walk.data)
    return new_spec, walk.sd
