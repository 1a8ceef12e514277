"""``ensemble``: several members trained through ``train`` and recorded as one ensemble directory.

Layout (``docs/ensembles.md``; ``_ensemble_run.py`` reads it and combines the members)::

    ENSEMBLE_DIR/ensemble.json   format, method, combine, task, data, members (dir, weights, weight), info
    ENSEMBLE_DIR/spec.yaml       the base spec, as given
    ENSEMBLE_DIR/members/00/     ordinary run directories, exactly as ``train`` writes them

Methods: ``seeds`` (member i trains with seed S+i), ``bagging`` (each on a seeded bootstrap sample of
the training rows, Breiman 1996), ``boosting`` (multi-class AdaBoost SAMME with per-sample weights in
the loss, Zhu et al. 2009) and ``snapshot`` (one run with a cyclic cosine schedule whose cycle ends
are the members, Huang et al. 2017).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from archlab._data_names import no_data_message
from archlab._paths import check_out_dir
from archlab.builder import parse
from archlab.exceptions import Interrupted, SpecError, suggest
from archlab.spec import Spec, dump, load

from ._callbacks import Callback
from ._engine import Engine, TrainingError
from ._ensemble_run import ENSEMBLE_FILE, FORMAT, METHODS
from ._fit import split_validation
from ._recipe import Recipe, resolve_recipe
from ._runs import atomic_write_text, checkpoint_metadata, new_run_dir
from ._train import TrainResult, check_fit, resolve_task, train

__all__ = ["Bootstrap", "EnsembleResult", "Member", "ensemble", "samme_update"]

log = logging.getLogger("archlab")

#: How each method's members combine: the weighted mean of their probabilities, or SAMME's weighted vote.
COMBINE = {"seeds": "mean", "bagging": "mean", "boosting": "vote", "snapshot": "mean"}

Method = Literal["seeds", "bagging", "boosting", "snapshot"]


@dataclass(frozen=True)
class Bootstrap:
    """Breiman's bootstrap: ``n`` of ``n`` training rows drawn with replacement, seeded; the
    ``train_rows`` of a bagging member (a picklable function of the split's size, for --jobs)."""

    seed: int

    def __call__(self, n: int) -> np.ndarray:
        return np.random.default_rng(self.seed).integers(0, n, size=n)


@dataclass
class Member:
    """One member as ``ensemble.json`` lists it (``entry``), with its run's test metrics and time."""

    dir: Path
    weights: str
    weight: float
    test_metrics: dict[str, float]
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)

    def entry(self, root: Path) -> dict[str, Any]:
        return {"dir": self.dir.relative_to(root).as_posix(), "weights": self.weights, "weight": self.weight,
                **self.info, "test": self.test_metrics}


@dataclass
class EnsembleResult:
    """What ``ensemble`` returns: the ensemble directory, its members (in ensemble.json's order),
    how they combine, and ensemble.json's ``info``."""

    ensemble_dir: Path
    method: str
    combine: str
    members: list[Member]
    info: dict[str, Any]


def samme_update(w: np.ndarray, wrong: np.ndarray, classes: int) -> tuple[float, float, np.ndarray]:
    """One round of SAMME (Zhu, Zou, Rosset, Hastie 2009, Algorithm 2) on sample weights ``w``
    (averaging 1 over the training rows) and the member's mistakes ``wrong`` (bool, per row):
    ``err = sum w[wrong] / sum w``, ``alpha = log((1 - err) / err) + log(K - 1)``,
    ``w * exp(alpha [wrong])`` renormalised to average 1.

    A member with no mistake (err 0) would get an infinite alpha: err is clipped to ``1 / (2 n)``,
    half the error of one mistake on a row of average weight, so that it gets a finite alpha at
    least as large as any erring member's (equal to it for one whose err is also under 1 / (2 n):
    mistakes on rows of weight under 1/2 in all). sklearn gives it 1.0 and stops; ``ensemble`` stops too.

    Returns:
        (alpha, err, new weights); err is the unclipped error.

    Example:
        >>> alpha, err, w = samme_update(np.ones(4), np.array([True, False, False, False]), 3)
        >>> round(err, 3), round(alpha, 4), w.round(4).tolist()
        (0.25, 1.7918, [2.6667, 0.4444, 0.4444, 0.4444])
    """
    w, wrong = np.asarray(w, dtype=np.float64), np.asarray(wrong, dtype=bool)
    err = float(w[wrong].sum() / w.sum())
    eps = 1 / (2 * len(w))
    clipped = min(max(err, eps), 1 - eps)  # err 1 (every row wrong) would be log 0: that member is dropped anyway
    alpha = math.log((1 - clipped) / clipped) + math.log(classes - 1)
    new = w * np.exp(alpha * wrong)
    return alpha, err, new * (len(new) / new.sum())


class _TrainingMistakes(Callback):
    """At the end of a boosting member's fit: which training rows its final weights get wrong (eval mode)."""

    def __init__(self) -> None:
        self.wrong: np.ndarray | None = None

    def on_fit_end(self, engine: Engine) -> None:
        out = engine.outputs(engine.x)
        self.wrong = (out.argmax(dim=1) != engine.y.to(out.device)).cpu().numpy()


def _final_weights(recipe: Recipe, result: TrainResult) -> str:
    """The weights file that holds what the run ended with (what its test evaluation scored):
    ``best`` when early stopping restored the best epoch, else ``last``."""
    es = recipe.early_stopping
    return "best" if es is not None and es.restore_best and result.history.best_epoch is not None else "last"


def _check(spec: Spec, recipe: Recipe, method: str, members: int, jobs: int, data_dir: Any) -> tuple[Any, int | None]:
    """Every bad input refused before any training; returns the task and, for classification, the
    class count. Loads the data set (as ``train`` will) for its task, classes and training rows."""
    from archlab.data import TextDataset, load_dataset

    if method not in METHODS:
        raise SpecError(f"--method {method!r} is not one of {', '.join(METHODS)}{suggest(method, METHODS)}")
    if members < 2:
        raise SpecError(f"--members {members}: an ensemble needs at least 2 members")
    if jobs < 1:
        raise SpecError(f"--jobs must be at least 1, got {jobs}")
    if method == "snapshot" and (recipe.epochs < members or recipe.epochs % members):
        near = sorted({max(recipe.epochs // members, 1) * members, (recipe.epochs // members + 1) * members})
        raise SpecError(f"--method snapshot takes its {members} members at the ends of {members} cycles of whole "
                        f"epochs, but the run has {recipe.epochs} epoch(s): give --epochs "
                        f"{' or '.join(map(str, near))} (a multiple of {members})")
    if method == "snapshot" and recipe.early_stopping is not None:
        raise SpecError(f"--method snapshot: its {members} members are the ends of {members} cycles; early stopping "
                        "would cut them: drop train.early_stopping", "train.early_stopping")
    if recipe.data is None:
        raise SpecError(no_data_message(), "train.data")
    dataset = load_dataset(recipe.data, data_dir)
    task = resolve_task(recipe, spec, dataset.task)
    classification = task.name == "classification"
    if method == "boosting" and not classification:
        raise SpecError(f"boosting (SAMME) supports classification; this spec's task is {task.name}; use --method "
                        "bagging or seeds")
    if method == "bagging" and classification:
        y = dataset.y_train
        if getattr(dataset, "x_val", None) is None:  # the rows left once validation is taken out, as train does
            y = split_validation(np.zeros(len(y)), y, recipe, task, getattr(dataset, "groups_train", None),
                                 dataset.name)[1]
        if len(y) < dataset.num_classes:
            raise SpecError(f"--method bagging: a bootstrap of {len(y)} training rows cannot hold all "
                            f"{dataset.num_classes} classes of {dataset.name}; use more data (or a smaller "
                            "validation_split), or --method seeds")
    if not isinstance(dataset, TextDataset):  # a text data set fits once tokenized: each member's train checks it
        check_fit(parse(spec), dataset, task)
    return task, dataset.num_classes if classification else None


def ensemble(spec: Spec | dict | str | Path, *, data: str | None = None, method: Method = "seeds", members: int = 5,
             jobs: int = 1, seed: int | None = None, out: str | Path = "runs", data_dir: str | Path | None = None,
             verbose: int = 0, on_member: Callable[[int, Member], None] | None = None,
             **overrides: Any) -> EnsembleResult:
    """Train an ensemble of ``members`` runs of ``spec`` and record it as one directory.

    Args:
        spec: the base spec (path, text, dict or Spec); its ``train:`` section is every member's recipe.
        data: the data set (overrides train.data).
        method: seeds (member i trains with seed+i), bagging (and on a seeded bootstrap sample of the
            training rows; validation keeps its rows), boosting (SAMME: sample weights in the loss,
            one member after another) or snapshot (one run, ``schedule: cyclic_cosine`` with
            ``members`` cycles; its cycle ends are the members).
        members: how many (at least 2); boosting may stop with fewer (``info["boosting"]["stopped"]``).
        jobs: seeds and bagging members train in this many processes (one torch thread each, as with
            jobs=1, so the results agree); boosting and snapshot train one run at a time.
        seed: the first member's seed (default: the recipe's).
        out: the folder that receives ``<name>-ensemble-<timestamp>/``.
        verbose: each member's training output (``train``); progress per member is ``on_member``.
        on_member: called with (index, Member) as each member finishes.
        **overrides: recipe fields, as ``train`` takes them (epochs, batch_size, lr, device, ...).

    Returns:
        EnsembleResult: the directory, the members with their weights, and ``info``.

    Raises:
        SpecError: an unknown method, fewer than 2 members, boosting for a task other than
            classification, a bootstrap smaller than the class count, snapshot with fewer epochs
            than members or with early stopping; all before any training.
        TrainingError: boosting's first member is no better than chance (a failed run).
    """
    check_out_dir(out)
    spec = load(spec)
    base = spec.to_dict()
    recipe = resolve_recipe(base.get("train"), data=data, seed=seed, **overrides)
    task, classes = _check(spec, recipe, method, members, jobs, data_dir)
    if jobs > 1 and method in ("boosting", "snapshot"):
        why = ("each member trains on the weights its predecessor's mistakes give" if method == "boosting"
               else "its members are one run's snapshots")
        log.warning("--jobs %d does not apply to --method %s: %s, so they train one after another", jobs, method,
                    why)
    root = new_run_dir(out, f"{spec.name}-ensemble")
    atomic_write_text(root / "spec.yaml", dump(spec))
    began = time.perf_counter()
    common = {"data": recipe.data, "data_dir": data_dir, "verbose": verbose, **overrides}
    info: dict[str, Any] = {"arguments": {"method": method, "members": members, "jobs": jobs, "seed": recipe.seed,
                                          "data": recipe.data, **{k: v for k, v in overrides.items()
                                                                  if v is not None}}}
    try:
        if method == "boosting":
            trained = _boost(base, members, classes, recipe, root, common, info, on_member)
        elif method == "snapshot":
            trained = _snapshots(base, members, recipe, root, common, on_member)
        else:
            jobs_list = [_member_job(base, method, recipe, i, root / "members" / f"{i:02d}", common)
                         for i in range(members)]
            trained = _run_members(jobs_list, jobs, root, on_member)
    except BaseException as exc:
        if not any(root.glob("members/*/last.safetensors")):  # no member finished an epoch: nothing to keep
            shutil.rmtree(root, ignore_errors=True)
        if isinstance(exc, (Interrupted, KeyboardInterrupt)):
            raise Interrupted(f"the ensemble in {root} is not complete (no ensemble.json); its finished members are "
                              "ordinary runs there. Train the ensemble again") from None
        raise
    info["wall_seconds"] = round(time.perf_counter() - began, 2)
    document = {"format": FORMAT, "method": method, "combine": COMBINE[method], "task": task.name,
                "data": recipe.data, "members": [m.entry(root) for m in trained], "info": info}
    atomic_write_text(root / ENSEMBLE_FILE, json.dumps(document, indent=2))
    return EnsembleResult(root, method, COMBINE[method], trained, info)


def _member_job(base: dict, method: str, recipe: Recipe, index: int, into: Path,
                common: dict[str, Any]) -> dict[str, Any]:
    """What member ``index`` of seeds or bagging trains with: picklable, for a worker process. A
    seeds member is ``train --seed S+i``; a bagging member also keeps the base recipe's validation
    split (``validation_seed``), so that every member validates on the same rows."""
    seed = recipe.seed + index
    job = {"spec": base, "into": str(into), **common, "seed": seed}
    if method == "bagging":
        job.update(train_rows=Bootstrap(seed), validation_seed=recipe.split_seed)
    return job


def _train_member(job: dict[str, Any]) -> dict[str, Any]:
    """Train one member (in a worker process or in this one) and describe it."""
    began = time.perf_counter()
    result = train(job["spec"], out=None, **{k: v for k, v in job.items() if k != "spec"})
    recipe = result.recipe
    info: dict[str, Any] = {"seed": job["seed"]}
    if "train_rows" in job:
        n = result.summary["train_samples"]
        info.update(bootstrap_seed=job["train_rows"].seed, train_rows=n,
                    out_of_bag=int(n - len(np.unique(job["train_rows"](n)))))
    return {"dir": job["into"], "weights": _final_weights(recipe, result), "test": result.test_metrics,
            "seconds": round(time.perf_counter() - began, 2), "info": info}


def _init_worker() -> None:
    torch.set_num_threads(1)  # members are the parallelism; threads in each would fight for the cores


def _run_members(jobs_list: list[dict[str, Any]], jobs: int, root: Path,
                 on_member: Callable[[int, Member], None] | None) -> list[Member]:
    """Seeds and bagging members, in ``jobs`` processes (cv's pattern, ``selection/_cv.py``); in
    this process with one thread for jobs=1, so that both give the same weights."""
    done: dict[int, Member] = {}

    def record(index: int, row: dict[str, Any]) -> None:
        done[index] = Member(Path(row["dir"]), row["weights"], 1.0, row["test"], row["seconds"], row["info"])
        if on_member is not None:
            on_member(index, done[index])

    if jobs <= 1:
        before = torch.get_num_threads()
        _init_worker()
        try:
            for index, job in enumerate(jobs_list):
                record(index, _train_member(job))
        finally:
            torch.set_num_threads(before)
    else:
        with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker) as pool:
            futures = {pool.submit(_train_member, job): index for index, job in enumerate(jobs_list)}
            try:
                for future in as_completed(futures):
                    record(futures[future], future.result())
            except BaseException:  # Ctrl-C or a failed member: the finished ones are on disk
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    return [done[i] for i in range(len(jobs_list))]


def _boost(base: dict, members: int, classes: int, recipe: Recipe, root: Path, common: dict[str, Any],
           info: dict[str, Any], on_member: Callable[[int, Member], None] | None) -> list[Member]:
    """SAMME: member m trains with the sample weights the previous members' mistakes gave
    (``samme_update``); stops early on a member worse than chance (dropped, as sklearn does) or
    one without a training mistake (kept, with the clipped error's finite alpha)."""
    w: np.ndarray | None = None  # uniform: the first member trains on the plain mean loss
    trained, errors, stopped = [], [], None
    for m in range(members):
        into = root / "members" / f"{m:02d}"
        mistakes = _TrainingMistakes()
        began = time.perf_counter()
        # the weights index the split in memory, by position: every member keeps the base recipe's split
        result = train(base, out=None, into=into, callbacks=[mistakes],
                       sample_weight=None if w is None else torch.from_numpy(w.astype(np.float32)),
                       **{**common, "seed": recipe.seed + m, "validation_seed": recipe.split_seed,
                          "data_loading": "memory"})
        wrong = mistakes.wrong
        alpha, err, new_w = samme_update(np.ones(len(wrong)) if w is None else w, wrong, classes)
        errors.append(err)
        if err >= 1 - 1 / classes:
            stopped = (f"member {m} has a weighted training error {err:.4f} >= 1 - 1/K = {1 - 1 / classes:.4f} (no "
                       "better than chance): dropped, and boosting stops")
            break  # its run directory stays on disk, for inspection; ensemble.json does not list it
        member = Member(into, _final_weights(result.recipe, result), alpha, result.test_metrics,
                        round(time.perf_counter() - began, 2), {"seed": recipe.seed + m, "error": err})
        trained.append(member)
        if on_member is not None:
            on_member(m, member)
        if err == 0:
            stopped = (f"member {m} makes no mistake on the training rows (err 0, clipped to 1/(2n) for a finite "
                       "alpha): nothing is left to reweight, so boosting stops")
            break
        w = new_w
    if not trained:
        raise TrainingError(f"boosting: the first member is no better than chance on the training rows (weighted error "
                        f"{errors[0]:.4f}); train it longer (--epochs) or give it more capacity")
    if stopped:
        log.warning("boosting stopped after %d member(s): %s", len(trained), stopped)
    info["boosting"] = {"classes": classes, "errors": errors, "alphas": [m.weight for m in trained],
                        "stopped": stopped}
    return trained


def _snapshots(base: dict, members: int, recipe: Recipe, root: Path, common: dict[str, Any],
               on_member: Callable[[int, Member], None] | None) -> list[Member]:
    """One run with ``members`` cosine cycles; each cycle's end (``Snapshots``) is a member."""
    into = root / "members" / "00"
    began = time.perf_counter()
    result = train(base, out=None, into=into, seed=recipe.seed,
                   schedule={"name": "cyclic_cosine", "cycles": members}, **common)
    seconds = round(time.perf_counter() - began, 2)
    saved = checkpoint_metadata(into / "last.safetensors")["snapshots"]  # the Snapshots callback's state
    trained = []
    for i, snapshot in enumerate(saved):
        last = i == len(saved) - 1  # the run's test evaluation scored its final weights: the last cycle's end
        member = Member(into, snapshot["weights"], 1.0, result.test_metrics if last else {}, seconds if last else 0.0,
                        {k: v for k, v in snapshot.items() if k != "weights"} | {"seed": recipe.seed})
        trained.append(member)
        if on_member is not None:
            on_member(i, member)
    return trained
