"""Knowledge distillation (Hinton, Vinyals and Dean 2015): train a small student on a trained
teacher's softened outputs as well as on the labels.

What "the teacher's outputs" are follows the task's output activation (``TaskKind.output_activation``):
a softmax's class probabilities (classification), a sigmoid's independent probabilities (binary,
multilabel), or the values themselves (regression: the student regresses on the teacher's
predictions, which no temperature softens).

It runs in the ordinary training ``Engine`` through its ``criterion`` hook, so a distillation run
has the engine's shuffling, augmentation, schedules, early stopping and checkpoints, and the
teacher sees exactly the (augmented) batch the student sees.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from archlab._inputs import call_model
from archlab.tasks import TaskKind, as_task, get_task

if TYPE_CHECKING:
    from archlab.training import History, Recipe

__all__ = ["distill", "distillation_loss"]

log = logging.getLogger("archlab")
CLASSIFICATION = get_task("classification")


def _check(temperature: float, alpha: float) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"distill: temperature must be > 0 (1 is the plain softmax; Hinton et al. use 2-20, "
                         f"archlab's default is 4); got {temperature!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"distill: alpha is the weight of the teacher's term, in [0, 1] (0: labels only, 1: teacher "
                         f"only); got {alpha!r}")


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, *, temperature: float,
                      alpha: float, hard_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                      task: TaskKind | str = CLASSIFICATION) -> torch.Tensor:
    """alpha * soft + (1 - alpha) * hard(student, targets), the soft term by the task's outputs:

    - softmax (classification): T^2 * KL(softmax(teacher/T) || softmax(student/T)), averaged over the batch;
    - sigmoid (binary, multilabel): T^2 * KL between the Bernoulli distributions sigmoid(teacher/T)
      and sigmoid(student/T), averaged over the outputs (the binary cross-entropy to the teacher's
      probabilities, less its constant entropy, so that it is 0 when they agree);
    - none (regression): the mean squared error to the teacher's values (``temperature`` unused).

    The T^2 keeps the soft term's gradients the size of the hard term's whatever T is (they
    scale as 1/T^2).

    Args:
        student: the student's logits (or values), (batch, outputs).
        teacher: the teacher's, the same shape; for a softmax, log-probabilities work as well (a
            softmax does not change when every logit of a row moves by the same amount).
        targets: the labels as the task's loss takes them.
        temperature: T > 0.
        alpha: the soft term's weight, in [0, 1].
        hard_loss: the label loss; default the task's (``distill`` passes the recipe's, label
            smoothing included).
        task: the task (a TaskKind or its name); default classification.

    Example:
        >>> s, t = torch.tensor([[2.0, 0.0]]), torch.tensor([[2.0, 0.0]])
        >>> float(distillation_loss(s, t, torch.tensor([0]), temperature=2.0, alpha=1.0))
        0.0
        >>> float(distillation_loss(torch.tensor([[0.5]]), torch.tensor([[1.5]]), torch.tensor([[0.0]]),
        ...                         temperature=1.0, alpha=1.0, task="regression"))
        1.0
    """
    _check(temperature, alpha)
    task = as_task(task)
    if student.shape != teacher.shape:
        raise ValueError(f"distillation needs the teacher and the student to give outputs of one shape, but the "
                         f"teacher gives {tuple(teacher.shape)} and the student {tuple(student.shape)} for one batch: "
                         f"end the student spec with dense: {{units: {teacher.shape[-1]}}}")
    t = float(temperature)
    # by the task's registry entry: values without an activation are regressed on; class ids
    # (target_dtype long) are one softmax over the classes; other targets are per-output probabilities
    if task.output_activation is None:
        soft = F.mse_loss(student, teacher)
    elif task.target_dtype == "long":
        soft = t * t * F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1),
                                reduction="batchmean", log_target=True)
    else:
        p = torch.sigmoid(teacher / t)
        soft = t * t * (F.binary_cross_entropy_with_logits(student / t, p)
                        - F.binary_cross_entropy_with_logits(teacher / t, p))
    hard = (hard_loss or task.loss())(student, targets)
    return alpha * soft + (1 - alpha) * hard


def distill(student_model: nn.Module, teacher_model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            x_val: torch.Tensor | None, y_val: torch.Tensor | None, recipe: Recipe, *, temperature: float = 4.0,
            alpha: float = 0.5, verbose: int = 0, run_dir: Path | None = None,
            task: TaskKind | str = CLASSIFICATION) -> History:
    """Train ``student_model`` in place on ``distillation_loss`` against ``teacher_model``.

    Args:
        student_model: the model to train, outputting logits (as ``prepare_model`` returns it;
            a final softmax or sigmoid still in it is split off here, see ``split_output_activation``).
        teacher_model: a trained model of the same task and outputs. It is not changed: a copy of
            it runs in eval mode without gradients, its final activation split off so that it too
            gives logits.
        x, y: training inputs (one tensor, or a dict by input name) and targets (``to_tensors(..., task)``).
        x_val, y_val: validation data or None; its loss is the task's plain loss, so runs
            with and without a teacher compare directly.
        recipe: epochs, batch size, optimizer, schedule, augmentation, seed (``resolve_recipe``).
        temperature: T > 0 that softens both distributions.
        alpha: weight of the teacher's term, in [0, 1]; 0 is ordinary training on the labels.
        verbose: 0 silent, 1 a progress bar, 2 one line per epoch.
        run_dir: where the engine writes checkpoints and metrics; None keeps them in memory.
        task: the task both models have (``distillation_loss`` says what each one distils).

    Returns:
        The engine's History; its ``loss`` is the distillation loss, ``val_loss`` the task's loss.
    """
    from archlab.training import Splits, fit_spec, make_loss, pick_device, split_output_activation

    _check(temperature, alpha)
    task = as_task(task)
    if recipe.loss != "auto" and as_task(recipe.loss) is not task:
        raise ValueError(f"distill trains a {task.name} model ({task.loss_name}), but the recipe's loss is "
                         f"{recipe.loss!r}: set train.loss to {task.loss_name} or auto")
    removed = split_output_activation(student_model, task)
    if removed is not None:
        log.info("distill: removed the student's final %s so it trains on logits; apply it to the outputs for "
                 "probabilities", removed)
    # A copy, so the caller's teacher keeps its softmax, its mode and its requires_grad flags.
    teacher = copy.deepcopy(teacher_model)
    split_output_activation(teacher, task)
    teacher.eval().requires_grad_(False).to(pick_device(recipe.device))
    hard_loss = make_loss(task, recipe.label_smoothing)  # what the Engine trains on without a teacher

    def criterion(xb: torch.Tensor | dict[str, torch.Tensor], out: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            soft_targets = call_model(teacher, xb).float()
        return distillation_loss(out, soft_targets, yb, temperature=temperature, alpha=alpha, hard_loss=hard_loss,
                                 task=task)

    return fit_spec(None, recipe, task, Splits(x, y, x_val, y_val), model=student_model,
                    output_activation=removed, run_dir=run_dir, verbose=verbose, criterion=criterion).history
