"""shrink(): adaptive depth and width. Start from a trained run, remove blocks and channels in
steps with fine-tuning in between, and stop before the task's headline validation metric
(accuracy, auc, micro_f1, mse: ``TaskKind.headline_metric``) falls too far."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from archlab._paths import check_out_dir
from archlab.analysis import analyze
from archlab.spec import Spec
from archlab.tasks import direction_of

from ._structured import block_candidates, bypass, prunable_layers, prune_channels, remove_blocks

__all__ = ["ShrinkResult", "format_score", "markdown_table", "shrink", "within"]

log = logging.getLogger("archlab")


@dataclass
class ShrinkResult:
    run_dir: Path | None
    spec: Spec
    steps: list[dict[str, Any]] = field(default_factory=list)
    test_before: dict[str, float] = field(default_factory=dict)
    test_after: dict[str, float] = field(default_factory=dict)
    #: what the steps are judged by (each step's ``val_<metric>``) and its direction
    metric: str = "accuracy"
    direction: str = "max"

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir) if self.run_dir else None, "steps": self.steps, "metric": self.metric,
                "direction": self.direction, "test_before": self.test_before, "test_after": self.test_after}


def _size(spec: Spec) -> tuple[int, int]:
    analysis = analyze(spec)
    return int(analysis.total_params), int(analysis.flops)


def format_score(value: float, direction: str) -> str:
    """A score as people read it: one that is maximised (accuracy, auc, f1) in percent, an error
    (mse, loss) as it is.

    Example:
        >>> format_score(0.9512, "max"), format_score(0.25, "min")
        ('95.12%', '0.2500')
    """
    return f"{100 * value:.2f}%" if direction == "max" else f"{value:.4f}"


def markdown_table(steps: list[dict[str, Any]], metric: str = "accuracy", direction: str = "max") -> str:
    lines = [f"| step | action | params | FLOPs | val {metric} | kept |", "|---:|---|---:|---:|---:|---|"]
    for s in steps:
        lines.append(f"| {s['step']} | {s['action']} | {s['params']:,} | {s['flops']:,} | "
                     f"{format_score(s[f'val_{metric}'], direction)} | {'yes' if s['kept'] else 'no (undone)'} |")
    return "\n".join(lines) + "\n"


def within(value: float, start: float, direction: str, max_drop: float) -> bool:
    """Whether a step's score is close enough to the start's: a maximised score (accuracy, auc, f1,
    in [0, 1]) at most ``max_drop`` percentage points lower; an error (mse, mae) at most
    ``max_drop`` percent higher, as points of an unbounded error mean nothing.

    Example:
        >>> within(0.948, 0.95, "max", 0.5), within(0.94, 0.95, "max", 0.5)
        (True, False)
        >>> within(1.004, 1.0, "min", 0.5), within(1.01, 1.0, "min", 0.5)
        (True, False)
    """
    if direction == "max":
        return value >= start - max_drop / 100
    return value <= start + abs(start) * max_drop / 100


def shrink(run_dir: str | Path, *, data: str | None = None, data_dir: str | Path | None = None,
           max_drop: float = 0.5, finetune_epochs: int = 1, block_fraction: float = 0.25,
           channel_ratio: float = 0.25, max_steps: int = 12, train_samples: int | None = None,
           out: str | Path | None = "runs", weights: str = "best", batch_size: int | None = None) -> ShrinkResult:
    """Shrink a trained run: alternately remove the least important blocks and prune channels.

    Each step removes ``block_fraction`` of the removable blocks (the ones whose bypass raises the
    validation loss least) or ``channel_ratio`` of the outputs of every prunable layer (lowest
    batchnorm |gamma| or L1 norm), then fine-tunes ``finetune_epochs`` epochs from the current
    weights. A step that leaves the task's headline validation metric worse than the start by more
    than ``max_drop`` (percentage points of accuracy, auc or f1; percent of an error such as mse:
    ``within``) is undone; that kind of step is retried at half the size (half the blocks, half the
    channel ratio down to 5%) and dropped once it cannot get smaller.

    Args:
        run_dir: a run directory written by ``archlab train``.
        data: the data set (default: the run's).
        train_samples: fine-tune on only the first N training samples (the validation split is
            the run's, taken first), to bound the time.
        out: the folder that receives the new run directory; None writes nothing.
        batch_size: the batch for fine-tuning and measuring (default: the run's recipe's); the new
            run's recipe records it.

    Returns:
        ShrinkResult: the new run directory, the final spec and one row per step. When no step
        could be kept (nothing removable, or every removal cost more than ``max_drop``), no run is
        written and ``run_dir`` is None: the result would be the source model again.
    """
    from archlab.data import load_dataset
    from archlab.training import (
        Engine,
        check_fit,
        check_memory,
        fit_spec,
        load_run,
        model_inputs,
        pick_device,
        prepare_model,
        prepare_splits,
        restore_run,
        start_run,
        to_tensors,
    )

    if out is not None:
        check_out_dir(out)
    if max_drop < 0:
        raise ValueError(f"max_drop is in percentage points and not negative, got {max_drop}")
    if finetune_epochs < 0:
        raise ValueError(f"finetune_epochs is 0 or more, got {finetune_epochs}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"--batch-size must be a positive number, got {batch_size}")
    run_dir = Path(run_dir)
    spec, recipe = load_run(run_dir)
    if batch_size is not None:
        recipe = recipe.model_copy(update={"batch_size": batch_size})
    check_memory(spec, recipe, pick_device(recipe.device), what="fine-tuning")
    weights_path = run_dir / f"{weights}.safetensors"
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path} does not exist: shrink needs a trained run")
    dataset = load_dataset(data or recipe.data, data_dir)
    from archlab.builder import parse

    run = restore_run(run_dir, weights)
    task, recipe = run.task, run.recipe.model_copy(update={"batch_size": recipe.batch_size})
    parsed = parse(spec)
    check_fit(parsed, dataset, task)
    if recipe.validation_split == 0:
        raise ValueError(f"{run_dir}: the run has no validation split (validation_split: 0); shrink measures on it")
    splits = prepare_splits(dataset, recipe, task, parsed, train_samples=train_samples)
    xv, yv = splits.x_val, splits.y_val
    xs, ys = to_tensors(model_inputs(parsed, dataset.x_test, dataset.name), dataset.y_test, task)
    ft_recipe = recipe.model_copy(update={"epochs": max(1, finetune_epochs), "early_stopping": None})
    metric = task.headline_metric  # the headline metric: accuracy, auc, micro_f1, mse
    direction = direction_of(metric, task.name)
    # measured whatever train.metrics recorded; the loss is measured anyway (block importance)
    measure_recipe = recipe.model_copy(update={"metrics": [metric]})

    def model_of(spec: Spec, state: dict[str, torch.Tensor] | None):
        model, head = prepare_model(spec, recipe, task)
        if state is not None:
            model.load_state_dict(state)
        return model, head

    def measure(model, head, x_, y_) -> dict[str, float]:
        return Engine(model, measure_recipe, task, verbose=0, output_activation=head).evaluate(x_, y_)[0]

    def finetune(spec: Spec, state: dict[str, torch.Tensor]):
        model, head = model_of(spec, state)
        if finetune_epochs > 0:
            fit_spec(spec, ft_recipe, task, splits, model=model, output_activation=head)
        return model, head

    model, head = run.model, run.head
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    start = measure(model, head, xv, yv)
    test_before = measure(model, head, xs, ys)
    params, flops = _size(spec)
    steps = [{"step": 0, "action": "start", "params": params, "flops": flops, f"val_{metric}": start[metric],
              "val_loss": start["loss"], "kept": True}]
    log.info("shrink: start %s params, val %s %.4f", params, metric, start[metric])
    kinds = ["blocks", "channels"]
    turn = 0
    block_count: int | None = None  # blocks per step; set from block_fraction at the first block step
    ratio = channel_ratio
    while kinds and len(steps) <= max_steps:
        kind = kinds[turn % len(kinds)]
        began = time.perf_counter()
        candidate: tuple[Spec, dict] | None = None
        action = ""
        if kind == "blocks":
            blocks = block_candidates(spec)
            if blocks:
                model.eval()
                importance = []
                for block in blocks:
                    with bypass(model, block):
                        importance.append((measure(model, head, xv, yv)["loss"], block))
                importance.sort(key=lambda t: t[0])
                # a repeat keeps one iteration: never take all of one repeat's iterations
                chosen, per_repeat = [], {}
                total = {b.path: sum(1 for c in blocks if c.path == b.path) for b in blocks if b.iteration is not None}
                if block_count is None:
                    block_count = max(1, round(block_fraction * len(blocks)))
                for _, block in importance:
                    if len(chosen) >= block_count:
                        break
                    if block.iteration is not None:
                        if per_repeat.get(block.path, 0) + 1 >= total[block.path]:
                            continue
                        per_repeat[block.path] = per_repeat.get(block.path, 0) + 1
                    chosen.append(block)
                if chosen:
                    candidate = remove_blocks(spec, state, chosen)
                    action = "remove " + ", ".join(str(b) for b in chosen)
        else:
            layers = prunable_layers(spec)
            keep = {p: max(1, round(w * (1 - ratio))) for p, w in layers.items()}
            keep = {p: k for p, k in keep.items() if k < layers[p]}
            if keep:
                candidate = prune_channels(spec, state, keep=keep)
                action = "prune " + ", ".join(f"{p} {layers[p]}->{k}" for p, k in keep.items())
        if candidate is None:
            kinds.remove(kind)
            continue
        new_spec, new_state = candidate
        new_model, new_head = finetune(new_spec, new_state)
        val = measure(new_model, new_head, xv, yv)
        params, flops = _size(new_spec)
        ok = within(val[metric], start[metric], direction, max_drop)
        steps.append({"step": len(steps), "action": action, "params": params, "flops": flops,
                      f"val_{metric}": val[metric], "val_loss": val["loss"], "kept": ok,
                      "seconds": round(time.perf_counter() - began, 1)})
        log.info("shrink step %d: %s -> %s params, val %s %.4f (%s)", len(steps) - 1, action, params, metric,
                 val[metric], "kept" if ok else "undone")
        if ok:
            spec, model, head = new_spec, new_model, new_head
            state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            turn += 1
        elif kind == "blocks" and block_count is not None and block_count > 1:
            block_count //= 2
        elif kind == "channels" and ratio / 2 >= 0.05:
            ratio /= 2
        else:
            kinds.remove(kind)
    test_after = measure(model, head, xs, ys)
    result = ShrinkResult(None, spec, steps, test_before, test_after, metric, direction)
    if out is not None and any(s["kept"] for s in steps[1:]):
        new_dir = start_run(spec, recipe, out, model)
        result.run_dir = new_dir
        (new_dir / "shrink.json").write_text(json.dumps({"source": str(run_dir), "max_drop": max_drop,
                                                          "finetune_epochs": finetune_epochs,
                                                          **result.to_dict()}, indent=2), encoding="utf-8")
        (new_dir / "shrink.md").write_text(markdown_table(steps, metric, direction), encoding="utf-8")
    return result
