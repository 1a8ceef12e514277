"""search(): sample specs from a space, check their budgets, train them, and let Optuna choose.

Every process that works on a study (this one, ``--workers`` children, other machines) runs the
same loop against the shared storage; the study's trial count, not any one process, decides when
the search is done, so a killed worker or a second machine needs no coordination.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from archlab._data_names import no_data_message
from archlab._paths import check_out_dir
from archlab.exceptions import SpecError
from archlab.spec import dump, first_point, load
from archlab.tasks import direction_of, metric_of_key

from ._space import dimensions, grid_space, sample, space_differences
from ._study import (
    Objective,
    StorageError,
    make_pruner,
    make_sampler,
    open_storage,
    parse_objectives,
    public_url,
    quiet_optuna,
)

__all__ = ["SearchConfig", "SearchProgress", "SearchResult", "StorageError", "count_trials", "epochs_spent",
           "load_report", "run_worker", "sampler_seed", "search", "study_dir", "trial_rows", "write_results"]

COUNTED = ("COMPLETE", "PRUNED", "RUNNING")  # states that use up a trial of the requested count


@dataclass
class SearchConfig:
    """Everything a worker needs; plain data so that it crosses process boundaries."""

    space: dict
    data: str
    trials: int
    study: str
    storage: str
    objectives: list[str] = field(default_factory=lambda: ["val_accuracy"])
    sampler: str = "tpe"
    pruner: str = "asha"
    timeout: float | None = None
    max_params: int | None = None
    max_flops: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    seed: int = 0
    workers: int = 1
    heartbeat: int = 30
    data_dir: str | None = None
    #: the study's folder (``search-<study>/``): each trial's run goes to ``trials/trial-N/`` there,
    #: and a study on text keeps there the one tokenizer every trial uses; None writes no trial runs
    run_dir: str | None = None

    def record(self) -> dict:
        """What identifies the search in the study: a study resumed with another record is refused."""
        record = {"space": self.space, "data": self.data, "objectives": self.objectives, "epochs": self.epochs}
        if self.batch_size is not None:  # only when given: studies made before the option stay comparable
            record["batch_size"] = self.batch_size
        return record


@dataclass
class SearchProgress:
    finished: int
    target: int
    complete: int
    pruned: int
    failed: int
    running: int
    best: float | None
    #: what ``best`` is: the first objective's name (``val_accuracy``, ``val_mse``...)
    objective: str = ""


@dataclass
class SearchResult:
    study: Any
    run_dir: Path
    objectives: list[Objective]
    best: list[dict]  # the best trial (one objective) or the Pareto front, each {number, values, spec_path}
    counts: dict[str, int]


class SurplusTrial(Exception):
    """A worker started a trial after the study had reached its count (a race between workers)."""


# -- one trial ----------------------------------------------------------------------------------
class TrialRunner:
    """The objective Optuna calls: one sampled spec, checked, budgeted, trained and scored."""

    def __init__(self, config: SearchConfig, dataset: Any) -> None:
        self.config = config
        self.dataset = dataset
        self.objectives = parse_objectives(config.objectives)
        self.single = len(self.objectives) == 1
        self._splits: dict[tuple, Any] = {}  # Splits, by what decides the split
        self._encoded: dict[tuple, Any] = {}  # a text data set encoded, by the spec's input lengths
        self._tokenizers: Any = None

    def _arrays(self, parsed: Any, task: Any, recipe: Any) -> Any:
        """The data as this trial's spec takes it: an array data set as it is; text encoded by the
        study's one tokenizer (``study_tokenizers``), once per set of input lengths in the space."""
        from archlab.data import TextDataset

        if not isinstance(self.dataset, TextDataset):
            return self.dataset
        from archlab.text import encode_for_spec

        if self._tokenizers is None:
            self._tokenizers = load_study_tokenizers(self.config, self.dataset, task, recipe)
        key = (task.name, *((n, tuple(i.shape)) for n, i in parsed.raw_inputs.items()))
        if key not in self._encoded:
            self._encoded[key] = encode_for_spec(self.dataset, parsed, task.name, tokenizers=self._tokenizers)
        return self._encoded[key]

    def __call__(self, trial: Any) -> float | list[float]:
        import torch

        from archlab.analysis import analyze
        from archlab.builder import parse
        from archlab.exceptions import MemoryLimitError
        from archlab.training import (
            Callback,
            TrainingError,
            check_fit,
            check_memory,
            fit_spec,
            pick_device,
            prepare_splits,
            resolve_recipe,
            resolve_task,
        )

        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # who runs it: _fail_trials_of
        self._check_surplus(trial)
        began = time.perf_counter()
        point = sample(trial, self.config.space)
        overrides = {k: v for k, v in (("epochs", self.config.epochs), ("batch_size", self.config.batch_size))
                     if v is not None}
        if overrides:
            point = {**point, "train": {**(point.get("train") or {}), **overrides}}
        try:
            spec = load(point)
            trial.set_user_attr("spec", dump(spec))
            parsed = parse(spec)
            recipe = resolve_recipe(spec.to_dict().get("train"), data=self.config.data)
            task = resolve_task(recipe, spec, self.dataset.task)
            dataset = self._arrays(parsed, task, recipe)
            check_fit(parsed, dataset, task)
        except SpecError as exc:
            self._prune(trial, "invalid", f"invalid spec: {exc}")
        capacity = analyze(parsed)
        trial.set_user_attr("params", capacity.total_params)
        trial.set_user_attr("flops", capacity.flops)
        for limit, value, what in ((self.config.max_params, capacity.total_params, "parameters"),
                                   (self.config.max_flops, capacity.flops, "FLOPs")):
            if limit is not None and value > limit:
                flag = "--max-params" if what == "parameters" else "--max-flops"
                self._prune(trial, "budget", f"over budget: {value:,} {what} > {flag} {limit:,}")
        try:  # a spec the device cannot hold is pruned untrained, like one over budget
            check_memory(parsed, recipe, pick_device(recipe.device))
        except MemoryLimitError as exc:
            self._prune(trial, "memory", str(exc))
        if recipe.validation_split == 0:
            recipe = recipe.model_copy(update={"validation_split": 0.2})
        recipe = recipe.model_copy(update={"validation": "stratified"} if task.stratify else {})
        # the objectives are scored on the validation split: record every metric they name
        wanted = [metric_of_key(o.name).name for o in self.objectives if o.is_metric]
        recorded = list(task.default_metrics if recipe.metrics is None else recipe.metrics)
        recipe = recipe.model_copy(update={"metrics": recorded + [m for m in wanted
                                                                  if m not in recorded and m != "loss"]})
        # every trial of a space usually splits alike: split and convert the data once per split
        key = (recipe.validation_split, recipe.validation, recipe.seed, task.name, id(dataset))
        if key not in self._splits:
            self._splits[key] = prepare_splits(dataset, recipe, task, parsed)
        data = self._splits[key]
        xv, yv = data.x_val, data.y_val
        watched = next(o for o in self.objectives if o.is_metric)

        runner = self

        class Report(Callback):
            """Each epoch's watched metric to Optuna, whose pruner may stop the trial."""

            def on_epoch_end(self, engine: Any, epoch: int, row: dict) -> None:
                trial.set_user_attr("epochs_trained", epoch)
                if watched.name not in row:
                    raise SpecError(f"--objective {watched.name}: training records "
                                    f"{', '.join(k for k in row if k.startswith('val_'))}; pick one of those")
                if runner.single:  # Optuna prunes on one reported value; multi-objective studies cannot
                    trial.report(float(row[watched.name]), epoch)
                    # after the last epoch there is nothing left to save: a finished trial is complete
                    if epoch < recipe.epochs and trial.should_prune():
                        runner._prune(trial, "pruner", f"stopped by the {runner.config.pruner} pruner after epoch "
                                      f"{epoch} ({watched.name} {row[watched.name]:.4f})")

        run_dir = self._start_trial_run(trial, spec, recipe, dataset)
        try:
            engine = fit_spec(spec, recipe, task, data, callbacks=[Report()], run_dir=run_dir).engine
        except TrainingError as exc:
            self._prune(trial, "diverged", f"training failed: {exc}")
        finally:
            trial.set_user_attr("train_seconds", round(time.perf_counter() - began, 3))
        with torch.no_grad():
            metrics, _ = engine.evaluate(xv, yv)  # the final weights (restored best, if the recipe says so)
        measures = {"params": capacity.total_params, "flops": capacity.flops}
        if any(o.name == "latency_ms" for o in self.objectives):
            measures["latency_ms"] = batch1_latency_ms(engine.model, xv[:1].to(engine.device))
            trial.set_user_attr("latency_ms", measures["latency_ms"])
        values = []
        for objective in self.objectives:
            key = objective.name.removeprefix("val_")
            if objective.is_metric and key not in metrics:
                raise SpecError(f"--objective {objective.name}: this training records "
                                f"{', '.join('val_' + k for k in metrics)}")
            values.append(float(metrics[key] if objective.is_metric else measures[objective.name]))
        trial.set_user_attr("val_metrics", {k: float(v) for k, v in metrics.items()})
        if not all(math.isfinite(v) for v in values):
            self._prune(trial, "diverged", f"non-finite objective values {values}")
        return values[0] if self.single else values

    def _start_trial_run(self, trial: Any, spec: Any, recipe: Any, dataset: Any) -> Path | None:
        """``trials/trial-N/``: a run like train's (spec, recipe, per-epoch metrics, best and last
        weights, and a text task's tokenizer), so that any trial can be evaluated or predicted with."""
        if self.config.run_dir is None:
            return None
        from archlab.training import write_run

        run_dir = Path(self.config.run_dir) / "trials" / f"trial-{trial.number}"
        if run_dir.exists():  # left by a study of the same name that was deleted: not this trial's
            shutil.rmtree(run_dir)
        write_run(run_dir, spec, recipe)
        if hasattr(dataset, "tokenizers"):
            dataset.tokenizers.save(run_dir)
        trial.set_user_attr("run_dir", str(run_dir))
        return run_dir

    @staticmethod
    def _prune(trial: Any, kind: str, reason: str) -> None:
        import optuna

        trial.set_user_attr("pruned_by", kind)
        trial.set_user_attr("pruned_reason", reason)
        raise optuna.TrialPruned(reason)

    def _check_surplus(self, trial: Any) -> None:
        """Two workers can both see N-1 trials and both start one; the later one steps back."""
        ahead = [t for t in trial.study.get_trials(deepcopy=False, states=_states(COUNTED))
                 if t.number < trial.number]
        if len(ahead) >= self.config.trials:
            trial.set_user_attr("surplus", f"the study already had {self.config.trials} trials when this one began")
            trial.study.stop()
            raise SurplusTrial()


def study_tokenizers(dims: list, dataset: Any, point: Any, task: Any, recipe: Any,
                     run_dir: Path | None = None) -> Any:
    """The one tokenizer of a study on text, trained on the training split only (the test split is
    never read) with the space's ``train.tokenizer``, and the space's first point checked against
    it, before any trial: its embeddings must take the vocabulary and its output must score it.

    Every trial uses it, so their validation losses are over one vocabulary and comparable;
    searching ``train.tokenizer`` is refused, and so is a marker on an embedding's ``input_dim``
    (the vocabulary fixes it). A resumed study (``run_dir`` holds its tokenizer) must get the
    same tokenizer again.
    """
    from archlab.builder import LayerNode, parse
    from archlab.text import Tokenizers, encode_for_spec
    from archlab.training import check_fit

    searched = [d.path for d in dims if d.path == "train.tokenizer" or d.path.startswith("train.tokenizer.")]
    if searched:
        raise SpecError(f"{searched[0]} is searched, but a study trains one tokenizer, on the training split, for "
                        "all its trials (their losses compare only over one vocabulary): give train.tokenizer "
                        "fixed values, and search the vocabulary size with one study per size", searched[0])
    parsed = parse(point)
    encoded = encode_for_spec(dataset, parsed, task.name, recipe.tokenizer)
    paths = {d.path for d in dims}
    for _, node in parsed.walk():
        bound = node.layer_type.id_bound if isinstance(node, LayerNode) else None
        where = f"{node.path}.{node.kind}.{bound}"
        if bound and where in paths:
            raise SpecError(f"{where} is searched, but the tokenizer fixes the vocabulary at {encoded.vocab_size} ids: "
                            f"set {bound}: {encoded.vocab_size} (or change train.tokenizer.vocab_size)", where)
    check_fit(parsed, encoded, task)
    if run_dir is not None and Tokenizers.saved_in(run_dir):
        held = Tokenizers.load(run_dir)
        if held.files() != encoded.tokenizers.files():
            raise SpecError(f"the study in {run_dir} was searched with another tokenizer than the one this data and "
                            "train.tokenizer give (its tokenizer files there differ): its trials would not compare; "
                            "use another --study name")
    return encoded.tokenizers


def load_study_tokenizers(config: SearchConfig, dataset: Any, task: Any, recipe: Any) -> Any:
    """A worker's copy of the study's tokenizer: the one ``search`` saved in the study's folder, or,
    for a worker without that folder, the same training on the training split."""
    from archlab.text import Tokenizers, train_tokenizers

    if config.run_dir is not None and Tokenizers.saved_in(config.run_dir):
        return Tokenizers.load(config.run_dir)
    options = {} if recipe.tokenizer is None else recipe.tokenizer.model_dump()
    return train_tokenizers(dataset.for_task(task.name), **options)


def batch1_latency_ms(model: Any, x: Any, repeats: int = 30) -> float:
    """Median wall time of one inference at batch size 1, after warm-up."""
    import torch

    model.eval()
    times = []
    with torch.inference_mode():
        for i in range(repeats + 5):
            began = time.perf_counter()
            model(x)
            if i >= 5:
                times.append(time.perf_counter() - began)
    return round(statistics.median(times) * 1000, 4)


def _states(names: tuple[str, ...]) -> tuple:
    from optuna.trial import TrialState

    return tuple(TrialState[n] for n in names)


def count_trials(study: Any) -> dict[str, int]:
    counts = {"COMPLETE": 0, "PRUNED": 0, "RUNNING": 0, "FAIL": 0, "WAITING": 0}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def progress_of(study: Any, config: SearchConfig) -> SearchProgress:
    counts = count_trials(study)
    best = None
    if len(study.directions) == 1 and counts["COMPLETE"]:
        best = study.best_value
    return SearchProgress(counts["COMPLETE"] + counts["PRUNED"], config.trials, counts["COMPLETE"], counts["PRUNED"],
                          counts["FAIL"], counts["RUNNING"], best, config.objectives[0].partition(":")[0])


# -- one worker ---------------------------------------------------------------------------------
def run_worker(config: SearchConfig, index: int = 0, on_trial: Callable[[SearchProgress], None] | None = None,
               dataset: Any = None) -> None:
    """Work on the study until it holds ``config.trials`` finished or running trials (or time is up)."""
    import optuna

    from archlab.data import load_dataset

    quiet_optuna()
    if config.workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // config.workers))
    storage = open_storage(config.storage, config.heartbeat)
    grid = grid_space(config.space) if config.sampler == "grid" else None
    objectives = parse_objectives(config.objectives)
    study = optuna.load_study(study_name=config.study, storage=storage,
                              pruner=make_pruner(config.pruner if len(objectives) == 1 else "none",
                                                 _epochs(config)))
    held = len(study.get_trials(deepcopy=False))
    study.sampler = make_sampler(config.sampler, sampler_seed(config.seed, index, held), grid=grid,
                                 workers=config.workers)
    dataset = dataset if dataset is not None else load_dataset(config.data, config.data_dir)
    runner = TrialRunner(config, dataset)

    def used() -> int:
        optuna.storages.fail_stale_trials(study)
        return len(study.get_trials(deepcopy=False, states=_states(COUNTED)))

    def after_trial(study: Any, _trial: Any) -> None:
        if on_trial is not None:
            on_trial(progress_of(study, config))
        if used() >= config.trials:
            study.stop()

    if used() >= config.trials:
        return
    optuna_log = logging.getLogger("optuna.study._optimize")
    quiet_interrupt = _QuietInterrupt()
    optuna_log.addFilter(quiet_interrupt)
    try:
        study.optimize(runner, n_trials=None, timeout=config.timeout, callbacks=[after_trial],
                       catch=(SurplusTrial,), gc_after_trial=False, show_progress_bar=False)
    except Exception as exc:
        if by_interrupt(exc):  # Ctrl-C inside a lazy import: an interrupt all the same
            raise KeyboardInterrupt from None
        raise
    finally:
        optuna_log.removeFilter(quiet_interrupt)


class _QuietInterrupt(logging.Filter):
    """Optuna logs a trial stopped by Ctrl-C as a failed trial, traceback and all, before the
    KeyboardInterrupt reaches the caller; the caller says what happened in one line instead."""

    def __init__(self) -> None:
        super().__init__()
        self.interrupted = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and by_interrupt(record.exc_info[1]):
            self.interrupted = True  # this record and the "failed with value None" one after it
        return not self.interrupted


def by_interrupt(exc: BaseException | None) -> bool:
    """Whether ``exc`` is a KeyboardInterrupt or was raised by one: Python 3.11 wraps one that
    lands inside a class's ``__set_name__`` (a lazy import mid-trial) in a RuntimeError."""
    while exc is not None:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc = exc.__cause__
    return False


def sampler_seed(seed: int, worker: int, held: int) -> int:
    """The sampler seed of ``worker`` on a study that already holds ``held`` trials.

    A fresh study gives worker k ``seed + k``. A resumed one must not restart the samplers where
    they started (trial 2 would repeat trial 0), so its seed also depends on the trials it holds;
    SeedSequence keeps the seeds of different (seed, worker, held) apart, where sums would collide.

    Example:
        >>> sampler_seed(0, 1, 0), sampler_seed(0, 0, 2) != sampler_seed(0, 0, 0)
        (1, True)
    """
    if held == 0:
        return seed + worker
    return int(np.random.SeedSequence([seed, worker, held]).generate_state(1)[0])


def _worker_main(config_dict: dict, index: int) -> None:
    """Entry point of a ``--workers`` child process (spawned: a clean interpreter, no forked torch).

    It ignores SIGINT (set by the parent before the start, so from the first instruction): Ctrl-C is
    the parent's to handle. The parent stops it with SIGTERM, raised here as KeyboardInterrupt, so
    that Optuna records the running trial as failed before the worker exits with code 130.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        run_worker(SearchConfig(**config_dict), index)
    except Exception as exc:
        if by_interrupt(exc):
            raise SystemExit(130) from None
        raise
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _epochs(config: SearchConfig) -> int:
    if config.epochs is not None:
        return config.epochs
    from archlab.training import resolve_recipe

    return resolve_recipe(first_point(config.space).get("train")).epochs


# -- the study ----------------------------------------------------------------------------------
def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "search"


def open_study(config: SearchConfig, *, force: bool = False) -> Any:
    """Create the study, or load it when it exists with the same space, data and objectives."""
    import optuna

    quiet_optuna()
    storage = open_storage(config.storage, config.heartbeat)
    objectives = parse_objectives(config.objectives)
    directions = [o.direction for o in objectives]
    record = json.loads(json.dumps(config.record()))
    try:
        study = optuna.load_study(study_name=config.study, storage=storage)
    except KeyError:
        study = None
    if study is not None:
        old = study.user_attrs.get("archlab")
        problems = []
        if old is None:
            problems.append("it was not created by archlab search")
        else:
            problems += [f"{k}: {old.get(k)!r} -> {record.get(k)!r}"
                         for k in ("data", "objectives", "epochs", "batch_size") if old.get(k) != record.get(k)]
            problems += space_differences(old.get("space"), record["space"])
        if [d.name.lower() for d in study.directions] != directions and not problems:
            problems.append(f"directions {[d.name.lower() for d in study.directions]} -> {directions}")
        if problems and not force:
            raise SpecError(f"study '{config.study}' in {public_url(config.storage)} exists with a different search: "
                            + "; ".join(problems) + ". Its trials would not be comparable: use another --study "
                            "name, or --force to continue it with this space")
        if problems:
            study.set_user_attr("archlab", record)
        return study
    study = optuna.create_study(study_name=config.study, storage=storage, directions=directions,
                                load_if_exists=True)
    study.set_user_attr("archlab", record)
    return study


def study_dir(out: str | Path, study: str) -> Path:
    """The run directory of a study: ``<out>/search-<study>/`` (its default storage is ``study.db`` there)."""
    return Path(out) / f"search-{_safe_name(study)}"


def search(space: Any, data: str | None, trials: int, *, study: str | None = None, storage: str | None = None,
           objectives: list[str] | None = None, sampler: str = "tpe", pruner: str | None = None,
           timeout: float | None = None, max_params: int | None = None, max_flops: int | None = None,
           epochs: int | None = None, batch_size: int | None = None, workers: int = 1, seed: int = 0,
           out: str | Path = "runs",
           data_dir: str | Path | None = None, force: bool = False, heartbeat: int = 30,
           on_progress: Callable[[SearchProgress], None] | None = None) -> SearchResult:
    """Search a space of specs on Optuna and write the best spec(s), a trials table and plots.

    Args:
        space: a spec with search markers (path, text, dict or Spec); its ``train:`` section is the recipe.
        data: the data set name (None: the space's ``train.data``); each trial is scored on a
            validation split of its training part. Text (``multi30k``, ``text:``) is tokenized by
            one tokenizer for the whole study (``study_tokenizers``).
        trials: the number of finished (complete or pruned) trials the study should hold; a study
            resumed by name continues up to it.
        study: the study name (default: the spec's name); the same name resumes the same study.
        storage: an SQLAlchemy URL; default ``sqlite:///<run dir>/study.db``.
        objectives: ``val_<metric>`` (default: the task's headline metric, ``val_accuracy`` for a
            classifier, ``val_auc`` binary, ``val_micro_f1`` multilabel, ``val_mse`` regression,
            ``val_perplexity`` seq2seq and language model), ``val_loss``,
            ``params:min``, ``flops:min``, ``latency:min``...
        sampler: tpe, random, grid or nsga2.
        pruner: asha (default for one objective), hyperband, median or none (default for several).
        timeout: seconds each worker searches before it stops starting trials.
        max_params, max_flops: budgets checked on the capacity analysis; a spec over them is pruned
            untrained with the reason.
        epochs: overrides ``train.epochs`` of every sampled spec (the largest budget a trial gets).
        batch_size: overrides ``train.batch_size`` of every sampled spec.
        workers: local worker processes sharing the storage.
        out: the folder that receives ``search-<study>/``.
        heartbeat: seconds between a running trial's heartbeats; a trial silent for twice that is failed.

    Returns:
        SearchResult with the Optuna study, the run directory and the best trial(s); each trained
        trial's run is ``trials/trial-N/`` in the run directory.
    """
    from archlab.data import load_dataset
    from archlab.training import declares_task, resolve_recipe, resolve_task

    quiet_optuna()
    base = load(space).to_dict()
    dims = dimensions(base)  # malformed markers are SpecErrors here, before anything starts
    for option, value in (("--trials", trials), ("--workers", workers), ("--max-params", max_params),
                          ("--max-flops", max_flops), ("--timeout", timeout), ("--epochs", epochs),
                          ("--batch-size", batch_size),
                          ("--heartbeat", heartbeat)):
        if value is not None and not value > 0:  # `not >` also refuses NaN
            raise ValueError(f"{option} must be a positive number, got {value}")
    if seed < 0:
        raise ValueError(f"--seed must be 0 or more, got {seed}")
    data = data if data is not None else (base.get("train") or {}).get("data")
    if not isinstance(data, str):
        raise SpecError(no_data_message(), "train.data")
    check_out_dir(out)
    # without --objective, the task's headline metric; the task is known once the data is, and it is one objective
    objective_list = parse_objectives(objectives) if objectives else None
    if pruner is None:
        pruner = "asha" if objective_list is None or len(objective_list) == 1 else "none"
    if pruner != "none" and objective_list is not None and len(objective_list) > 1:
        raise ValueError(f"--pruner {pruner} needs a single objective: Optuna prunes on one reported value. "
                         "Use --pruner none with several objectives")
    make_pruner(pruner, 1)
    make_sampler(sampler, seed, grid=grid_space(base) if sampler == "grid" else None)
    name = study or _safe_name(base.get("name") or "search")
    run_dir = study_dir(out, name)
    url = storage or f"sqlite:///{(run_dir / 'study.db').resolve()}"
    point = load(first_point(base))  # the task does not vary over a space: its objectives must apply to it
    recipe = resolve_recipe(point.to_dict().get("train"), data=data)
    if declares_task(point, recipe):  # known without the data: a wrong objective is refused before it loads
        _check_objectives(objective_list, resolve_task(recipe, point))
    dataset = load_dataset(data, data_dir)  # a bad data name fails here, once, not in every worker
    task = resolve_task(recipe, point, dataset.task)
    if objective_list is None:
        objective_list = parse_objectives([f"val_{task.headline_metric}"])
    _check_objectives(objective_list, task)
    from archlab.data import TextDataset

    tokenizers = study_tokenizers(dims, dataset, point, task, recipe, run_dir) \
        if isinstance(dataset, TextDataset) else None
    config = SearchConfig(space=base, data=data, trials=trials, study=name, storage=url,
                          objectives=[str(o) for o in objective_list], sampler=sampler, pruner=pruner,
                          timeout=timeout, max_params=max_params, max_flops=max_flops, epochs=epochs,
                          batch_size=batch_size, seed=seed,
                          workers=workers, heartbeat=heartbeat, data_dir=str(data_dir) if data_dir else None,
                          run_dir=str(run_dir.resolve()))
    run_dir.mkdir(parents=True, exist_ok=True)
    the_study = open_study(config, force=force)
    if tokenizers is not None:  # every worker and every trial's run reads this one
        tokenizers.save(run_dir)
    dump(base, run_dir / "space.yaml")
    (run_dir / "search.json").write_text(json.dumps({**asdict(config), "storage": public_url(url),
                                                     "dimensions": [d.path for d in dims]}, indent=2),
                                         encoding="utf-8")
    if on_progress is not None:
        on_progress(progress_of(the_study, config))  # a resumed study shows where it stands at once
    if workers == 1:
        run_worker(config, 0, on_progress, dataset)
    else:
        _run_workers(config, the_study, on_progress)
    return write_results(the_study, run_dir, objective_list, target=trials)


def _check_objectives(objectives: list[Objective] | None, task: Any) -> None:
    for objective in objectives or ():
        if objective.is_metric:
            direction_of(objective.name, task.name, f"--objective {objective.name}")


def _run_workers(config: SearchConfig, study: Any, on_progress: Callable[[SearchProgress], None] | None) -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker_main, args=(asdict(config), i), name=f"archlab-search-{i}")
                 for i in range(config.workers)]
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the children start ignoring Ctrl-C (_worker_main)
    try:
        for p in processes:
            p.start()
    finally:
        signal.signal(signal.SIGINT, handler)
    try:
        while any(p.is_alive() for p in processes):
            for p in processes:
                p.join(timeout=1.0 / len(processes))
            if on_progress is not None:
                on_progress(progress_of(study, config))
    except BaseException:
        for p in processes:
            p.terminate()  # SIGTERM: each records its running trial as failed, then exits
        for p in processes:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
        _fail_trials_of(study, processes)
        raise
    if any(p.exitcode == 130 for p in processes):  # a worker was interrupted (Ctrl-C): so is the search
        raise KeyboardInterrupt
    crashed = [f"{p.name} (exit code {p.exitcode})" for p in processes if p.exitcode != 0]
    if crashed:
        from archlab.exceptions import ArchlabError

        raise ArchlabError(f"search worker(s) {', '.join(crashed)} stopped with an error (printed above); finished "
                           "trials are kept in the study: run the same command again to continue")


def _fail_trials_of(study: Any, processes: list[Any]) -> None:
    """Mark FAIL the trials our stopped workers left RUNNING (one that was killed, or stopped between
    Optuna creating a trial and running it), so an interrupted search never leaves a trial that looks
    alive until its heartbeat goes stale. Trials of other machines on a shared study are not touched:
    each trial names its worker (host:pid) as it starts."""
    import optuna

    ours = {f"{socket.gethostname()}:{p.pid}" for p in processes}
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if trial.user_attrs.get("worker") in ours:
            try:
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            except ValueError:  # finished after all: the worker recorded it as it went
                pass


# -- results --------------------------------------------------------------------------------------
def trial_rows(study: Any, objectives: list[Objective]) -> list[dict]:
    """One flat row per trial, for trials.csv/json and the report."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        for i, o in enumerate(objectives):
            row[o.name] = t.values[i] if t.values is not None else None
        attrs = t.user_attrs
        row.update({"params": attrs.get("params"), "flops": attrs.get("flops"),
                    "epochs_trained": attrs.get("epochs_trained", 0),
                    "seconds": round(t.duration.total_seconds(), 3) if t.duration else None,
                    "pruned_by": attrs.get("pruned_by") or ("surplus" if "surplus" in attrs else None),
                    "reason": attrs.get("pruned_reason") or attrs.get("surplus"), "run_dir": attrs.get("run_dir")})
        row.update({f"param:{k}": v for k, v in t.params.items()})
        rows.append(row)
    return rows


def _front(study: Any, objectives: list[Objective]) -> list[Any]:
    complete = [t for t in study.get_trials(deepcopy=False, states=_states(("COMPLETE",)))]
    if not complete:
        return []
    if len(objectives) == 1:
        return [study.best_trial]
    return sorted(study.best_trials, key=lambda t: t.number)


def write_results(study: Any, run_dir: Path, objectives: list[Objective], target: int | None = None) -> SearchResult:
    """trials.csv/json, best.yaml (or pareto/*.yaml), and the plots, from what the study holds."""
    import csv

    from archlab.training import atomic_write_text

    rows = trial_rows(study, objectives)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(run_dir / "trials.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(run_dir / "trials.json", json.dumps(rows, indent=2, default=str))
    best = []
    front = _front(study, objectives)
    if len(objectives) > 1:
        (run_dir / "pareto").mkdir(exist_ok=True)
    for t in front:
        path = run_dir / ("best.yaml" if len(objectives) == 1 else f"pareto/trial-{t.number}.yaml")
        atomic_write_text(path, t.user_attrs["spec"])
        best.append({"number": t.number, "values": dict(zip([o.name for o in objectives], t.values, strict=True)),
                     "params": t.user_attrs.get("params"), "flops": t.user_attrs.get("flops"), "spec_path": str(path),
                     "run_dir": t.user_attrs.get("run_dir")})
    if len(objectives) > 1:
        atomic_write_text(run_dir / "pareto.json", json.dumps(best, indent=2))
    from ._plots import plot_study

    plot_study(study, objectives, run_dir)
    counts = count_trials(study)
    if target is not None:
        counts["target"] = target
    return SearchResult(study, run_dir, objectives, best, counts)


def load_report(study: str, storage: str | None = None, *, out: str | Path = "runs") -> SearchResult:
    """An existing study, re-read from its storage (``archlab search --report``); writes nothing.

    Without ``storage``, the study is the local one that ``search(..., out=out)`` made:
    ``<out>/search-<study>/study.db``.
    """
    import optuna

    quiet_optuna()
    if storage is None:
        db = study_dir(out, study) / "study.db"
        if not db.is_file():  # opening it would create an empty database
            raise FileNotFoundError(f"--report {study}: no local study at {db}; give the --out the search used, "
                                    "or --storage URL for a study in a database")
        storage = f"sqlite:///{db.resolve()}"
    try:
        the_study = optuna.load_study(study_name=study, storage=open_storage(storage))
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(open_storage(storage))]
        raise ValueError(f"no study '{study}' in {public_url(storage)}; it holds: {', '.join(names) or 'none'}") \
            from None
    record = the_study.user_attrs.get("archlab") or {}
    objectives = (parse_objectives(record["objectives"]) if record.get("objectives") else  # a study of another tool
                  [Objective(f"value{i}", d.name.lower()) for i, d in enumerate(the_study.directions)])
    rows_best = _front(the_study, objectives)
    best = [{"number": t.number, "values": dict(zip([o.name for o in objectives], t.values, strict=True)),
             "params": t.user_attrs.get("params"), "flops": t.user_attrs.get("flops"), "spec_path": None,
             "run_dir": t.user_attrs.get("run_dir")}
            for t in rows_best]
    return SearchResult(the_study, Path("."), objectives, best, count_trials(the_study))


def epochs_spent(study: Any) -> int:
    """Epochs trained over all trials: the compute a search used."""
    return int(np.sum([t.user_attrs.get("epochs_trained", 0) for t in study.get_trials(deepcopy=False)]))
