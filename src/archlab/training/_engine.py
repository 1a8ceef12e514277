"""The training engine: one fast loop over in-memory tensors, shared by ``archlab train`` and the
Keras-style ``fit``.

Why not a DataLoader: the data sets archlab trains on fit in memory, and indexing one tensor
with a shuffled index per step costs a fraction of a DataLoader's per-batch Python work (see
benchmarks/train_throughput.py).
"""

from __future__ import annotations

import logging
import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archlab.exceptions import ArchlabError, SpecError, suggest
from archlab.tasks import TaskKind, as_task, direction_of

from ._metrics import compute_metrics, make_loss
from ._precision import resolve_precision
from ._recipe import Recipe
from ._runs import load_checkpoint, save_checkpoint, save_weights, write_metrics

__all__ = ["Engine", "History", "TrainingError", "pick_device", "split_output_activation"]

log = logging.getLogger("archlab")
EVAL_BATCH = 1024
#: On a CPU, evaluation batches past a few hundred images are slower per image: validating the
#: seed CNN on 6,000 MNIST images between training epochs takes 20-40% less time in batches of
#: 256 than of 1024 (1 thread: 1.0-1.35 s vs 1.66-1.69 s; 2 threads: 0.80-0.84 s vs 1.01-1.03 s),
#: ``benchmarks/train_throughput.py --eval-batches``; see docs/benchmarks.md, "Training throughput".
EVAL_BATCH_CPU = 256
#: A training step whose loss is more than this many times the untrained model's (the first
#: step's loss, before any update) has diverged: a model that learned nothing stays near its
#: starting loss, and no training that recovers climbs three orders of magnitude above it first.
#: ``--lr 1e6`` on digits otherwise ends at a loss of 7e27 with exit 0.
DIVERGED = 1e3


class TrainingError(ArchlabError, RuntimeError):
    """Training cannot go on (a non-finite loss, data that does not fit the spec)."""


@dataclass
class History:
    """What ``fit`` returns, as Keras does: ``history[metric]`` is the per-epoch list."""

    history: dict[str, list[float]] = field(default_factory=dict)
    epoch: list[int] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    run_dir: Path | None = None

    @classmethod
    def from_rows(cls, rows: list[dict], **kwargs: Any) -> History:
        history: dict[str, list[float]] = {}
        for row in rows:
            for key, value in row.items():
                if key != "epoch":
                    history.setdefault(key, []).append(value)
        return cls(history, [row["epoch"] for row in rows], **kwargs)


_DEVICE = re.compile(r"cpu|mps|cuda(:\d+)?")


def pick_device(name: str = "auto") -> torch.device:
    """CUDA, then Apple's MPS, then the CPU; or the named device, which must be there: a device
    that is not is a SpecError before any data is loaded, not an error deep in the first step.

    Example:
        >>> pick_device("cpu")
        device(type='cpu')
    """
    if name != "auto":
        where = f"--device {name} (train.device)"
        if not _DEVICE.fullmatch(str(name)):
            raise SpecError(f"{where}: expected auto, cpu, cuda, cuda:N or mps"
                            f"{suggest(str(name), ['auto', 'cpu', 'cuda', 'mps'])}")
        device = torch.device(name)
        if device.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if count == 0:
                raise SpecError(f"{where}: this machine has no CUDA device (torch.cuda.is_available() is False); "
                                "use --device cpu, or auto")
            if device.index is not None and device.index >= count:
                raise SpecError(f"{where}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
        if device.type == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                         and torch.backends.mps.is_available()):
            raise SpecError(f"{where}: Apple's MPS is not available here; use --device cpu, or auto")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


_ACTIVATIONS = {"softmax": nn.Softmax, "sigmoid": nn.Sigmoid}


def split_output_activation(model: nn.Module, task: TaskKind | str) -> str | None:
    """Remove the task's final activation (``TaskKind.output_activation``: a softmax for
    classification, a sigmoid for binary and multilabel) from the model so the loss works on
    logits, as Keras does internally for softmax + categorical_crossentropy (the log of a softmax
    is unstable; log_softmax is not). Returns the removed activation, which ``predict`` applies again."""
    wanted = _ACTIVATIONS.get(as_task(task).output_activation or "")
    if wanted is None:
        return None
    container = getattr(model, "net", model)
    if hasattr(container, "nodes"):  # the graph form: the last layer of the (single) output node
        if len(container.outputs) != 1 or container.outputs[0] not in container.nodes:
            return None
        container = container.nodes[container.outputs[0]].layers
    while isinstance(container, nn.Sequential) and len(container) and isinstance(container[-1], nn.Sequential):
        container = container[-1]
    if not isinstance(container, nn.Sequential) or not len(container):
        return None
    last_name = list(container._modules)[-1]
    last = container[-1]
    if isinstance(last, wanted):
        container._modules[last_name] = nn.Identity()
    elif isinstance(getattr(last, "activation", None), wanted):
        last.activation = nn.Identity()
    else:
        return None
    return "softmax" if wanted is nn.Softmax else "sigmoid"


def _shift(x: torch.Tensor, generator: torch.Generator, pixels: int = 2) -> torch.Tensor:
    """Translate each image by up to ``pixels`` in each direction, filling with zeros."""
    batch, _, height, width = x.shape  # (B, C, H, W)
    padded = nn.functional.pad(x, (pixels, pixels, pixels, pixels))
    offsets = torch.randint(0, 2 * pixels + 1, (2, batch), generator=generator).to(x.device)
    rows = (offsets[0, :, None] + torch.arange(height, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (offsets[1, :, None] + torch.arange(width, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    b = torch.arange(batch, device=x.device)[:, None, None, None]
    c = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[b, c, rows, cols]


def glorot_init(model: nn.Module) -> None:
    """Keras' default initialisation: Glorot-uniform kernels and zero biases for dense and
    convolutional layers (PyTorch's default is a scaled Kaiming-uniform)."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def _format(key: str, value: Any) -> str:
    if key == "seconds":
        return f"{value:.2f}s"
    if key == "samples_per_s":
        return f"{value:,.0f} samples/s"
    if key == "lr":
        return f"lr {value:.3g}"
    return f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}"


class _Progress:
    """A Rich progress bar per epoch (verbose=1), one log line per epoch (verbose=2), or nothing."""

    def __init__(self, verbose: int, epochs: int, steps: int) -> None:
        if verbose == 1 and not sys.stdout.isatty():
            verbose = 2  # a log file or a pipe: plain lines rather than a bar cut to 80 columns
        self.verbose, self.epochs, self.steps = verbose, epochs, steps
        self.bar = None
        if verbose == 1:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("{task.fields[stats]}"))
            self.bar.start()

    def start_epoch(self, epoch: int) -> None:
        if self.bar is not None:
            self.task = self.bar.add_task(f"epoch {epoch}/{self.epochs}", total=self.steps, stats="")

    def update(self, step: int, stats: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, stats=stats)

    def end_epoch(self, epoch: int, row: dict) -> None:
        line = "  ".join(_format(k, v) for k, v in row.items() if k != "epoch")
        if self.bar is not None:
            self.bar.update(self.task, completed=self.steps, stats=line)
        elif self.verbose == 2:
            print(f"epoch {epoch}/{self.epochs}  {line}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class Engine:
    """Trains one model with one recipe; optionally records everything in a run directory.

    Args:
        model: the module; its final softmax/sigmoid is handled by ``split_output_activation``.
        recipe: the resolved recipe.
        task: the task kind (``archlab.tasks``), or its name or recipe loss name: it gives the loss,
            the metrics' meaning and the prediction transform.
        run_dir: where checkpoints and metrics go; None keeps everything in memory.
        verbose: 0 silent, 1 a progress bar per epoch, 2 one line per epoch.
        criterion: the training loss as ``criterion(xb, out, yb)`` of the (augmented) batch, the
            model's outputs (float32 logits) and the targets, in place of ``loss``'s function
            (e.g. distillation, which needs the batch for its teacher). Validation, the metrics
            and early stopping still use the plain ``loss``.
    """

    def __init__(self, model: nn.Module, recipe: Recipe, task: TaskKind | str, *, run_dir: Path | None = None,
                 verbose: int = 1, output_activation: str | None = None,
                 criterion: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> None:
        self.recipe, self.task, self.run_dir, self.verbose = recipe, as_task(task), run_dir, verbose
        self.metric_names = list(self.task.default_metrics if recipe.metrics is None else recipe.metrics)
        self.criterion = criterion
        self.device = pick_device(recipe.device)
        self.model = model.to(self.device)
        self.precision = resolve_precision(recipe.precision, self.device, self.model)
        self.bf16 = self.precision.bf16
        if self.bf16 and self.device.type == "cpu" and any(isinstance(m, nn.Conv2d) for m in self.model.modules()):
            # oneDNN's bf16 CPU kernels are written for channels-last: in NCHW, bf16 max-pooling alone
            # takes half of a seed-CNN step; channels-last trains it 1.6x faster than NCHW bf16
            # (docs/training.md, "Precision"). Only rounding differs; saved weights stay contiguous.
            self.model = self.model.to(memory_format=torch.channels_last)
        self.output_activation = output_activation
        self.loss_fn = make_loss(self.task, recipe.label_smoothing)
        self.generator = torch.Generator().manual_seed(recipe.seed)
        self.optimizer = self._optimizer()
        self.scheduler = None
        self.rows: list[dict] = []

    # -- factories ---------------------------------------------------------------------------
    def _optimizer(self) -> torch.optim.Optimizer:
        cfg = self.recipe.optimizer
        params = [p for p in self.model.parameters() if p.requires_grad]
        if cfg.name == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                   weight_decay=cfg.weight_decay)
        cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
        return cls(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)

    def _scheduler(self, steps_per_epoch: int) -> tuple[Any, bool]:
        """The LR scheduler and whether it steps per batch (True) or per epoch."""
        cfg, epochs = self.recipe.schedule, self.recipe.epochs
        sched = torch.optim.lr_scheduler
        if cfg.name == "step":
            return sched.StepLR(self.optimizer, cfg.step_size, cfg.gamma), False
        if cfg.name == "cosine":
            return sched.CosineAnnealingLR(self.optimizer, epochs * steps_per_epoch, eta_min=cfg.min_lr), True
        if cfg.name == "one_cycle":
            max_lr = cfg.max_lr or 10 * self.recipe.optimizer.lr
            return sched.OneCycleLR(self.optimizer, max_lr=max_lr, total_steps=epochs * steps_per_epoch,
                                    pct_start=cfg.pct_start), True
        return None, False

    # -- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs (logits) for every row of ``x``, in eval mode, batch by batch."""
        self.model.eval()
        parts = []
        size = EVAL_BATCH_CPU if self.device.type == "cpu" else EVAL_BATCH
        for start in range(0, len(x), size):
            batch = x[start:start + size].to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                parts.append(self.model(batch).float())
        return torch.cat(parts) if parts else torch.empty(0)

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, float], torch.Tensor]:
        out = self.outputs(x)
        y = y.to(out.device)
        loss = self.loss_fn(out, y).item()
        return compute_metrics(out, y, loss, self.task, self.metric_names, self.recipe.top_k), out

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """What the spec's model outputs, final activation included (Keras' ``predict``)."""
        out = self.outputs(x)
        if self.output_activation == "softmax":
            return out.softmax(dim=1)
        return out.sigmoid() if self.output_activation == "sigmoid" else out

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """The task's prediction transform of the outputs: probabilities, or the values."""
        return self.task.scores(self.outputs(x))

    # -- training ----------------------------------------------------------------------------
    def _monitor(self, has_val: bool) -> tuple[str, str]:
        es = self.recipe.early_stopping
        key = es.monitor if es else ("val_loss" if has_val else "loss")
        mode = es.mode if es else "auto"
        if mode == "auto":
            mode = direction_of(key, self.task.name, "train.early_stopping.monitor")
        return key, mode

    def _checkpoint(self, epoch: int, state: dict) -> None:
        if self.run_dir is None:
            return
        rng = {"torch": torch.get_rng_state(), "shuffle": self.generator.get_state()}
        save_checkpoint(self.run_dir / "last.safetensors", self.model, self.optimizer, self.scheduler, rng,
                        {"epoch": epoch, "rows": self.rows, **state})
        write_metrics(self.run_dir / "metrics.jsonl", self.rows)

    def fit(self, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor | None = None,
            y_val: torch.Tensor | None = None, *, resume: bool = False,
            on_epoch_end: Callable[[int, dict], None] | None = None) -> History:
        """Train for the recipe's epochs (or until early stopping), checkpointing every epoch."""
        recipe = self.recipe
        x, y = x.to(self.device), y.to(self.device)
        n = len(x)
        steps = math.ceil(n / recipe.batch_size)
        self.scheduler, per_step = self._scheduler(steps)
        has_val = x_val is not None and len(x_val) > 0
        monitor, mode = self._monitor(has_val)
        delta = recipe.early_stopping.min_delta if recipe.early_stopping else 0.0
        better = (lambda a, b: a < b - delta) if mode == "min" else (lambda a, b: a > b + delta)
        state = {"best": None, "best_epoch": None, "wait": 0, "stopped": False, "reference_loss": None}
        start = 0
        best_weights: dict[str, torch.Tensor] | None = None
        if resume:
            rng, meta = load_checkpoint(self.run_dir / "last.safetensors", self.model, self.optimizer, self.scheduler)
            torch.set_rng_state(rng["torch"])
            self.generator.set_state(rng["shuffle"])
            start, self.rows = meta["epoch"], meta["rows"]
            state = {k: meta.get(k) for k in state}  # checkpoints older than reference_loss lack it: None
            if state["stopped"]:
                start = recipe.epochs
        if self.verbose and recipe.precision == "auto":  # what auto chose is worth a line: it is machine-dependent
            print(f"precision auto: {self.precision.precision} ({self.precision.reason})", flush=True)
        progress = _Progress(self.verbose, recipe.epochs, steps)
        augment = recipe.augment == "shift" and x.dim() == 4
        try:
            for epoch in range(start + 1, recipe.epochs + 1):
                progress.start_epoch(epoch)
                self.model.train()
                began = time.perf_counter()
                lr = self.optimizer.param_groups[0]["lr"]  # the epoch's (first step's) rate, as Keras logs it
                order = torch.randperm(n, generator=self.generator) if recipe.shuffle else torch.arange(n)
                order = order.to(self.device)
                loss_sum = torch.zeros((), device=self.device)
                correct = torch.zeros((), device=self.device, dtype=torch.long)
                count_acc = "accuracy" in self.metric_names and type(self.task).correct is not TaskKind.correct
                for step in range(steps):
                    index = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
                    xb, yb = x[index], y[index]
                    if augment:
                        xb = _shift(xb, self.generator)
                    with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                        out = self.model(xb)
                        loss = (self.loss_fn(out.float(), yb) if self.criterion is None
                                else self.criterion(xb, out.float(), yb))
                    value = loss.item()  # the one host sync per step, which the finiteness check always took
                    if state["reference_loss"] is None:  # the untrained model's loss: the first step, before updates
                        state["reference_loss"] = value
                    reference = state["reference_loss"]
                    diverged = math.isfinite(reference) and reference > 0 and value > DIVERGED * reference
                    if not math.isfinite(value) or diverged:
                        kept = (f"the last good checkpoint (end of epoch {epoch - 1}) is "
                                f"{self.run_dir / 'last.safetensors'}" if self.run_dir and epoch > 1
                                else "no epoch had finished, so there is no checkpoint")
                        what = (f"the loss reached {value:.3g}, more than {DIVERGED:g} times the untrained model's "
                                f"{reference:.4g}: training diverged," if diverged else f"the loss became {value}")
                        raise TrainingError(f"{what} at epoch {epoch}, step {step + 1} "
                                            f"(learning rate {self.optimizer.param_groups[0]['lr']:.3g}); {kept}. "
                                            "Lower the learning rate, or set train.grad_clip")
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if recipe.grad_clip:
                        nn.utils.clip_grad_norm_(self.model.parameters(), recipe.grad_clip)
                    self.optimizer.step()
                    if per_step:
                        self.scheduler.step()
                    loss_sum += loss.detach() * len(index)
                    if count_acc:
                        correct += self.task.correct(out.detach(), yb)
                    if self.verbose == 1 and (step % 20 == 0 or step == steps - 1):
                        seen = min((step + 1) * recipe.batch_size, n)
                        rate = seen / max(time.perf_counter() - began, 1e-9)
                        acc = f"  accuracy {correct.item() / seen:.4f}" if count_acc else ""
                        progress.update(step + 1, f"loss {loss_sum.item() / seen:.4f}{acc}  {rate:,.0f} samples/s")
                if self.scheduler is not None and not per_step:
                    self.scheduler.step()
                seconds = time.perf_counter() - began
                row: dict[str, Any] = {"epoch": epoch, "loss": loss_sum.item() / n}
                if count_acc:
                    row["accuracy"] = correct.item() / n
                if has_val:
                    metrics, _ = self.evaluate(x_val, y_val)
                    row.update({f"val_{k}": v for k, v in metrics.items()})
                row.update({"lr": lr, "seconds": round(seconds, 3),
                            "samples_per_s": round(n / seconds, 1)})
                self.rows.append(row)
                if monitor not in row:
                    raise TrainingError(f"cannot monitor '{monitor}': this run records "
                                        f"{', '.join(k for k in row if k != 'epoch')}")
                if state["best"] is None or better(row[monitor], state["best"]):
                    state.update(best=row[monitor], best_epoch=epoch, wait=0)
                    best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                    if self.run_dir is not None:
                        save_weights(self.run_dir / "best.safetensors", self.model,
                                     {"epoch": epoch, monitor: row[monitor]})
                else:
                    state["wait"] += 1
                es = recipe.early_stopping
                if es is not None and state["wait"] >= max(es.patience, 1):  # Keras: stop after `patience` bad epochs
                    state["stopped"] = True
                self._checkpoint(epoch, state)
                progress.end_epoch(epoch, row)
                if on_epoch_end is not None:
                    on_epoch_end(epoch, row)
                if state["stopped"]:
                    log.info("early stopping after epoch %d: %s did not improve for %d epochs", epoch, monitor,
                             state["wait"])
                    break
        finally:
            progress.close()
        es = recipe.early_stopping
        if es is not None and es.restore_best and state["best_epoch"] is not None:
            if best_weights is not None:
                self.model.load_state_dict(best_weights)
            elif self.run_dir is not None:  # resumed after the best epoch: it is on disk
                from ._runs import load_weights

                load_weights(self.run_dir / "best.safetensors", self.model)
        return History.from_rows(self.rows, best_epoch=state["best_epoch"], stopped_early=state["stopped"],
                                 run_dir=self.run_dir)
