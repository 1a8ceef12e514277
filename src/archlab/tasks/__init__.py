"""Task kinds and metrics as registry entries: what a model is trained to do, how it is scored,
and which way each score is better. Other packages ask these entries instead of testing strings."""

from . import _builtin, _sequence  # noqa: F401  (registers the built-in task kinds)
from ._metrics import (
    Metric,
    MetricRegistry,
    Predictions,
    direction_of,
    get_metric,
    list_metrics,
    metric_of_key,
    metrics,
    register_metric,
    score,
)
from ._registry import ENTRY_POINT_GROUP, TaskKind, TaskRegistry, as_task, get_task, list_tasks, register_task, tasks
from ._sequence import corpus_bleu, corpus_chrf, token_loss

__all__ = ["ENTRY_POINT_GROUP", "Metric", "MetricRegistry", "Predictions", "TaskKind", "TaskRegistry", "as_task",
           "corpus_bleu", "corpus_chrf", "direction_of", "get_metric", "get_task", "list_metrics", "list_tasks",
           "metric_of_key", "metrics", "register_metric", "register_task", "score", "tasks", "token_loss"]
