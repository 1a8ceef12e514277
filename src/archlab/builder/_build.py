"""build(): a spec to a torch module, through the checked node tree."""

from __future__ import annotations

from collections import OrderedDict
from contextlib import nullcontext

import torch
from torch import nn

from archlab.exceptions import MemoryLimitError
from archlab.layers._masking import MaskReader, MaskScope
from archlab.spec import Spec

from ._modules import ArchlabModel, GraphNet, GraphNode, MergeModule, Parallel, Repeat, Residual
from ._nodes import GraphBlock, LayerNode, Node, ParallelNode, ParsedSpec, RepeatNode, ResidualNode, SequenceNode, parse

__all__ = ["build", "build_parsed"]

#: Host memory of one built layer module besides its weights (the Python objects of the module and
#: its nn.Sequential): 4.5 KiB per relu and 7 KiB per dense, measured with tracemalloc on repeats
#: of 10,000 built on the meta device; a repeat of a billion relus needs terabytes without a weight.
MODULE_BYTES = 4096


class _Builder:
    def __init__(self, scope: MaskScope | None) -> None:
        self.modules: dict[int, nn.Module] = {}  # id(LayerNode) -> its module, for ties
        self.scope = scope  # None: no input declares a pad_id, no module reads masks

    def node(self, node: Node) -> nn.Module:
        if isinstance(node, LayerNode):
            module = node.layer_type.module(node.params, node.input)
            if not node.trainable:  # before tying: freezing this layer must not freeze the weight it shares
                module.requires_grad_(False)
            if node.tie is not None:
                module.weight = self.modules[id(node.tie)].weight  # the same Parameter: shared, counted once
            if self.scope is not None and node.layer_type.reads_mask:
                sources = tuple(i.mask for i in (node.input if isinstance(node.input, tuple) else (node.input,)))
                if any(sources):
                    module.padding = MaskReader(self.scope, sources)
            self.modules[id(node)] = module
            return module
        if isinstance(node, SequenceNode):
            return self.sequence(node)
        if isinstance(node, ResidualNode):
            return Residual(self.sequence(node.body),
                            self.sequence(node.shortcut) if node.shortcut else None,
                            self.sequence(node.post) if node.post else None, node.drop_path)
        if isinstance(node, ParallelNode):
            return Parallel([self.sequence(b) for b in node.branches], MergeModule(node.merge))
        if isinstance(node, RepeatNode):
            bodies = node.iterations[:1] if node.share_weights else node.iterations
            return Repeat([self.sequence(b) for b in bodies], node.times)
        raise TypeError(f"no module for node {node.kind} at {node.path}")

    def sequence(self, node: SequenceNode) -> nn.Sequential:
        children: OrderedDict[str, nn.Module] = OrderedDict()
        for i, item in enumerate(node.items):
            children[item.name if item.name and item.name not in children else str(i)] = self.node(item)
        return nn.Sequential(children)

    def graph_block(self, block: GraphBlock) -> GraphNode:
        return GraphNode(block.sources, MergeModule(block.merge) if block.merge else None, self.sequence(block.body))


def _layer_count(node: Node) -> int:
    """How many layer modules building ``node`` creates, counted without making the repeats'
    identical iterations."""
    if isinstance(node, LayerNode):
        return 1
    if isinstance(node, RepeatNode):
        if node.share_weights:
            return _layer_count(node.distinct[0])
        rest = node.times - len(node.distinct)
        return sum(_layer_count(b) for b in node.distinct) + rest * _layer_count(node.distinct[-1])
    return sum(_layer_count(child) for child in node.children())


def check_fits(parsed: ParsedSpec, device: str | torch.device | None = None) -> None:
    """Raise MemoryLimitError when the model's weights (fp32) and modules need more memory than
    ``device`` (and the host, for the modules; only they on ``meta``) has available; nothing is
    allocated."""
    # analysis imports the builder, so it is imported here, when a build is about to allocate
    from archlab.analysis import analyze, available_memory, human_bytes

    target = torch.device(device) if device is not None else torch.get_default_device()
    layers = sum(_layer_count(node) for node in parsed.top_nodes())
    host = layers * MODULE_BYTES  # the modules live in host memory, wherever their weights are (none on meta)
    weights = 0 if target.type == "meta" else analyze(parsed).model_bytes["fp32"]
    needs = [(target, weights + host)] if target.type == "cpu" else [(target, weights), (torch.device("cpu"), host)]
    for dev, need in needs:
        free = available_memory(dev)
        if free is not None and need > free:
            raise MemoryLimitError(
                f"the model needs {human_bytes(need)} on {dev} ({human_bytes(weights)} of weights at fp32, "
                f"{human_bytes(host)} for its {layers:,} layer modules) but {human_bytes(free)} is available; "
                "use fewer or smaller layers, or analyse it with 'archlab summary', which allocates nothing",
                needed=need, available=free)


def build_parsed(parsed: ParsedSpec, *, device: str | torch.device | None = None) -> ArchlabModel:
    """Build the module of an already-parsed spec.

    Raises:
        MemoryLimitError: when the model cannot fit in the memory ``device`` has available.
    """
    check_fits(parsed, device)
    scope = MaskScope(parsed.pad_ids) if parsed.pad_ids else None
    builder = _Builder(scope)
    with torch.device(device) if device is not None else nullcontext():
        if parsed.root is not None:
            net: nn.Module = builder.sequence(parsed.root)
        else:
            net = GraphNet(list(parsed.inputs), {name: builder.graph_block(b) for name, b in parsed.graph.items()},
                           parsed.outputs)
        return ArchlabModel(parsed.spec, net, parsed.channels_last, list(parsed.inputs), scope)


def build(spec: Spec | dict | str, *, device: str | torch.device | None = None) -> ArchlabModel:
    """Build the torch module a spec describes.

    Args:
        spec: a Spec, a dict, a YAML/JSON file path, or YAML/JSON text.
        device: where to create the weights; ``"meta"`` creates none (shapes only).

    Returns:
        An ``ArchlabModel`` whose ``forward`` takes (batch, *input) tensors, one per input.

    Raises:
        SpecError: when the spec is malformed, with the path of what is wrong.
        MemoryLimitError: when its weights cannot fit in the memory ``device`` has available
            (checked before any weight is created).

    Example:
        >>> model = build({"input": [4], "layers": [{"dense": {"units": 3, "activation": "relu"}}]})
        >>> model(torch.zeros(2, 4)).shape
        torch.Size([2, 3])
    """
    return build_parsed(parse(spec), device=device)
