"""Losses and metrics, computed on logits so that a final softmax/sigmoid stays numerically stable."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["compute_metrics", "confusion_matrix", "make_loss"]


def make_loss(kind: str, label_smoothing: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss on the model's raw outputs (logits): cross-entropy takes class ids; binary
    cross-entropy takes 0/1 targets; MSE takes values of the output's shape."""
    if kind == "cross_entropy":
        return lambda out, y: F.cross_entropy(out, y, label_smoothing=label_smoothing)
    if kind == "binary_cross_entropy":
        return lambda out, y: F.binary_cross_entropy_with_logits(out.reshape(y.shape), y.float())
    return lambda out, y: F.mse_loss(out.reshape(y.shape), y.float())


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, classes: int) -> torch.Tensor:
    """(classes, classes) counts; rows are true classes, columns predictions (scikit-learn's layout)."""
    return torch.bincount(target * classes + pred, minlength=classes * classes).reshape(classes, classes)


def compute_metrics(outputs: torch.Tensor, targets: torch.Tensor, loss: float, kind: str, names: list[str],
                    top_k: int = 5) -> dict[str, float]:
    """Metrics of a whole split from its logits (N, C) or outputs and targets."""
    result = {"loss": loss}
    if kind == "cross_entropy":
        pred = outputs.argmax(dim=1)
        if "accuracy" in names:
            result["accuracy"] = (pred == targets).float().mean().item()
        if "top_k_accuracy" in names:
            k = min(top_k, outputs.shape[1])
            hits = (outputs.topk(k, dim=1).indices == targets.unsqueeze(1)).any(dim=1)
            result[f"top_{k}_accuracy"] = hits.float().mean().item()
        if "macro_f1" in names:
            cm = confusion_matrix(pred, targets, outputs.shape[1]).double()
            tp = cm.diag()
            support = cm.sum(1) + cm.sum(0)  # 2tp + fp + fn, per class
            present = support > 0
            result["macro_f1"] = (2 * tp[present] / support[present]).mean().item()
    elif kind == "binary_cross_entropy":
        pred = (outputs.reshape(targets.shape) > 0).long()
        if "accuracy" in names:
            result["accuracy"] = (pred == targets.long()).float().mean().item()
    else:
        err = outputs.reshape(targets.shape) - targets
        if "mse" in names:
            result["mse"] = err.square().mean().item()
        if "mae" in names:
            result["mae"] = err.abs().mean().item()
    return result
