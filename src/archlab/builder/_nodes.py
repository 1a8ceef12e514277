"""From a spec to a tree of nodes that know their shapes: parsing, checking, shape inference.

Everything that can be wrong with a spec is found here, before any weight exists, and
reported with its spec path. Building modules and analysing capacity both walk this tree.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from archlab._inputs import fmt_shape
from archlab.exceptions import RegistryError, ShapeError, SpecError, suggest
from archlab.layers import Cost, LayerParams, LayerType, TensorInfo, get_layer
from archlab.spec import Spec, find_markers, load

__all__ = ["CONNECTIONS", "Connection", "GraphBlock", "LayerNode", "Merge", "Node", "ParallelNode", "ParsedSpec",
           "RepeatNode", "ResidualNode", "SequenceNode", "merge_shapes", "parse", "weight_shape"]


@dataclass(frozen=True)
class Connection:
    """A connection's keys, as the parser accepts them: required ones and optional ones with
    their defaults; ``summary`` is its line in ``archlab layers``."""

    required: tuple[str, ...]
    optional: dict[str, Any]
    summary: str

    @property
    def keys(self) -> tuple[str, ...]:
        return (*self.required, *self.optional)


CONNECTIONS = {
    "residual": Connection(("layers",), {"shortcut": "auto", "post": [], "drop_path": 0.0, "name": None},
                           "y = post(layers(x) + shortcut(x)); shortcut: auto (a projection when the shape "
                           "changes), identity or projection; drop_path: stochastic depth while training"),
    "parallel": Connection(("branches",), {"merge": "concat", "axis": 0, "name": None},
                           "runs each branch on x and merges them: concat (along axis), add, mean, max or mul"),
    "repeat": Connection(("times", "layers"), {"share_weights": False, "name": None},
                         "the block of layers applied times times; share_weights: one block run times times"),
    "sequential": Connection(("layers",), {"name": None}, "a group of layer items, usually named"),
}
ITEM_KEYS = ("name", "tie", "trainable")
MERGES = ("concat", "add", "mean", "max", "mul")
#: A repeat whose block changes the shape every time has that many different iterations at most
#: (a block that keeps its shape has one or two, whatever ``times`` is).
MAX_DISTINCT_ITERATIONS = 10_000


@dataclass(eq=False)
class Node:
    """One place in the architecture. ``path`` is its spec path (for errors); ``key`` is unique
    in the tree (repeat iterations are told apart: ``layers[2].repeat[3].layers[0]``)."""

    path: str
    key: str
    kind: str
    input: Any  # TensorInfo, or a tuple of them for multi-input layers
    output: TensorInfo
    name: str | None = None

    def children(self) -> list[Node]:
        return []

    def walk(self, depth: int = 0) -> Iterator[tuple[int, Node]]:
        yield depth, self
        for child in self.children():
            yield from child.walk(depth + 1)


@dataclass(eq=False)
class LayerNode(Node):
    layer_type: LayerType = None  # type: ignore[assignment]
    params: LayerParams = None  # type: ignore[assignment]
    tie: LayerNode | None = None
    trainable: bool = True

    @property
    def label(self) -> str:
        return f"{self.path} ({self.kind})"


@dataclass(eq=False)
class SequenceNode(Node):
    items: list[Node] = field(default_factory=list)

    def children(self) -> list[Node]:
        return self.items


@dataclass(frozen=True)
class Merge:
    """How several tensors become one: concat along ``axis`` (without batch), or elementwise."""

    kind: str
    axis: int = 0

    def cost(self, inputs: list[TensorInfo], output: TensorInfo) -> Cost:
        if self.kind == "concat":
            return Cost()
        extra = output.numel if self.kind == "mean" else 0  # the division
        return Cost(flops=(len(inputs) - 1) * output.numel + extra)


@dataclass(eq=False)
class ResidualNode(Node):
    body: SequenceNode = None  # type: ignore[assignment]
    shortcut: SequenceNode | None = None  # None: identity
    post: SequenceNode | None = None
    #: stochastic depth: the probability that training drops a sample's ``body`` (0: never)
    drop_path: float = 0.0

    def children(self) -> list[Node]:
        return [n for n in (self.body, self.shortcut, self.post) if n is not None]


@dataclass(eq=False)
class ParallelNode(Node):
    branches: list[SequenceNode] = field(default_factory=list)
    merge: Merge = Merge("concat")

    def children(self) -> list[Node]:
        return list(self.branches)


@dataclass(eq=False)
class RepeatNode(Node):
    """A block applied ``times`` times. Only the ``distinct`` iterations are parsed: once an
    iteration receives the input its predecessor received, it and every later one are the same
    as that predecessor, so parsing and analysis cost what the spec's size costs, not ``times``."""

    distinct: list[SequenceNode] = field(default_factory=list)
    times: int = 1
    share_weights: bool = False

    @property
    def iterations(self) -> Sequence[SequenceNode]:
        """All ``times`` iterations; those past ``distinct`` are made on demand (their own keys)."""
        return _Iterations(self)

    def children(self) -> list[Node]:
        return list(self.distinct)


class _Iterations(Sequence):
    """The iterations of a repeat as a sequence of length ``times`` that holds only the distinct ones."""

    def __init__(self, node: RepeatNode) -> None:
        self.node = node

    def __len__(self) -> int:
        return self.node.times

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = index + len(self) if index < 0 else index
        if not 0 <= i < len(self):
            raise IndexError(f"iteration {index} of a repeat of {len(self)}")
        distinct = self.node.distinct
        if i < len(distinct):
            return distinct[i]
        last = len(distinct) - 1
        return _rekey(distinct[last], f"{self.node.key}.repeat[{last}].", f"{self.node.key}.repeat[{i}].")


def _rekey(node: Node, old: str, new: str) -> Any:
    """A copy of a subtree whose keys start with ``new`` instead of ``old`` (another iteration)."""
    twin = copy.copy(node)
    twin.key = new + node.key.removeprefix(old)
    for f in dataclasses.fields(node):
        if f.name == "tie":  # names the layer it shares a weight with: the same layer, not a copy
            continue
        value = getattr(node, f.name)
        if isinstance(value, Node):
            setattr(twin, f.name, _rekey(value, old, new))
        elif isinstance(value, list) and value and isinstance(value[0], Node):
            setattr(twin, f.name, [_rekey(v, old, new) for v in value])
    return twin


@dataclass(eq=False)
class GraphBlock(Node):
    """A node of the graph form: reads inputs/nodes ``sources``, merges them, runs ``body``."""

    sources: list[str] = field(default_factory=list)
    source_infos: list[TensorInfo] = field(default_factory=list)
    merge: Merge | None = None
    body: SequenceNode = None  # type: ignore[assignment]

    def children(self) -> list[Node]:
        return [self.body]


@dataclass(eq=False)
class ParsedSpec:
    """A checked spec with every shape inferred: the input of build() and analyze()."""

    spec: Spec
    inputs: dict[str, TensorInfo]  # as the model receives them (after data_format)
    raw_inputs: dict[str, TensorInfo]  # as the spec writes them
    channels_last: bool
    root: SequenceNode | None = None  # the sequential form
    graph: dict[str, GraphBlock] = field(default_factory=dict)  # the graph form, in run order
    outputs: list[str] = field(default_factory=list)

    @property
    def pad_ids(self) -> dict[str, int]:
        """The pad id of each input that declares one (the model masks their padding)."""
        return {name: info.pad_id for name, info in self.inputs.items() if info.pad_id is not None}

    @property
    def is_graph(self) -> bool:
        return self.root is None

    @property
    def output_infos(self) -> list[TensorInfo]:
        if self.root is not None:
            return [self.root.output]
        return [self.graph[name].output if name in self.graph else self.inputs[name] for name in self.outputs]

    def top_nodes(self) -> list[Node]:
        return self.root.items if self.root is not None else list(self.graph.values())

    def walk(self) -> Iterator[tuple[int, Node]]:
        for node in self.top_nodes():
            yield from node.walk(0)


class _Context:
    """State carried through one parse: named layers seen so far (for ``tie``)."""

    def __init__(self) -> None:
        self.names: dict[str, Node] = {}

    def add_name(self, name: Any, node: Node, path: str, repeated: bool) -> None:
        if not isinstance(name, str) or not name or "." in name:
            raise SpecError(f"a name is a non-empty string without '.', got {name!r}", f"{path}.name")
        if name in self.names and not repeated:
            raise SpecError(f"name '{name}' is already used at {self.names[name].path}: names must be unique",
                            f"{path}.name")
        self.names.setdefault(name, node)


def _pydantic_message(exc: ValidationError, type_name: str, params_cls: type[LayerParams], path: str) -> SpecError:
    fields = list(params_cls.model_fields)
    takes = f"{type_name} takes: {', '.join(fields)}" if fields else f"{type_name} takes no parameters"
    errors = exc.errors()
    unknown = {str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden"}
    messages: dict[str, str] = {}
    for err in errors:
        name = str(err["loc"][0]) if err["loc"] else ""
        if name in messages:
            continue  # one message per parameter (a union reports each alternative)
        if err["type"] == "extra_forbidden":
            messages[name] = f"unknown parameter '{name}'{suggest(name, fields)}"
        elif err["type"] == "missing":
            if any(suggest(u, [name]) for u in unknown):
                continue  # the misspelt key already explains it
            messages[name] = f"missing required parameter '{name}'"
        else:
            msg = err["msg"][0].lower() + err["msg"][1:]
            msg = msg.removeprefix("value error, ").removeprefix("input ")
            where = f"'{name}' " if name else ""
            messages[name] = f"{where}{msg}" + (f"; got {err['input']!r}" if name else "")
    first = next(iter(messages))
    sub = f"{path}.{type_name}" + (f".{first}" if first else "")
    return SpecError("; ".join(messages.values()) + f" ({takes})", sub)


def _type_key(item: dict, path: str) -> str:
    keys = [k for k in item if k not in ITEM_KEYS]
    if len(keys) != 1:
        found = ", ".join(map(str, item)) or "nothing"
        raise SpecError("a layer item is a one-key mapping TYPE: {params} (plus optional name, tie, "
                        f"trainable); found {found}" + ("" if keys else ": add the layer type")
                        + (": put each layer in its own list item" if len(keys) > 1 else ""), path)
    return keys[0]


def _check_keys(value: dict, allowed: tuple[str, ...], what: str, path: str) -> None:
    for key in value:
        if key not in allowed:
            raise SpecError(f"unknown key '{key}' in {what}{suggest(key, allowed)} (allowed: {', '.join(allowed)})",
                            f"{path}.{key}")


class _Parser:
    def __init__(self) -> None:
        self.ctx = _Context()

    # -- layer items -------------------------------------------------------------------------
    def items(self, items: Any, path: str, key: str, x: TensorInfo, *, repeated: bool = False) -> SequenceNode:
        if not isinstance(items, list):
            raise SpecError(f"expected a list of layer items, got {type(items).__name__} {items!r}"[:200], path)
        nodes: list[Node] = []
        current = x
        for i, item in enumerate(items):
            node = self.item(item, f"{path}[{i}]", f"{key}[{i}]", current, repeated=repeated)
            nodes.append(node)
            current = node.output
        return SequenceNode(path, key, "sequential", x, current, items=nodes)

    def item(self, item: Any, path: str, key: str, x: Any, *, repeated: bool = False) -> Node:
        if isinstance(item, str):
            type_name, value, extras = item, None, {}
        elif isinstance(item, dict):
            type_name = _type_key(item, path)
            value = item[type_name]
            extras = {k: item[k] for k in ITEM_KEYS if k in item}
        else:
            raise SpecError(f"a layer item is TYPE or TYPE: {{params}}, got {type(item).__name__} {item!r}"[:200],
                            path)
        if type_name in CONNECTIONS:
            if not isinstance(value, dict):
                raise SpecError(f"'{type_name}' needs a mapping, e.g. {type_name}: {{layers: [...]}}", path)
            if "tie" in extras or "trainable" in extras:
                bad = "tie" if "tie" in extras else "trainable"
                raise SpecError(f"'{bad}' applies to a layer, not to a '{type_name}' connection", f"{path}.{bad}")
            if isinstance(x, tuple):
                raise SpecError(f"'{type_name}' reads one tensor, but this graph node reads {len(x)}: add a merge",
                                path)
            node = getattr(self, type_name)(value, path, key, x, repeated)
            name = extras.get("name", value.get("name"))
            if name is not None:
                node.name = name
                self.ctx.add_name(name, node, path, repeated)
            return node
        return self.layer(type_name, value, extras, path, key, x, repeated)

    def layer(self, type_name: str, value: Any, extras: dict, path: str, key: str, x: Any,
              repeated: bool) -> LayerNode:
        try:
            layer_type = get_layer(type_name)
        except RegistryError as exc:
            raise SpecError(str(exc), path) from None
        if value is None:
            value = {}
        if not isinstance(value, dict):
            fields = list(layer_type.Params.model_fields)
            example = f"{type_name}: {{{fields[0]}: ...}}" if fields else type_name
            raise SpecError(f"{type_name} takes a mapping of parameters, e.g. {example}; got {value!r}", path)
        try:
            params = layer_type.Params.model_validate(value)
        except ValidationError as exc:
            raise _pydantic_message(exc, type_name, layer_type.Params, path) from None
        n_in = len(x) if isinstance(x, tuple) else 1
        if n_in != layer_type.num_inputs:
            if layer_type.num_inputs > 1:
                raise SpecError(f"{type_name} reads {layer_type.num_inputs} tensors (x, memory): use it as the "
                                f"first layer of a graph node with from: [x, memory]", path)
            raise SpecError(f"{type_name} reads one tensor but receives {n_in}: give the graph node a merge "
                            f"({', '.join(MERGES)})", path)
        label = f"({type_name})"
        try:
            layer_type.check_input(params, x)
            y = layer_type.output(params, x)
        except ShapeError as exc:
            raise ShapeError(f"{label} {exc.bare_message}", path) from None
        except SpecError as exc:  # a rule about one parameter sets that parameter's name as its path
            raise SpecError(exc.bare_message, f"{path}.{type_name}" + (f".{exc.path}" if exc.path else "")) from None
        y = dataclasses.replace(y, origin=f"{path} ({type_name})", pad_id=None,
                                mask=_carried_mask(layer_type, params, x, y))
        node = LayerNode(path, key, type_name, x, y, layer_type=layer_type, params=params,
                         trainable=extras.get("trainable", True))
        if not isinstance(node.trainable, bool):
            raise SpecError(f"trainable is true or false, got {node.trainable!r}", f"{path}.trainable")
        if "name" in extras:
            node.name = extras["name"]
            self.ctx.add_name(node.name, node, path, repeated)
        if "tie" in extras:
            node.tie = self.tie(node, extras["tie"], f"{path}.tie")
        return node

    def tie(self, node: LayerNode, target: Any, path: str) -> LayerNode:
        source = self.ctx.names.get(target) if isinstance(target, str) else None
        if source is None or source is node:
            known = [n for n, v in self.ctx.names.items() if isinstance(v, LayerNode) and v is not node]
            raise SpecError(f"tie names an unknown layer {target!r}{suggest(str(target), known)}; a tie names an "
                            f"earlier layer item's name (named so far: {', '.join(known) or 'none'})", path)
        if not isinstance(source, LayerNode):
            raise SpecError(f"tie names '{target}', a {source.kind} connection; it must name a layer", path)
        shapes = [weight_shape(n, path) for n in (source, node)]
        if shapes[0] != shapes[1]:
            raise SpecError(f"cannot tie to '{target}': its weight is {fmt_shape(shapes[0])} but this layer's is "
                            f"{fmt_shape(shapes[1])}; a dense layer tied to an embedding needs "
                            f"units = input_dim and input width = output_dim", path)
        return source

    # -- connections -------------------------------------------------------------------------
    def residual(self, value: dict, path: str, key: str, x: TensorInfo, repeated: bool) -> ResidualNode:
        here = f"{path}.residual"
        _check_keys(value, CONNECTIONS["residual"].keys, "residual", here)
        if "layers" not in value:
            raise SpecError("residual needs 'layers': the branch f in y = f(x) + shortcut(x)", here)
        body = self.items(value["layers"], f"{here}.layers", f"{key}.residual.layers", x, repeated=repeated)
        y = body.output
        mode = value.get("shortcut", CONNECTIONS["residual"].optional["shortcut"])
        if mode not in ("auto", "identity", "projection"):
            raise SpecError(f"shortcut is auto, identity or projection, got {mode!r}", f"{here}.shortcut")
        shortcut = None
        if mode == "projection" or (mode == "auto" and (y.shape != x.shape or y.dtype != x.dtype)):
            shortcut = self.projection(x, y, f"{here}.shortcut", f"{key}.residual.shortcut")
        elif y.shape != x.shape:
            raise ShapeError(f"(residual) shortcut: identity needs the layers to keep the shape, but they map "
                             f"{fmt_shape(x.shape)} to {fmt_shape(y.shape)}: use shortcut: auto (a projection)", here)
        drop_path = value.get("drop_path", CONNECTIONS["residual"].optional["drop_path"])
        if isinstance(drop_path, bool) or not isinstance(drop_path, int | float) or not 0 <= drop_path <= 1:
            raise SpecError(f"drop_path is the probability of dropping the residual branch while training, a number "
                            f"from 0 to 1 (0.1 is a common start), got {drop_path!r}", f"{here}.drop_path")
        post = None
        if value.get("post"):
            post = self.items(value["post"], f"{here}.post", f"{key}.residual.post", y, repeated=repeated)
            y = post.output
        y = dataclasses.replace(y, origin=f"{path} (residual)")
        return ResidualNode(path, key, "residual", x, y, body=body, shortcut=shortcut, post=post,
                            drop_path=float(drop_path))

    def projection(self, x: TensorInfo, y: TensorInfo, path: str, key: str) -> SequenceNode:
        """ResNet's projection shortcut for images (1x1 conv with the spatial stride + batchnorm),
        its 1-D analogue when a (channels, length) input changes channels, and a dense layer over
        the last axis for vectors and (time, features) sequences."""
        if x.dtype != "float":
            raise ShapeError(f"(residual) cannot project integer ids {fmt_shape(x.shape)}: put the embedding "
                             "before the residual", path)
        if x.rank == 3 and y.rank == 3:
            strides = [_stride_for(a, b) for a, b in zip(x.shape[1:], y.shape[1:], strict=True)]
            if None in strides:
                raise ShapeError(f"(residual) no 1x1 projection takes {fmt_shape(x.shape)} to {fmt_shape(y.shape)}: "
                                 "the spatial size can only shrink by an integer stride", path)
            items: list[Any] = [{"conv2d": {"filters": y.shape[0], "kernel_size": 1, "strides": strides,
                                            "use_bias": False}}, "batchnorm"]
        elif x.rank == 2 and y.rank == 2 and x.shape[0] != y.shape[0] and _stride_for(x.shape[1], y.shape[1]):
            # (channels, length) from conv1d layers: the 1-D analogue of ResNet's projection
            items = [{"conv1d": {"filters": y.shape[0], "kernel_size": 1,
                                 "strides": _stride_for(x.shape[1], y.shape[1]), "use_bias": False}}, "batchnorm"]
        elif x.rank in (1, 2) and x.rank == y.rank and x.shape[:-1] == y.shape[:-1]:
            items = [{"dense": {"units": y.shape[-1]}}]
        else:
            raise ShapeError(f"(residual) the layers map {fmt_shape(x.shape)} to {fmt_shape(y.shape)}, which no "
                             "projection shortcut joins: keep the rank (and the time axis) unchanged", path)
        return self.items(items, path, key, x)

    def parallel(self, value: dict, path: str, key: str, x: TensorInfo, repeated: bool) -> ParallelNode:
        here = f"{path}.parallel"
        _check_keys(value, CONNECTIONS["parallel"].keys, "parallel", here)
        branches = value.get("branches")
        if not isinstance(branches, list) or not branches:
            raise SpecError("parallel needs 'branches': a list of branches, each a list of layer items", here)
        nodes = []
        for i, branch in enumerate(branches):
            branch_items = branch if isinstance(branch, list) else [branch]
            nodes.append(self.items(branch_items, f"{here}.branches[{i}]", f"{key}.parallel.branches[{i}]", x,
                                    repeated=repeated))
        merge = _merge(value, here)
        y = merge_shapes(merge, [b.output for b in nodes], [b.path for b in nodes], here)
        y = dataclasses.replace(y, origin=f"{path} (parallel)", mask=_merged_mask(merge, [b.output for b in nodes]))
        return ParallelNode(path, key, "parallel", x, y, branches=nodes, merge=merge)

    def repeat(self, value: dict, path: str, key: str, x: TensorInfo, repeated: bool) -> RepeatNode:
        here = f"{path}.repeat"
        _check_keys(value, CONNECTIONS["repeat"].keys, "repeat", here)
        times = value.get("times")
        if not isinstance(times, int) or isinstance(times, bool) or times < 1:
            raise SpecError(f"times must be an integer >= 1, got {times!r}", f"{here}.times")
        share = value.get("share_weights", CONNECTIONS["repeat"].optional["share_weights"])
        if not isinstance(share, bool):
            raise SpecError(f"share_weights is true or false, got {share!r}", f"{here}.share_weights")
        if "layers" not in value:
            raise SpecError("repeat needs 'layers': the block to repeat", here)
        # Parse until the fixed point: an iteration whose output equals its input hands the next
        # one the same input, so the next one (and every later one) is parsed the same.
        distinct: list[SequenceNode] = []
        current = x
        while len(distinct) < times:
            i = len(distinct)
            if i == MAX_DISTINCT_ITERATIONS:
                raise ShapeError(f"the block changes the shape in each of its first {i:,} iterations "
                                 f"({fmt_shape(x.shape)} to {fmt_shape(current.shape)}), so all {times:,} would "
                                 f"differ; archlab analyses at most {MAX_DISTINCT_ITERATIONS:,} different iterations: "
                                 "use a block that keeps its shape, or fewer times", f"{here}.times")
            try:
                body = self.items(value["layers"], f"{here}.layers", f"{key}.repeat[{i}].layers", current,
                                  repeated=repeated or i > 0)
            except SpecError as exc:
                if i == 0:
                    raise
                raise type(exc)(f"{exc.bare_message} (in iteration {i + 1} of {times}, whose input is "
                                f"{fmt_shape(current.shape)})", exc.path) from None
            if share and body.output.shape != x.shape:
                raise ShapeError(f"(repeat) share_weights: true runs one block {times} times, so the block must "
                                 f"keep its shape, but it maps {fmt_shape(x.shape)} to {fmt_shape(body.output.shape)}",
                                 here)
            distinct.append(body)
            if body.output == current:
                break
            current = body.output
        y = dataclasses.replace(distinct[-1].output, origin=f"{path} (repeat)")
        return RepeatNode(path, key, "repeat", x, y, distinct=distinct, times=times, share_weights=share)

    def sequential(self, value: dict, path: str, key: str, x: TensorInfo, repeated: bool) -> SequenceNode:
        here = f"{path}.sequential"
        _check_keys(value, CONNECTIONS["sequential"].keys, "sequential", here)
        if "layers" not in value:
            raise SpecError("sequential needs 'layers'", here)
        node = self.items(value["layers"], f"{here}.layers", f"{key}.sequential.layers", x, repeated=repeated)
        node.path, node.key = path, key
        return node

    # -- the graph form ----------------------------------------------------------------------
    def graph(self, data: dict, inputs: dict[str, TensorInfo]) -> tuple[dict[str, GraphBlock], list[str]]:
        graph = data["graph"]
        for name in graph:
            if name in inputs:
                raise SpecError(f"node '{name}' has the name of an input: rename one of them", f"graph.{name}")
            if not isinstance(graph[name], dict):
                raise SpecError("a graph node is a mapping {from: ..., merge: ..., layers: [...]}", f"graph.{name}")
            _check_keys(graph[name], ("from", "merge", "axis", "layers"), "a graph node", f"graph.{name}")
        order = _topological_order(graph, inputs)
        outputs = data["outputs"]
        outputs = [outputs] if isinstance(outputs, str) else outputs
        if not isinstance(outputs, list) or not outputs or not all(isinstance(o, str) for o in outputs):
            raise SpecError(f"outputs is a node name or a list of node names, got {outputs!r}", "outputs")
        for out in outputs:
            if out not in graph and out not in inputs:
                raise SpecError(f"unknown output '{out}'{suggest(out, [*graph, *inputs])} (nodes: {', '.join(graph)})",
                                "outputs")
        _check_all_used(graph, inputs, outputs)
        blocks: dict[str, GraphBlock] = {}
        for name in order:
            node = graph[name]
            here = f"graph.{name}"
            sources = _sources(node, here)
            infos = [blocks[s].output if s in blocks else inputs[s] for s in sources]
            merge = None
            if "merge" in node:
                if len(sources) < 2:
                    raise SpecError(f"merge joins several tensors, but this node reads only '{sources[0]}': "
                                    "remove merge or read from: [a, b]", f"{here}.merge")
                merge = _merge(node, here)
                x: Any = dataclasses.replace(merge_shapes(merge, infos, sources, here), mask=_merged_mask(merge, infos))
            else:
                _check_keys(node, ("from", "layers"), "a graph node without merge", here)
                x = infos[0] if len(infos) == 1 else tuple(infos)
            layers = node.get("layers", [])
            if isinstance(x, tuple) and not layers:
                raise SpecError(f"reads {len(sources)} tensors ({', '.join(sources)}) but has no merge: add merge: "
                                f"{' | '.join(MERGES)}", here)
            body = self.items(layers, f"{here}.layers", f"{here}.layers", x)
            y = dataclasses.replace(body.output, origin=here)
            blocks[name] = GraphBlock(here, here, "node", x, y, name=name, sources=sources, source_infos=infos,
                                      merge=merge, body=body)
        return blocks, outputs


def _carried_mask(layer_type: LayerType, params: LayerParams, x: Any, y: TensorInfo) -> str | None:
    """The padding mask of a layer's output: its (first) input's, when the layer keeps the time axis
    position by position and the output still has (time, features)."""
    first = x[0] if isinstance(x, tuple) else x
    if first.mask is None or not layer_type.keeps_time(params, x):
        return None
    return first.mask if y.rank >= 2 and y.shape[0] == first.shape[0] else None


def _merged_mask(merge: Merge, infos: list[TensorInfo]) -> str | None:
    """Merged tensors keep a padding mask that all of them share, unless concat joins them in time."""
    masks = {i.mask for i in infos}
    if len(masks) != 1 or (merge.kind == "concat" and merge.axis % len(infos[0].shape) == 0):
        return None
    return masks.pop()


def _stride_for(size_in: int, size_out: int) -> int | None:
    for stride in range(1, size_in + 1):
        if (size_in - 1) // stride + 1 == size_out:
            return stride
    return None


def _merge(value: dict, path: str) -> Merge:
    kind = value.get("merge", "concat")
    if kind not in MERGES:
        raise SpecError(f"unknown merge '{kind}'{suggest(str(kind), MERGES)} (merges: {', '.join(MERGES)})",
                        f"{path}.merge")
    axis = value.get("axis", 0)
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise SpecError(f"axis is an integer (0 = the channel axis; the batch is not counted), got {axis!r}",
                        f"{path}.axis")
    if "axis" in value and kind != "concat":
        raise SpecError(f"axis applies to merge: concat only, not {kind}", f"{path}.axis")
    return Merge(kind, axis)


def merge_shapes(merge: Merge, infos: list[TensorInfo], names: list[str], path: str) -> TensorInfo:
    """The shape of merged tensors, or a ShapeError listing every input shape."""
    listing = ", ".join(f"{n} {fmt_shape(i.shape)}" for n, i in zip(names, infos, strict=True))
    if len({i.dtype for i in infos}) > 1:
        raise ShapeError(f"(merge {merge.kind}) mixes integer ids and real values: {listing}", path)
    if merge.kind == "mean" and infos[0].dtype == "long":
        raise ShapeError(f"(merge mean) cannot average integer ids: {listing}; add 'embedding' to each "
                         "branch first, or use merge: concat, add or max", path)
    first = infos[0].shape
    if merge.kind != "concat":
        if any(i.shape != first for i in infos):
            raise ShapeError(f"(merge {merge.kind}) needs equal shapes but receives {listing}: use merge: concat, "
                             "or give the branches the same output shape", path)
        return TensorInfo(first, infos[0].dtype)
    rank = len(first)
    if not -rank <= merge.axis < rank or any(len(i.shape) != rank for i in infos):
        raise ShapeError(f"(merge concat) along axis {merge.axis} needs inputs of one rank with that axis; "
                         f"receives {listing}", path)
    axis = merge.axis % rank
    others = {i.shape[:axis] + i.shape[axis + 1:] for i in infos}
    if len(others) > 1:
        raise ShapeError(f"(merge concat) along axis {merge.axis} needs the other axes equal but receives {listing}: "
                         "use padding: same in convolutions, or flatten before merging", path)
    shape = list(first)
    shape[axis] = sum(i.shape[axis] for i in infos)
    return TensorInfo(tuple(shape), infos[0].dtype)


def _sources(node: dict, path: str) -> list[str]:
    src = node.get("from")
    sources = [src] if isinstance(src, str) else src
    if not isinstance(sources, list) or not sources or not all(isinstance(s, str) for s in sources):
        raise SpecError(f"'from' is an input or node name, or a list of them; got {src!r}", f"{path}.from")
    return sources


def _topological_order(graph: dict, inputs: dict) -> list[str]:
    order: list[str] = []
    state: dict[str, str] = {}  # "visiting" | "done"

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = trail[trail.index(name):] + [name]
            raise SpecError(f"cycle {' -> '.join(cycle)}: a node can only read inputs and nodes that do not read it",
                            f"graph.{name}.from")
        state[name] = "visiting"
        for src in _sources(graph[name], f"graph.{name}"):
            if src in graph:
                visit(src, [*trail, name])
            elif src not in inputs:
                raise SpecError(f"unknown source '{src}'{suggest(src, [*inputs, *graph])} (inputs: "
                                f"{', '.join(inputs)}; nodes: {', '.join(graph)})", f"graph.{name}.from")
        state[name] = "done"
        order.append(name)

    for name in graph:
        visit(name, [])
    return order


def _check_all_used(graph: dict, inputs: dict, outputs: list[str]) -> None:
    reached: set[str] = set()
    stack = list(outputs)
    while stack:
        name = stack.pop()
        if name in reached:
            continue
        reached.add(name)
        if name in graph:
            stack.extend(_sources(graph[name], f"graph.{name}"))
    unread = [n for n in [*graph, *inputs] if n not in reached]
    if unread:
        _check_memory_read(graph, reached, unread)
    for name in graph:
        if name not in reached:
            raise SpecError(f"node '{name}' does not lead to any output (outputs: {', '.join(outputs)}; reached: "
                            f"{', '.join(sorted(reached))}): read it from another node or remove it", f"graph.{name}")
    for name in inputs:
        if name not in reached:
            raise SpecError(f"input '{name}' is never read (reached: {', '.join(sorted(reached))}): read it with "
                            "from: or remove it", f"inputs.{name}")


def _first_layer_type(node: Any) -> LayerType | None:
    """The layer type of a graph node's first layer item, when it is a registered layer."""
    layers = node.get("layers") if isinstance(node, dict) else None
    first = layers[0] if isinstance(layers, list) and layers else None
    keys = [k for k in first if k not in ITEM_KEYS] if isinstance(first, dict) else []  # as _type_key reads it
    name = first if isinstance(first, str) else keys[0] if len(keys) == 1 else None
    try:
        return get_layer(name) if isinstance(name, str) else None
    except RegistryError:
        return None


def _check_memory_read(graph: dict, reached: set[str], unread: list[str]) -> None:
    """A decoder (transformer_decoder, additive_cross_attention) that reads one source while a branch is
    left unread: the memory is not connected. Said at the decoder's ``from`` (the line to fix), with the
    unread branch's end as the memory, before the unread branch is reported as such."""
    for name in sorted(reached & set(graph)):
        layer_type = _first_layer_type(graph[name])
        sources = _sources(graph[name], f"graph.{name}")
        if layer_type is None or layer_type.num_inputs < 2 or len(sources) != 1:
            continue
        read_by_unread = {s for n in unread if n in graph for s in _sources(graph[n], f"graph.{n}")}
        ends = [n for n in unread if n in graph and n not in read_by_unread]
        fix = (f"'{ends[0]}' is read by nothing; write from: [{sources[0]}, {ends[0]}]" if ends else
               f"input '{unread[0]}' is read by nothing: encode it in a node (e.g. embedding, "
               f"transformer_encoder) and write from: [{sources[0]}, that node]")
        raise SpecError(f"{layer_type.name} reads 2 tensors, [x, memory], but node '{name}' reads only "
                        f"'{sources[0]}': its memory (the encoder's output) is not connected, and {fix}",
                        f"graph.{name}.from")


def _input_info(value: Any, channels_last: bool, path: str, name: str) -> tuple[TensorInfo, TensorInfo]:
    shape = tuple(value["shape"] if isinstance(value, dict) else value)
    dtype = value.get("dtype", "float") if isinstance(value, dict) else "float"
    pad_id = value.get("pad_id") if isinstance(value, dict) else None
    raw = TensorInfo(shape, dtype, origin=path, pad_id=pad_id)
    if channels_last and len(shape) >= 2:
        shape = (shape[-1], *shape[:-1])  # (H, W, C) -> (C, H, W), moved once at the entry
        pad_id = None  # the first axis is no longer the time axis the ids pad
    return raw, TensorInfo(shape, dtype, origin=path, pad_id=pad_id, mask=None if pad_id is None else name)


def weight_shape(node: LayerNode, path: str) -> tuple[int, ...]:
    """The shape of a layer's ``weight``: by the layer type's rule, else from its module built
    on the meta device (no memory)."""
    known = node.layer_type.weight_shape(node.params, node.input)
    if known is not None:
        return known
    import torch  # only for a layer type without the rule; torch is heavy and validate/summary seldom need it

    with torch.device("meta"):
        module = node.layer_type.module(node.params, node.input)
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.nn.Parameter):  # e.g. a sinusoidal table is a fixed buffer, not a weight
        raise SpecError(f"{node.path} ({node.kind}) has no trainable weight to tie", path)
    return tuple(weight.shape)


def parse(spec: Spec | dict | str, *, allow_markers: bool = False) -> ParsedSpec:
    """Check a spec completely and infer every node's shape; raise SpecError on the first problem."""
    spec = load(spec)
    data = spec.to_dict()
    if not allow_markers:
        markers = find_markers(data)
        if markers:
            path, marker = markers[0]
            more = f" (and {len(markers) - 1} more)" if len(markers) > 1 else ""
            raise SpecError(f"holds a search marker {marker.describe()}{more}: this spec is a search space; "
                            "fix the value, or sample it with 'archlab search'", path)
    channels_last = data.get("data_format") == "channels_last"
    parser = _Parser()
    if "layers" in data:
        raw, info = _input_info(data["input"], channels_last, "input", "input")
        root = parser.items(data["layers"], "layers", "layers", info)
        return ParsedSpec(spec, {"input": info}, {"input": raw}, channels_last, root=root)
    raws, infos = {}, {}
    for name, value in data["inputs"].items():
        raws[name], infos[name] = _input_info(value, channels_last, f"inputs.{name}", name)
    blocks, outputs = parser.graph(data, infos)
    return ParsedSpec(spec, infos, raws, channels_last, graph=blocks, outputs=outputs)

