"""Losses and metrics by task (``archlab.tasks``), computed on logits so that a final softmax or
sigmoid stays numerically stable."""

from __future__ import annotations

from collections.abc import Callable

import torch

from archlab.tasks import TaskKind, as_task, get_metric, score

__all__ = ["compute_metrics", "make_loss"]


def make_loss(task: TaskKind | str, label_smoothing: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor],
                                                                              torch.Tensor]:
    """The task's loss on the model's raw outputs (logits); ``task`` may be a task or a recipe loss name."""
    return as_task(task).loss(label_smoothing)


def compute_metrics(outputs: torch.Tensor, targets: torch.Tensor, loss: float, task: TaskKind | str,
                    names: list[str], top_k: int = 5) -> dict[str, float]:
    """Metrics of a whole split from its logits and targets: ``loss`` and those of ``names`` that
    apply to the task (a recipe's metrics were checked against it before training, see
    ``check_recipe``; an old run's recipe may list others, which it never recorded)."""
    kind = as_task(task)
    wanted = [n for n in names if get_metric(n).applies_to(kind.name)]
    return {"loss": loss, **score(kind.predictions(outputs, targets), wanted, top_k)}
