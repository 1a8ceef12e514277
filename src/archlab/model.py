"""``archlab.Model``: Keras' compile / fit / evaluate / predict for any spec, the graph form's
several named inputs included (as Keras' functional models take a dict of arrays by input name).

``archlab.Sequential`` is a Model whose spec is written from a list of layers; both train through
``fit_spec``, as ``archlab train`` does.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from ._inputs import is_named, map_inputs, num_rows
from .analysis import Analysis, analyze
from .builder import ArchlabModel, build
from .exceptions import RegistryError, SpecError
from .spec import Spec, load
from .tasks import get_metric

__all__ = ["Model"]

# Keras loss names -> the archlab tasks that train with that loss (the first unless the spec
# declares another of them: binary cross-entropy trains binary and multilabel heads alike)
_LOSSES = {"categorical_crossentropy": ("classification",), "sparse_categorical_crossentropy": ("classification",),
           "cross_entropy": ("classification",), "binary_crossentropy": ("binary", "multilabel"),
           "binary_cross_entropy": ("binary", "multilabel"), "mse": ("regression",),
           "mean_squared_error": ("regression",)}
# Keras metric names -> archlab's (archlab's own names are taken as they are)
_METRICS = {"acc": "accuracy", "sparse_categorical_accuracy": "accuracy", "categorical_accuracy": "accuracy",
            "binary_accuracy": "accuracy", "top_k_categorical_accuracy": "top_k_accuracy",
            "sparse_top_k_categorical_accuracy": "top_k_accuracy", "mean_squared_error": "mse",
            "mean_absolute_error": "mae"}


def _metric_name(metric: str) -> str:
    name = _METRICS.get(metric, metric)
    try:
        get_metric(name)
    except RegistryError:
        raise SpecError(f"unknown metric {metric!r}; known: {', '.join(sorted({*_METRICS, 'accuracy', 'mse'}))} "
                        "and archlab's metric names (archlab metrics)") from None
    return name


class Model:
    """A spec with Keras' training methods: ``Model(spec)`` for a spec dict, file or Spec, of one
    input or of the graph form's several.

    Example:
        >>> model = Model({"input": [4], "layers": [{"dense": {"units": 3, "activation": "softmax"}}]})
        >>> model.count_params()
        15
    """

    def __init__(self, spec: Spec | dict | str | Path) -> None:
        self._source = load(spec)

    @property
    def spec(self) -> dict:
        """The spec as a plain dict (a copy: editing it changes nothing here)."""
        return copy.deepcopy(self._source.to_dict())

    def to_spec(self) -> Spec:
        return Spec(self.spec)

    def build(self, **kwargs: Any) -> ArchlabModel:
        """The torch module (see archlab.build)."""
        return build(self.to_spec(), **kwargs)

    def analyze(self, batch_size: int = 1) -> Analysis:
        return analyze(self.to_spec(), batch_size=batch_size)

    def count_params(self) -> int:
        return self.analyze().total_params

    def summary(self, batch_size: int = 1, depth: int | None = 3) -> str:
        """The capacity table as text (Keras prints it; print this)."""
        return self.analyze(batch_size).summary(depth)

    # -- Keras-style training on archlab's engine -------------------------------------------
    def compile(self, optimizer: str | dict = "adam", loss: str | None = None, metrics: list[str] | None = None,
                **recipe: Any) -> None:
        """Choose optimizer, loss and metrics, as in Keras; other keywords are recipe fields
        (schedule, grad_clip, init, seed, device, ...). Without a loss the spec's task decides
        (``task.kind``; classification when it declares none). The spec's own ``train:`` section is
        not read: compile's and fit's arguments are the recipe, as in Keras. The weights are created here."""
        from .training import prepare_model, resolve_recipe, resolve_task

        spec = self.to_spec()
        declared = (spec.to_dict().get("task") or {}).get("kind")
        if loss is not None and loss not in _LOSSES:
            raise SpecError(f"unknown loss {loss!r}; known: {', '.join(_LOSSES)}")
        names = [_metric_name(m) for m in metrics or []]
        settings: dict[str, Any] = {"optimizer": optimizer, "metrics": names, **recipe}
        if loss is not None:
            kinds = _LOSSES[loss]
            if declared is not None and declared not in kinds:
                raise SpecError(f"the spec's task is {declared}, which does not train with {loss}: drop loss= (the "
                                f"task's loss is taken) or use a loss of {declared}", "task.kind")
            from .tasks import get_task

            settings["loss"] = get_task(declared or kinds[0]).loss_name
        recipe_ = resolve_recipe(settings)
        self._task = resolve_task(recipe_, spec)
        self._recipe = recipe_.model_copy(update={"loss": self._task.loss_name})  # the run records its loss
        self._one_hot = loss == "categorical_crossentropy"
        self.model_, self._head = prepare_model(spec, self._recipe, self._task)

    def _engine(self):
        from .training import Engine

        if not hasattr(self, "model_"):
            raise SpecError("call compile() before fit(), evaluate() or predict(), as in Keras")
        return Engine(self.model_, self._recipe, self._task, verbose=0, output_activation=self._head)

    def _targets(self, y: Any):
        import torch

        y = np.asarray(y)
        if self._one_hot and y.ndim == 2:
            y = y.argmax(axis=1)  # categorical_crossentropy takes one-hot targets
        return torch.from_numpy(self._task.targets(y))

    def _inputs(self, x: Any):
        """Arrays (one, or a dict by input name) as the model's tensors: the spec's inputs selected
        by name, each in its dtype (int64 for ``dtype: long``), as ``archlab train`` gives them."""
        import torch

        from .builder import parse
        from .training import model_inputs

        arrays = model_inputs(parse(self.to_spec()), map_inputs(np.asarray, x), "x")
        return map_inputs(lambda a: torch.from_numpy(np.ascontiguousarray(a)), arrays)

    def fit(self, x: Any, y: Any, epochs: int = 1, batch_size: int = 32, validation_split: float = 0.0,
            validation_data: tuple | None = None, shuffle: bool = True, verbose: int = 1, seed: int | None = None,
            out: str | None = "runs", callbacks: Any = (), **recipe: Any) -> Any:
        """Train on arrays, as Keras' ``fit``: ``x`` is one array, or a dict of arrays by input name
        for a spec of several inputs. Returns a History whose ``history`` maps metric names
        (``loss``, ``accuracy``, ``val_loss``, ...) to per-epoch lists. Like every archlab training
        it records a run directory under ``out`` (``history.run_dir``); ``out=None`` records nothing.
        Calling fit again continues from the current weights with a fresh optimizer. ``callbacks``
        are ``archlab.training.Callback``s, as Keras' are its ``Callback``s."""
        from .training import Splits, finish_run, fit_spec, start_run

        engine = self._engine()
        updates = {"epochs": epochs, "batch_size": batch_size, "validation_split": validation_split,
                   "shuffle": shuffle, **recipe}
        if seed is not None:
            updates["seed"] = seed
        run_recipe = engine.recipe.model_validate({**engine.recipe.model_dump(), **updates})
        xt, yt = self._inputs(x), self._targets(y)  # bad inputs are refused before a run directory is made
        if num_rows(xt) != len(yt):
            raise SpecError(f"x holds {num_rows(xt)} samples but y {len(yt)}: give one target per sample")
        if validation_data is not None:
            xv, yv = self._inputs(validation_data[0]), self._targets(validation_data[1])
        else:  # Keras: the last fraction of the data, before shuffling
            cut = int(len(yt) * (1 - validation_split))
            xv, yv = map_inputs(lambda t: t[cut:], xt), yt[cut:]
            xt, yt = map_inputs(lambda t: t[:cut], xt), yt[:cut]
        spec = self.to_spec()
        run_dir = start_run(spec, run_recipe, out) if out is not None else None
        fitted = fit_spec(spec, run_recipe, self._task, Splits(xt, yt, xv, yv), model=self.model_,
                          output_activation=self._head, callbacks=callbacks, run_dir=run_dir, verbose=verbose)
        history = fitted.history
        finish_run(run_dir, spec, fitted.engine, history, fitted.seconds, data="arrays", source="fit()",
                   test_metrics={}, classes=None,
                   sizes={"train_samples": len(yt), "val_samples": len(yv), "test_samples": 0})
        return history

    def evaluate(self, x: Any, y: Any, return_dict: bool = False) -> list[float] | dict[str, float] | float:
        """Loss and the compiled metrics, as Keras returns them: a float when there are no metrics,
        else [loss, metric, ...]; or a dict with return_dict=True."""
        metrics, _ = self._engine().evaluate(self._inputs(x), self._targets(y))
        if return_dict:
            return metrics
        values = list(metrics.values())
        return values[0] if len(values) == 1 else values

    def predict(self, x: Any) -> np.ndarray:
        """The model's outputs, final activation included (class probabilities after a softmax)."""
        return self._engine().predict(self._inputs(x)).cpu().numpy()

    def __repr__(self) -> str:
        spec = self.spec
        inputs = list(spec["inputs"]) if is_named(spec.get("inputs")) else ["input"]
        return f"{type(self).__name__}({spec.get('name', 'model')!r}, inputs={inputs})"
