"""The metric registry: every metric has a name, a direction, the tasks it applies to and its
computation (scikit-learn's, on numpy arrays of a whole split).

Early stopping, LR-on-plateau, cross-validation's choice and search objectives all read a metric's
direction here, so that no two of them guess it from the name with different rules.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from archlab._registry import Registry
from archlab.exceptions import RegistryError, SpecError, suggest

if TYPE_CHECKING:  # type hints only: importing the registry loads no heavy library (see _registry.py)
    import numpy as np

__all__ = ["Metric", "MetricRegistry", "Predictions", "direction_of", "get_metric", "list_metrics", "metric_of_key",
           "metrics", "register_metric", "score"]

Direction = Literal["max", "min"]


@dataclass(frozen=True)
class Predictions:
    """One split's targets and the model's predictions, as metrics read them.

    Attributes:
        y_true: targets: class ids (N,), 0/1 (N,) or (N, L), or values.
        scores: the task's prediction transform: class probabilities (N, C), the positive class's
            probability (N,), label probabilities (N, L), or the predicted values.
        labels: hard predictions: class ids, 0/1, or the values again.
    """

    y_true: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class Metric:
    """One metric.

    Attributes:
        name: the name the recipe uses (``train.metrics: [auc]``).
        direction: ``max`` when higher is better, ``min`` when lower is.
        tasks: the task kinds it applies to; None: every task (only ``loss``).
        compute: ``compute(predictions, top_k)`` -> float; None for ``loss``, which the engine computes
            with the task's loss function on logits.
        summary: one line for docs and messages.
    """

    name: str
    direction: Direction
    tasks: frozenset[str] | None
    compute: Callable[[Predictions, int], float] | None
    summary: str = ""

    def applies_to(self, task: str) -> bool:
        return self.tasks is None or task in self.tasks

    def key(self, top_k: int, classes: int | None = None) -> str:
        """The column it is recorded under: ``top_5_accuracy`` for ``top_k_accuracy`` with k = 5."""
        if self.name == "top_k_accuracy":
            return f"top_{min(top_k, classes) if classes else top_k}_accuracy"
        return self.name


class MetricRegistry(Registry[Metric]):
    """Every metric by name; one object, as the layer registry is."""

    def __init__(self) -> None:
        super().__init__("metric")

    def register(self, metric: Metric, *, override: bool = False) -> Metric:
        self.check_name(metric.name)
        if metric.direction not in ("max", "min"):
            raise RegistryError(f"metric {metric.name!r}: direction is 'max' or 'min', got {metric.direction!r}")
        return self.add(metric.name, metric, override=override)

    def get(self, name: str) -> Metric:
        found = self.find(name)
        if found is None:
            raise RegistryError(self.unknown(name))
        return found

    def allow(self, name: str, task: str) -> None:
        """Let metric ``name`` apply to ``task`` as well (a task that lists it among its metrics)."""
        metric = self._entries[name]
        if metric.tasks is not None and task not in metric.tasks:
            self._entries[name] = replace(metric, tasks=metric.tasks | {task})

    def for_task(self, task: str) -> list[str]:
        return sorted(n for n, m in self._entries.items() if m.applies_to(task))


metrics = MetricRegistry()


def register_metric(name: str, direction: Direction, tasks: tuple[str, ...] | None, summary: str = "", *,
                    override: bool = False) -> Callable[[Callable[[Predictions, int], float]], Metric]:
    """Decorator registering ``compute(predictions, top_k) -> float`` as a metric.

    Example:
        >>> import numpy as np
        >>> @register_metric("median_abs_error", "min", ("regression",), override=True)
        ... def _median(p, top_k):
        ...     return float(np.median(np.abs(p.y_true - p.scores)))
        >>> direction_of("val_median_abs_error")
        'min'
        >>> metrics.unregister("median_abs_error")
    """

    def decorate(compute: Callable[[Predictions, int], float]) -> Metric:
        return metrics.register(Metric(name, direction, None if tasks is None else frozenset(tasks), compute,
                                       summary), override=override)

    return decorate


def get_metric(name: str) -> Metric:
    """The metric called ``name``; RegistryError with a suggestion if unknown."""
    return metrics.get(name)


def list_metrics(task: str | None = None) -> list[str]:
    """Names of every metric, or of those that apply to ``task``, sorted."""
    return list(metrics) if task is None else metrics.for_task(task)


_TOP_K = re.compile(r"top_\d+_accuracy")


def metric_of_key(key: str) -> Metric:
    """The metric behind a recorded column: ``val_auc`` -> auc, ``top_5_accuracy`` -> top_k_accuracy.

    Example:
        >>> metric_of_key("val_top_3_accuracy").name
        'top_k_accuracy'
    """
    name = key.removeprefix("val_")
    return metrics.get("top_k_accuracy" if _TOP_K.fullmatch(name) else name)


def direction_of(key: str, task: str | None = None, where: str = "") -> Direction:
    """Whether a recorded metric (``val_auc``, ``loss``) is maximised or minimised; the one rule.

    With ``task``, a metric that does not apply to it is a SpecError at ``where`` (a spec path or an
    option) listing the ones that do.

    Example:
        >>> direction_of("val_auc"), direction_of("val_loss"), direction_of("r2")
        ('max', 'min', 'max')
    """
    name = key.removeprefix("val_")
    try:
        metric = metric_of_key(key)
    except RegistryError:
        known = metrics.for_task(task) if task is not None else list(metrics)
        owner = f"task {task}'s metrics" if task is not None else "known"
        raise SpecError(f"unknown metric '{name}'{suggest(name, known)} ({owner}: {', '.join(known)}; "
                        "val_NAME is the validation split's)", where) from None
    if task is not None and not metric.applies_to(task):
        names = ", ".join(metrics.for_task(task))
        raise SpecError(f"metric '{metric.name}' does not apply to task {task} (it applies to "
                        f"{', '.join(sorted(metric.tasks or ()))}); task {task} has: {names}", where)
    return metric.direction


def score(predictions: Predictions, names: list[str] | tuple[str, ...], top_k: int = 5) -> dict[str, float]:
    """The named metrics of one split (``loss`` is the engine's: it is skipped here).

    Example:
        >>> import numpy as np
        >>> p = Predictions(np.array([0, 1, 1]), np.array([0.2, 0.9, 0.4]), np.array([0, 1, 0]))
        >>> score(p, ["accuracy", "auc"])
        {'accuracy': 0.6666666666666666, 'auc': 1.0}
    """
    classes = predictions.scores.shape[1] if predictions.scores.ndim == 2 else None
    result = {}
    for name in names:
        metric = metrics.get(name)
        if metric.compute is not None:
            k = min(top_k, classes) if classes else top_k
            result[metric.key(top_k, classes)] = metric.compute(predictions, k)
    return result


# -- the built-in metrics, from scikit-learn ---------------------------------------------------------
# sklearn.metrics is imported inside each function: importing it costs about a second, and commands
# that never compute a metric (archlab validate, summary) should not pay it.

metrics.register(Metric("loss", "min", None, None, "the training loss, on logits"))


@register_metric("accuracy", "max", ("classification", "binary"), "fraction of samples whose class is right")
def _accuracy(p: Predictions, top_k: int) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(p.y_true, p.labels))


@register_metric("top_k_accuracy", "max", ("classification",), "the true class among the k most probable")
def _top_k_accuracy(p: Predictions, top_k: int) -> float:
    from sklearn.metrics import top_k_accuracy_score

    classes = p.scores.shape[1]
    if top_k >= classes:  # every class is among the top k: sklearn warns and returns 1.0
        return 1.0
    return float(top_k_accuracy_score(p.y_true, p.scores, k=top_k, labels=list(range(classes))))


@register_metric("macro_f1", "max", ("classification", "multilabel"),
                 "F1 per class (or label), averaged with equal weights")
def _macro_f1(p: Predictions, top_k: int) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(p.y_true, p.labels, average="macro", zero_division=0))


@register_metric("micro_f1", "max", ("multilabel",), "F1 over every (sample, label) decision")
def _micro_f1(p: Predictions, top_k: int) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(p.y_true, p.labels, average="micro", zero_division=0))


@register_metric("subset_accuracy", "max", ("multilabel",), "fraction of samples with every label right")
def _subset_accuracy(p: Predictions, top_k: int) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(p.y_true, p.labels))


@register_metric("auc", "max", ("binary",), "area under the ROC curve")
def _auc(p: Predictions, top_k: int) -> float:
    from sklearn.metrics import roc_auc_score

    if len(p.y_true) == 0 or p.y_true.min() == p.y_true.max():  # one class: no ROC curve; not a number, not a crash
        return math.nan
    return float(roc_auc_score(p.y_true, p.scores))


@register_metric("log_loss", "min", ("binary",), "mean negative log-likelihood of the true class")
def _log_loss(p: Predictions, top_k: int) -> float:
    from sklearn.metrics import log_loss

    return float(log_loss(p.y_true, p.scores, labels=[0, 1]))


@register_metric("mse", "min", ("regression",), "mean squared error")
def _mse(p: Predictions, top_k: int) -> float:
    from sklearn.metrics import mean_squared_error

    return float(mean_squared_error(p.y_true, p.scores))


@register_metric("rmse", "min", ("regression",), "root of the mean squared error")
def _rmse(p: Predictions, top_k: int) -> float:
    from sklearn.metrics import root_mean_squared_error

    return float(root_mean_squared_error(p.y_true, p.scores))


@register_metric("mae", "min", ("regression",), "mean absolute error")
def _mae(p: Predictions, top_k: int) -> float:
    from sklearn.metrics import mean_absolute_error

    return float(mean_absolute_error(p.y_true, p.scores))


@register_metric("r2", "max", ("regression",), "coefficient of determination (1 is perfect)")
def _r2(p: Predictions, top_k: int) -> float:
    from sklearn.metrics import r2_score

    if len(p.y_true) < 2:  # R² needs a variance
        return math.nan
    return float(r2_score(p.y_true, p.scores))
