"""train(), evaluate_run(), predict_run(): a spec and a data set in, a run directory out."""

from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from archlab.builder import ArchlabModel, build_parsed, parse
from archlab.exceptions import SpecError
from archlab.spec import Spec, dump, load

from ._engine import Engine, History, TrainingError, glorot_init, split_output_activation
from ._metrics import confusion_matrix
from ._recipe import Recipe, resolve_recipe
from ._runs import RunError, atomic_write_text, load_weights, new_run_dir, read_metrics

__all__ = ["TrainResult", "TrainingError", "check_fit", "evaluate_run", "finish_run", "load_run", "loss_kind",
           "plot_curves", "predict_run", "prepare_model", "read_input", "read_metrics", "save_figure",
           "split_validation", "start_run", "to_tensors", "train"]


@dataclass
class TrainResult:
    run_dir: Path | None
    history: History
    test_metrics: dict[str, float]
    summary: dict[str, Any] = field(default_factory=dict)


def loss_kind(recipe: Recipe, spec: Spec, task: str) -> str:
    if recipe.loss != "auto":
        return recipe.loss
    kind = (spec.to_dict().get("task") or {}).get("kind", task)
    return {"classification": "cross_entropy", "binary": "binary_cross_entropy"}.get(kind, "mse")


def check_fit(parsed, dataset, loss: str) -> None:
    """The data must fit the spec: same input shape, as many outputs as classes."""
    if parsed.is_graph:
        raise SpecError("training takes a single-input spec; this one has the graph form with inputs "
                        f"{', '.join(parsed.inputs)}")
    spec_shape = tuple(parsed.raw_inputs["input"].shape)
    if tuple(dataset.input_shape) != spec_shape:
        raise SpecError(f"the spec's input is {spec_shape} but {dataset.name} gives samples of shape "
                        f"{tuple(dataset.input_shape)}: set input: {list(dataset.input_shape)}", "input")
    out = parsed.output_infos[0].shape
    if loss == "cross_entropy" and out != (dataset.num_classes,):
        raise SpecError(f"the model's output is {out} but {dataset.name} has {dataset.num_classes} classes: end the "
                        f"spec with dense: {{units: {dataset.num_classes}, activation: softmax}}", "layers")
    task = parsed.spec.to_dict().get("task") or {}
    if task.get("classes") not in (None, dataset.num_classes):
        raise SpecError(f"task.classes is {task['classes']} but {dataset.name} has {dataset.num_classes} classes",
                        "task.classes")


def split_validation(x: np.ndarray, y: np.ndarray, recipe: Recipe, loss: str):
    """Keras' validation_split: the last fraction, before shuffling; or a stratified split."""
    if recipe.validation_split == 0:
        return x, y, x[:0], y[:0]
    if recipe.validation == "stratified" and loss == "cross_entropy":
        from sklearn.model_selection import train_test_split

        idx = np.arange(len(x))
        train_idx, val_idx = train_test_split(idx, test_size=recipe.validation_split, stratify=y,
                                              random_state=recipe.seed)
        return x[train_idx], y[train_idx], x[val_idx], y[val_idx]
    cut = int(len(x) * (1 - recipe.validation_split))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def _ids_if_long(parsed, x: np.ndarray) -> np.ndarray:
    """Token ids for a ``dtype: long`` input: loaders give float32, embeddings need int64."""
    info = None if parsed.is_graph else parsed.raw_inputs.get("input")
    if info is None or info.dtype != "long" or x.dtype == np.int64:
        return x
    if not np.array_equal(x, np.round(x)) or (x.size and x.min() < 0):
        raise SpecError("the spec's input is dtype: long (token ids) but the data holds non-integer or negative "
                        "values; use a float input or integer ids", "input")
    return x.astype(np.int64)


def to_tensors(x: np.ndarray, y: np.ndarray, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32) if x.dtype != np.int64 else x)
    yt = torch.from_numpy(np.ascontiguousarray(y)).long() if loss == "cross_entropy" else torch.from_numpy(
        np.ascontiguousarray(y, dtype=np.float32))
    return xt, yt


def prepare_model(spec: Spec, recipe: Recipe, loss: str) -> tuple[ArchlabModel, str | None]:
    """Seeded build (so the same seed gives the same initial weights), initialisation, and the
    final activation split off for a stable loss."""
    torch.manual_seed(recipe.seed)
    model = build_parsed(parse(spec))
    if recipe.init == "glorot":
        glorot_init(model)
    return model, split_output_activation(model, loss)


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
    metric = next((k for k in ("accuracy", "macro_f1", "mse", "mae") if k in rows[0] or f"val_{k}" in rows[0]), None)
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


def start_run(spec: Spec, recipe: Recipe, out: str | Path) -> Path:
    """A new run directory holding the spec and the resolved recipe."""
    run_dir = new_run_dir(out, spec.name)
    atomic_write_text(run_dir / "spec.yaml", dump(spec))
    atomic_write_text(run_dir / "recipe.yaml", yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    return run_dir


def finish_run(run_dir: Path | None, spec: Spec, engine: Engine, history: History, wall: float, *, data: str,
               source: str, test_metrics: dict[str, float], classes: Any, sizes: dict[str, int]) -> dict[str, Any]:
    """summary.json (final metrics, wall time, speed, peak memory) and curves.png."""
    rows = engine.rows
    summary = {
        "name": spec.name, "data": data, "source": source, "device": str(engine.device),
        "precision": "bf16" if engine.bf16 else "fp32", "epochs_run": len(rows),
        "best_epoch": history.best_epoch, "stopped_early": history.stopped_early,
        "final": rows[-1] if rows else {}, "test": test_metrics, "wall_seconds": round(wall, 2),
        "train_samples_per_s": round(sizes["train_samples"] * len(rows)
                                     / max(sum(r["seconds"] for r in rows), 1e-9), 1),
        "peak_memory_bytes": _peak_memory(engine.device),
        "params": sum(p.numel() for p in engine.model.parameters()),
        "classes": list(classes) if classes else None, **sizes,
    }
    if run_dir is not None:
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
        if rows:
            plot_curves(rows, run_dir / "curves.png", f"{spec.name} on {data}")
    return summary


def train(spec: Spec | dict | str | Path | None = None, *, data: str | None = None, data_dir: str | Path | None = None,
          out: str | Path | None = "runs", resume: str | Path | None = None, verbose: int = 1,
          **overrides: Any) -> TrainResult:
    """Train a spec on a data set and record the run.

    Args:
        spec: the spec (path, text, dict or Spec); its ``train:`` section is the recipe.
        data: a data set name (``digits``, ``mnist``, ``csv:PATH``, ``npz:PATH``); overrides train.data.
        out: the folder that receives ``<name>-<timestamp>/``; None records nothing on disk.
        resume: a run directory to continue from its last checkpoint (spec and recipe are the run's).
        verbose: 0 silent, 1 progress bars, 2 one line per epoch.
        **overrides: recipe fields (epochs, batch_size, lr, seed, device, precision, ...).

    Returns:
        TrainResult with the run directory, the history and the test-split metrics.
    """
    from archlab.data import load_dataset

    if resume is not None:
        run_dir = Path(resume)
        spec, recipe = load_run(run_dir)
        if not (run_dir / "last.safetensors").is_file():
            raise RunError(f"{run_dir} has no last.safetensors: no epoch finished, so there is nothing to resume; "
                           "start the run again")
    else:
        spec = load(spec)
        recipe = resolve_recipe(spec.to_dict().get("train"), data=data, **overrides)
        run_dir = None
    if recipe.data is None:
        raise SpecError("no data set: pass --data NAME (digits, mnist, csv:PATH, npz:PATH) or set train.data",
                        "train.data")
    dataset = load_dataset(recipe.data, data_dir)
    parsed = parse(spec)
    loss = loss_kind(recipe, spec, dataset.task)
    check_fit(parsed, dataset, loss)
    if resume is None and out is not None:
        run_dir = start_run(spec, recipe, out)
    model, head = prepare_model(spec, recipe, loss)
    engine = Engine(model, recipe, loss, run_dir=run_dir, verbose=verbose, output_activation=head)
    x_train, x_test_all = _ids_if_long(parsed, dataset.x_train), _ids_if_long(parsed, dataset.x_test)
    x, y, x_val, y_val = split_validation(x_train, dataset.y_train, recipe, loss)
    xt, yt = to_tensors(x, y, loss)
    xv, yv = to_tensors(x_val, y_val, loss)
    began = time.perf_counter()
    history = engine.fit(xt, yt, xv, yv, resume=resume is not None)
    wall = time.perf_counter() - began
    x_test, y_test = to_tensors(x_test_all, dataset.y_test, loss)
    test_metrics, test_out = engine.evaluate(x_test, y_test)
    if run_dir is not None:
        _record_evaluation(run_dir, spec.name, dataset, "test", "final", test_metrics, test_out, y_test, loss)
    summary = finish_run(run_dir, spec, engine, history, wall, data=dataset.name, source=dataset.source,
                         test_metrics=test_metrics, classes=dataset.classes,
                         sizes={"train_samples": len(xt), "val_samples": len(xv), "test_samples": len(dataset.x_test)})
    return TrainResult(run_dir, history, test_metrics, summary)


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
    if missing:
        raise RunError(f"{run_dir} is missing {', '.join(missing)}: it is not a complete archlab run")
    spec = load(run_dir / "spec.yaml")
    raw = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8"))
    return spec, Recipe.model_validate(raw)


def _restore(run_dir: Path, weights: str) -> tuple[Spec, Recipe, ArchlabModel, str, str | None]:
    spec, recipe = load_run(run_dir)
    from archlab.data import load_dataset  # noqa: F401  (fail early if data support is broken)

    task = (spec.to_dict().get("task") or {}).get("kind", "classification")
    loss = loss_kind(recipe, spec, task)
    model, head = prepare_model(spec, recipe, loss)
    path = run_dir / f"{weights}.safetensors"
    load_weights(path, model)
    return spec, recipe, model, loss, head


def evaluate_run(run_dir: str | Path, *, data: str | None = None, split: str = "test", weights: str = "best",
                 data_dir: str | Path | None = None) -> dict[str, Any]:
    """Metrics and a confusion matrix of a trained run on a split; written to the run directory
    as ``evaluation-<split>.json`` and ``confusion-<split>.png``."""
    from archlab.data import load_dataset

    run_dir = Path(run_dir)
    spec, recipe, model, loss, head = _restore(run_dir, weights)
    dataset = load_dataset(data or recipe.data, data_dir)
    parsed = parse(spec)
    check_fit(parsed, dataset, loss)
    if split not in ("train", "test"):
        raise SpecError(f"split is train or test, got {split!r}")
    x, y = (dataset.x_test, dataset.y_test) if split == "test" else (dataset.x_train, dataset.y_train)
    x = _ids_if_long(parsed, x)
    if loss == "cross_entropy":  # evaluation always reports accuracy and macro-F1 beside the recipe's metrics
        recipe = recipe.model_copy(update={"metrics": sorted(set(recipe.metrics) | {"accuracy", "macro_f1"})})
    engine = Engine(model, recipe, loss, verbose=0, output_activation=head)
    xt, yt = to_tensors(x, y, loss)
    metrics, out = engine.evaluate(xt, yt)
    return _record_evaluation(run_dir, spec.name, dataset, split, weights, metrics, out, yt, loss)


def _record_evaluation(run_dir: Path, name: str, dataset: Any, split: str, weights: str, metrics: dict,
                       out: torch.Tensor, y: torch.Tensor, loss: str) -> dict[str, Any]:
    """evaluation-<split>.json, and for classification the confusion matrix as JSON and PNG."""
    result: dict[str, Any] = {"run": str(run_dir), "data": dataset.name, "split": split, "weights": weights,
                              "samples": len(y), "metrics": metrics}
    if loss == "cross_entropy":
        cm = confusion_matrix(out.argmax(dim=1), y.to(out.device), dataset.num_classes).cpu()
        result["classes"] = list(dataset.classes)
        result["confusion_matrix"] = cm.tolist()
        _plot_confusion(cm.numpy(), list(dataset.classes), run_dir / f"confusion-{split}.png",
                        f"{name}: {dataset.name} {split}, accuracy {metrics['accuracy']:.4f}")
    atomic_write_text(run_dir / f"evaluation-{split}.json", json.dumps(result, indent=2))
    return result


def _plot_confusion(cm: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(4.0, 0.45 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(classes) <= 20:
        threshold = cm.max() / 2
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > threshold else "black")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def read_input(path: str | Path, shape: tuple[int, ...]) -> np.ndarray:
    """One sample (or a batch) for predict: .npy, .png/.jpg (grayscale, resized, scaled to [0, 1])
    or a CSV row of numbers."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"input file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = np.load(path, allow_pickle=False).astype(np.float32)
    elif suffix in (".png", ".jpg", ".jpeg", ".bmp"):
        from PIL import Image

        if len(shape) != 3:
            raise SpecError(f"an image input needs a spec with an image input (C, H, W); this one takes {shape}")
        channels, height, width = shape
        image = Image.open(path).convert("L" if channels == 1 else "RGB").resize((width, height))
        array = np.asarray(image, dtype=np.float32) / 255.0
        array = array[None] if channels == 1 else array.transpose(2, 0, 1)  # (C, H, W)
    elif suffix in (".csv", ".txt"):
        text = path.read_text(encoding="utf-8").strip().splitlines()
        rows = [line for line in text if line.strip()]
        try:
            values = [[float(v) for v in row.split(",")] for row in rows]
        except ValueError:
            values = [[float(v) for v in row.split(",")] for row in rows[1:]]  # a header row
        array = np.asarray(values, dtype=np.float32)
    else:
        raise SpecError(f"cannot read {path.name}: predict takes .npy, .png/.jpg or a .csv row")
    size = int(np.prod(shape))
    if array.size % size:
        raise SpecError(f"{path.name} holds {array.size} values, not a multiple of the input {shape} ({size} values)")
    return array.reshape(-1, *shape)


def predict_run(run_dir: str | Path, input_path: str | Path, *, top: int = 3, weights: str = "best") -> list[dict]:
    """Top classes with probabilities for each sample in ``input_path``."""
    run_dir = Path(run_dir)
    spec, recipe, model, loss, head = _restore(run_dir, weights)
    parsed = parse(spec)
    x = _ids_if_long(parsed, read_input(input_path, tuple(parsed.raw_inputs["input"].shape)))
    engine = Engine(model, recipe, loss, verbose=0, output_activation=head)
    probs = engine.probabilities(torch.from_numpy(x)).cpu()
    classes = _classes_of(run_dir, probs.shape[-1])
    results = []
    for row in probs:
        if loss == "cross_entropy":
            values, indices = row.topk(min(top, len(row)))
            results.append({"top": [{"class": classes[i], "probability": float(v)}
                                    for v, i in zip(values, indices.tolist(), strict=True)]})
        else:
            results.append({"output": row.tolist()})
    return results


def _classes_of(run_dir: Path, count: int) -> list[str]:
    """Class names recorded by an evaluation or by training, else the indices as text."""
    for path in [*sorted(run_dir.glob("evaluation-*.json")), run_dir / "summary.json"]:
        classes = json.loads(path.read_text()).get("classes") if path.is_file() else None
        if classes and len(classes) == count:
            return classes
    return [str(i) for i in range(count)]
