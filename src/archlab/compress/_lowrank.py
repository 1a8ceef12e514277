"""Low-rank factorization of dense layers: W (out x in) ~ B A with A (rank x in), B (out x rank).

A dense layer becomes two thinner ones, so the saving is real (a smaller spec, fewer weights),
not a mask. The pair is written in the spec as one ``sequential`` group in the place of the
original item::

    {"dense": {"units": 64, "activation": "relu"}}
    ->  {"sequential": {"layers": [{"dense": {"units": 8, "use_bias": false}},
                                   {"dense": {"units": 64, "activation": "relu"}}]}}

Why a group rather than two items in the parent list: the builder names an unnamed item by its
index, so one item stays one item and no later layer is renumbered. Every other spec path and
state-dict key stays as it was; only ``net.3.weight``/``net.3.bias`` become ``net.3.0.weight``,
``net.3.1.weight`` and ``net.3.1.bias``. A named item keeps its name on the group.

Which layers are "dense" is each layer type's ``lowrank`` trait (``archlab.layers.LayerType``):
a plugin's linear layer that sets it is factored into a pair of its own type.

The weights come from the truncated SVD W = U S V^T: A = sqrt(S_r) V_r^T, B = U_r sqrt(S_r)
(the singular values split evenly, so neither factor is much larger than the other when
fine-tuned), and the bias stays on the second layer, after which the activation runs as before.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from archlab.analysis import analyze
from archlab.builder import build_parsed, parse
from archlab.builder._nodes import LayerNode
from archlab.exceptions import SpecError
from archlab.spec import Spec, get_at, load

from ._unstructured import layer_modules

__all__ = ["FactoredLayer", "LowRankReport", "lowrank"]


@dataclass(frozen=True)
class FactoredLayer:
    """One dense layer replaced by a rank-``rank`` pair.

    ``path`` is the spec path of the original item (now the ``sequential`` group), ``module`` its
    module path (the pair is ``module.0`` and ``module.1``; a repeat lists each iteration once).
    ``error`` is the relative Frobenius error of the truncation, ||W - B A|| / ||W||."""

    path: str
    module: str
    in_features: int
    out_features: int
    rank: int
    params_before: int
    params_after: int
    error: float


@dataclass
class LowRankReport:
    """What ``lowrank`` did: the layers factored, the dense layers left alone (spec path -> why),
    and the parameters of the whole model before and after (``archlab.analyze``)."""

    rank: int
    layers: list[FactoredLayer] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    params_before: int = 0
    params_after: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "params_before": self.params_before, "params_after": self.params_after,
                "layers": [vars(layer) for layer in self.layers], "skipped": dict(self.skipped)}


def _dense_params(n_in: int, n_out: int, rank: int | None, bias: bool) -> int:
    weights = n_in * n_out if rank is None else rank * (n_in + n_out)
    return weights + (n_out if bias else 0)


def _slot(data: dict, path: str) -> tuple[list, int]:
    """The list holding the item at ``path`` and its index there."""
    parent_path, _, index = path.rpartition("[")
    container = get_at(data, parent_path)
    if isinstance(container, list):
        return container, int(index.rstrip("]"))
    # a parallel branch written as one item rather than a list: ``branches[1][0]`` is ``branches[1]``
    grand, _, branch = parent_path.rpartition("[")
    return get_at(data, grand), int(branch.rstrip("]"))


def _pair(item: dict, kind: str, rank: int) -> dict:
    """The spec item of the factored pair that replaces a dense item of layer type ``kind``."""
    first: dict[str, Any] = {kind: {"units": rank, "use_bias": False}}
    second: dict[str, Any] = {kind: dict(item[kind])}
    if "trainable" in item:  # a frozen layer stays frozen, both halves of it
        first["trainable"] = second["trainable"] = item["trainable"]
    new: dict[str, Any] = {"sequential": {"layers": [first, second]}}
    if "name" in item:
        new["name"] = item["name"]
    return new


def _factor(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """A (rank, in), B (out, rank) with B A the best rank-``rank`` approximation of ``weight``, and
    the relative Frobenius error. The SVD runs in float64 on the CPU (exact enough that a full-rank
    factorization reproduces the layer to float32 precision, and available on every backend)."""
    w = weight.detach().to("cpu", torch.float64)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)  # (out, k), (k,), (k, in); k = min(out, in)
    root = s[:rank].sqrt()
    a = root[:, None] * vh[:rank]  # (rank, in)
    b = u[:, :rank] * root[None, :]  # (out, rank)
    total = float(s.square().sum())
    error = (float(s[rank:].square().sum()) / total) ** 0.5 if total > 0 else 0.0
    return a.to(weight.device, weight.dtype), b.to(weight.device, weight.dtype), error


def lowrank(spec: Spec | dict | str, state_dict: dict[str, torch.Tensor], rank: int, *, min_saving: float = 0.0,
            layers: Iterable[str] | None = None) -> tuple[Spec, dict[str, torch.Tensor], LowRankReport]:
    """Factor every dense layer that a rank-``rank`` pair makes smaller (truncated SVD).

    Args:
        spec: the spec the state dict belongs to (either form; a graph node's dense layers are
            factored in place): a Spec, a dict, or YAML/JSON text or path.
        state_dict: the weights of ``archlab.build(spec)``.
        rank: the inner width of each pair. A layer is factored only when
            ``rank * (in + out) < in * out`` (else the pair would not be smaller), so a rank of
            ``min(in, out)`` or more leaves it alone.
        min_saving: factor only layers whose own parameters shrink by at least this fraction,
            in [0, 1) (e.g. 0.5: at least half of the layer's weights and bias go).
        layers: only these dense layers, by spec path (``report.skipped`` and the error for an
            unknown path list them); None: all. The output layer is a candidate like any other.

    Returns:
        The new spec (each factored item replaced by a ``sequential`` group of two dense layers),
        its state dict (untouched layers keep their keys and tensors) and a LowRankReport.

    Raises:
        SpecError: a dense layer to factor whose weight is tied to (or tied
            from) another layer; a state dict that does not belong to the spec; an unknown path
            in ``layers``.

    Example:
        >>> import archlab
        >>> spec = {"input": [32], "layers": [{"dense": {"units": 32, "activation": "relu"}},
        ...                                   {"dense": {"units": 4}}]}
        >>> small, sd, report = lowrank(spec, archlab.build(spec).state_dict(), 4)
        >>> small.to_dict()["layers"][0]["sequential"]["layers"][0], sorted(sd)[:3]
        ({'dense': {'units': 4, 'use_bias': False}}, ['net.0.0.weight', 'net.0.1.bias', 'net.0.1.weight'])
        >>> [(f.path, f.params_before, f.params_after) for f in report.layers], report.skipped
        ([('layers[0]', 1056, 288)], {'layers[1]': 'rank 4 would not shrink it (4 x 32 with 132 parameters)'})
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"lowrank: rank is the inner width of each factored pair, an integer >= 1; got {rank!r}")
    if isinstance(min_saving, bool) or not isinstance(min_saving, (int, float)) or not 0 <= min_saving < 1:
        raise ValueError(f"lowrank: min_saving is the fraction of a layer's parameters the factorization must save, "
                         f"in [0, 1); got {min_saving!r}")
    spec = load(spec)
    parsed = parse(spec)
    model = build_parsed(parsed, device="meta")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state_dict.items()}
    if expected != found:
        missing, extra = sorted(set(expected) - set(found))[:3], sorted(set(found) - set(expected))[:3]
        wrong = [k for k in set(expected) & set(found) if expected[k] != found[k]][:3]
        raise SpecError(f"the state dict does not belong to this spec's model (missing {missing}, extra {extra}, "
                        f"other shapes {wrong}): pass the weights of archlab.build(spec)")

    entries = list(layer_modules(parsed))
    dense: dict[str, list[tuple[str, LayerNode]]] = {}
    for module, node, in_spec in entries:
        if node.layer_type.lowrank and in_spec:
            dense.setdefault(node.path, []).append((module, node))
    wanted = None if layers is None else [layers] if isinstance(layers, str) else list(layers)
    if wanted is not None:
        unknown = [p for p in wanted if p not in dense]
        if unknown:
            raise SpecError(f"{unknown[0]}: not a dense layer of this spec; dense layers: {', '.join(dense) or 'none'}",
                            unknown[0])
    tie_targets = {id(node.tie): node.path for _, node, _ in entries if node.tie is not None}

    report = LowRankReport(rank)
    data = copy.deepcopy(spec.to_dict())
    tensors = dict(state_dict)
    for path, places in dense.items():
        if wanted is not None and path not in wanted:
            report.skipped[path] = "not in layers"
            continue
        reasons = []
        for _, node in places:  # a repeat's iterations share one item: factor it only if every one shrinks
            n_in, n_out, bias = node.input.shape[-1], node.params.units, node.params.use_bias
            before, after = _dense_params(n_in, n_out, None, bias), _dense_params(n_in, n_out, rank, bias)
            if after >= before:
                reasons.append(f"rank {rank} would not shrink it ({n_out} x {n_in} with {before} parameters)")
            elif 1 - after / before < min_saving:
                reasons.append(f"rank {rank} saves {1 - after / before:.0%} of its parameters, under min_saving "
                               f"{min_saving:.0%}")
        if reasons:
            report.skipped[path] = reasons[0]
            continue
        for _, node in places:
            partner = node.tie.path if node.tie is not None else tie_targets.get(id(node))
            if partner is not None:
                raise SpecError(f"({node.kind}) shares its weight with {partner} (tie); factoring it would break "
                                f"the tie. "
                                f"Leave it out with layers=[...] (the other dense layers: "
                                f"{', '.join(p for p in dense if p != path) or 'none'}), or remove the tie", path)
        items, index = _slot(data, path)
        items[index] = _pair(items[index], places[0][1].kind, rank)
        for module, node in places:
            n_in, n_out, bias = node.input.shape[-1], node.params.units, node.params.use_bias
            a, b, error = _factor(tensors.pop(f"{module}.weight"), rank)
            tensors[f"{module}.0.weight"] = a
            tensors[f"{module}.1.weight"] = b
            if bias:
                tensors[f"{module}.1.bias"] = tensors.pop(f"{module}.bias")
            report.layers.append(FactoredLayer(path, module, n_in, n_out, rank, _dense_params(n_in, n_out, None, bias),
                                               _dense_params(n_in, n_out, rank, bias), error))

    new_spec = Spec.from_dict(data)
    new_parsed = parse(new_spec)
    new_expected = {k: tuple(v.shape) for k, v in build_parsed(new_parsed, device="meta").state_dict().items()}
    if new_expected != {k: tuple(v.shape) for k, v in tensors.items()}:  # a walk that disagrees with build()
        raise SpecError(f"lowrank built a state dict that does not fit the new spec (keys "
                        f"{sorted(set(new_expected) ^ set(tensors))[:4]}); please report this spec")
    report.params_before = int(analyze(parsed).total_params)
    report.params_after = int(analyze(new_parsed).total_params)
    return new_spec, {k: tensors[k] for k in new_expected}, report
