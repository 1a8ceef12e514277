"""The task registry: what a model is trained to do, as one object per kind.

A task kind owns everything that used to be a string test scattered over training, search,
selection, compress and deploy: its loss on logits, the output and targets it needs, the final
activation split off for a stable loss, its metrics, its prediction transform, whether splits
stratify, and the evaluation pictures. Other packages ask the entry; a registered plugin task
takes part like a built-in one. Nothing here imports torch at module level (``archlab validate``
never does): losses are made inside functions.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from archlab._registry import Registry
from archlab.exceptions import RegistryError, SpecError, suggest

from ._metrics import Predictions, metrics

if TYPE_CHECKING:  # numpy and torch for type hints only: the arrays' and tensors' own methods do the
    # work, so that importing the registry (archlab validate does, for task.kind) loads no heavy library
    import numpy as np
    import torch

__all__ = ["ENTRY_POINT_GROUP", "TaskKind", "TaskRegistry", "as_task", "get_task", "list_tasks", "register_task",
           "tasks"]

ENTRY_POINT_GROUP = "archlab.tasks"


class TaskKind(abc.ABC):
    """One kind of task. Subclass it, set the class attributes, implement ``loss`` and
    ``check_output``, and register it with ``@register_task("name")``.

    Attributes:
        loss_name: the recipe's ``train.loss`` value that means this task's loss (old runs record it).
        target_dtype: the targets' dtype: ``long`` (class ids) or ``float``.
        output_activation: the final activation split off the model so the loss works on logits
            (``softmax``, ``sigmoid``), and applied again by ``scores``; None for none.
        default_metrics: what a recipe without ``train.metrics`` records.
        evaluation_metrics: what ``evaluate`` always reports beside the recipe's metrics.
        stratify: whether validation splits and folds keep the classes' proportions.
        data_tasks: the data sets' tasks (``Dataset.task``) this task trains on.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    loss_name: ClassVar[str] = ""
    target_dtype: ClassVar[Literal["long", "float"]] = "float"
    output_activation: ClassVar[str | None] = None
    default_metrics: ClassVar[tuple[str, ...]] = ()
    evaluation_metrics: ClassVar[tuple[str, ...]] = ()
    stratify: ClassVar[bool] = False
    data_tasks: ClassVar[tuple[str, ...]] = ()

    @property
    def headline_metric(self) -> str:
        """The one metric that stands for the task where a single number is wanted: search's default
        objective, cv's and shrink's measure, compress's report (the first default metric)."""
        return self.default_metrics[0]

    # -- training ------------------------------------------------------------------------------
    @abc.abstractmethod
    def loss(self, label_smoothing: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The loss on the model's raw outputs (logits) and the targets."""

    @abc.abstractmethod
    def check_output(self, shape: tuple[int, ...], dataset: Any) -> None:
        """SpecError (path ``layers``) when the model's output shape cannot be this task's prediction
        for ``dataset``, saying how the spec should end."""

    def target_input(self, inputs: dict[str, tuple[int, ...]]) -> str | None:
        """The input whose positions are the tokens the model predicts (seq2seq's ``target``, a
        language model's one input), of the spec's ``inputs`` (name -> shape): the T that the
        analysis divides FLOPs by. None for a task that predicts no tokens, or inputs without it."""
        return None

    def check_data(self, dataset: Any) -> None:
        """SpecError at ``task.kind`` when ``dataset`` is not one this task trains on."""
        if dataset.task not in self.data_tasks:
            raise SpecError(f"task {self.name} does not train on {dataset.name}, a {dataset.task} data set "
                            f"(task {self.name} takes {' or '.join(self.data_tasks)} data); set task.kind: "
                            f"{dataset.task}, or use another data set", "task.kind")

    def targets(self, y: np.ndarray) -> np.ndarray:
        """The targets as the loss takes them."""
        return y.astype("int64" if self.target_dtype == "long" else "float32", order="C", copy=False)

    def correct(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """How many samples of a training batch are right, on the device (no host sync); None when the
        task has no per-batch accuracy."""
        return None

    # -- predictions ---------------------------------------------------------------------------
    def scores(self, out: torch.Tensor) -> torch.Tensor:
        """The prediction transform of logits: probabilities, or the values themselves."""
        if self.output_activation == "softmax":
            return out.softmax(dim=1)
        return out.sigmoid() if self.output_activation == "sigmoid" else out

    def logits_of(self, scores: torch.Tensor) -> torch.Tensor:
        """Logits whose ``scores`` are ``scores``: the inverse of the prediction transform, so that
        probabilities made elsewhere (an ensemble's combination) take the task's loss and metrics
        (for softmax the loss is then their NLL). A probability of 0 or 1 is clamped (to float32's
        smallest normal for softmax, 1e-7 from either end for sigmoid) to keep the loss finite."""
        if self.output_activation == "softmax":
            return scores.clamp_min(1.1754944e-38).log()  # softmax(log p) = p for p on the simplex
        return scores.logit(eps=1e-7) if self.output_activation == "sigmoid" else scores

    def labels(self, scores: np.ndarray) -> np.ndarray:
        """Hard predictions from ``scores``: class ids, 0/1, or the values."""
        return scores

    def predictions(self, out: torch.Tensor, y: torch.Tensor) -> Predictions:
        """A whole split's targets and predictions (numpy) for the metrics."""
        y_true = y.detach().cpu().numpy()
        scores = self.scores(out.detach().float()).cpu().numpy()
        if scores.size == y_true.size:  # (N, 1) outputs for (N,) targets
            scores = scores.reshape(y_true.shape)
        return Predictions(y_true, scores, self.labels(scores))

    def describe_prediction(self, scores: np.ndarray, classes: list[str], top: int) -> dict[str, Any]:
        """One sample's prediction as ``archlab predict`` prints it."""
        return {"output": scores.tolist()}

    # -- evaluation ----------------------------------------------------------------------------
    def decoded_metrics(self, model: Any, dataset: Any, split: str, **options: Any) -> dict[str, float]:
        """Metrics that need the model's own outputs decoded rather than its logits on the targets
        (a translation's BLEU); ``evaluate`` adds them to the split's metrics. None for most tasks."""
        return {}

    #: the keyword options ``predict_text`` takes (``beam_size`` of a translation, a language model's
    #: sampling): predict refuses the others by name instead of ignoring them
    text_options: ClassVar[tuple[str, ...]] = ()

    def predict_text(self, model: Any, tokenizers: Any, sentences: list[str], parsed: Any,
                     **options: Any) -> list[dict[str, Any]]:
        """Predictions for sentences, for the tasks that read text (a translation each)."""
        raise SpecError(f"task {self.name} predicts from arrays, not sentences: give predict an .npy, .csv, "
                        "image or .npz file")

    def artefacts(self, predictions: Predictions, classes: list[str] | None,
                  title: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """What an evaluation records beside its metrics: JSON fields, and figures by file prefix
        (``{"roc": fig}`` is saved as ``roc-test-best.png``)."""
        return {}, {}


class TaskRegistry(Registry[TaskKind]):
    """All task kinds by name; plugins come through the ``archlab.tasks`` entry-point group, loaded
    the first time a name is missing or the list is asked for."""

    def __init__(self) -> None:
        super().__init__("task", ENTRY_POINT_GROUP)

    def register(self, name: str, task: type[TaskKind], *, override: bool = False) -> None:
        self.check_name(name)
        missing = sorted(getattr(task, "__abstractmethods__", ()))
        if missing:  # caught at registration, not when the first training asks for the loss
            raise RegistryError(f"task {name!r} ({task.__name__}) must define {' and '.join(missing)}")
        for metric in (*task.default_metrics, *task.evaluation_metrics):
            # an unknown metric fails at registration, not in the first evaluation; a known one now
            # applies to this task too (a plugin task may score with mae, auc...)
            metrics.allow(metrics.get(metric).name, name)
        task.name = name
        self.add(name, task(), override=override)

    def get(self, name: str, where: str = "task.kind") -> TaskKind:
        """The task called ``name``; a SpecError at ``where`` with the valid names if unknown."""
        found = self.find(name)
        if found is None:
            raise SpecError(self.unknown(name), where)
        return found

    def by_loss(self, loss: str) -> TaskKind:
        """The task whose loss a recipe's ``train.loss`` names (``binary_cross_entropy`` -> binary)."""
        self.load_plugins()
        found = [t for t in self._entries.values() if t.loss_name == loss]
        if not found:
            known = sorted({t.loss_name for t in self._entries.values()})
            raise SpecError(f"unknown loss '{loss}'{suggest(loss, known)} (known: auto, {', '.join(known)})",
                            "train.loss")
        return found[0]


tasks = TaskRegistry()


def register_task(name: str, *, override: bool = False) -> Callable[[type[TaskKind]], type[TaskKind]]:
    """Class decorator adding a TaskKind to the registry under ``name``."""

    def decorate(cls: type[TaskKind]) -> type[TaskKind]:
        tasks.register(name, cls, override=override)
        return cls

    return decorate


def get_task(name: str, where: str = "task.kind") -> TaskKind:
    """The registered task called ``name``; SpecError at ``where`` with a suggestion if unknown.

    Example:
        >>> get_task("binary").default_metrics
        ('auc', 'log_loss', 'accuracy')
    """
    return tasks.get(name, where)


def list_tasks() -> list[str]:
    """Names of every registered task kind, sorted."""
    return list(tasks)


def as_task(task: TaskKind | str) -> TaskKind:
    """A TaskKind from itself, a task name, or a recipe loss name (``cross_entropy``), which
    callers written before tasks were objects pass.

    Example:
        >>> as_task("cross_entropy").name, as_task("regression").name
        ('classification', 'regression')
    """
    if isinstance(task, TaskKind):
        return task
    if task not in tasks:
        tasks.load_plugins()
    return tasks.get(task) if task in tasks else tasks.by_loss(task)
