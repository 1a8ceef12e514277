"""The built-in task kinds: classification, binary, multilabel, regression."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from archlab._inputs import fmt_shape
from archlab.exceptions import SpecError

from . import _plots
from ._metrics import Predictions
from ._registry import TaskKind, register_task

if TYPE_CHECKING:  # numpy too: the arrays' own methods do the work (see _registry.py)
    import numpy as np
    import torch

__all__ = ["Binary", "Classification", "Multilabel", "Regression"]


@register_task("classification")
class Classification(TaskKind):
    """One class of several per sample: cross-entropy on logits, class ids as targets."""

    summary = "one class per sample (softmax, cross-entropy)"
    loss_name = "cross_entropy"
    target_dtype = "long"
    output_activation = "softmax"
    default_metrics = ("accuracy",)
    evaluation_metrics = ("accuracy", "macro_f1")
    stratify = True
    data_tasks = ("classification",)

    def loss(self, label_smoothing: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        import torch.nn.functional as F

        return lambda out, y: F.cross_entropy(out, y, label_smoothing=label_smoothing)

    def check_output(self, shape: tuple[int, ...], dataset: Any) -> None:
        if shape != (dataset.num_classes,):
            raise SpecError(f"the model's output is {fmt_shape(shape)} but {dataset.name} has {dataset.num_classes} "
                            f"classes: end the spec with dense: {{units: {dataset.num_classes}, activation: softmax}}",
                            "layers")

    def correct(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (out.argmax(dim=1) == y).sum()

    def labels(self, scores: np.ndarray) -> np.ndarray:
        return scores.argmax(axis=1)

    def describe_prediction(self, scores: np.ndarray, classes: list[str], top: int) -> dict[str, Any]:
        order = (-scores).argsort(kind="stable")[:min(top, len(scores))]
        return {"top": [{"class": classes[i], "probability": float(scores[i])} for i in order]}

    def artefacts(self, predictions: Predictions, classes: list[str] | None,
                  title: str) -> tuple[dict[str, Any], dict[str, Any]]:
        from sklearn.metrics import confusion_matrix

        names = list(classes) if classes else [str(i) for i in range(predictions.scores.shape[1])]
        cm = confusion_matrix(predictions.y_true, predictions.labels, labels=list(range(len(names))))
        return ({"classes": names, "confusion_matrix": cm.tolist()},
                {"confusion": _plots.confusion_figure(cm, names, title)})


@register_task("binary")
class Binary(TaskKind):
    """Yes or no per sample (click, churn): one logit, binary cross-entropy, 0/1 targets."""

    summary = "yes or no per sample (one sigmoid unit, binary cross-entropy)"
    loss_name = "binary_cross_entropy"
    output_activation = "sigmoid"
    default_metrics = ("auc", "log_loss", "accuracy")
    evaluation_metrics = ("auc", "log_loss", "accuracy")
    stratify = True
    data_tasks = ("binary", "classification")

    def loss(self, label_smoothing: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        import torch.nn.functional as F

        return lambda out, y: F.binary_cross_entropy_with_logits(out.reshape(y.shape), y.float())

    def check_data(self, dataset: Any) -> None:
        super().check_data(dataset)
        if dataset.task == "classification" and dataset.num_classes != 2:
            raise SpecError(f"task binary needs two classes but {dataset.name} has {dataset.num_classes}: set "
                            "task.kind: classification, or use a data set with a 0/1 target", "task.kind")

    def check_output(self, shape: tuple[int, ...], dataset: Any) -> None:
        if shape != (1,):
            raise SpecError(f"task binary needs one output unit but the model's output is {fmt_shape(shape)}: end with "
                            "dense: {units: 1, activation: sigmoid}", "layers")

    def correct(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((out.reshape(y.shape) > 0).to(y.dtype) == y).sum()

    def labels(self, scores: np.ndarray) -> np.ndarray:
        return (scores > 0.5).astype("int64")

    def describe_prediction(self, scores: np.ndarray, classes: list[str], top: int) -> dict[str, Any]:
        p = float(scores.ravel()[0])  # the positive class's probability
        names = classes if len(classes) == 2 else ["0", "1"]
        both = sorted([(names[1], p), (names[0], 1 - p)], key=lambda item: -item[1])
        return {"top": [{"class": c, "probability": q} for c, q in both[:top]]}

    def artefacts(self, predictions: Predictions, classes: list[str] | None,
                  title: str) -> tuple[dict[str, Any], dict[str, Any]]:
        y, p = predictions.y_true, predictions.scores
        if len(y) == 0 or y.min() == y.max():  # one class only: no curve to draw
            return {}, {}
        return {}, {"roc": _plots.roc_figure(y, p, title), "pr": _plots.pr_figure(y, p, title)}


@register_task("multilabel")
class Multilabel(TaskKind):
    """Any number of labels per sample: one logit per label, binary cross-entropy per label,
    a 0/1 matrix (N, labels) as targets."""

    summary = "several yes/no labels per sample (one sigmoid unit per label, binary cross-entropy)"
    loss_name = "multilabel_binary_cross_entropy"
    output_activation = "sigmoid"
    default_metrics = ("micro_f1", "macro_f1", "subset_accuracy")
    evaluation_metrics = ("micro_f1", "macro_f1", "subset_accuracy")
    data_tasks = ("multilabel", "regression")  # a 0/1 matrix loads as float targets: a regression data set

    def loss(self, label_smoothing: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        import torch.nn.functional as F

        return lambda out, y: F.binary_cross_entropy_with_logits(out.reshape(y.shape), y.float())

    def check_data(self, dataset: Any) -> None:
        super().check_data(dataset)
        y = dataset.y_train
        if y.ndim != 2 or not ((y == 0) | (y == 1)).all():
            raise SpecError(f"task multilabel needs 0/1 targets of shape (samples, labels) but {dataset.name}'s "
                            f"are {fmt_shape(y.shape)}" + ("" if y.ndim != 2 else " with values other than 0 and 1")
                            + ": give one 0/1 column per label, or set task.kind: regression", "task.kind")

    def check_output(self, shape: tuple[int, ...], dataset: Any) -> None:
        labels = dataset.y_train.shape[1]
        if shape != (labels,):
            raise SpecError(f"task multilabel needs one output unit per label ({labels}) but the model's output is "
                            f"{fmt_shape(shape)}: end with dense: {{units: {labels}, activation: sigmoid}}", "layers")

    def labels(self, scores: np.ndarray) -> np.ndarray:
        return (scores > 0.5).astype("int64")

    def artefacts(self, predictions: Predictions, classes: list[str] | None,
                  title: str) -> tuple[dict[str, Any], dict[str, Any]]:
        from sklearn.metrics import f1_score

        f1 = f1_score(predictions.y_true, predictions.labels, average=None, zero_division=0)
        names = [str(i) for i in range(len(f1))]
        return ({"per_label_f1": dict(zip(names, map(float, f1), strict=True))},
                {"per-label-f1": _plots.per_label_figure(f1, names, title)})


@register_task("regression")
class Regression(TaskKind):
    """Real values per sample: mean squared error, values of the output's shape as targets."""

    summary = "real values per sample (linear output, mean squared error)"
    loss_name = "mse"
    default_metrics = ("mse", "rmse", "mae", "r2")
    evaluation_metrics = ("mse", "rmse", "mae", "r2")
    data_tasks = ("regression",)

    def loss(self, label_smoothing: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        import torch.nn.functional as F

        return lambda out, y: F.mse_loss(out.reshape(y.shape), y.float())

    def check_output(self, shape: tuple[int, ...], dataset: Any) -> None:
        values = math.prod(dataset.y_train.shape[1:])
        if math.prod(shape) != values:
            raise SpecError(f"the model's output is {fmt_shape(shape)} but {dataset.name} has {values} target "
                            f"value(s) per sample: end with dense: {{units: {values}}} (no activation)", "layers")

    def artefacts(self, predictions: Predictions, classes: list[str] | None,
                  title: str) -> tuple[dict[str, Any], dict[str, Any]]:
        return {}, {"residuals": _plots.residuals_figure(predictions.y_true, predictions.scores, title)}
