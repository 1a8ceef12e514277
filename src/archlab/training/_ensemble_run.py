"""Ensemble run directories read back and used: the one owner of reading ``ensemble.json`` and of
combining members (``EnsembleModel``), which evaluate, predict, summary and export all call.

An ensemble directory (``archlab ensemble`` writes it) holds ``ensemble.json`` and its members as
ordinary run directories under ``members/``; the format is in docs/ensembles.md:

    {"format": "archlab-ensemble/1", "method": "seeds", "combine": "mean", "task": "classification",
     "data": "digits", "members": [{"dir": "members/00", "weights": "best", "weight": 1.0}, ...]}
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from archlab._inputs import call_model, map_inputs
from archlab.analysis import analyze
from archlab.builder import parse
from archlab.exceptions import SpecError, suggest
from archlab.tasks import TaskKind, direction_of, get_task

from ._engine import Engine
from ._fit import model_inputs, to_tensors
from ._metrics import compute_metrics, make_loss
from ._runs import RunError
from ._train import (
    SPLITS,
    WEIGHTS,
    RestoredRun,
    _check_text_options,
    _classes_of,
    _is_text_run,
    _record_evaluation,
    _unknown_split,
    as_arrays,
    check_fit,
    evaluation_name,
    load_run,
    read_inputs,
    restore_run,
    run_task,
)

__all__ = ["COMBINES", "FORMAT", "METHODS", "Ensemble", "EnsembleModel", "MemberRun", "RestoredEnsemble",
           "combine_flops", "ensemble_metrics", "ensemble_summary", "evaluate_ensemble", "is_ensemble",
           "predict_ensemble", "read_ensemble", "restore_ensemble"]

FORMAT = "archlab-ensemble/1"
METHODS = ("seeds", "bagging", "boosting", "snapshot")
COMBINES = ("mean", "vote")
ENSEMBLE_FILE = "ensemble.json"


@dataclass(frozen=True)
class MemberRun:
    """One member: its run directory, the stem of its weights file there, its weight in the
    combination; ``name``: the directory as ensemble.json gives it (relative to the ensemble)."""

    dir: Path
    weights: str
    weight: float
    name: str


@dataclass(frozen=True)
class Ensemble:
    """An ensemble directory as ``read_ensemble`` found it valid. ``info``: the free-form record."""

    path: Path
    method: str
    combine: str
    task: str
    data: str | None
    members: tuple[MemberRun, ...]
    info: dict[str, Any] = field(default_factory=dict)

    def with_weights(self, weights: str) -> Ensemble:
        """``best``: each member's own weights, as ensemble.json names them; ``last``: every member's
        last.safetensors (not for a snapshot ensemble, whose members are weight files of one run)."""
        if weights not in WEIGHTS:
            raise SpecError(f"--weights is best or last, got {weights!r}{suggest(weights, WEIGHTS)}")
        if weights == "best":
            return self
        if len({m.dir for m in self.members}) < len(self.members):
            raise SpecError(f"--weights last: the members of {self.path} are weight files of one run "
                            f"({', '.join(m.weights for m in self.members)}), so its last weights are one "
                            "member; drop --weights to use the ensemble's own")
        return replace(self, members=tuple(replace(m, weights="last") for m in self.members))


def is_ensemble(path: str | Path) -> bool:
    """Whether ``path`` is an ensemble directory (it holds ensemble.json): what the commands branch on."""
    return (Path(path) / ENSEMBLE_FILE).is_file()


def read_ensemble(path: str | Path) -> Ensemble:
    """The ensemble in ``path``, checked: a known format, method and combination; members that are
    runs with the named weights file; weights >= 0 that sum > 0; members that take the same inputs
    and give the same output.

    Raises:
        RunError: naming ensemble.json (and the member) or the member's spec.yaml, and what to fix.
    """
    path = Path(path)
    file = path / ENSEMBLE_FILE
    if not file.is_file():
        raise RunError(f"{path} is not an ensemble directory: it has no {ENSEMBLE_FILE} (archlab ensemble writes "
                       "one)")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{file} is not valid JSON ({exc}); archlab ensemble wrote it: restore it, or train the "
                       "ensemble again") from None
    if not isinstance(raw, dict):
        raise RunError(f"{file} holds {type(raw).__name__}, not an ensemble object")
    if raw.get("format") != FORMAT:
        found = "no format" if "format" not in raw else f"format {raw['format']!r}"
        raise RunError(f"{file} has {found}; this archlab reads {FORMAT!r} (a newer archlab wrote it? upgrade)")
    for key, valid in (("method", METHODS), ("combine", COMBINES)):
        if raw.get(key) not in valid:
            raise RunError(f"{file}: {key} is one of {', '.join(valid)}, got {raw.get(key)!r}"
                           f"{suggest(str(raw.get(key)), valid)}")
    try:
        task = get_task(str(raw.get("task")), "task").name
    except SpecError as exc:
        raise RunError(f"{file}: {exc}") from None
    if raw["combine"] == "vote" and task != "classification":
        raise RunError(f"{file}: combine vote (SAMME's weighted vote of the members' classes) is for "
                       f"classification, not {task}: use combine mean")
    members = raw.get("members")
    if not isinstance(members, list) or not members:
        raise RunError(f"{file}: members is a non-empty list of {{dir, weights, weight}}, got {members!r}")
    read = tuple(_member(file, i, entry) for i, entry in enumerate(members))
    total = sum(m.weight for m in read)
    if not total > 0:
        raise RunError(f"{file}: the members' weights sum to {total:g}; give at least one a weight above 0")
    data = raw.get("data")
    ensemble = Ensemble(path, raw["method"], raw["combine"], task, None if data is None else str(data), read,
                        raw.get("info") or {})
    _check_members(ensemble)
    return ensemble


def _member(file: Path, index: int, entry: Any) -> MemberRun:
    where = f"{file}: members[{index}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("dir"), str):
        raise RunError(f"{where} needs a 'dir' (the member's run directory, relative to the ensemble), got {entry!r}")
    run_dir = file.parent / entry["dir"]
    try:
        load_run(run_dir)
    except RunError as exc:
        raise RunError(f"{where}: {exc}") from None
    weights = entry.get("weights", "best")
    if not isinstance(weights, str) or not (run_dir / f"{weights}.safetensors").is_file():
        held = sorted(p.stem for p in run_dir.glob("*.safetensors"))
        raise RunError(f"{where}: weights {weights!r} names no file in {run_dir} (it holds "
                       f"{', '.join(held) or 'no weights'}); name one of them")
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
        raise RunError(f"{where}: weight is a number >= 0 (its share of the combination), got {weight!r}")
    return MemberRun(run_dir, weights, float(weight), entry["dir"])


def _check_members(ensemble: Ensemble) -> None:
    """The members' specs take the same inputs (names, shapes, dtypes) and give the same output,
    and were trained for the ensemble's task: else one model cannot stand for them."""
    first = None
    for member in ensemble.members:
        spec, recipe = load_run(member.dir)
        parsed = parse(spec)
        signature = ({n: (tuple(i.shape), i.dtype) for n, i in parsed.raw_inputs.items()},
                     [tuple(i.shape) for i in parsed.output_infos])
        task = run_task(spec, recipe)[0].name
        if task != ensemble.task:
            raise RunError(f"{member.dir / 'spec.yaml'}: the member trains for {task}, but "
                           f"{ensemble.path / ENSEMBLE_FILE} says the ensemble's task is {ensemble.task}")
        if first is None:
            first = (member, signature)
        elif signature != first[1]:
            what = "inputs" if signature[0] != first[1][0] else "outputs"
            mine, theirs = (signature[0], first[1][0]) if what == "inputs" else (signature[1], first[1][1])
            raise RunError(f"{member.dir / 'spec.yaml'}: the member's {what} are {mine}, but the first member's "
                           f"({first[0].dir}) are {theirs}; an ensemble's members take the same inputs and give "
                           "the same outputs")


class EnsembleModel(nn.Module):
    """The members and their combination as one module: the only place members combine.

    Each member is a run's model in its training form (logits); ``member_scores`` applies the task's
    prediction transform (softmax, sigmoid, or the values). ``combine`` then gives, per sample:

    - ``mean``: ``sum_m w_m p_m / sum_m w_m`` (N, K), the weighted mean of the members' scores;
    - ``vote``: SAMME's weighted vote, ``score_k = sum_m w_m [argmax p_m == k] / sum_m w_m``; a
      member whose scores tie votes for the first of the tied classes (argmax's first index, in
      torch and in ONNX's ArgMax), and a tie of the vote itself goes to the first class likewise.

    It takes what a member takes (one tensor, or named inputs) and returns the combined scores.

    Example:
        >>> from archlab.tasks import get_task
        >>> model = EnsembleModel([nn.Identity(), nn.Identity()], [1.0, 3.0], "mean", get_task("regression"))
        >>> model(torch.tensor([[2.0]])).tolist()
        [[2.0]]
    """

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float], combine: str, task: TaskKind) -> None:
        super().__init__()
        if combine not in COMBINES:
            raise ValueError(f"combine is one of {', '.join(COMBINES)}, got {combine!r}")
        self.members = nn.ModuleList(members)
        self.combine_name, self.task = combine, task
        w = torch.tensor([float(v) for v in weights], dtype=torch.float32)
        self.register_buffer("weights", w / w.sum())  # normalised once: the combination is a weighted sum

    def member_scores(self, *args: torch.Tensor, **named: torch.Tensor) -> list[torch.Tensor]:
        x = named if named else args[0]
        return [self.task.scores(call_model(member, x)) for member in self.members]

    def combine(self, scores: Sequence[torch.Tensor]) -> torch.Tensor:
        """The members' scores (each (N, K)) combined into (N, K)."""
        stacked = torch.stack(list(scores))  # (M, N, K)
        if self.combine_name == "vote":
            classes = torch.arange(stacked.shape[-1], device=stacked.device)
            # (M, N, 1) == (K,) -> (M, N, K): each member's one-hot vote, as ONNX ArgMax + Equal
            stacked = (stacked.argmax(dim=-1, keepdim=True) == classes).to(self.weights.dtype)
        weights = self.weights.to(stacked.device, stacked.dtype).reshape(-1, *([1] * (stacked.dim() - 1)))  # (M, 1, 1)
        return (weights * stacked).sum(dim=0)

    def forward(self, *args: torch.Tensor, **named: torch.Tensor) -> torch.Tensor:
        return self.combine(self.member_scores(*args, **named))


@dataclass
class RestoredEnsemble:
    """An ensemble read back: its description, each member's restored run, and the EnsembleModel of them."""

    ensemble: Ensemble
    runs: list[RestoredRun]
    model: EnsembleModel

    @property
    def task(self) -> TaskKind:
        return self.runs[0].task


def restore_ensemble(path: str | Path, weights: str = "best") -> RestoredEnsemble:
    """``read_ensemble``, then every member restored (``restore_run``, its weights stem) into one
    EnsembleModel. Members of a text task are refused: each holds its own tokenizer, so the same
    sentence is different ids for each."""
    ensemble = read_ensemble(path).with_weights(weights)
    _refuse_text(ensemble)
    runs = [restore_run(m.dir, m.weights) for m in ensemble.members]
    model = EnsembleModel([r.model for r in runs], [m.weight for m in ensemble.members], ensemble.combine,
                          runs[0].task)
    return RestoredEnsemble(ensemble, runs, model.eval())


def _refuse_text(ensemble: Ensemble) -> None:
    text = [m.dir for m in ensemble.members if _is_text_run(m.dir)]
    if text:
        raise SpecError(f"{ensemble.path}: the members are text runs ({text[0]} holds its own tokenizer, whose ids "
                        "the others do not share); evaluate, predict and export take ensembles of runs on arrays")


def _member_engine(run: RestoredRun, fp32: bool = False) -> Engine:
    """An engine that evaluates a member as ``evaluate_run`` does: the task's evaluation metrics
    beside the recipe's; ``fp32``: in float32 whatever the run trained in (what an exported file computes)."""
    recorded = run.task.default_metrics if run.recipe.metrics is None else run.recipe.metrics
    update: dict[str, Any] = {"metrics": sorted(set(recorded) | set(run.task.evaluation_metrics))}
    recipe = run.recipe.model_copy(update=update | ({"precision": "fp32"} if fp32 else {}))
    return Engine(run.model, recipe, run.task, verbose=0, output_activation=run.head)


def ensemble_metrics(restored: RestoredEnsemble, x: Any, y: torch.Tensor, *,
                     fp32: bool = False) -> tuple[dict[str, float], list[dict[str, float]], torch.Tensor]:
    """The ensemble's metrics, each member's, and the combined scores' logits (``TaskKind.logits_of``),
    from one forward per member: each member's outputs give its own metrics and, as scores, the
    combination. The ensemble's loss is the task's loss of the combined scores (for classification
    their NLL). The members' engines move them to the recipe's device: export restores its own copy."""
    task, members, outputs = restored.task, [], []
    engine = None
    for run in restored.runs:
        engine = _member_engine(run, fp32)
        values, out = engine.evaluate(x, y)
        members.append(values)
        outputs.append(task.scores(out.float()))
    combined = restored.model.combine([o.cpu() for o in outputs])
    logits = task.logits_of(combined)
    yt = y.to(logits.device)
    loss = make_loss(task)(logits, yt).item()
    values = compute_metrics(logits, yt, loss, task, engine.metric_names, engine.recipe.top_k)
    return values, members, logits


def _sign(task: TaskKind) -> int:
    """+1 when the task's headline metric is better higher (accuracy), -1 when lower (mse)."""
    return 1 if direction_of(task.headline_metric, task.name) == "max" else -1


def evaluate_ensemble(path: str | Path, *, data: str | None = None, split: str = "test", weights: str = "best",
                      data_dir: str | Path | None = None) -> dict[str, Any]:
    """``evaluate_run`` of an ensemble directory: the ensemble's metrics and artefacts (a confusion
    matrix...) and each member's metrics on the same split, written to
    ``<evaluation_name>.json`` in the ensemble directory with ``members`` (dir, weights, weight,
    metrics), ``best_member`` (its index by the task's headline metric) and
    ``gain_over_best_member`` (the ensemble's headline metric less the best member's; positive when
    the ensemble is better, for a metric to minimise too)."""
    from archlab.data import load_dataset

    restored = restore_ensemble(path, weights)
    ensemble, first = restored.ensemble, restored.runs[0]
    name = data or ensemble.data or first.recipe.data
    if split not in SPLITS:  # an ensemble's members are runs on arrays: no named splits
        _unknown_split(split, name, ())
    loaded = load_dataset(name, data_dir)
    parsed = parse(first.spec)
    dataset = as_arrays(loaded, parsed, first.task, first.recipe)
    check_fit(parsed, dataset, first.task)
    x, y = (dataset.x_test, dataset.y_test) if split == "test" else (dataset.x_train, dataset.y_train)
    xt, yt = to_tensors(model_inputs(parsed, x, dataset.name), y, first.task)
    values, members, logits = ensemble_metrics(restored, xt, yt)
    headline, sign = restored.task.headline_metric, _sign(restored.task)
    best = max(range(len(members)), key=lambda i: sign * members[i][headline])
    extra = {"ensemble": {"method": ensemble.method, "combine": ensemble.combine},
             "members": [{"dir": m.name, "weights": m.weights, "weight": m.weight, "metrics": v}
                         for m, v in zip(ensemble.members, members, strict=True)],
             "headline": headline, "best_member": best,
             "gain_over_best_member": sign * (values[headline] - members[best][headline])}
    stem = evaluation_name(ensemble.data, dataset.name, split, weights)
    return _record_evaluation(ensemble.path, ensemble.path.name, dataset, stem, split, weights, values, logits,
                              yt, restored.task, extra=extra)


def predict_ensemble(path: str | Path, input_path: str | Path, *, top: int | None = None,
                     weights: str = "best") -> list[dict]:
    """``predict_run`` of an ensemble directory: the combined scores' top classes (``top``, default 3)
    per sample, as for a run, and for a task with classes ``members_agree``: how many members'
    own prediction is the ensemble's."""
    _check_text_options({} if top is None else {"top": top})
    restored = restore_ensemble(path, weights)
    ensemble, first, task = restored.ensemble, restored.runs[0], restored.task
    parsed = parse(first.spec)
    x = model_inputs(parsed, read_inputs(input_path, parsed, first.recipe.data), str(input_path))
    xt = map_inputs(lambda a: torch.from_numpy(np.ascontiguousarray(a)), x)
    scores = [_member_engine(run).probabilities(xt).cpu() for run in restored.runs]
    combined = restored.model.combine(scores).numpy()
    classes = _classes_of(ensemble.members[0].dir, first.recipe.data, combined.shape[-1])
    results = [task.describe_prediction(row, classes, 3 if top is None else top) for row in combined]
    if task.output_activation is not None:  # scores of classes or labels: members can agree with the ensemble
        mine = task.labels(combined)
        theirs = [task.labels(s.numpy()) for s in scores]
        for i, result in enumerate(results):
            result["members_agree"] = sum(bool(np.array_equal(t[i], mine[i])) for t in theirs)
            result["members"] = len(theirs)
    return results


def combine_flops(combine: str, members: int, outputs: int) -> int:
    """FLOPs per sample of the combination of ``members`` scores of ``outputs`` values each (the
    members' own softmax or sigmoid is not here: the analysis of a spec that ends in one counts it).
    ``mean``: a weighted sum, ``M·K`` multiply-accumulates = ``2·M·K`` FLOPs (the weights are
    normalised once, not per sample); ``vote``: that, plus one compare per score for each member's
    argmax and one per class for its one-hot vote, ``2·M·K`` more (docs/analysis.md counts a
    compare as a FLOP, as for moe's top-k)."""
    return 2 * members * outputs * (2 if combine == "vote" else 1)


def ensemble_summary(path: str | Path, batch_size: int = 1) -> dict[str, Any]:
    """Parameters and FLOPs of each member (``archlab.analysis.analyze`` of its spec) and of the
    ensemble: parameters = their sum (a snapshot's weight files are separate models once combined),
    FLOPs per sample = their sum plus the combination's (``combine_flops``)."""
    ensemble = read_ensemble(path)
    rows = []
    for member in ensemble.members:
        analysis = analyze(load_run(member.dir)[0], batch_size=batch_size)
        rows.append({"dir": member.name, "weights": member.weights, "weight": member.weight,
                     "params": analysis.total_params, "flops": analysis.flops})
    outputs = math.prod(parse(load_run(ensemble.members[0].dir)[0]).output_infos[0].shape)
    combination = combine_flops(ensemble.combine, len(rows), outputs)
    return {"ensemble": str(ensemble.path), "method": ensemble.method, "combine": ensemble.combine,
            "task": ensemble.task, "data": ensemble.data, "members": rows,
            "total": {"params": sum(r["params"] for r in rows), "flops": sum(r["flops"] for r in rows) + combination,
                      "combination_flops": combination}}
