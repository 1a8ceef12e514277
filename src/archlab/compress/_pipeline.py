"""compress(): a trained run through a chain of compression steps, each model measured side by side.

Every step takes the previous model (spec + weights) and returns the next; PyTorch steps are
fine-tuned after. Each model is written to its own run-like directory in the output folder (so
``archlab evaluate/export/bench`` work on it) and, at the end, all of them are measured in this one
process: the task's headline test metric (accuracy, auc, micro_f1, mse), size, FLOPs, file size
and latency at batch 1 and 256, interleaved. The source run is only read.
"""

from __future__ import annotations

import gzip
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from archlab._inputs import is_named, map_inputs, num_rows
from archlab._paths import check_out_dir
from archlab.exceptions import SpecError
from archlab.spec import Spec, dump, load
from archlab.tasks import TaskKind, as_task, direction_of

__all__ = ["STEP_KINDS", "CompressResult", "CompressStep", "compress"]

STEP_KINDS = ("prune-structured", "prune-unstructured", "quantize", "distill", "lowrank")


@dataclass(frozen=True)
class CompressStep:
    """One step as given on the command line: ``--prune-structured 0.3`` is ("prune-structured", 0.3)."""

    kind: str
    value: Any

    def __str__(self) -> str:
        return f"{self.kind} {self.value}"


@dataclass
class _Model:
    """A model between steps: a spec and PyTorch weights, or an int8 ONNX file."""

    name: str
    spec: Spec
    state: dict[str, torch.Tensor] | None
    directory: Path | None = None
    onnx_int8: Path | None = None
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class CompressResult:
    out_dir: Path
    rows: list[dict[str, Any]]
    final_dir: Path | None


def check_steps(steps: list[CompressStep], spec: Spec) -> None:
    """Every step's value, and the order, before any work starts."""
    from archlab.deploy import check_quantizable

    if not steps:
        raise ValueError("no compression step given: add --prune-structured R, --prune-unstructured R, "
                         "--quantize dynamic|static, --distill-from RUN or --lowrank RANK")
    for i, step in enumerate(steps):
        if step.kind not in STEP_KINDS:
            raise ValueError(f"unknown step {step.kind!r}; steps: {', '.join(STEP_KINDS)}")
        if step.kind.startswith("prune") and not (isinstance(step.value, float) and 0 < step.value < 1):
            raise ValueError(f"--{step.kind} takes the fraction to remove, in (0, 1); got {step.value!r}")
        if step.kind == "lowrank" and not (isinstance(step.value, int) and step.value >= 1):
            raise ValueError(f"--lowrank takes a rank of 1 or more, got {step.value!r}")
        if step.kind == "quantize":
            if step.value not in ("dynamic", "static"):
                raise ValueError(f"--quantize is dynamic or static, got {step.value!r}")
            if i != len(steps) - 1:
                raise ValueError(f"--quantize must be the last step (it is step {i + 1} of {len(steps)}): the steps "
                                 "after it train PyTorch weights, and an int8 ONNX model cannot be trained")
            check_quantizable(spec, step.value)


def compress(run_dir: str | Path, steps: list[CompressStep], *, data: str | None = None,
             data_dir: str | Path | None = None, out: str | Path = "runs", finetune_epochs: int = 1,
             global_unstructured: bool = False, channel_multiple: int = 1, student: str | Path | dict | None = None,
             temperature: float = 4.0, alpha: float = 0.5, distill_epochs: int | None = None,
             calibration_samples: int = 512, train_samples: int | None = None, weights: str = "best",
             batch_sizes: tuple[int, ...] = (1, 256), on_event: Callable[[str], None] | None = None,
             batch_size: int | None = None) -> CompressResult:
    """Compress a trained run with ``steps`` in order and measure every model.

    Args:
        run_dir: a run written by ``archlab train`` (only read).
        steps: ``CompressStep``s; ``quantize`` must be last.
        out: the folder that receives ``compress-<name>-<timestamp>/`` (default ``runs``); nothing else
            is written.
        finetune_epochs: epochs of the run's recipe after each PyTorch step (0: none).
        global_unstructured: rank weights across layers for ``prune-unstructured``.
        channel_multiple: ``prune-structured`` keeps a multiple of this many outputs per layer.
        student, temperature, alpha, distill_epochs: for ``distill`` (value: the teacher run): the
            student spec (default: the current model's spec, re-initialised) and its epochs (default:
            the student's recipe epochs).
        calibration_samples: training samples that calibrate static quantization.
        train_samples: fine-tune and distill on the first N training samples only, to bound time.
        batch_size: the batch for fine-tuning and distillation (default: the recipe's); each model
            folder keeps the source run's recipe.
        on_event: called with a line per stage, for progress output.
    """
    from archlab.builder import parse
    from archlab.data import load_dataset
    from archlab.training import (
        check_fit,
        check_memory,
        load_run,
        new_run_dir,
        pick_device,
        prepare_splits,
        run_task,
    )

    say = on_event or (lambda line: None)
    check_out_dir(out)
    run_dir = Path(run_dir)
    run_spec, run_recipe = load_run(run_dir)  # fine-tuning and distilling train: check they fit before any work
    check_memory(run_spec, run_recipe, pick_device(run_recipe.device), what="fine-tuning")
    if student is not None:
        check_memory(load(student), run_recipe, pick_device(run_recipe.device), what="distillation")
    spec, recipe, model = _trained(run_dir, weights, "")
    original = _Model("original", spec, _state(model))
    check_steps(steps, spec)
    if finetune_epochs < 0:
        raise ValueError(f"--finetune-epochs is 0 or more, got {finetune_epochs}")
    if channel_multiple < 1:
        raise ValueError(f"--channel-multiple is 1 or more, got {channel_multiple}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"--batch-size must be a positive number, got {batch_size}")
    tune = {} if batch_size is None else {"batch_size": batch_size}
    teachers = {str(s.value): _trained(Path(s.value), "best", "--distill-from: ")[2]
                for s in steps if s.kind == "distill"}
    student_spec = load(student) if student is not None else None
    if student_spec is not None and any(s.kind == "distill" for s in steps):
        check_steps(steps, student_spec)  # a later --quantize works on the student's layers
    dataset = load_dataset(data or recipe.data, data_dir)
    task, recipe = run_task(spec, recipe)
    parsed = parse(spec)
    check_fit(parsed, dataset, task)
    if student_spec is not None:
        check_fit(parse(student_spec), dataset, task)
    tensors = prepare_splits(dataset, recipe, task, parsed, train_samples=train_samples)

    out_dir = new_run_dir(out, f"compress-{spec.name}")
    models = [original]
    original.directory = _write_model(out_dir / "0-original", original, recipe, run_dir)
    current = original
    for i, step in enumerate(steps, start=1):
        began = time.perf_counter()
        say(f"step {i}/{len(steps)}: {step}")
        name = f"{i}-{step.kind}"
        if step.kind == "quantize":
            calibration = map_inputs(lambda t: t[:calibration_samples].numpy(), tensors.x)
            current = _quantize(current, step.value, out_dir / name, calibration, name)
        elif step.kind == "distill":
            current = _distill(current, teachers[str(step.value)], student_spec, recipe, task, tensors, name,
                               temperature=temperature, alpha=alpha, epochs=distill_epochs, tune=tune)
        else:
            current = _transform(current, step, recipe.model_copy(update=tune), task, tensors, finetune_epochs,
                                 global_unstructured, channel_multiple, name)
        current.notes["seconds"] = round(time.perf_counter() - began, 1)
        if current.onnx_int8 is None:
            current.directory = _write_model(out_dir / name, current, recipe, run_dir)
        models.append(current)
    say("measuring every model (test metric, size, latency)")
    rows = measure_models(models, dataset.x_test, dataset.y_test, out_dir, batch_sizes, task=task)
    _write_report(out_dir, run_dir, steps, rows, batch_size or recipe.batch_size)
    final = models[-1].directory if models[-1].onnx_int8 is None else models[-1].onnx_int8.parent
    return CompressResult(out_dir, rows, final)


# -- loading --------------------------------------------------------------------------------------
def _trained(run_dir: Path, weights: str, role: str) -> tuple[Spec, Any, nn.Module]:
    """(spec, recipe, full model with the run's weights); a run without those weights is named as such."""
    from archlab.training import RunError, restore_run

    path = run_dir / f"{weights}.safetensors"
    if (run_dir / "spec.yaml").is_file() and not path.is_file():
        raise RunError(f"{role}{path} does not exist: compress needs a trained run (archlab train writes "
                       f"{weights}.safetensors)")
    run = restore_run(run_dir, weights, logits=False)
    return run.spec, run.recipe, run.model


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _module(m: _Model) -> nn.Module:
    """The full model (final softmax included), as the spec says, with the step's weights."""
    from archlab.builder import build_parsed, parse

    model = build_parsed(parse(m.spec))
    model.load_state_dict(m.state)
    return model.eval()


def _write_model(directory: Path, m: _Model, recipe: Any, source: Path) -> Path:
    """A run-like directory (spec, recipe, weights), so archlab evaluate/export/bench take it."""
    from archlab.training import atomic_write_text, write_run

    write_run(directory, m.spec, recipe, _module(m))
    atomic_write_text(directory / "compress.json", json.dumps({"source": str(source), "model": m.name,
                                                               **{k: v for k, v in m.notes.items()}}, indent=2,
                                                              default=str))
    return directory


# -- the steps ------------------------------------------------------------------------------------
def _finetune(spec: Spec, model: nn.Module, recipe: Any, task: TaskKind, tensors: Any, epochs: int) -> None:
    """``epochs`` of the run's recipe from the current weights (no early stopping: a fixed budget)."""
    from archlab.training import fit_spec

    if epochs == 0:
        return
    ft = recipe.model_copy(update={"epochs": epochs, "early_stopping": None})
    fit_spec(spec, ft, task, tensors, model=model)


def kept_channels(width: int, ratio: float, multiple: int = 1) -> int:
    """How many outputs a layer keeps when ``ratio`` of them go, rounded to the nearest multiple of
    ``multiple`` (never 0, never more than it had). Kernels block channels: ONNX Runtime's
    convolutions on AVX-512 CPUs work in blocks of 16, and 44 channels ran slower there than 64,
    while 48 ran 2.6x faster (docs/compress.md).

    Example:
        >>> kept_channels(64, 0.3), kept_channels(64, 0.3, 16), kept_channels(32, 0.3, 16)
        (45, 48, 16)
    """
    kept = max(1, round(width * (1 - ratio)))
    if multiple > 1:
        kept = min(width, max(multiple, multiple * round(kept / multiple)))
    return kept


def _transform(current: _Model, step: CompressStep, recipe: Any, task: TaskKind, tensors: Any, finetune_epochs: int,
               global_unstructured: bool, channel_multiple: int, name: str) -> _Model:
    from archlab.builder import build_parsed, parse

    from ._lowrank import lowrank
    from ._structured import prunable_layers, prune_channels
    from ._unstructured import prune_unstructured

    notes: dict[str, Any] = {"step": str(step)}
    if step.kind == "prune-structured":
        keep = {path: kept_channels(width, step.value, channel_multiple)
                for path, width in prunable_layers(current.spec).items()}
        spec, state = prune_channels(current.spec, current.state, keep=keep)
        notes["kept"] = keep
    elif step.kind == "lowrank":
        spec, state, report = lowrank(current.spec, current.state, step.value)
        if not report.layers:
            raise SpecError(f"--lowrank {step.value}: no dense layer gets smaller at rank {step.value} "
                            f"({'; '.join(f'{p}: {why}' for p, why in report.skipped.items()) or 'no dense layers'})")
        notes["factored"] = [f"{f.path} {f.in_features}x{f.out_features} -> rank {f.rank}" for f in report.layers]
    else:
        spec, state = current.spec, current.state
    model = build_parsed(parse(spec))
    model.load_state_dict(state)
    if step.kind == "prune-unstructured":
        prune_unstructured(model, step.value, global_=global_unstructured)
        masks = _freeze_zeros(model)
        _finetune(spec, model, recipe, task, tensors, finetune_epochs)
        _remove_masks(masks)
        notes["sparsity"] = _sparsity(model)
    else:
        _finetune(spec, model, recipe, task, tensors, finetune_epochs)
    # _finetune split the softmax (sigmoid) off for the loss; rebuild from the spec so the weights load anywhere
    return _Model(name, spec, _state(model), notes=notes)


def _freeze_zeros(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """Keep pruned weights at zero while fine-tuning (torch's pruning masks), else they grow back."""
    from torch.nn.utils import prune

    masked = []
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if param.dim() >= 2 and bool((param == 0).any()):
                prune.custom_from_mask(module, name, mask=(param != 0))
                masked.append((module, name))
    return masked


def _remove_masks(masked: list[tuple[nn.Module, str]]) -> None:
    from torch.nn.utils import prune

    for module, name in masked:
        prune.remove(module, name)


def _sparsity(model: nn.Module) -> dict[str, Any]:
    """The real fraction of exact zeros in every weight matrix/kernel, after fine-tuning."""
    layers = {}
    zeros = total = 0
    for key, value in model.state_dict().items():
        if key.endswith("weight") and value.dim() >= 2:
            z = int((value == 0).sum())
            layers[key] = round(z / value.numel(), 4)
            zeros, total = zeros + z, total + value.numel()
    return {"overall": round(zeros / max(total, 1), 4), "layers": layers}


def _distill(current: _Model, teacher: nn.Module, student_spec: Spec | None, recipe: Any, task: TaskKind,
             tensors: Any, name: str, *, temperature: float, alpha: float, epochs: int | None, tune: dict) -> _Model:
    from archlab.training import prepare_model, resolve_recipe

    from ._distill import distill

    spec = student_spec or current.spec
    own = resolve_recipe(spec.to_dict().get("train")) if student_spec is not None and spec.to_dict().get("train") \
        else recipe
    student_recipe = own.model_copy(update={"epochs": epochs or own.epochs, **tune})
    student, _ = prepare_model(spec, student_recipe, task)
    distill(student, teacher, tensors.x, tensors.y, tensors.x_val, tensors.y_val, student_recipe,
            temperature=temperature, alpha=alpha, task=task)
    notes = {"step": f"distill from {sum(p.numel() for p in teacher.parameters()):,}-parameter teacher",
             "temperature": temperature, "alpha": alpha, "epochs": student_recipe.epochs}
    return _Model(name, spec, _state(student), notes=notes)


def _quantize(current: _Model, mode: str, directory: Path, calibration: Any, name: str) -> _Model:
    """``calibration``: model inputs (one array or named arrays, ``model_inputs``' dtypes)."""
    from archlab.deploy import export_model, quantize_onnx

    directory.mkdir(parents=True, exist_ok=True)
    model = _module(current)
    fp32 = directory / "model-fp32.onnx"
    sample = map_inputs(lambda a: torch.from_numpy(np.ascontiguousarray(a[:8])), calibration)
    export_model(model, fp32, format="onnx", example=map_inputs(lambda t: t[:1], sample), check_inputs=sample,
                 metadata=_metadata(current))
    result = quantize_onnx(fp32, directory / "model.onnx", mode=mode, calibration=calibration, spec=current.spec)
    fp32.unlink()
    notes = {"step": f"quantize {mode}", "ops_quantized": result.ops_quantized}
    # An int8 ONNX model has no PyTorch weights, so this folder is no run: bench takes it (it reads
    # model.onnx), and the commands that load a run say why they cannot.
    (directory / "spec.yaml").write_text(dump(current.spec), encoding="utf-8")
    (directory / "compress.json").write_text(json.dumps({"model": name, "format": "onnx int8", "file": "model.onnx",
                                                         **notes}, indent=2), encoding="utf-8")
    return _Model(name, current.spec, None, onnx_int8=result.path, notes=notes)


def _metadata(m: _Model) -> dict[str, str]:
    import archlab

    return {"archlab.version": archlab.__version__, "archlab.spec": dump(m.spec), "archlab.model": m.name}


# -- measuring ------------------------------------------------------------------------------------
def measure_models(models: list[_Model], x_test: Any, y_test: np.ndarray, out_dir: Path,
                   batch_sizes: tuple[int, ...] = (1, 256), rounds: int = 5,
                   task: TaskKind | str = "classification") -> list[dict[str, Any]]:
    """One row per model, all measured here: the task's headline metric on the test split
    (``test_accuracy`` for classification; ``test_auc``, ``test_micro_f1``, ``test_mse``: the first of
    its evaluation metrics, named in ``metric``), parameters (and non-zero ones), FLOPs, ONNX
    file size (raw and gzipped), and latency in PyTorch and ONNX Runtime, with every model timed in
    turn within each round so that machine noise falls on all alike. ``x_test`` is one array or
    named arrays; each model takes the inputs its spec reads (``model_inputs``)."""
    from archlab.analysis import analyze
    from archlab.builder import parse
    from archlab.deploy import export_model, load_runner, timed_calls
    from archlab.training import model_inputs

    task = as_task(task)
    metric = task.headline_metric
    rows, runners, inputs = [], [], []
    for m in models:
        x = model_inputs(parse(m.spec), x_test)  # by name, int64 for token ids
        x = next(iter(x.values())) if is_named(x) and len(x) == 1 else x  # exported as one input "input"
        inputs.append(x)
        onnx_path = m.onnx_int8
        torch_model = None
        if onnx_path is None:
            torch_model = _module(m)
            onnx_path = m.directory / "model.onnx"
            sample = map_inputs(lambda a: torch.from_numpy(np.ascontiguousarray(a[:8])), x)
            export_model(torch_model, onnx_path, format="onnx", example=map_inputs(lambda t: t[:1], sample),
                         check_inputs=sample, metadata=_metadata(m))
        ort = load_runner(onnx_path)
        capacity = analyze(m.spec)
        nonzero = (sum(int((v != 0).sum()) for v in m.state.values() if v.is_floating_point()) if m.state
                   else None)
        raw = onnx_path.read_bytes()
        rows.append({"model": m.name, "step": m.notes.get("step", "trained run"), "params": capacity.total_params,
                     "nonzero_params": nonzero, "flops": capacity.flops, "onnx_bytes": len(raw),
                     "onnx_gzip_bytes": len(gzip.compress(raw, 6)), "format": "onnx int8" if m.onnx_int8 else "fp32",
                     "path": str(onnx_path), "notes": {k: v for k, v in m.notes.items() if k != "step"}})
        runners.append({"torch": load_runner(torch_model) if torch_model is not None else None, "onnxrt": ort})
    for row, runner, x in zip(rows, runners, inputs, strict=True):  # torch models scored in PyTorch, int8 in ORT
        row["metric"] = metric
        row[f"test_{metric}"] = _score(runner["torch"] or runner["onnxrt"], x, y_test, task, metric)
    for bs in batch_sizes:
        cycle = np.arange(bs)
        batches = [map_inputs(lambda a, c=cycle: a[c % len(a)], x) for x in inputs]  # cycled when fewer rows
        times: dict[tuple[int, str], list[float]] = {}
        for _ in range(rounds):
            for i, runner in enumerate(runners):
                for kind, fn in runner.items():
                    if fn is not None:
                        # one warm-up call, then calls for about 30 ms (at least 3): a tiny model
                        # gets many samples per round, a big one a few
                        times.setdefault((i, kind), []).extend(
                            timed_calls(fn, batches[i], warmup=1, repeats=200, max_seconds=0.03, min_repeats=3))
        for (i, kind), values in times.items():
            rows[i][f"{kind}_b{bs}_ms"] = round(statistics.median(values) * 1000, 4)
            rows[i][f"{kind}_b{bs}_p95_ms"] = round(float(np.percentile(values, 95)) * 1000, 4)
    return rows


def _score(runner: Any, x: Any, y: np.ndarray, task: TaskKind, metric: str) -> float:
    """``metric`` of the runner's outputs (the full model's: probabilities, not logits) on the split."""
    from archlab.tasks import Predictions, get_metric

    outputs = np.concatenate([runner(map_inputs(lambda a, s=start: a[s:s + 512], x))
                              for start in range(0, num_rows(x), 512)])
    y_true = task.targets(y)
    scores = outputs.reshape(y_true.shape) if outputs.size == y_true.size else outputs  # (N, 1) for (N,) targets
    return float(get_metric(metric).compute(Predictions(y_true, scores, task.labels(scores)), 5))


def _row_score(row: dict[str, Any]) -> float | None:
    """A row's headline test metric (older records: test accuracy)."""
    return row.get(f"test_{row.get('metric', 'accuracy')}")


# -- the report -----------------------------------------------------------------------------------
def _write_report(out_dir: Path, source: Path, steps: list[CompressStep], rows: list[dict], batch_size: int) -> None:
    from archlab.training import atomic_write_text

    record = {"source": str(source), "steps": [str(s) for s in steps], "threads": torch.get_num_threads(),
              "finetune_batch_size": batch_size, "models": rows}
    atomic_write_text(out_dir / "compression.json", json.dumps(record, indent=2, default=str))
    atomic_write_text(out_dir / "compression.md", markdown_report(record))
    plot_tradeoff(rows, out_dir / "tradeoff.png")


def _kb(n: int | None) -> str:
    return "" if n is None else f"{n / 1024:,.1f}"


def markdown_report(record: dict) -> str:
    rows = record["models"]
    first = rows[0]
    metric = first.get("metric", "accuracy")
    # a score (accuracy, auc, f1) moves in percentage points, an error (mse) by its own units
    points = direction_of(metric) == "max"
    name = "test acc" if metric == "accuracy" else f"test {metric}"
    lines = [f"# Compression of {record['source']}", "",
             f"Steps: {', '.join(record['steps'])}. Every model measured in one process "
             f"({record['threads']} thread(s)); latency is the median over interleaved rounds.", "",
             f"| model | format | {name} | {'Δ points' if points else 'Δ'} | params | non-zero | FLOPs | ONNX KB "
             "| gzip KB | torch b1 ms | torch b256 ms | ORT b1 ms | ORT b256 ms |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        value, base = _row_score(r), _row_score(first)
        shown, delta = ("", "") if value is None else (f"{value:.4f}", (
            "" if base is None else f"{(value - base) * (100 if points else 1):+.{2 if points else 4}f}"))
        lines.append(
            f"| {r['model']} | {r['format']} | {shown} | {delta} | {r['params']:,} | "
            f"{'' if r['nonzero_params'] is None else format(r['nonzero_params'], ',')} | {r['flops']:,} | "
            f"{_kb(r['onnx_bytes'])} | {_kb(r['onnx_gzip_bytes'])} | {r.get('torch_b1_ms', '')} | "
            f"{r.get('torch_b256_ms', '')} | {r.get('onnxrt_b1_ms', '')} | {r.get('onnxrt_b256_ms', '')} |")
    for r in rows:
        sparsity = r["notes"].get("sparsity")
        if sparsity:
            layers = ", ".join(f"{key} {value:.1%}" for key, value in sparsity["layers"].items())
            lines += ["", f"{r['model']}: {sparsity['overall']:.1%} of the weights are zero ({layers})."]
    if any(s.startswith("prune-unstructured") for s in record["steps"]):
        lines += ["", "Unstructured sparsity leaves every weight tensor its full shape: dense CPU kernels "
                  "(PyTorch's and ONNX Runtime's) multiply the zeros like any other number, so latency and the "
                  "raw file size do not fall (compare the rows above); only the gzipped file shrinks."]
    return "\n".join(lines) + "\n"


def plot_tradeoff(rows: list[dict], path: Path) -> None:
    """The headline test metric against batch-1 latency (ONNX Runtime) and against file size, one
    point per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from archlab.training import save_figure

    metric = rows[0].get("metric", "accuracy") if rows else "accuracy"
    percent = metric == "accuracy"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "onnxrt_b1_ms", "batch-1 latency, ONNX Runtime (ms)"),
                           (axes[1], "onnx_bytes", "ONNX file size (KB)")):
        for r in rows:
            value, score = r.get(key), _row_score(r)
            if value is None or score is None:
                continue
            value = value / 1024 if key == "onnx_bytes" else value
            ax.scatter(value, score * 100 if percent else score, s=50, label=r["model"],
                       marker="s" if r["format"] != "fp32" else "o")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)" if percent else f"test {metric}")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="best")
    fig.suptitle(f"compression trade-off: {metric} vs latency and size")
    fig.tight_layout()
    save_figure(fig, path)
