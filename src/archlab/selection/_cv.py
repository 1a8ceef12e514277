"""cross_validate(): sweep spec values by path, K-fold each configuration, choose a capacity.

Every (configuration, fold) is one task; a finished task is appended to ``cv.jsonl`` at once (one
flushed line), so a sweep stopped by Ctrl-C or a crash loses nothing finished and resumes from it.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from archlab._data_names import no_data_message
from archlab._inputs import map_inputs
from archlab._paths import check_out_dir
from archlab.exceptions import Interrupted, SpecError
from archlab.spec import dump, load, parse_path, set_at
from archlab.tasks import TaskKind, direction_of, get_task

from ._diagnose import (
    diagnose,
    diagnose_regularization,
    learning_curve_answer,
    one_standard_error,
    regularize_advice,
    regularizer_of,
)

__all__ = ["CVInterrupted", "CVResult", "cross_validate", "parse_sweeps"]

log = logging.getLogger("archlab")

#: Training-set fractions of the learning curve.
FRACTIONS = (0.1, 0.25, 0.5, 1.0)


#: a number in exponent notation without a dot (1e-4), which YAML 1.1 reads as a string
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_sweeps(items: Sequence[str]) -> list[tuple[str, list[Any]]]:
    """``PATH=V1,V2,...`` strings to (path, values); values are YAML scalars (``8`` is an int,
    ``same`` a string, ``0.5`` a float, ``null`` None), and ``1e-4`` is a float too (YAML 1.1,
    which PyYAML reads, wants ``1.0e-4``).

    Example:
        >>> parse_sweeps(["layers[0].conv2d.filters=8,16", "train.weight_decay=0,1e-4"])
        [('layers[0].conv2d.filters', [8, 16]), ('train.weight_decay', [0, 0.0001])]
    """
    sweeps: list[tuple[str, list[Any]]] = []
    for item in items:
        path, sep, text = str(item).partition("=")
        path = path.strip()
        if not sep or not path or not text.strip():
            raise ValueError(f"--sweep {item!r}: expected PATH=V1,V2,... (e.g. layers[0].conv2d.filters=8,16,32)")
        values = []
        for piece in text.split(","):
            piece = piece.strip()
            if not piece:
                raise ValueError(f"--sweep {item!r}: an empty value between commas")
            try:
                value = yaml.safe_load(piece)
            except yaml.YAMLError as exc:
                raise ValueError(f"--sweep {item!r}: cannot read value {piece!r}: {exc}") from None
            values.append(float(value) if isinstance(value, str) and _EXPONENT.fullmatch(value) else value)
        if any(p == path for p, _ in sweeps):
            raise ValueError(f"--sweep {path} is given twice; give all its values in one --sweep")
        sweeps.append((path, values))
    return sweeps


@dataclass
class CVResult:
    """What a sweep measured.

    Attributes:
        configs: one dict per configuration: ``values`` (path -> value), ``params``, ``flops``,
            ``val_mean``, ``val_std``, ``val_se``, ``train_mean``, ``gap``, ``seconds``, ``folds``; and
            ``groups`` (held-out group -> its score) when the folds are of groups.
        best_index: the configuration with the best mean validation score (``metric``, by its direction).
        one_se_index: the smallest configuration (by parameters) within one standard error of the best.
        diagnosis: the plain-words reading of the capacity curve, with the next move.
        learning_curve: rows ``fraction``, ``train_samples``, ``val_mean``, ``val_std`` (when asked).
        learning_answer: "would more data help?" in words (when asked).
        run_dir: where the outputs are.
        trained: how many (configuration, fold) trainings this call ran (resume skips the others).
        data: the name of the data set that was folded.
        metric: what the folds score (``accuracy``, ``auc``, ``rmse``...) and its direction.
    """

    configs: list[dict[str, Any]]
    best_index: int
    one_se_index: int
    diagnosis: str
    learning_curve: list[dict[str, Any]] = field(default_factory=list)
    learning_answer: str | None = None
    run_dir: Path | None = None
    trained: int = 0
    data: str = ""
    metric: str = "accuracy"
    direction: str = "max"
    #: what the folds held out whole (``speaker``), None for plain K-fold
    groups: str | None = None

    @property
    def chosen(self) -> dict[str, Any]:
        return self.configs[self.one_se_index]


class CVInterrupted(Interrupted):
    """Ctrl-C stopped a sweep; ``run_dir`` (None when nothing was kept) continues it with ``resume``."""

    def __init__(self, message: str, run_dir: Path | None) -> None:
        super().__init__(message)
        self.run_dir = run_dir


# -- configurations ----------------------------------------------------------------------------
#: recipe keys each fold sets itself (the held-out fold is the score, so nothing else may steer
#: training), which a sweep would not change: why, for the message
_FOLD_OWNS = {"train.early_stopping": "early stopping", "train.validation_split": "a validation split",
              "train.validation": "a validation split", "train.metrics": "the metrics (--metric)"}


def set_sweep_value(spec: dict, path: str, value: Any) -> dict:
    """``set_at`` for one sweep value. A ``train.*`` path may reach a recipe key the spec leaves at its
    default (``train.max_norm`` without a ``train:`` section, ``train.optimizer.weight_decay`` under
    ``optimizer: adamw``): the section's short forms are written out and missing mappings made first.
    A shortcut (``train.weight_decay``) sets the key it stands for, and the spec's own value of that
    setting, in either form, gives way to the swept one.

    Example:
        >>> set_sweep_value({"input": [4], "layers": []}, "train.optimizer.weight_decay", 1e-4)["train"]
        {'optimizer': {'weight_decay': 0.0001}}
        >>> set_sweep_value({"input": [4], "train": {"weight_decay": 0.1}}, "train.weight_decay", 1e-4)["train"]
        {'optimizer': {'weight_decay': 0.0001}}
    """
    from archlab.training import SECTION_SHORTCUTS, SHORTCUTS, expand_train_section

    parts = parse_path(path)
    if parts[0] != "train" or len(parts) < 2:
        return set_at(spec, path, value)
    if len(parts) == 2 and parts[1] in SECTION_SHORTCUTS:
        path = f"train.{SHORTCUTS[parts[1]]}"
        parts = parse_path(path)
    owned = next((k for k in _FOLD_OWNS if path == k or path.startswith(k + ".")), None)
    if owned is not None:
        raise SpecError(f"cv trains every fold without {_FOLD_OWNS[owned]} (the held-out fold is the score and must "
                        f"not steer training), so sweeping {owned} changes nothing: sweep another path", path)
    section = spec.get("train")
    if section is not None and not isinstance(section, dict):
        return set_at(spec, path, value)  # not a mapping: load() says what is wrong with it
    spec = {**spec, "train": expand_train_section(section)}
    for key in SECTION_SHORTCUTS:  # the spec's shortcut for the swept key would contradict it
        if path == f"train.{SHORTCUTS[key]}":
            spec["train"].pop(key, None)
    node = spec["train"]
    for part in parts[1:-1]:  # each level a fresh mapping, so the base spec is never changed
        if not isinstance(part, str) or not isinstance(node.get(part, {}), dict):
            break
        node[part] = dict(node.get(part) or {})
        node = node[part]
    return set_at(spec, path, value)


def _check_sweeps_against_overrides(paths: list[str], overrides: dict[str, Any]) -> None:
    """A recipe key given as an option (``--epochs``; ``--seed``, which cv always sets) overrides the
    spec's, so a sweep of it would train every configuration alike: refused."""
    from archlab.training import SHORTCUTS

    for path in paths:
        for key in overrides:
            target = f"train.{SHORTCUTS.get(key, key)}"
            if path in (target, f"train.{key}") or path.startswith(target + "."):
                option = "--" + key.replace("_", "-")
                fix = ("cv's --seed seeds every configuration: give cv runs their own --seed, or use --repeats"
                       if key == "seed" else f"drop {option}")
                raise ValueError(f"--sweep {path}: {option} sets it for every configuration, so the sweep would "
                                 f"train them all alike; {fix}")


def _label(values: dict[str, Any]) -> str:
    return ", ".join(f"{p}={v!r}" if isinstance(v, str) else f"{p}={v}" for p, v in values.items()) or "(as given)"


def _materialise(base: dict, sweeps: list[tuple[str, list[Any]]], dataset: Any,
                 overrides: dict[str, Any], task: TaskKind | None = None) -> list[dict[str, Any]]:
    """Every grid point as a checked spec dict; all problems reported together, before any training.

    Without ``dataset`` (before it is loaded) each point's spec, device and memory estimate are
    checked; with it, that the data fits the spec.
    """
    from archlab.builder import parse
    from archlab.training import check_fit, check_memory, pick_device, resolve_recipe

    paths = [p for p, _ in sweeps]
    configs, problems = [], []
    for i, combo in enumerate(itertools.product(*(v for _, v in sweeps))):
        values = dict(zip(paths, combo, strict=True))
        spec = base
        try:
            for path, value in values.items():
                spec = set_sweep_value(spec, path, value)
            loaded = load(spec)
            parsed = parse(loaded)
            if dataset is None:
                recipe = resolve_recipe(loaded.to_dict().get("train"), **overrides)
                check_memory(parsed, recipe, pick_device(recipe.device))
            else:
                check_fit(parsed, dataset, task)
        except SpecError as exc:
            problems.append(f"  configuration {i} ({_label(values)}): {exc}")
            continue
        configs.append({"index": i, "values": values, "spec": spec})
    if problems:
        raise SpecError(f"{len(problems)} of {len(problems) + len(configs)} sweep configuration(s) are invalid; "
                        "nothing was trained:\n" + "\n".join(problems))
    return configs


def _group_folds(groups: np.ndarray, folds: int | None, repeats: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds of whole groups: leave-one-group-out when ``folds`` is None or the number of groups,
    else GroupKFold(folds); no group is ever on both sides of a fold."""
    from sklearn.model_selection import GroupKFold, LeaveOneGroupOut

    names = np.unique(groups)
    if repeats != 1:
        raise ValueError(f"--repeats {repeats} with --groups: group folds are fixed by the groups (leave-one-group-"
                         "out, or GroupKFold), so there is nothing to reshuffle; drop --repeats")
    if len(names) < 2:
        raise ValueError(f"--groups: the training split has {len(names)} group(s) ({', '.join(map(str, names))}); "
                         "holding groups out needs two or more")
    if folds is not None and not 2 <= folds <= len(names):
        raise ValueError(f"--folds {folds} with --groups: the data has {len(names)} groups, so --folds is 2 to "
                         f"{len(names)} (or leave it out for leave-one-group-out)")
    splitter = LeaveOneGroupOut() if folds is None or folds == len(names) else GroupKFold(n_splits=folds)
    return list(splitter.split(np.zeros(len(groups)), groups=groups))


def _folds(y: np.ndarray, folds: int, repeats: int, seed: int,
           stratify: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import KFold, RepeatedKFold, RepeatedStratifiedKFold, StratifiedKFold

    if folds < 2:
        raise ValueError(f"--folds must be at least 2, got {folds}")
    if repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {repeats}")
    if not stratify:  # values or label sets: plain shuffled K-fold
        if len(y) < folds:
            raise ValueError(f"{len(y)} sample(s) cannot make --folds {folds}")
        plain = (RepeatedKFold(n_splits=folds, n_repeats=repeats, random_state=seed) if repeats > 1
                 else KFold(n_splits=folds, shuffle=True, random_state=seed))
        return list(plain.split(np.zeros(len(y))))
    counts = np.bincount(y.astype(np.int64))
    present = counts[counts > 0]
    if present.min() < folds:
        cls = int(np.flatnonzero(counts == present.min())[0])
        raise ValueError(f"class {cls} has only {int(present.min())} sample(s), fewer than --folds {folds}: "
                         f"stratified K-fold needs at least one per fold; use --folds {max(2, int(present.min()))} "
                         "or fewer, or more data")
    splitter = (RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed) if repeats > 1
                else StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed))
    return list(splitter.split(np.zeros(len(y)), y))


# -- one training (runs in a worker process or in this one) ------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(x: Any, y: np.ndarray) -> None:
    import torch

    torch.set_num_threads(1)  # folds are the parallelism; threads in each would fight for the cores
    _WORKER["x"], _WORKER["y"] = x, y
    # The first optimizer step imports and initialises much of torch (seconds); pay it here, not in
    # the first fold's training time.
    weight = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.Adam([weight])
    weight.sum().backward()
    optimizer.step()


def _fit_one(task: dict[str, Any]) -> dict[str, Any]:
    """Train one configuration on one fold's training part; its metric on both parts."""
    import torch

    from archlab.training import Splits, fit_spec, resolve_recipe, to_tensors

    x, y = _WORKER["x"], _WORKER["y"]
    spec = load(task["spec"])
    recipe = resolve_recipe(spec.to_dict().get("train"), **task["overrides"])
    # The held-out fold is the score; it must not steer training (no early stopping, no split of it).
    metric, kind = task.get("metric", "accuracy"), get_task(task.get("task", "classification"))
    # the chosen metric, and the task's own beside it (perplexity and token accuracy for text); loss always
    recorded = list(dict.fromkeys(m for m in (metric, *kind.default_metrics) if m != "loss"))
    recipe = recipe.model_copy(update={"validation_split": 0.0, "early_stopping": None, "metrics": recorded})
    train_idx, val_idx = np.asarray(task["train_idx"]), np.asarray(task["val_idx"])
    began = time.perf_counter()
    xt, yt = to_tensors(map_inputs(lambda a: a[train_idx], x), y[train_idx], kind)
    xv, yv = to_tensors(map_inputs(lambda a: a[val_idx], x), y[val_idx], kind)
    engine = fit_spec(spec, recipe, kind, Splits(xt, yt)).engine
    with torch.no_grad():
        train_metrics, _ = engine.evaluate(xt, yt)
        val_metrics, val_out = engine.evaluate(xv, yv)
        # each held-out group's own score (its rows of the outputs alone), when the folds are of groups
        by_group = {}
        if task.get("val_groups") is not None:
            held = np.asarray(task["val_groups"])
            for name in np.unique(held):
                rows = torch.from_numpy(np.flatnonzero(held == name))
                by_group[str(name)] = float(engine.metrics_of(val_out[rows.to(val_out.device)], yv[rows])[metric])
    row = {k: v for k, v in task.items() if k in ("kind", "config", "fold", "fraction", "values")}
    if by_group:
        row["val_groups"] = by_group
    row.update({f"{side}_{k}": float(v) for side, values in (("train", train_metrics), ("val", val_metrics))
                for k, v in values.items()},
               metric=metric, train_samples=len(train_idx), seconds=round(time.perf_counter() - began, 3))
    return row


def _key(row: dict[str, Any]) -> tuple:
    return (row["kind"], row["config"], row["fold"], row.get("fraction"))


def _run_tasks(tasks: list[dict], x: Any, y: np.ndarray, jobs: int, sink: Path,
               on_result: Callable[[dict], None] | None) -> list[dict]:
    """Run tasks, appending each finished one to ``sink`` as one flushed JSON line."""
    rows = []
    with open(sink, "a", encoding="utf-8") as handle:
        def record(row: dict) -> None:
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            rows.append(row)
            if on_result is not None:
                on_result(row)

        if jobs <= 1:
            import torch

            before = torch.get_num_threads()
            _init_worker(x, y)  # the same single thread as a worker, so jobs=1 and jobs=N agree
            try:
                for task in tasks:
                    record(_fit_one(task))
            finally:
                torch.set_num_threads(before)
                _WORKER.clear()
        else:
            with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker, initargs=(x, y)) as pool:
                futures = [pool.submit(_fit_one, task) for task in tasks]
                try:
                    for future in as_completed(futures):
                        record(future.result())
                except BaseException:  # Ctrl-C or a failed fold: what finished is already on disk
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    return rows


def _read_rows(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash mid-write: that task runs again
                continue
    return rows


# -- the sweep ---------------------------------------------------------------------------------
def _new_run_dir(out: Path, name: str) -> Path:
    from archlab.training import new_run_dir

    return new_run_dir(out, f"cv-{name}")


def cross_validate(spec: Any, dataset: Any, sweeps: Sequence[str] | list[tuple[str, list[Any]]] = (), *,
                   folds: int | None = None, repeats: int = 1, jobs: int = 1, seed: int = 0,
                   groups: str | None = None,
                   out: str | Path | None = "runs", data_dir: str | Path | None = None,
                   resume: str | Path | None = None,
                   learning_curve: bool = False, fractions: Sequence[float] = FRACTIONS, metric: str | None = None,
                   on_result: Callable[[dict], None] | None = None, on_start: Callable[[int], None] | None = None,
                   **overrides: Any) -> CVResult:
    """K-fold cross-validation of every configuration of a sweep, and a capacity choice.

    Args:
        spec: the base spec (path, text, dict or Spec); its ``train:`` section is the recipe.
        dataset: a Dataset or a name for ``load_dataset``; None takes the spec's ``train.data``. Its
            training split is folded (the test split is not touched).
        sweeps: ``PATH=V1,V2`` strings or (path, values) pairs; several form a grid.
        metric: what each fold scores; default the task's first metric (accuracy for classification,
            auc for binary, mse for regression). The choice follows its direction (``archlab.tasks``).
        folds, repeats: K-fold (5 when not given; stratified for the tasks that stratify), repeated with
            different shuffles when ``repeats > 1``; seeded by ``seed``, the same folds for every configuration.
        groups: fold by the data's groups (``groups_train``; FSDD's speakers), this name for them in the
            report (``speaker``): leave-one-group-out when ``folds`` is None or the number of groups, else
            GroupKFold(folds); no group is in both parts of a fold, and each row of the result holds
            ``groups``, every held-out group's score.
        jobs: (configuration, fold) trainings run in this many processes.
        data_dir: where to look for data files first (when ``dataset`` is a name).
        out: the folder receiving ``cv-<name>-<timestamp>/``.
        resume: a run directory of an interrupted sweep with the same arguments; finished folds are kept.
        learning_curve: also score the chosen configuration on ``fractions`` of each training fold.
        on_start, on_result: called with the number of trainings to run, then with each finished row.
        **overrides: recipe fields (epochs, batch_size, lr, ...).

    Returns:
        CVResult; the run directory holds cv.jsonl, cv.json, cv.csv, capacity_curve.png,
        learning_curve.png (when asked) and chosen.yaml.

    Raises:
        SpecError: a configuration is invalid or does not fit in memory (all of them listed, before
            the data is loaded or anything trained).
        CVInterrupted: Ctrl-C; what finished is kept in ``run_dir`` for ``resume``.
        ValueError: bad folds, a class with fewer samples than folds; ``groups`` on data without groups.
    """
    from archlab.data import load_dataset

    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    if resume is None:
        check_out_dir(out if out is not None else "runs")
    base = load(spec).to_dict()
    if dataset is None:
        dataset = (base.get("train") or {}).get("data") if isinstance(base.get("train"), dict) else None
        if dataset is None:
            raise SpecError(no_data_message(), "train.data")
    sweep_list = parse_sweeps(sweeps) if all(isinstance(s, str) for s in sweeps) else [
        (p, list(v)) for p, v in sweeps]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    overrides["seed"] = seed
    _check_sweeps_against_overrides([p for p, _ in sweep_list], overrides)
    _materialise(base, sweep_list, None, overrides)  # spec, device and memory: before the data is loaded
    from archlab.builder import parse
    from archlab.data import TextDataset
    from archlab.training import declares_task, model_inputs, resolve_recipe, resolve_task

    recipe = resolve_recipe(base.get("train"), **overrides)
    # the task is known without the data: a wrong metric is refused first
    if declares_task(load(base), recipe) and metric is not None:
        direction_of(metric, resolve_task(recipe, load(base)).name, "--metric")
    searched = [p for p, _ in sweep_list if p == "train.tokenizer" or p.startswith("train.tokenizer.")]
    if isinstance(dataset, str):
        dataset = load_dataset(dataset, data_dir)
    group_of = getattr(dataset, "groups_train", None)
    if groups is not None and group_of is None:
        raise ValueError(f"--groups {groups}: {dataset.name} has no groups to hold out (no groups_train); use data "
                         "with groups (fsdd, or audio:DIR with a manifest's group column), or leave --groups out")
    task = resolve_task(recipe, load(base), dataset.task)
    metric = metric or task.headline_metric
    direction = direction_of(metric, task.name, "--metric")
    text = isinstance(dataset, TextDataset)
    if text and searched:
        raise SpecError(f"--sweep {searched[0]}: cv trains one tokenizer, on the training split, for every "
                        "configuration and fold (their losses compare only over one vocabulary): give "
                        "train.tokenizer fixed values, and cross-validate each vocabulary size in its own run",
                        searched[0])
    if text:  # one tokenizer for the sweep, from the whole training split (a resumed sweep reads its own)
        from archlab.text import Tokenizers, encode_for_spec

        if resume is not None and not (Path(resume) / "cv-plan.json").is_file():  # before its tokenizer is read
            raise ValueError(f"{resume} is not an archlab cv run (no cv-plan.json)")
        tokenizers = Tokenizers.load(resume) if resume is not None else None
        dataset = encode_for_spec(dataset, parse(load(base)), task.name, recipe.tokenizer, tokenizers)
    configs = _materialise(base, sweep_list, dataset, overrides, task)
    # the arrays the spec's model reads (by input name for a graph-form spec), converted once here
    x, y = model_inputs(parse(load(base)), dataset.x_train, dataset.name), dataset.y_train
    if groups is not None:
        splits = _group_folds(group_of, folds, repeats)
        folds = len(splits)
    else:
        folds = 5 if folds is None else folds
        splits = _folds(y, folds, repeats, seed, task.stratify)

    plan = {"spec": base, "sweeps": [[p, v] for p, v in sweep_list], "folds": folds, "repeats": repeats,
            "groups": groups,
            "seed": seed, "data": dataset.name, "samples": len(y), "overrides": overrides,
            "learning_curve": bool(learning_curve), "fractions": list(fractions), "task": task.name,
            "metric": metric}
    # what cv-plan.json meant before it said
    defaults = {"task": "classification", "metric": "accuracy", "groups": None}
    if resume is not None:
        run_dir = Path(resume)
        plan_file = run_dir / "cv-plan.json"
        if not plan_file.is_file():
            raise ValueError(f"{run_dir} is not an archlab cv run (no cv-plan.json)")
        old = json.loads(plan_file.read_text(encoding="utf-8"))
        differ = [k for k in plan if k != "learning_curve"
                  and old.get(k, defaults.get(k)) != json.loads(json.dumps(plan[k]))]
        if differ:
            raise ValueError(f"--resume {run_dir}: this sweep differs from the interrupted one in "
                             f"{', '.join(differ)}; give the same spec, data and options")
    else:
        run_dir = _new_run_dir(Path(out if out is not None else "runs"), base.get("name") or "spec")
        if text:  # what every fold was trained with, for evaluate/predict of chosen.yaml's training
            dataset.tokenizers.save(run_dir)
    _write(run_dir / "folds.json", json.dumps(
        {"samples": len(y), "unit": "sentence pairs" if task.name == "seq2seq" else
         "sentences" if text else "samples",
         "validation": [val.tolist() for _, val in splits]}))
    try:
        return _sweep(run_dir, plan, configs, splits, x, y, dataset.name, jobs, seed, learning_curve, fractions,
                      on_start, on_result, task, direction, group_of if groups is not None else None)
    except KeyboardInterrupt:
        saved = len(_read_rows(run_dir / "cv.jsonl"))
        if resume is None and saved == 0:  # nothing finished: no directory to continue from
            shutil.rmtree(run_dir, ignore_errors=True)
            raise CVInterrupted("no training had finished, so nothing was kept (the run directory is removed)",
                                None) from None
        raise CVInterrupted(f"{saved} finished training(s) are saved in {run_dir}", run_dir) from None


def _sweep(run_dir: Path, plan: dict, configs: list[dict], splits: list, x: Any, y: np.ndarray, data: str,
           jobs: int, seed: int, learning_curve: bool, fractions: Sequence[float],
           on_start: Callable[[int], None] | None, on_result: Callable[[dict], None] | None,
           task: TaskKind, direction: str, group_of: np.ndarray | None = None) -> CVResult:
    """Train what is not in cv.jsonl yet, then score, choose and write the outputs; with ``group_of``
    (each row's group), each configuration's score per held-out group too."""
    from archlab.analysis import analyze

    overrides, metric = plan["overrides"], plan["metric"]
    _write(run_dir / "cv-plan.json", json.dumps(plan, indent=2))
    sink = run_dir / "cv.jsonl"
    done = {_key(r): r for r in _read_rows(sink)}

    def fold_task(config: dict, fold: int, kind: str = "fold", fraction: float | None = None) -> dict:
        train_idx, val_idx = splits[fold]
        if fraction is not None and fraction < 1:
            train_idx = _subset(train_idx, y, fraction, seed + fold, task.stratify)
        return {"kind": kind, "config": config["index"], "fold": fold, "fraction": fraction, "task": task.name,
                "metric": metric,
                "values": config["values"], "spec": config["spec"], "overrides": overrides,
                "train_idx": train_idx.tolist(), "val_idx": val_idx.tolist(),
                "val_groups": None if group_of is None or kind != "fold" else group_of[val_idx].tolist()}

    tasks = [fold_task(c, f) for c in configs for f in range(len(splits))]
    pending = [t for t in tasks if _key(t) not in done]
    if len(pending) < len(tasks):
        log.info("resuming %s: %d of %d folds already finished", run_dir, len(tasks) - len(pending), len(tasks))
    if on_start is not None:
        on_start(len(pending) + (len(fractions) * len(splits) if learning_curve else 0))
    trained = len(pending)
    for row in _run_tasks(pending, x, y, jobs, sink, on_result):
        done[_key(row)] = row

    table = []
    for config in configs:
        rows = [done[("fold", config["index"], f, None)] for f in range(len(splits))]
        val = np.array([r[f"val_{metric}"] for r in rows])
        analysis = analyze(config["spec"])
        table.append({"index": config["index"], "values": config["values"], "params": int(analysis.total_params),
                      "flops": int(analysis.flops), "val_mean": float(val.mean()),
                      "val_std": float(val.std(ddof=1)) if len(val) > 1 else 0.0,
                      "val_se": float(val.std(ddof=1) / math.sqrt(len(val))) if len(val) > 1 else 0.0,
                      "train_mean": float(np.mean([r[f"train_{metric}"] for r in rows])),
                      "gap": float(np.mean([r[f"train_{metric}"] - r[f"val_{metric}"] for r in rows])),
                      "seconds": float(sum(r["seconds"] for r in rows)), "folds": len(rows),
                      "metrics": _every_metric(rows)})
        if group_of is not None:  # each group is held out by exactly one fold
            table[-1]["groups"] = {g: v for r in rows for g, v in sorted(r["val_groups"].items())}
    sign = 1 if direction == "max" else -1
    best = max(range(len(table)), key=lambda i: sign * table[i]["val_mean"])
    chosen = one_standard_error(table, direction)
    diagnosis = _diagnosis(table, plan["sweeps"], configs[0]["spec"], direction, metric)
    result = CVResult(table, best, chosen, diagnosis, run_dir=run_dir, trained=trained,
                      data=data, metric=metric, direction=direction, groups=plan.get("groups"))

    if learning_curve:
        config = next(c for c in configs if c["index"] == table[chosen]["index"])
        lc_tasks = [fold_task(config, f, "learning_curve", float(fr)) for fr in fractions for f in range(len(splits))]
        lc_pending = [t for t in lc_tasks if _key(t) not in done]
        result.trained += len(lc_pending)
        for row in _run_tasks(lc_pending, x, y, jobs, sink, on_result):
            done[_key(row)] = row
        for fr in fractions:
            rows = [done[("learning_curve", config["index"], f, float(fr))] for f in range(len(splits))]
            val = np.array([r[f"val_{metric}"] for r in rows])
            result.learning_curve.append({
                "fraction": float(fr), "train_samples": int(np.mean([r["train_samples"] for r in rows])),
                "val_mean": float(val.mean()), "val_std": float(val.std(ddof=1)) if len(val) > 1 else 0.0,
                "val_se": float(val.std(ddof=1) / math.sqrt(len(val))) if len(val) > 1 else 0.0,
                "train_mean": float(np.mean([r[f"train_{metric}"] for r in rows]))})
        result.learning_answer = learning_curve_answer(result.learning_curve, direction, metric)
    _write_outputs(result, configs, data)
    return result


#: augmentation that fits image inputs, for the diagnosis's advice (the recipe entries of train.augment)
IMAGE_AUGMENT = "train.augment: [shift, rotate]"


def _width_hint(parsed: Any) -> str:
    """More capacity as a spec path: the first hidden layer with a width (filters, units), doubled."""
    from archlab.builder import LayerNode

    wide = [node for _, node in parsed.walk() if isinstance(node, LayerNode) and node.layer_type.structured]
    if len(wide) < 2:  # the one layer with a width makes the outputs
        return "a hidden layer (e.g. dense: {units: 64, activation: relu}) before the output"
    node = wide[0]
    field = node.layer_type.structured.width
    width = getattr(node.params, field)
    return f"{node.path}.{node.kind}.{field} x2 ({width} -> {2 * width})"


def _augment_hint(parsed: Any) -> str | None:
    """Augmentation the spec's input takes (images), or None when the diagnosis has none to name."""
    inputs = list(parsed.inputs.values())
    return IMAGE_AUGMENT if len(inputs) == 1 and inputs[0].rank == 3 and inputs[0].dtype == "float" else None


def _diagnosis(table: list[dict], sweeps: list, spec: dict, direction: str, metric: str) -> str:
    """The regularization reading when the sweep turns one regularization knob, else the capacity
    curve's; either names the paths to set next, of ``spec`` (a configuration's: the base spec may
    hold search markers that the sweep fixes)."""
    from archlab.builder import parse
    from archlab.training import resolve_recipe

    loaded = load(spec)
    parsed = parse(loaded)
    augment = _augment_hint(parsed)
    optimizer = resolve_recipe(loaded.to_dict().get("train")).optimizer.name  # weight decay's advice reads it
    capacity = _width_hint(parsed)
    if len(sweeps) == 1 and regularizer_of(sweeps[0][0]) is not None:
        return diagnose_regularization(table, sweeps[0][0], direction, metric, capacity=capacity,
                                       augment=augment, optimizer=optimizer)
    if len(sweeps) == 1 and all(isinstance(v, int) and not isinstance(v, bool) for v in sweeps[0][1]):
        capacity = f"{sweeps[0][0]} above {max(sweeps[0][1])}"  # the swept width or depth, further
    return diagnose(table, direction, metric, capacity=capacity, regularize=regularize_advice(optimizer, augment))


def _every_metric(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per metric the folds recorded (all of them: rows of older sweeps may hold only the chosen one),
    the validation mean and standard deviation over the folds and the training mean."""
    names = [k.removeprefix("val_") for k in rows[0] if k.startswith("val_")
             and all(k in r and f"train_{k[4:]}" in r for r in rows)]
    out = {}
    for name in names:
        val = np.array([r[f"val_{name}"] for r in rows])
        out[name] = {"val_mean": float(val.mean()), "val_std": float(val.std(ddof=1)) if len(val) > 1 else 0.0,
                     "train_mean": float(np.mean([r[f"train_{name}"] for r in rows]))}
    return out


def _subset(idx: np.ndarray, y: np.ndarray, fraction: float, seed: int, stratify: bool) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    classes = len(np.unique(y[idx])) if stratify else 1
    size = max(int(round(len(idx) * fraction)), classes)
    if size >= len(idx):
        return idx
    part, _ = train_test_split(idx, train_size=size, stratify=y[idx] if stratify else None, random_state=seed)
    return np.sort(part)


# -- outputs -----------------------------------------------------------------------------------
def _write(path: Path, text: str) -> None:
    from archlab.training import atomic_write_text

    atomic_write_text(path, text)


def _write_outputs(result: CVResult, configs: list[dict], data: str) -> None:
    run_dir = result.run_dir
    assert run_dir is not None  # noqa: S101  (set by cross_validate)
    best, chosen = result.configs[result.best_index], result.chosen
    payload = {"data": data, "configs": result.configs, "best_index": result.best_index,
               "one_se_index": result.one_se_index, "best": best["values"], "chosen": chosen["values"],
               "chosen_rule": "one-standard-error", "metric": result.metric, "direction": result.direction,
               "groups": result.groups,
               "diagnosis": result.diagnosis,
               "learning_curve": result.learning_curve, "learning_answer": result.learning_answer}
    _write(run_dir / "cv.json", json.dumps(payload, indent=2))
    paths = list(result.configs[0]["values"]) if result.configs else []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = ["params", "flops", "val_mean", "val_std", "val_se", "train_mean", "gap", "seconds", "folds"]
    others = [m for m in (result.configs[0]["metrics"] if result.configs else {}) if m != result.metric]
    writer.writerow(["config", *paths, *columns, *(f"val_{m}_{s}" for m in others for s in ("mean", "std"))])
    for row in result.configs:
        writer.writerow([row["index"], *(row["values"][p] for p in paths), *(row[c] for c in columns),
                         *(row["metrics"][m][f"val_{s}"] for m in others for s in ("mean", "std"))])
    _write(run_dir / "cv.csv", buffer.getvalue())
    spec = next(c["spec"] for c in configs if c["index"] == chosen["index"])
    header = (f"# chosen by archlab cv: the smallest configuration within one standard error of the best\n"
              f"# ({_label(chosen['values'])}: {chosen['params']:,} params, validation {result.metric} "
              f"{chosen['val_mean']:.4f} +- {chosen['val_std']:.4f}; best mean: {_label(best['values'])}, "
              f"{best['val_mean']:.4f})\n")
    _write(run_dir / "chosen.yaml", header + dump(load(spec)))
    from ._plots import plot_capacity, plot_learning_curve

    plot_capacity(result, run_dir / "capacity_curve.png", data)
    if result.learning_curve:
        plot_learning_curve(result, run_dir / "learning_curve.png", data)
