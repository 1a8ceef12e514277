"""Unstructured magnitude pruning: zero the smallest weights of a built model, in place.

Unlike ``prune_channels`` this keeps every shape (the spec and the state-dict keys do not change),
so the model is only smaller once stored sparse or compressed; what it buys is measured by the
report's real sparsity (exact zeros), not by the ratio asked for.

What is pruned: every weight matrix or kernel (a parameter of 2 or more dimensions) of the dense,
convolution, recurrent and attention layers. What is not, and why:

* biases and normalization scales/shifts (1-D): a few parameters per channel, and zeroing one
  shifts or silences a whole channel (structured damage for almost no saving);
* embedding tables (``embedding``, learned ``positional_embedding``): a row is a token's whole
  representation, looked up rather than multiplied, and its magnitudes are not comparable with a
  layer's weights in global pruning. A dense layer tied to an embedding shares that table, so
  it is left alone too.

Which layers those are is each layer type's ``unstructured`` trait (``archlab.layers.LayerType``),
read through the model's spec; a model archlab did not build has no spec, and there every
``torch.nn.Embedding`` is left alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from torch.nn.utils import prune

from archlab.builder._nodes import LayerNode, ParallelNode, ParsedSpec, RepeatNode, ResidualNode, SequenceNode
from archlab.exceptions import ArchlabError

__all__ = ["SparsityReport", "TensorSparsity", "prune_unstructured"]

@dataclass(frozen=True)
class TensorSparsity:
    """The exact zeros of one weight tensor after pruning.

    ``key`` is its state-dict key (``net.3.weight``), ``module`` the module path (``net.3``),
    ``spec_path`` the spec item it comes from (``layers[3]``; None when the model was not built
    by archlab or the layer is generated, e.g. a residual's projection shortcut)."""

    key: str
    module: str
    spec_path: str | None
    numel: int
    zeros: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.numel if self.numel else 0.0


@dataclass
class SparsityReport:
    """What ``prune_unstructured`` did: the ratio asked for and the sparsity found afterwards.

    ``sparsity`` is over the pruned tensors; ``model_sparsity`` over every parameter (biases,
    normalization and embeddings included), which is what a sparse file would save."""

    ratio: float
    global_: bool
    tensors: list[TensorSparsity] = field(default_factory=list)
    model_zeros: int = 0
    model_params: int = 0

    @property
    def zeros(self) -> int:
        return sum(t.zeros for t in self.tensors)

    @property
    def numel(self) -> int:
        return sum(t.numel for t in self.tensors)

    @property
    def sparsity(self) -> float:
        return self.zeros / self.numel if self.numel else 0.0

    @property
    def model_sparsity(self) -> float:
        return self.model_zeros / self.model_params if self.model_params else 0.0

    def by_key(self) -> dict[str, TensorSparsity]:
        return {t.key: t for t in self.tensors}

    def to_dict(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "global": self.global_, "sparsity": self.sparsity,
                "model_sparsity": self.model_sparsity, "pruned_params": self.numel, "model_params": self.model_params,
                "tensors": [{"key": t.key, "module": t.module, "spec_path": t.spec_path, "numel": t.numel,
                             "zeros": t.zeros, "sparsity": t.sparsity} for t in self.tensors]}


def child_keys(seq: SequenceNode) -> list[str]:
    """The names build() gives the children of a sequence (item name, else its index)."""
    keys: list[str] = []
    for i, item in enumerate(seq.items):
        keys.append(item.name if item.name and item.name not in keys else str(i))
    return keys


def layer_modules(parsed: ParsedSpec) -> Iterator[tuple[str, LayerNode, bool]]:
    """Every layer of a parsed spec as (module path in the built model, node, in_spec).

    ``in_spec`` is False for layers the parser generated (a residual's projection shortcut),
    which have no item of their own in the spec. A repeat yields its body once per iteration
    (once when the iterations share weights)."""

    def seq(node: SequenceNode, prefix: str, in_spec: bool) -> Iterator[tuple[str, LayerNode, bool]]:
        for key, item in zip(child_keys(node), node.items, strict=True):
            yield from one(item, f"{prefix}.{key}", in_spec)

    def one(node: Any, prefix: str, in_spec: bool) -> Iterator[tuple[str, LayerNode, bool]]:
        if isinstance(node, LayerNode):
            yield prefix, node, in_spec
        elif isinstance(node, SequenceNode):
            yield from seq(node, prefix, in_spec)
        elif isinstance(node, ResidualNode):
            yield from seq(node.body, prefix + ".layers", in_spec)
            if node.shortcut is not None:
                yield from seq(node.shortcut, prefix + ".shortcut", False)
            if node.post is not None:
                yield from seq(node.post, prefix + ".post", in_spec)
        elif isinstance(node, ParallelNode):
            for j, branch in enumerate(node.branches):
                yield from seq(branch, f"{prefix}.branches.{j}", in_spec)
        elif isinstance(node, RepeatNode):
            bodies = node.iterations[:1] if node.share_weights else node.iterations
            for i, body in enumerate(bodies):
                yield from seq(body, f"{prefix}.blocks.{i}", in_spec)

    if parsed.root is not None:
        yield from seq(parsed.root, "net", True)
    else:
        for name, block in parsed.graph.items():
            yield from seq(block.body, f"net.nodes.{name}.layers", True)


def _spec_layers(model: nn.Module) -> list[tuple[str, LayerNode, bool]]:
    """``layer_modules`` of the spec of a model archlab built (else empty)."""
    spec = getattr(model, "spec", None)
    if spec is None or not hasattr(model, "net"):
        return []
    from archlab.builder import parse

    try:
        parsed = parse(spec)
    except ArchlabError:  # a spec that no longer parses: prune anyway, without spec paths
        return []
    return list(layer_modules(parsed))


def _prunable_weights(model: nn.Module, layers: list[tuple[str, LayerNode, bool]]) -> list[tuple[str, nn.Module, str]]:
    """(module path, module, parameter name) of every weight ``prune_unstructured`` prunes, each
    parameter once (a shared or tied weight counts for its first owner)."""
    modules = dict(model.named_modules())
    kept = [modules[path] for path, node, _ in layers if not node.layer_type.unstructured and path in modules]
    kept += [m for m in modules.values() if isinstance(m, nn.Embedding)]
    skip = {id(p) for m in kept for p in m.parameters()}
    found: list[tuple[str, nn.Module, str]] = []
    for path, module in modules.items():
        for name, param in module.named_parameters(recurse=False):
            if param.dim() < 2 or id(param) in skip:
                continue
            skip.add(id(param))
            found.append((path, module, name))
    return found


def prune_unstructured(model: nn.Module, ratio: float, *, global_: bool = False) -> SparsityReport:
    """Zero the smallest-magnitude weights of ``model`` in place, permanently (no masks or hooks
    are left, so the state dict has its usual keys and loads into ``archlab.build(spec)``).

    Args:
        model: a built model (``archlab.build``); any ``nn.Module`` works, without spec paths.
        ratio: the fraction of weights to zero, in [0, 1).
        global_: rank all pruned tensors together (``global_unstructured``), so layers with many
            small weights lose more; else each tensor loses ``ratio`` of its own (``l1_unstructured``).

    Returns:
        A SparsityReport with the exact zeros of every pruned tensor (keyed by state-dict key,
        with its spec path) and overall. Weights that were zero before count too, so a tensor can
        be sparser than ``ratio``.

    Fine-tuning afterwards lets the zeros grow back: nothing holds them at zero once the masks are
    removed, so prune after the last training, or prune again.

    Example:
        >>> import archlab
        >>> model = archlab.build({"input": [8], "layers": [{"dense": {"units": 4}}, {"dense": {"units": 2}}]})
        >>> report = prune_unstructured(model, 0.5)
        >>> report.by_key()["net.0.weight"].zeros, report.by_key()["net.0.weight"].spec_path, report.sparsity
        (16, 'layers[0]', 0.5)
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
        raise ValueError(f"prune_unstructured: ratio is the fraction of weights to zero, in [0, 1); got {ratio!r}. "
                         "Use e.g. 0.5 to zero half of them")
    layers = _spec_layers(model)
    targets = _prunable_weights(model, layers)
    # prune.remove registers each weight again, last: note the order to restore the state dict's
    orders = {id(m): (m, list(m._parameters)) for _, m, _ in targets}
    if targets:
        if global_:
            prune.global_unstructured([(m, n) for _, m, n in targets], pruning_method=prune.L1Unstructured,
                                      amount=float(ratio))
        else:
            for _, module, name in targets:
                prune.l1_unstructured(module, name, amount=float(ratio))
        for _, module, name in targets:  # make it permanent: weight = weight_orig * mask, no hook left
            prune.remove(module, name)
    for module, order in orders.values():
        params = dict(module._parameters)
        module._parameters.clear()
        module._parameters.update((name, params[name]) for name in order)
        if isinstance(module, nn.RNNBase):
            module.flatten_parameters()  # cuDNN's single weight buffer again (a no-op on the CPU)
    spec_paths = {module: node.path for module, node, in_spec in layers if in_spec}
    report = SparsityReport(float(ratio), global_)
    for path, module, name in targets:
        weight = getattr(module, name).detach()
        report.tensors.append(TensorSparsity(f"{path}.{name}" if path else name, path,
                                             spec_paths.get(path) or _nearest(spec_paths, path),
                                             weight.numel(), int((weight == 0).sum())))
    for param in model.parameters():
        report.model_params += param.numel()
        report.model_zeros += int((param.detach() == 0).sum())
    return report


def _nearest(spec_paths: dict[str, str], path: str) -> str | None:
    """The spec path of the layer a submodule belongs to (``net.2.attn.out_proj`` -> ``net.2``)."""
    while "." in path:
        path = path.rpartition(".")[0]
        if path in spec_paths:
            return spec_paths[path]
    return None
