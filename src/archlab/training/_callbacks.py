"""Callbacks: named hooks into ``Engine.fit``, in Lightning's style.

Everything ``fit`` does besides the optimisation step is a callback that keeps its own state:
the finite/diverged-loss check, augmentation (``_augment.py``), tracking the best epoch and early stopping,
checkpoints, and progress output. A user's own callbacks run between the built-in ones (after
early stopping, before the checkpoint, so their ``state_dict`` is saved with the epoch).

Hooks run in list order. ``on_batch_end`` is called on every step, so a callback that does not
override it costs nothing there (the engine calls only the overriding ones).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import TYPE_CHECKING, Any

import torch

from archlab.tasks import direction_of

from ._runs import save_checkpoint, save_weights, write_metrics

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["Callback", "Checkpoint", "DivergenceCheck", "EarlyStopping", "Progress", "Snapshots"]

log = logging.getLogger("archlab")
#: A training step whose loss is more than this many times the untrained model's (the first
#: step's loss, before any update) has diverged: a model that learned nothing stays near its
#: starting loss, and no training that recovers climbs three orders of magnitude above it first.
#: ``--lr 1e6`` on digits otherwise ends at a loss of 7e27 with exit 0.
DIVERGED = 1e3


class Callback:
    """No-op hooks; override the ones you need.

    ``engine`` (``archlab.training.Engine``) gives the model, optimizer, recipe, run directory and
    ``epoch`` (the current one). ``on_epoch_end`` returns True to stop training after that epoch.
    ``state_dict``/``load_state_dict`` carry what the callback must remember across ``train
    --resume``; it is saved in the checkpoint under ``state_key`` (JSON values).
    """

    @property
    def state_key(self) -> str:
        return type(self).__qualname__

    def on_fit_start(self, engine: Engine) -> None:
        """Before the first epoch (of this call: after a resume, before the first epoch left)."""

    def on_epoch_start(self, engine: Engine, epoch: int) -> None:
        """Before the epoch's first step; the model is in train mode."""

    def on_batch(self, engine: Engine, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch the model trains on (augmentation); called only where overridden."""
        return xb, yb

    def on_batch_end(self, engine: Engine, step: int, loss: float) -> None:
        """After the optimizer step of batch ``step`` (0-based in the epoch) whose loss was ``loss``."""

    def on_epoch_end(self, engine: Engine, epoch: int, logs: dict[str, Any]) -> bool | None:
        """After the epoch's metrics (``logs``: the metrics.jsonl row); True requests a stop."""
        return None

    def on_fit_end(self, engine: Engine) -> None:
        """After the last epoch, also after a stop; not after an exception."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


def overrides(callback: Callback, hook: str) -> bool:
    """Whether ``callback`` overrides ``hook`` (the engine calls per-step hooks only where they do)."""
    return getattr(type(callback), hook) is not getattr(Callback, hook)


class DivergenceCheck(Callback):
    """Stops with a TrainingError at a non-finite loss, or one ``DIVERGED`` times the untrained
    model's (the first step's, kept across a resume so a resumed run uses the same reference)."""

    state_key = "divergence"

    def __init__(self) -> None:
        self.reference_loss: float | None = None

    def on_batch_end(self, engine: Engine, step: int, loss: float) -> None:
        if self.reference_loss is None:  # the untrained model's loss: the first step's, computed before the update
            self.reference_loss = loss
        reference = self.reference_loss
        diverged = math.isfinite(reference) and reference > 0 and loss > DIVERGED * reference
        if math.isfinite(loss) and not diverged:
            return
        from ._engine import TrainingError

        epoch = engine.epoch
        kept = (f"the last good checkpoint (end of epoch {epoch - 1}) is {engine.run_dir / 'last.safetensors'}"
                if engine.run_dir and epoch > 1 else "no epoch had finished, so there is no checkpoint")
        what = (f"the loss reached {loss:.3g}, more than {DIVERGED:g} times the untrained model's "
                f"{reference:.4g}: training diverged," if diverged else f"the loss became {loss}")
        raise TrainingError(f"{what} at epoch {epoch}, step {step + 1} (learning rate {engine.step_lr:.3g}); "
                            f"{kept}. Lower the learning rate, or set train.grad_clip")

    def state_dict(self) -> dict[str, Any]:
        return {"reference_loss": self.reference_loss}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reference_loss = state.get("reference_loss")  # checkpoints older than reference_loss lack it


class EarlyStopping(Callback):
    """Tracks the best epoch of the monitored metric (the recipe's ``early_stopping.monitor``,
    else ``val_loss``, else ``loss``), keeps its weights, stops after ``patience`` epochs without
    improvement when the recipe has early stopping, and restores the best weights at the end when
    it says ``restore_best``."""

    state_key = "early_stopping"

    def __init__(self, engine: Engine, has_val: bool) -> None:
        es = engine.recipe.early_stopping
        self.config = es
        self.monitor = es.monitor if es else ("val_loss" if has_val else "loss")
        mode = es.mode if es else "auto"
        self.mode = direction_of(self.monitor, engine.task.name, "train.early_stopping.monitor") \
            if mode == "auto" else mode
        self.delta = es.min_delta if es else 0.0
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.stopped = False
        self.improved = False
        self.best_weights: dict[str, torch.Tensor] | None = None

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value < self.best - self.delta if self.mode == "min" else value > self.best + self.delta

    def on_epoch_end(self, engine: Engine, epoch: int, logs: dict[str, Any]) -> bool:
        from ._engine import TrainingError

        if self.monitor not in logs:
            raise TrainingError(f"cannot monitor '{self.monitor}': this run records "
                                f"{', '.join(k for k in logs if k != 'epoch')}")
        self.improved = self._better(logs[self.monitor])
        if self.improved:
            self.best, self.best_epoch, self.wait = logs[self.monitor], epoch, 0
            self.best_weights = {k: v.detach().clone() for k, v in engine.model.state_dict().items()}
        else:
            self.wait += 1
        if self.config is not None and self.wait >= max(self.config.patience, 1):  # Keras: after `patience` bad epochs
            self.stopped = True
            log.info("early stopping after epoch %d: %s did not improve for %d epochs", epoch, self.monitor, self.wait)
        return self.stopped

    def on_fit_end(self, engine: Engine) -> None:
        if self.config is None or not self.config.restore_best or self.best_epoch is None:
            return
        if self.best_weights is not None:
            engine.model.load_state_dict(self.best_weights)
        elif engine.run_dir is not None:  # resumed after the best epoch: it is on disk
            from ._runs import load_weights

            load_weights(engine.run_dir / "best.safetensors", engine.model)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait, "stopped": self.stopped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")
        self.wait, self.stopped = state.get("wait") or 0, bool(state.get("stopped"))


class Checkpoint(Callback):
    """Every epoch: ``best.safetensors`` when the epoch improved, then ``last.safetensors`` (the
    whole training state, every callback's ``state_dict`` included) and ``metrics.jsonl``."""

    def __init__(self, best: EarlyStopping) -> None:
        self.best = best

    def on_epoch_end(self, engine: Engine, epoch: int, logs: dict[str, Any]) -> None:
        run_dir = engine.run_dir
        if self.best.improved:
            monitor = self.best.monitor
            save_weights(run_dir / "best.safetensors", engine.model, {"epoch": epoch, monitor: logs[monitor]})
        rng = {"torch": torch.get_rng_state(), "shuffle": engine.generator.get_state()}
        save_checkpoint(run_dir / "last.safetensors", engine.model, engine.optimizer, engine.scheduler, rng,
                        {"epoch": epoch, "rows": engine.rows, **engine.callback_states()})
        write_metrics(run_dir / "metrics.jsonl", engine.rows)


class Snapshots(Callback):
    """With the cyclic_cosine schedule and a run directory: the weights at the end of each cycle
    as ``snapshot-<i>.safetensors`` (i from 1), the members of a snapshot ensemble (Huang et al.
    2017). Its state (the snapshots taken, with their epoch's validation metrics) is in the
    checkpoint, so a resumed run keeps them and goes on numbering."""

    def __init__(self) -> None:
        self.saved: list[dict[str, Any]] = []

    def on_epoch_end(self, engine: Engine, epoch: int, logs: dict[str, Any]) -> None:
        per_cycle = engine.recipe.epochs // engine.recipe.schedule.cycles
        if epoch % per_cycle:
            return
        name = f"snapshot-{epoch // per_cycle}"
        save_weights(engine.run_dir / f"{name}.safetensors", engine.model, {"epoch": epoch})
        self.saved = [s for s in self.saved if s["weights"] != name]  # an epoch redone after a crash
        self.saved.append({"weights": name, "epoch": epoch,
                           **{k: v for k, v in logs.items() if k.startswith("val_")}})

    def state_dict(self) -> dict[str, Any]:
        return {"snapshots": self.saved}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.saved = list(state.get("snapshots") or [])


def _format(key: str, value: Any) -> str:
    if key == "seconds":
        return f"{value:.2f}s"
    if key in ("samples_per_s", "tokens_per_s"):
        return f"{value:,.0f} {key.removesuffix('_per_s')}/s"
    if key == "lr":
        return f"lr {value:.3g}"
    return f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}"


class Progress(Callback):
    """A Rich progress bar per epoch (verbose=1), one line per epoch (verbose=2)."""

    def __init__(self, verbose: int) -> None:
        if verbose == 1 and not sys.stdout.isatty():
            verbose = 2  # a log file or a pipe: plain lines rather than a bar cut to 80 columns
        self.verbose = verbose
        self.bar = None

    def on_fit_start(self, engine: Engine) -> None:
        if engine.recipe.precision == "auto":  # what auto chose is worth a line: it is machine-dependent
            print(f"precision auto: {engine.precision.precision} ({engine.precision.reason})", flush=True)
        if self.verbose == 1:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bar

            self.bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                           TextColumn("{task.fields[stats]}"))
            self.bar.start()

    def on_epoch_start(self, engine: Engine, epoch: int) -> None:
        if self.bar is not None:
            self.task = self.bar.add_task(f"epoch {epoch}/{engine.recipe.epochs}", total=engine.steps, stats="")
            self.began = time.perf_counter()

    def on_batch_end(self, engine: Engine, step: int, loss: float) -> None:
        if self.bar is None or not (step % 20 == 0 or step == engine.steps - 1):
            return
        seen = min((step + 1) * engine.recipe.batch_size, engine.samples)
        rate = seen / max(time.perf_counter() - self.began, 1e-9)
        acc = f"  accuracy {engine.correct.item() / seen:.4f}" if engine.count_accuracy else ""
        self.bar.update(self.task, completed=step + 1,
                        stats=f"loss {engine.loss_sum.item() / seen:.4f}{acc}  {rate:,.0f} samples/s")

    def on_epoch_end(self, engine: Engine, epoch: int, logs: dict[str, Any]) -> None:
        line = "  ".join(_format(k, v) for k, v in logs.items() if k != "epoch")
        if self.bar is not None:
            self.bar.update(self.task, completed=engine.steps, stats=line)
        elif self.verbose == 2:
            print(f"epoch {epoch}/{engine.recipe.epochs}  {line}", flush=True)

    def close(self) -> None:
        """Stop the bar, also after an exception (the engine calls it in a ``finally``)."""
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
