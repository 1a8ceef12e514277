"""Knowledge distillation (Hinton, Vinyals and Dean 2015): train a small student on a trained
teacher's softened outputs as well as on the labels.

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

from archlab.tasks import as_task, get_task

if TYPE_CHECKING:
    from archlab.training import History, Recipe

__all__ = ["distill", "distillation_loss"]

log = logging.getLogger("archlab")
#: Distillation matches class probabilities: a classifier's.
CLASSIFICATION = get_task("classification")


def _check(temperature: float, alpha: float) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"distill: temperature must be > 0 (1 is the plain softmax; Hinton et al. use 2-20, "
                         f"archlab's default is 4); got {temperature!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"distill: alpha is the weight of the teacher's term, in [0, 1] (0: labels only, 1: teacher "
                         f"only); got {alpha!r}")


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, *, temperature: float,
                      alpha: float, hard_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
                      ) -> torch.Tensor:
    """alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, targets).

    The T^2 keeps the soft term's gradients the size of the hard term's whatever T is (they
    scale as 1/T^2). The KL is averaged over the batch, as the cross-entropy is.

    Args:
        student: the student's logits, (batch, classes).
        teacher: the teacher's logits, (batch, classes); log-probabilities work as well (a
            softmax does not change when every logit of a row moves by the same amount).
        targets: class ids, (batch,).
        temperature: T > 0.
        alpha: the soft term's weight, in [0, 1].
        hard_loss: the label loss; default plain cross-entropy (``distill`` passes the recipe's,
            label smoothing included).

    Example:
        >>> s, t = torch.tensor([[2.0, 0.0]]), torch.tensor([[2.0, 0.0]])
        >>> float(distillation_loss(s, t, torch.tensor([0]), temperature=2.0, alpha=1.0))
        0.0
    """
    _check(temperature, alpha)
    if student.shape != teacher.shape:
        raise ValueError(f"distillation needs the teacher and the student to output the same classes, but the teacher "
                         f"gives {tuple(teacher.shape)} and the student {tuple(student.shape)} for one batch: end the "
                         f"student spec with dense: {{units: {teacher.shape[-1]}}}")
    t = float(temperature)
    soft = F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1), reduction="batchmean",
                    log_target=True)
    hard = (hard_loss or F.cross_entropy)(student, targets)
    return alpha * t * t * soft + (1 - alpha) * hard


def distill(student_model: nn.Module, teacher_model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            x_val: torch.Tensor | None, y_val: torch.Tensor | None, recipe: Recipe, *, temperature: float = 4.0,
            alpha: float = 0.5, verbose: int = 0, run_dir: Path | None = None) -> History:
    """Train ``student_model`` in place on ``distillation_loss`` against ``teacher_model``.

    Args:
        student_model: the model to train, outputting logits (as ``prepare_model`` returns it;
            a final softmax still in it is split off here, see ``split_output_activation``).
        teacher_model: a trained classifier over the same classes. It is not changed: a copy of
            it runs in eval mode without gradients, its final softmax split off so that it too
            gives logits.
        x, y: training inputs and class ids (``to_tensors(..., "classification")``).
        x_val, y_val: validation data or None; its loss is the plain cross-entropy, so runs
            with and without a teacher compare directly.
        recipe: epochs, batch size, optimizer, schedule, augmentation, seed (``resolve_recipe``).
        temperature: T > 0 that softens both distributions.
        alpha: weight of the teacher's term, in [0, 1]; 0 is ordinary training on the labels.
        verbose: 0 silent, 1 a progress bar, 2 one line per epoch.
        run_dir: where the engine writes checkpoints and metrics; None keeps them in memory.

    Returns:
        The engine's History; its ``loss`` is the distillation loss, ``val_loss`` plain
        cross-entropy.
    """
    from archlab.training import Splits, fit_spec, make_loss, pick_device, split_output_activation

    _check(temperature, alpha)
    if recipe.loss != "auto" and as_task(recipe.loss) is not CLASSIFICATION:
        raise ValueError(f"distill trains classifiers (cross-entropy), but the recipe's loss is {recipe.loss!r}: "
                         "set train.loss to cross_entropy or auto")
    removed = split_output_activation(student_model, CLASSIFICATION)
    if removed is not None:
        log.info("distill: removed the student's final %s so it trains on logits; apply it to the outputs for "
                 "probabilities", removed)
    # A copy, so the caller's teacher keeps its softmax, its mode and its requires_grad flags.
    teacher = copy.deepcopy(teacher_model)
    split_output_activation(teacher, CLASSIFICATION)
    teacher.eval().requires_grad_(False).to(pick_device(recipe.device))
    hard_loss = make_loss(CLASSIFICATION, recipe.label_smoothing)  # what the Engine trains on without a teacher

    def criterion(xb: torch.Tensor, out: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            soft_targets = teacher(xb).float()
        return distillation_loss(out, soft_targets, yb, temperature=temperature, alpha=alpha, hard_loss=hard_loss)

    return fit_spec(None, recipe, CLASSIFICATION, Splits(x, y, x_val, y_val), model=student_model,
                    output_activation=removed, run_dir=run_dir, verbose=verbose, criterion=criterion).history
