"""train(), evaluate_run(), predict_run(): a spec and a data set in, a run directory out."""

from __future__ import annotations

import contextlib
import json
import re
import resource
import shutil
import sys
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from pydantic import ValidationError

from archlab._data_names import no_data_message
from archlab._inputs import SINGLE, map_inputs
from archlab._paths import check_out_dir
from archlab.builder import ArchlabModel, LayerNode, build_parsed, parse
from archlab.exceptions import Interrupted, SpecError, suggest
from archlab.spec import Spec, dump, load
from archlab.tasks import TaskKind, as_task, direction_of, get_metric, get_task, metric_of_key, metrics, score, tasks

from ._callbacks import Callback
from ._corrupt import check_conditions, check_modality_dropout, corruption_conditions, robustness
from ._engine import Engine, History, TrainingError, check_bucketing, pick_device
from ._fit import (
    TrainRows,
    check_validation,
    fit_spec,
    input_sources,
    model_inputs,
    prepare_model,
    prepare_splits,
    to_tensors,
)
from ._memory import check_memory
from ._recipe import Recipe, resolve_recipe
from ._runs import (
    RunError,
    atomic_write_text,
    checkpoint_metadata,
    load_weights,
    lock_run,
    new_run_dir,
    read_metrics,
    save_weights,
)

__all__ = ["RestoredRun", "TrainResult", "TrainingError", "check_fit", "check_recipe", "evaluate_run", "finish_run",
           "load_run", "plot_curves", "predict_run", "read_input", "read_inputs", "read_metrics", "resolve_task",
           "restore_run", "run_task", "save_figure", "start_run", "train", "write_run"]


@dataclass
class TrainResult:
    run_dir: Path | None
    history: History
    test_metrics: dict[str, float]
    summary: dict[str, Any] = field(default_factory=dict)
    recipe: Recipe | None = None


def resolve_task(recipe: Recipe, spec: Spec, data_task: str | None = None) -> TaskKind:
    """The one rule that decides what a spec trains for: its ``task.kind``; else the task whose loss
    ``train.loss`` names; else the data set's task (``Dataset.task``); else classification. A
    ``train.loss`` that is not the declared task's is a SpecError, and so is a recipe metric or
    early-stopping monitor that does not apply to the task (``check_recipe``). Whether the data
    set suits the task is ``check_fit``'s part.

    Example:
        >>> from archlab.spec import Spec
        >>> spec = Spec.from_dict({"name": "s", "input": [4], "task": {"kind": "binary"},
        ...                        "layers": [{"dense": {"units": 1}}]})
        >>> resolve_task(resolve_recipe({}), spec, "classification").name
        'binary'
    """
    declared = (spec.to_dict().get("task") or {}).get("kind")
    by_loss = tasks.by_loss(recipe.loss) if recipe.loss != "auto" else None
    if declared is not None:
        task = get_task(declared)
        if by_loss is not None and by_loss is not task:
            raise SpecError(f"task {task.name} trains with {task.loss_name}, not {recipe.loss}: drop train.loss "
                            f"(auto takes the task's loss) or set task.kind: {by_loss.name}", "train.loss")
    elif by_loss is not None:
        task = by_loss
    else:
        task = get_task(data_task or "classification", "task.kind")
    check_recipe(recipe, task)
    check_bucketing(recipe, _declared_pad_ids(spec))
    check_modality_dropout(recipe.modality_dropout, _declared_integer_inputs(spec))
    return task


def declares_task(spec: Spec, recipe: Recipe) -> bool:
    """Whether the spec itself says its task (``task.kind``, or a ``train.loss`` of one task), so
    that ``resolve_task`` needs no data set: what cv and search check options against before loading it."""
    return bool((spec.to_dict().get("task") or {}).get("kind")) or recipe.loss != "auto"


def _declared_integer_inputs(spec: Spec) -> dict[str, bool]:
    """The spec's inputs by name (one ``input``: ``input``), each True if declared ``dtype: long``."""
    data = spec.to_dict()
    inputs = data.get("inputs") or {SINGLE: data.get("input")}
    return {name: isinstance(value, dict) and value.get("dtype") == "long" for name, value in inputs.items()}


def _declared_pad_ids(spec: Spec) -> dict[str, int]:
    """The pad ids the spec's input declarations give, read without parsing the layers."""
    data = spec.to_dict()
    inputs = data.get("inputs") or {"input": data.get("input")}
    return {name: value["pad_id"] for name, value in inputs.items() if isinstance(value, dict) and "pad_id" in value}


def check_recipe(recipe: Recipe, task: TaskKind) -> None:
    """Every recipe metric applies to the task, and early stopping monitors one that is recorded."""
    for i, name in enumerate(recipe.metrics or []):
        direction_of(name, task.name, f"train.metrics[{i}]")
    es = recipe.early_stopping
    if es is not None:
        where = "train.early_stopping.monitor"
        direction_of(es.monitor, task.name, where)
        name = metric_of_key(es.monitor).name
        recorded = task.default_metrics if recipe.metrics is None else recipe.metrics
        if name != "loss" and name not in recorded:
            raise SpecError(f"'{es.monitor}' is not recorded: add {name} to train.metrics (it records "
                            f"{', '.join(recorded) or 'only the loss'})", where)


def run_task(spec: Spec, recipe: Recipe) -> tuple[TaskKind, Recipe]:
    """The task of a trained run, and its recipe with only the metrics that apply to it: runs
    written before tasks were objects recorded ``metrics: [accuracy]`` whatever the task (only the
    applicable ones were ever computed), so they are dropped here rather than refused."""
    task = resolve_task(recipe.model_copy(update={"metrics": None, "early_stopping": None}), spec)
    if recipe.metrics is not None:
        recipe = recipe.model_copy(update={"metrics": [m for m in recipe.metrics
                                                       if get_metric(m).applies_to(task.name)]})
    return task, recipe


def check_fit(parsed, dataset, task: TaskKind | str) -> None:
    """The data must fit the spec: same input shape, a data set the task trains on, and the output
    the task needs (as many units as classes for classification, one for binary...)."""
    task = as_task(task)
    provided = dataset.input_shapes
    for name, source in input_sources(parsed, provided, dataset.name).items():
        spec_shape, data_shape = tuple(parsed.raw_inputs[name].shape), provided[source]
        if data_shape != spec_shape:
            where = "input" if not parsed.is_graph else f"inputs.{name}"
            of = "" if source == SINGLE else f" {source!r}"
            raise SpecError(f"the spec's {where} is {spec_shape} but {dataset.name} gives{of} samples of shape "
                            f"{data_shape}: set {where}: {list(data_shape)}", where)
    if len(parsed.output_infos) != 1:
        raise SpecError(f"training takes a spec with one output; this one has {len(parsed.outputs)} "
                        f"({', '.join(parsed.outputs)}): keep the one the task is trained on", "outputs")
    task.check_data(dataset)
    task.check_output(tuple(parsed.output_infos[0].shape), dataset)
    vocab = getattr(dataset, "vocab_size", None)
    for _, node in parsed.walk() if vocab is not None else ():
        bound = node.layer_type.id_bound if isinstance(node, LayerNode) else None
        if bound and getattr(node.params, bound) < vocab:
            have = getattr(node.params, bound)
            why, other = (("the tokenizer's vocabulary", f", or train.tokenizer.vocab_size: {have}")
                          if hasattr(dataset, "tokenizers") else ("its categorical fields' vocabularies together", ""))
            raise SpecError(f"the {node.kind}'s {bound} is {have} but {dataset.name} has {vocab} ids ({why}): set "
                            f"{bound}: {vocab}{other}", f"{node.path}.{node.kind}.{bound}")
    declared = parsed.spec.to_dict().get("task") or {}
    if declared.get("classes") not in (None, dataset.num_classes):
        raise SpecError(f"task.classes is {declared['classes']} but {dataset.name} has {dataset.num_classes} classes",
                        "task.classes")


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def save_figure(fig: Any, path: Path) -> None:
    """Save a PNG through a temporary file (a killed run never leaves half an image) and free it."""
    import matplotlib.pyplot as plt

    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def plot_curves(rows: list[dict], path: Path, title: str) -> None:
    """Loss and the first metric per epoch, train vs validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in rows]
    recorded = [k.removeprefix("val_") for k in rows[0]]
    metric = next((k for k in recorded if k in metrics and k != "loss"), None)
    panels = ["loss"] + ([metric] if metric else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, key in zip(axes[0], panels, strict=True):
        for prefix, label in (("", "train"), ("val_", "validation")):
            values = [r.get(prefix + key) for r in rows]
            if any(v is not None for v in values):
                ax.plot(epochs, values, marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def start_run(spec: Spec, recipe: Recipe, out: str | Path, model: torch.nn.Module | None = None) -> Path:
    """A new ``<name>-<timestamp>/`` under ``out``, written by ``write_run``."""
    run_dir = new_run_dir(out, spec.name)
    write_run(run_dir, spec, recipe, model)
    return run_dir


def write_run(run_dir: Path, spec: Spec, recipe: Recipe, model: torch.nn.Module | None = None) -> None:
    """What makes a folder a run every command reads (``restore_run``): the spec, the resolved
    recipe and, for a model made rather than trained here (shrink, compress), its weights as both
    ``best`` and ``last``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "spec.yaml", dump(spec))
    atomic_write_text(run_dir / "recipe.yaml", _recipe_yaml(recipe))
    if model is not None:
        save_weights(run_dir / "best.safetensors", model)
        save_weights(run_dir / "last.safetensors", model)


def finish_run(run_dir: Path | None, spec: Spec, engine: Engine, history: History, wall: float, *, data: str,
               source: str, test_metrics: dict[str, float], classes: Any, sizes: dict[str, int],
               oov: dict[str, dict[str, int]] | None = None, loading: dict[str, Any] | None = None,
               text: dict[str, Any] | None = None) -> dict[str, Any]:
    """summary.json (final metrics, wall time, speed, peak memory; for categorical fields the
    values unseen in training, per split and field) and curves.png."""
    rows = engine.rows
    summary = {
        "name": spec.name, "data": data, "source": source, "device": str(engine.device),
        "precision": engine.precision.precision, "precision_reason": engine.precision.reason,
        "epochs_run": len(rows),
        "best_epoch": history.best_epoch, "stopped_early": history.stopped_early,
        "final": rows[-1] if rows else {}, "test": test_metrics, "wall_seconds": round(wall, 2),
        "train_samples_per_s": round(sizes["train_samples"] * len(rows)
                                     / max(sum(r["seconds"] for r in rows), 1e-9), 1),
        "peak_memory_bytes": _peak_memory(engine.device),
        "params": sum(p.numel() for p in engine.model.parameters()),
        "classes": list(classes) if classes else None, **sizes, **(loading or {}),
    }
    if oov is not None:
        summary["oov"] = oov
    if text is not None:  # the tokenizer's vocabulary, truncated sentences, unknown characters
        summary["text"] = text
    if run_dir is not None:
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
        if rows:
            plot_curves(rows, run_dir / "curves.png", f"{spec.name} on {data}")
    return summary


def train(spec: Spec | dict | str | Path | None = None, *, data: str | None = None, data_dir: str | Path | None = None,
          out: str | Path | None = "runs", resume: str | Path | None = None, verbose: int = 1,
          callbacks: Sequence[Callback] = (), train_rows: TrainRows | None = None,
          sample_weight: torch.Tensor | None = None, into: str | Path | None = None, **overrides: Any) -> TrainResult:
    """Train a spec on a data set and record the run.

    Everything that can be checked without training is checked before the run directory is made:
    the recipe, the device, the memory estimate, the data against the spec. A run that fails or is
    interrupted before its first epoch ends leaves no directory behind.

    Args:
        spec: the spec (path, text, dict or Spec); its ``train:`` section is the recipe.
        data: a data set name (``digits``, ``mnist``, ``csv:PATH``, ``npz:PATH``); overrides train.data.
        out: the folder that receives ``<name>-<timestamp>/``; None records nothing on disk.
        resume: a run directory to continue from its last checkpoint (spec and recipe are the run's);
            ``epochs`` may then extend it (see ``_extend_recipe``), nothing else may change.
        verbose: 0 silent, 1 progress bars, 2 one line per epoch.
        callbacks: your own ``Callback``s (``Engine.fit``); pass the same kinds again with
            ``resume`` and each gets back the state its ``state_dict`` saved.
        train_rows: train on these rows of the training split (after validation is taken out), or
            on those a function of its size draws (``prepare_splits``; bagging's bootstrap).
        sample_weight: one weight per training row (after ``train_rows``): the loss is each
            batch's mean of ``w l``, the weights as given (``Engine.fit``; boosting's average 1).
        into: the run directory itself (new, or an empty folder) instead of ``out/<name>-<timestamp>``
            (an ensemble's ``members/00``).
        **overrides: recipe fields (epochs, batch_size, lr, seed, device, precision, ...).

    Returns:
        TrainResult with the run directory, the history and the test-split metrics.

    Raises:
        Interrupted: on Ctrl-C, saying which epoch is saved and the command that continues.
    """
    from archlab.data import load_dataset

    with contextlib.ExitStack() as stack:
        if resume is not None:
            run_dir = Path(resume)
            spec, recipe = load_run(run_dir)
            changed = sorted(k for k, v in overrides.items() if v is not None and k != "epochs")
            if changed or data is not None:
                raise SpecError(f"--resume continues a run with its own spec and recipe; drop "
                                f"{', '.join('--' + k.replace('_', '-') for k in changed or ['data'])} "
                                "(only --epochs may extend it)")
            if not (run_dir / "last.safetensors").is_file():
                raise RunError(f"{run_dir} has no last.safetensors: no epoch finished, so there is nothing to "
                               "resume; start the run again")
            stack.enter_context(lock_run(run_dir))  # before anything is read that a running process rewrites
            _check_chosen_rows(run_dir, train_rows, sample_weight)
            extended = _extend_recipe(run_dir, recipe, overrides.get("epochs"))
            extended, recipe = extended != recipe, extended
        else:
            if into is not None:
                into, out = Path(into), Path(into).parent
                if into.exists() and (not into.is_dir() or any(into.iterdir())):
                    raise SpecError(f"{into} exists and is not an empty folder: a run is written into a new one")
            if out is not None:
                check_out_dir(out)
            spec = load(spec)
            recipe = resolve_recipe(spec.to_dict().get("train"), data=data, **overrides)
            run_dir, extended = None, False
        if recipe.data is None:
            raise SpecError(no_data_message(), "train.data")
        check_memory(spec, recipe, pick_device(recipe.device))
        dataset = load_dataset(recipe.data, data_dir)
        parsed = parse(spec)
        task = resolve_task(recipe, spec, dataset.task)
        dataset = as_arrays(dataset, parsed, task, recipe, run_dir if resume is not None else None)
        check_fit(parsed, dataset, task)
        check_validation(dataset, recipe)
        created = resume is None and out is not None
        try:
            if created:
                if into is None:
                    run_dir = start_run(spec, recipe, out)
                else:
                    run_dir = into
                    write_run(run_dir, spec, recipe)
                stack.enter_context(lock_run(run_dir))
                if hasattr(dataset, "tokenizers"):  # every later command reads the run's own
                    dataset.tokenizers.save(run_dir)
                if train_rows is not None or sample_weight is not None:
                    atomic_write_text(run_dir / CHOSEN_ROWS, json.dumps(
                        {"train_rows": train_rows is not None, "sample_weight": sample_weight is not None}))
            elif extended:
                atomic_write_text(run_dir / "recipe.yaml", _recipe_yaml(recipe))  # the new epoch count
            return _fit_and_record(spec, recipe, parsed, dataset, task, run_dir, resume is not None, verbose,
                                   callbacks, train_rows, sample_weight)
        except KeyboardInterrupt:
            saved = len(read_metrics(run_dir / "metrics.jsonl")) if run_dir is not None else 0
            if created and not (run_dir / "last.safetensors").is_file():
                shutil.rmtree(run_dir, ignore_errors=True)
                raise Interrupted("no epoch had finished, so nothing was kept (the run directory is removed)") \
                    from None
            if run_dir is None:
                raise Interrupted("nothing was recorded (out=None)") from None
            raise Interrupted(f"epoch {saved} of {recipe.epochs} is saved; continue with: archlab train --resume "
                              f"{run_dir}") from None
        except BaseException:
            if created and not (run_dir / "last.safetensors").is_file():  # nothing finished: nothing to keep
                shutil.rmtree(run_dir, ignore_errors=True)
            raise


#: A run trained on chosen rows or sample weights (an ensemble member) says so here, so that a resume
#: without them is refused rather than continued on the whole, unweighted split.
CHOSEN_ROWS = "chosen-rows.json"


def _check_chosen_rows(run_dir: Path, train_rows: Any, sample_weight: Any) -> None:
    """Refuse to resume a run that trained on ``train_rows`` or ``sample_weight`` without them.

    Raises:
        RunError: a resume that lacks what the run trained with.
    """
    path = run_dir / CHOSEN_ROWS
    if not path.is_file():
        return
    chosen = json.loads(path.read_text(encoding="utf-8"))
    missing = [name for name, given in (("train_rows", train_rows), ("sample_weight", sample_weight))
               if chosen.get(name) and given is None]
    if missing:
        raise RunError(f"{run_dir} trained on {' and '.join(missing)} of its own (a bagging or boosting member of an "
                       f"ensemble): resume it with archlab.train(resume=..., {', '.join(f'{m}=...' for m in missing)})"
                       " as it was trained, or train the ensemble again")


def as_arrays(dataset: Any, parsed: Any, task: TaskKind, recipe: Recipe, run_dir: Path | None = None) -> Any:
    """The data set as arrays the spec's model takes: an array data set as it is; a text data set
    (``archlab.data.TextDataset``) tokenized (``archlab.text.encode_for_spec``) by the run's own
    tokenizers when ``run_dir`` is given, else by new ones trained on its train split."""
    from archlab.data import TextDataset

    if not isinstance(dataset, TextDataset):
        return dataset
    from archlab.text import Tokenizers, encode_for_spec

    tokenizers = Tokenizers.load(run_dir) if run_dir is not None else None
    return encode_for_spec(dataset, parsed, task.name, recipe.tokenizer, tokenizers)


def _fit_and_record(spec: Spec, recipe: Recipe, parsed: Any, dataset: Any, task: TaskKind, run_dir: Path | None,
                    resume: bool, verbose: int, callbacks: Sequence[Callback] = (),
                    train_rows: TrainRows | None = None, sample_weight: torch.Tensor | None = None) -> TrainResult:
    data = prepare_splits(dataset, recipe, task, parsed, test=True, stream=True, train_rows=train_rows)
    fitted = fit_spec(spec, recipe, task, data, callbacks=callbacks, run_dir=run_dir, resume=resume, verbose=verbose,
                      sample_weight=sample_weight)
    if run_dir is not None:
        _record_evaluation(run_dir, spec.name, dataset, "evaluation-test", "test", "final", fitted.test_metrics,
                           fitted.test_outputs, data.y_test, task, getattr(dataset, "groups_test", None))
    summary = finish_run(run_dir, spec, fitted.engine, fitted.history, fitted.seconds, data=dataset.name,
                         source=dataset.source, test_metrics=fitted.test_metrics, classes=dataset.classes,
                         sizes={"train_samples": len(data.y), "val_samples": len(data.y_val),
                                "test_samples": dataset.test_samples},
                         oov=getattr(dataset, "oov", None),
                         text=dataset.summary() if hasattr(dataset, "tokenizers") else None,
                         loading={"data_loading": fitted.data_loading,
                                  "data_loading_reason": fitted.data_loading_reason,
                                  "workers": recipe.workers if fitted.data_loading == "stream" else 0})
    return TrainResult(run_dir, fitted.history, fitted.test_metrics, summary, recipe)


def _recipe_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def _extend_recipe(run_dir: Path, recipe: Recipe, epochs: int | None) -> Recipe:
    """The recipe of a run resumed with ``--epochs N``: N epochs in all, where that continues exactly
    as an uninterrupted N-epoch run would.

    A schedule whose rate follows the epoch count (cosine, one-cycle) has annealed over the old
    count, and a run stopped early decided it had trained enough: both are refused rather than
    continued into something no single run would have done.
    """
    if epochs is None or epochs == recipe.epochs:
        return recipe
    meta = checkpoint_metadata(run_dir / "last.safetensors")
    done = int(meta.get("epoch", 0))
    where = f"--epochs {epochs} with --resume {run_dir}"
    if epochs <= done:
        raise RunError(f"{where}: the run has already trained {done} epoch(s); give more than {done} to extend it")
    if recipe.schedule.name in ("cosine", "one_cycle", "cyclic_cosine"):
        raise RunError(f"{where}: the run's {recipe.schedule.name} schedule spans its {recipe.epochs} epochs (the "
                       "learning rate follows the epoch count), so more epochs would not continue it as one "
                       f"{epochs}-epoch run; train a new run with --epochs {epochs}")
    if meta.get("stopped"):
        if recipe.early_stopping is None:  # only a user's callback stops a run without early stopping
            raise RunError(f"{where}: the run stopped early at epoch {done} (a callback asked it to stop); train a "
                           f"new run with --epochs {epochs} instead")
        raise RunError(f"{where}: the run stopped early at epoch {done} ({recipe.early_stopping.monitor} did "
                       "not improve); train a new run with more patience instead")
    return recipe.model_copy(update={"epochs": epochs})


def load_run(run_dir: str | Path) -> tuple[Spec, Recipe]:
    """The spec and recipe a run was trained with."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is not a run directory (archlab train writes runs/<name>-<timestamp>/)")
    missing = [f for f in ("spec.yaml", "recipe.yaml") if not (run_dir / f).is_file()]
    if missing and (run_dir / "model.onnx").is_file():  # the int8 model folder that archlab compress writes
        raise RunError(f"{run_dir} holds an ONNX model, not a PyTorch run (like the int8 model that archlab "
                       "compress --quantize writes): there are no weights for evaluate, predict, export, shrink or "
                       f"compress to load. Time it with archlab bench {run_dir}; compress measured its test "
                       "accuracy in compression.md")
    if missing and (run_dir / "ensemble.json").is_file():  # _ensemble_run.is_ensemble: evaluate, predict,
        # summary and export take one; the commands that need a single model reach here
        raise RunError(f"{run_dir} is an ensemble directory, not one run: evaluate, predict, summary and export take "
                       f"it; bench its export (archlab export {run_dir}, then archlab bench "
                       f"{run_dir / 'export' / 'model.onnx'}), and give other commands a member run "
                       f"({run_dir / 'members'}/...)")
    if missing:
        raise RunError(f"{run_dir} is missing {', '.join(missing)}: it is not a complete archlab run")
    spec = load(run_dir / "spec.yaml")
    path = run_dir / "recipe.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return spec, Recipe.model_validate(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        raise RunError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', None) or exc}); archlab train "
                       "wrote it: restore it, or train the run again") from None
    except (ValidationError, UnicodeDecodeError) as exc:
        detail = exc.errors()[0] if isinstance(exc, ValidationError) else None
        what = (f"{'.'.join(map(str, detail['loc'])) or 'the file'}: {detail['msg']}" if detail else str(exc))
        raise RunError(f"{path} is not a recipe archlab wrote ({what}); restore it, or train the run again") from None


@dataclass
class RestoredRun:
    """A trained run read back: its spec, recipe (metrics filtered by ``run_task``), task, and the
    model with the run's weights; ``head`` is the final activation split off (None for a full model)."""

    spec: Spec
    recipe: Recipe
    task: TaskKind
    model: ArchlabModel
    head: str | None


def restore_run(run_dir: str | Path, weights: str = "best", *, logits: bool = True) -> RestoredRun:
    """The one way a run directory is read back for use (evaluate, predict, export, bench, shrink,
    compress). ``logits``: the training form, final softmax/sigmoid split off (``prepare_model``);
    else the full model the spec describes, in eval mode, as export writes it. ``weights``: best or
    last (the commands' choice), or the stem of another weights file the run holds (a snapshot
    ensemble's ``snapshot-3``).

    Raises:
        RunError: a missing spec.yaml, recipe.yaml or weights file, or weights that do not match the spec.
    """
    run_dir = Path(run_dir)
    if weights not in WEIGHTS and not (re.fullmatch(r"[A-Za-z0-9_-]+", weights)
                                       and (run_dir / f"{weights}.safetensors").is_file()):
        raise SpecError(f"--weights is best or last, got {weights!r}{suggest(weights, WEIGHTS)} (a snapshot's "
                        f"stem, like snapshot-3, names a .safetensors file of the run; {run_dir} holds no "
                        f"{weights}.safetensors)")
    spec, recipe = load_run(run_dir)
    task, recipe = run_task(spec, recipe)
    if logits:
        model, head = prepare_model(spec, recipe, task)
    else:  # unseeded: reading a run must not move the global RNG of a caller that trains next
        model, head = build_parsed(parse(spec)), None
    load_weights(run_dir / f"{weights}.safetensors", model)
    return RestoredRun(spec, recipe, task, model if logits else model.eval(), head)


SPLITS = ("test", "train")
WEIGHTS = ("best", "last")


def evaluation_name(run_data: str | None, data: str, split: str, weights: str) -> str:
    """The file stem of an evaluation, unique per (data, split, weights), so that no evaluation
    overwrites another or the one training wrote (``evaluation-test``, its final weights).

    Example:
        >>> evaluation_name("digits", "digits", "test", "best")
        'evaluation-test-best'
        >>> evaluation_name("mnist", "csv:/tmp/rows.csv?target=y", "train", "last")
        'evaluation-train-last-csv-rows'
    """
    stem = f"evaluation-{split}-{weights}"
    if data == run_data:
        return stem
    kind, _, argument = data.partition(":")
    tag = f"{kind}-{Path(argument.split('?')[0]).stem}" if argument else kind
    return f"{stem}-{re.sub(r'[^A-Za-z0-9_.]+', '-', tag).strip('-')}"


def evaluate_run(run_dir: str | Path, *, data: str | None = None, split: str = "test", weights: str = "best",
                 data_dir: str | Path | None = None, beam_size: int = 1, corrupt: str | Sequence[str] = (),
                 seed: int = 0) -> dict[str, Any]:
    """Metrics and a confusion matrix of a trained run on a split; written to the run directory
    as ``<evaluation_name>.json`` and, for classification, its ``confusion-...png``. A task whose
    metrics need decoded outputs (seq2seq's BLEU and chrF) decodes the split, greedily or with
    ``beam_size``.

    ``split`` is ``test`` or ``train``; a text data set also takes its own splits by name
    (Multi30k's ``val``, ``test_2016_flickr``, ``test_2017_flickr``...; ``test`` is its usual one).

    ``corrupt``: conditions ``NAME=MODE`` (that input of every sample corrupted, ``_corrupt.corrupt``:
    ``zero`` or ``noise``) or ``MODE`` (each input in turn); the result then has ``robustness``:
    ``seed`` (of the noise) and ``conditions``, the metrics by condition, ``clean`` first.

    An ensemble directory (``ensemble.json``) is evaluated by ``evaluate_ensemble``: its metrics
    beside each member's; ``corrupt`` and ``beam_size`` are refused for it.
    """
    _check_text_options({"beam_size": beam_size})
    from archlab.data import TextDataset, load_dataset

    from . import _ensemble_run  # it builds on this module: imported when called, not at the top

    if _ensemble_run.is_ensemble(run_dir):
        refused = [flag for flag, given in (("--corrupt", bool(corrupt)), ("--beam", beam_size != 1)) if given]
        if refused:
            raise SpecError(f"{' and '.join(refused)} apply to one run, not an ensemble ({run_dir}): evaluate a "
                            f"member run (under {Path(run_dir) / 'members'}) with {refused[0]}, or drop it")
        return _ensemble_run.evaluate_ensemble(run_dir, data=data, split=split, weights=weights, data_dir=data_dir)

    if weights not in WEIGHTS:
        raise SpecError(f"--weights is best or last, got {weights!r}{suggest(weights, WEIGHTS)}")
    run_dir = Path(run_dir)
    run_spec, recipe = load_run(run_dir)
    text = _is_text_run(run_dir)
    conditions = _corruptions([corrupt] if isinstance(corrupt, str) else list(corrupt), run_spec, text)
    if split not in SPLITS and not text:  # only a text data set has named splits: refused before any loading
        _unknown_split(split, data or recipe.data, ())
    loaded = load_dataset(data or recipe.data, data_dir)
    # a text data set's splits are known once its files are read: before the weights and the encoding
    named = [s for s in loaded.splits if s not in SPLITS] if isinstance(loaded, TextDataset) else []
    if split not in (*SPLITS, *named):
        _unknown_split(split, loaded.name, named)
    run = restore_run(run_dir, weights)
    spec, recipe, model, task, head = run.spec, run.recipe, run.model, run.task, run.head
    parsed = parse(spec)
    dataset = as_arrays(loaded, parsed, task, recipe, run_dir)
    check_fit(parsed, dataset, task)
    groups = None
    if split in named:
        x, y = dataset.splits[split].inputs, dataset.splits[split].y
    else:
        x, y = (dataset.x_test, dataset.y_test) if split == "test" else (dataset.x_train, dataset.y_train)
        groups = getattr(dataset, f"groups_{split}", None)
    x = model_inputs(parsed, x, dataset.name)
    # evaluation always reports the task's evaluation metrics beside the recipe's
    recorded = task.default_metrics if recipe.metrics is None else recipe.metrics
    recipe = recipe.model_copy(update={"metrics": sorted(set(recorded) | set(task.evaluation_metrics))})
    engine = Engine(model, recipe, task, verbose=0, output_activation=head)
    xt, yt = to_tensors(x, y, task)
    values, out = engine.evaluate(xt, yt)
    if hasattr(dataset, "test_splits"):  # a text data set: the split by its own name
        named_split = dataset.test_splits[0] if split == "test" else split
        values.update(task.decoded_metrics(engine.model.eval(), dataset, named_split, beam_size=beam_size))
    robust = None
    if conditions:
        robust = {"seed": seed, "conditions": robustness(lambda xc, yc: engine.evaluate(xc, yc)[0], xt, yt,
                                                        conditions, seed, values)}
    stem = evaluation_name(recipe.data, dataset.name, split, weights)
    return _record_evaluation(run_dir, spec.name, dataset, stem, split, weights, values, out, yt, task, groups,
                              robust)


def _corruptions(values: list[str], spec: Spec, text: bool) -> list[tuple[str, str]]:
    """``evaluate --corrupt``'s conditions (``corruption_conditions``), checked against the run's
    inputs before any data is read."""
    if not values:
        return []
    if text:
        raise SpecError("--corrupt is for runs on arrays (images, audio, tabular inputs); a text run's metrics are "
                        "decoded from its sentences: drop --corrupt")
    inputs = _declared_integer_inputs(spec)
    conditions = corruption_conditions(values, list(inputs))
    check_conditions(conditions, inputs)
    return conditions


def _unknown_split(split: str, data: str | None, named: Sequence[str]) -> None:
    valid = (*SPLITS, *named)
    raise SpecError(f"--split {split!r}: {data} has the splits {', '.join(valid)}{suggest(split, valid)}")


def _is_text_run(run_dir: Path) -> bool:
    """A run of a text task: it holds the tokenizer it was trained with (``Tokenizers.save``)."""
    from archlab.text import Tokenizers

    return Tokenizers.saved_in(run_dir)


def _record_evaluation(run_dir: Path, name: str, dataset: Any, stem: str, split: str, weights: str, values: dict,
                       out: torch.Tensor, y: torch.Tensor, task: TaskKind,
                       groups: np.ndarray | None = None, robust: dict[str, Any] | None = None,
                       extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``<stem>.json`` with the task's artefacts (a confusion matrix, per-label F1) and its figures
    as ``<prefix><stem without 'evaluation'>.png`` (``confusion-test-best.png``, ``roc-test.png``);
    with the split's ``groups`` (one per row: FSDD's speakers), ``groups``: each group's samples and
    headline metric (accuracy for classification) on its rows alone; ``robust``, as ``robustness``
    (``evaluate_run``'s corrupted inputs); ``extra``: further fields (an ensemble's members)."""
    result: dict[str, Any] = {"run": str(run_dir), "data": dataset.name, "split": split, "weights": weights,
                              "samples": len(y), "metrics": values, "files": [f"{stem}.json"]}
    if robust is not None:
        result["robustness"] = robust
    if groups is not None:
        headline, scores = task.headline_metric, {}
        for group in np.unique(groups):
            rows = torch.from_numpy(np.flatnonzero(groups == group))
            part = task.predictions(out[rows.to(out.device)], y[rows.to(y.device)])
            scores[str(group)] = {"samples": len(rows), headline: score(part, [headline])[headline]}
        result["groups"] = scores
    headline = next((m for m in task.evaluation_metrics if m in values), "loss")
    title = f"{name}: {dataset.name} {split}, {headline} {values[headline]:.4f}"
    fields, figures = task.artefacts(task.predictions(out, y), list(dataset.classes) if dataset.classes else None,
                                     title)
    result.update(fields)
    result.update(extra or {})
    for prefix, figure in figures.items():
        picture = f"{prefix}{stem.removeprefix('evaluation')}.png"
        save_figure(figure, run_dir / picture)
        result["files"].append(picture)
    atomic_write_text(run_dir / f"{stem}.json", json.dumps(result, indent=2))
    return result


def read_input(path: str | Path, shape: tuple[int, ...], data: str | None = None) -> np.ndarray:
    """One sample (or a batch) for predict, as the model takes it.

    Scales: an image (.png, .jpg, .bmp) is converted to grayscale or RGB by the spec's channels,
    resized to the input's height and width (with a warning that names both sizes) and scaled
    from 0-255 to [0, 1], as archlab's image data sets are. A ``.wav`` recording, for a waveform
    input ``(samples,)``, is made as the run's audio data set ``data`` made its samples
    (``_read_wav``). ``.npy`` arrays and CSV rows are used as they are: give them on the scale the
    model was trained on.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"input file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False).astype(np.float32)
        except (ValueError, OSError, EOFError) as exc:
            raise SpecError(f"{path}: not a readable .npy array of numbers ({exc})") from None
    elif suffix in (".png", ".jpg", ".jpeg", ".bmp"):
        array = _read_image(path, shape)
    elif suffix in (".csv", ".txt"):
        array = _read_csv_rows(path)
    elif suffix == ".wav":
        array = _read_wav(path, shape, data)
    elif suffix in _OTHER_AUDIO:
        raise SpecError(f"cannot read {path.name}: archlab reads WAV recordings only, as its audio data sets do; "
                        f"convert it, e.g. 'ffmpeg -i {path.name} {path.stem}.wav'")
    else:
        raise SpecError(f"cannot read {path.name}: predict takes .npy, .png/.jpg, a .csv row or a .wav recording")
    size = int(np.prod(shape))
    if array.size == 0 or array.size % size:
        raise SpecError(f"{path.name} holds {array.size} values, not a multiple of the input {shape} ({size} values)")
    return array.reshape(-1, *shape)


def read_inputs(path: str | Path, parsed: Any, data: str | None = None) -> np.ndarray | dict[str, np.ndarray]:
    """Samples for predict as the spec's model takes them: ``read_input`` for a spec with one
    input (``data``: the run's data set, which says how a recording is made); for the graph
    form's several inputs an ``.npz`` with one array per input, named as the input (or
    ``x/<name>``, as the npz data sets name them), each (N, *shape) or one sample."""
    names = list(parsed.raw_inputs)
    if len(names) == 1:
        x = read_input(path, tuple(parsed.raw_inputs[names[0]].shape), data)
        return {names[0]: x} if parsed.is_graph else x
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"input file {str(path)!r} does not exist")
    if path.suffix.lower() != ".npz":
        raise SpecError(f"the spec takes the inputs {', '.join(names)}: give them as one .npz file with an array "
                        f"per input (np.savez(path, {', '.join(f'{n}=...' for n in names)})), not {path.name}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            held = {key.removeprefix("x/"): key for key in archive.files}
            missing = [n for n in names if n not in held]
            if missing:
                raise SpecError(f"{path.name} lacks the input(s) {', '.join(missing)}; it holds "
                                f"{', '.join(archive.files) or 'no arrays'}: save one array per input, named as "
                                f"the spec's inputs ({', '.join(names)})")
            arrays = {n: archive[held[n]] for n in names}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise SpecError(f"{path}: not a readable .npz file of numeric arrays ({exc})") from None
    inputs, rows = {}, set()
    for name, array in arrays.items():
        shape = tuple(parsed.raw_inputs[name].shape)
        size = int(np.prod(shape))
        if array.dtype.kind not in "biuf" or array.size == 0 or array.size % size:
            raise SpecError(f"{path.name}: array {name!r} holds {array.size} values of {array.dtype}, not numbers "
                            f"in a multiple of the input {shape} ({size} values)")
        inputs[name] = array.reshape(-1, *shape)
        rows.add(len(inputs[name]))
    if len(rows) > 1:
        raise SpecError(f"{path.name}: the inputs hold different numbers of samples "
                        f"({', '.join(f'{n}: {len(a)}' for n, a in inputs.items())}); give each the same")
    return inputs


def _read_image(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if len(shape) != 3:
        raise SpecError(f"an image input needs a spec with an image input (C, H, W); this one takes {shape}")
    channels, height, width = shape
    try:
        with Image.open(path) as opened:
            image = opened.convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise SpecError(f"{path}: not an image PIL can read ({exc}); give a .png/.jpg image, a .npy array "
                        "or a .csv row") from None
    if image.size != (width, height):
        warnings.warn(f"{path.name}: resized from {image.size[0]}x{image.size[1]} to {width}x{height} (width x "
                      "height), the spec's input", stacklevel=3)
        image = image.resize((width, height))
    array = np.asarray(image, dtype=np.float32) / 255.0
    return array[None] if channels == 1 else array.transpose(2, 0, 1)  # (H, W) -> (1, H, W); (H, W, C) -> (C, H, W)


#: Audio files that the audio data sets do not read either (they decode WAV with scipy).
_OTHER_AUDIO = (".flac", ".ogg", ".mp3", ".m4a", ".opus")
_WAV_FIX = "give it as a PCM or float WAV file (re-export it, e.g. 'ffmpeg -i IN OUT.wav')"


def _read_wav(path: Path, shape: tuple[int, ...], data: str | None) -> np.ndarray:
    """A recording as the run's audio data set made its samples, by the data side's own steps: decoded to mono
    in [-1, 1], resampled to the run's rate (its data's ``rate=``, else the source's default), then cut or
    zero-padded to the spec's input length; a warning names both rates, or both lengths, when it changes them.
    A run whose data is not an audio source records no rate: the file's own is kept."""
    from archlab.data import AudioOptions, DataError, audio_options, decode_wav, fit_length, resample

    if len(shape) != 1:
        raise SpecError(f"a .wav recording needs a spec with a waveform input (samples,); this one takes {shape}: "
                        "give a .npy array of that shape")
    samples, rate = decode_wav(path.read_bytes(), str(path), fix=_WAV_FIX)
    try:
        options = audio_options(data) if data else None
    except DataError:  # a source not registered in this process: its rate is not known
        options = None
    if options is None:
        target = rate
        warnings.warn(f"{path.name}: the run's data ({data or 'none recorded'}) is not an audio source and gives no "
                      f"sample rate; the recording is used at its own {rate} Hz", stacklevel=3)
    else:
        target = options.rate
    if rate != target:
        warnings.warn(f"{path.name}: resampled from {rate} Hz to {target} Hz, the rate of the run's data ({data})",
                      stacklevel=3)
    samples = resample(samples, rate, target)
    length = shape[0]
    if len(samples) != length:
        how = "cut" if len(samples) > length else "zero-padded"
        warnings.warn(f"{path.name}: {how} from {len(samples)} to {length} samples ({len(samples) / target:.2f} s to "
                      f"{length / target:.2f} s at {target} Hz), the spec's input", stacklevel=3)
    return fit_length(samples, target, AudioOptions(target, length, skip_bad=False))


def _read_csv_rows(path: Path) -> np.ndarray:
    """Comma-separated rows of numbers, after an optional header row."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file of comma-separated numbers") from None
    rows = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
    values = []
    for position, (number, line) in enumerate(rows):
        try:
            values.append([float(v) for v in line.split(",")])
        except ValueError:
            if position == 0:  # a header row
                continue
            raise SpecError(f"{path}, line {number}: {line[:60]!r} is not a row of comma-separated numbers") from None
    if not values:
        raise SpecError(f"{path} holds no row of numbers (only a header, or nothing): give one sample per row")
    if len({len(v) for v in values}) > 1:
        raise SpecError(f"{path}: the rows have different lengths ({', '.join(sorted({str(len(v)) for v in values}))} "
                        "values); give one sample per row")
    return np.asarray(values, dtype=np.float32)


def predict_run(run_dir: str | Path, input_path: str | Path, *, top: int | None = None, weights: str = "best",
                beam_size: int | None = None, max_new_tokens: int | None = None, greedy: bool = False,
                temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                seed: int | None = None) -> list[dict]:
    """Top classes (``top``, default 3) with probabilities for each sample in ``input_path`` (scales:
    ``read_input``). A run of a text task (it holds its tokenizer) takes sentences: ``input_path`` is a text file of
    one per line, or the sentence itself; a seq2seq run translates each (``beam_size``), a language
    model continues each (``max_new_tokens``, ``greedy``, ``temperature`` (0 is greedy), ``top_k``,
    ``top_p``, ``seed``: ``TaskKind.predict_text``). An option the run's task does not take is
    refused, not ignored. An ensemble directory predicts through ``predict_ensemble`` (its
    combined scores, and how many members agree)."""
    options = {k: v for k, v in {"top": top, "beam_size": beam_size, "max_new_tokens": max_new_tokens,
                                 "temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed}.items()
               if v is not None}
    options |= {"greedy": True} if greedy else {}
    _check_text_options(options)
    from . import _ensemble_run  # it builds on this module: imported when called, not at the top

    if _ensemble_run.is_ensemble(run_dir):
        text = [_flag(name) for name in options if name != "top"]
        if text:
            raise SpecError(f"{', '.join(text)} apply to text runs; an ensemble ({run_dir}) predicts from arrays: "
                            "drop them")
        return _ensemble_run.predict_ensemble(run_dir, input_path, top=top, weights=weights)
    if weights not in WEIGHTS:
        raise SpecError(f"--weights is best or last, got {weights!r}{suggest(weights, WEIGHTS)}")
    run_dir = Path(run_dir)
    text = _is_text_run(run_dir)
    task = run_task(*load_run(run_dir))[0]
    taken = task.text_options if text else ("top",)
    wrong = [name for name in options if name not in taken]
    if wrong:
        what = f"a {task.name} run" + ("" if text else " (it predicts from arrays)")
        fits = f"; it takes {', '.join(map(_flag, taken))}" if taken else ""
        raise SpecError(f"{', '.join(map(_flag, wrong))} {'does' if len(wrong) == 1 else 'do'} not apply to "
                        f"{what}{fits}: drop {'it' if len(wrong) == 1 else 'them'}")
    run = restore_run(run_dir, weights)
    spec, recipe, model, task, head = run.spec, run.recipe, run.model, run.task, run.head
    parsed = parse(spec)
    if text:  # a text task: sentences in
        from archlab.text import Tokenizers

        path = Path(input_path)
        sentences = ([line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
                     if path.is_file() else [str(input_path)])
        return task.predict_text(model.eval(), Tokenizers.load(run_dir), sentences, parsed, **options)
    top = options.get("top", 3)
    x = model_inputs(parsed, read_inputs(input_path, parsed, recipe.data), str(input_path))
    engine = Engine(model, recipe, task, verbose=0, output_activation=head)
    scores = engine.probabilities(map_inputs(lambda a: torch.from_numpy(np.ascontiguousarray(a)), x)).cpu().numpy()
    classes = _classes_of(run_dir, recipe.data, scores.shape[-1])
    return [task.describe_prediction(row, classes, top) for row in scores]


def _flag(option: str) -> str:
    """The command-line option of a ``predict_run`` keyword."""
    return "--beam" if option == "beam_size" else "--" + option.replace("_", "-")


def _check_text_options(options: dict[str, Any]) -> None:
    """Bad decoding and sampling values, refused by their option's name before the run is read."""
    limits = {"top": (lambda v: v >= 1, "1 or more (how many classes to show)"),
              "beam_size": (lambda v: v >= 1, "1 (greedy) or more"),
              "max_new_tokens": (lambda v: v >= 1, "1 or more"),
              "temperature": (lambda v: v >= 0, "0 (greedy) or more"),
              "top_k": (lambda v: v >= 1, "1 or more (the likeliest tokens kept)"),
              "top_p": (lambda v: 0 < v <= 1, "in (0, 1] (the probability mass kept)")}
    for name, (ok, what) in limits.items():
        if name in options and not ok(options[name]):
            raise SpecError(f"{_flag(name)} is {what}, got {options[name]}")


def _classes_of(run_dir: Path, data: str | None, count: int) -> list[str]:
    """Class names of the data the run was trained on: from training's evaluation, else from an
    evaluation on that data (never one on other data, whose classes may differ), else the
    indices as text. summary.json is not needed."""
    own = ["evaluation-test"] + [evaluation_name(data, data or "", s, w) for s in SPLITS for w in WEIGHTS]
    for path in (run_dir / f"{stem}.json" for stem in own):
        if path.is_file():
            try:
                classes = json.loads(path.read_text(encoding="utf-8")).get("classes")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
                raise RunError(f"{path} is not valid JSON ({exc}); delete it (archlab evaluate writes it again)") \
                    from None
            if classes and len(classes) == count:
                return [str(c) for c in classes]
    return [str(i) for i in range(count)]
