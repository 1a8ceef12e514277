"""``archlab.Sequential``: the Keras way of writing a sequential spec in Python."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from .analysis import Analysis, analyze
from .builder import ArchlabModel, build
from .exceptions import SpecError
from .layers import KerasLayer
from .layers._keras import Input, _items
from .spec import Spec
from .tasks import get_task

__all__ = ["Sequential"]

# Keras loss names -> the archlab task that trains with that loss; Keras metric names -> archlab's
_LOSSES = {"categorical_crossentropy": "classification", "sparse_categorical_crossentropy": "classification",
           "cross_entropy": "classification", "binary_crossentropy": "binary",
           "binary_cross_entropy": "binary", "mse": "regression", "mean_squared_error": "regression"}
_METRICS = {"accuracy": "accuracy", "acc": "accuracy", "sparse_categorical_accuracy": "accuracy",
            "categorical_accuracy": "accuracy", "top_k_categorical_accuracy": "top_k_accuracy",
            "sparse_top_k_categorical_accuracy": "top_k_accuracy", "macro_f1": "macro_f1", "mse": "mse",
            "mae": "mae", "top_k_accuracy": "top_k_accuracy"}


class Sequential:
    """A stack of layers that writes a spec, as ``keras.Sequential`` does.

    Example:
        >>> from archlab import layers
        >>> model = Sequential([
        ...     layers.Conv2D(32, (3, 3), activation="relu", input_shape=(1, 28, 28)),
        ...     layers.MaxPooling2D((2, 2)),
        ...     layers.Flatten(),
        ...     layers.Dense(10, activation="softmax"),
        ... ], name="tiny")
        >>> model.spec["layers"][0]
        {'conv2d': {'filters': 32, 'kernel_size': 3, 'activation': 'relu'}}
        >>> model.count_params()
        54410
    """

    def __init__(self, layers: list | None = None, name: str = "model", input_shape: Any = None,
                 task: dict | None = None) -> None:
        self.name = name
        self.input: Any = list(input_shape) if input_shape is not None else None
        self.task = task
        self.layers: list[Any] = []
        for layer in layers or []:
            self.add(layer)

    def add(self, layer: KerasLayer | dict | str) -> None:
        """Append a layer (a constructor from archlab.layers, or a spec item)."""
        if isinstance(layer, Input):
            if self.layers:
                raise SpecError(f"layers.Input is given after {len(self.layers)} layer(s); it must come first")
            self.input = layer.input
            return
        if isinstance(layer, KerasLayer) and layer.input_shape is not None:
            if self.layers:
                raise SpecError(f"input_shape is given on layer {len(self.layers)}; only the first layer takes it")
            self.input = layer.input_shape
        self.layers.append(layer)

    @property
    def spec(self) -> dict:
        """The spec as a plain dict, the same one a person would write in YAML."""
        if self.input is None:
            raise SpecError("the model has no input shape: pass input_shape= to the first layer or to Sequential, "
                            "or start with layers.Input(shape=...)")
        out: dict[str, Any] = {"name": self.name, "input": self.input}
        if self.task:
            out["task"] = self.task
        out["layers"] = _items(self.layers)
        return copy.deepcopy(out)  # the layers' params stay the model's own

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
    def compile(self, optimizer: str | dict = "adam", loss: str = "sparse_categorical_crossentropy",
                metrics: list[str] | None = None, **recipe: Any) -> None:
        """Choose optimizer, loss and metrics, as in Keras; other keywords are recipe fields
        (schedule, grad_clip, init, seed, ...). The model's weights are created here."""
        from .training import prepare_model, resolve_recipe

        if loss not in _LOSSES:
            raise SpecError(f"unknown loss {loss!r}; known: {', '.join(_LOSSES)}")
        names = []
        for metric in metrics or []:
            if metric not in _METRICS:
                raise SpecError(f"unknown metric {metric!r}; known: {', '.join(_METRICS)}")
            names.append(_METRICS[metric])
        self._task = get_task(_LOSSES[loss])
        self._one_hot = loss in ("categorical_crossentropy",)
        self._recipe = resolve_recipe({"optimizer": optimizer, "loss": self._task.loss_name, "metrics": names,
                                       **recipe})
        self.model_, self._head = prepare_model(self.to_spec(), self._recipe, self._task)

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

    @staticmethod
    def _inputs(x: Any):
        import torch

        x = np.asarray(x)
        return torch.from_numpy(x if x.dtype == np.int64 else x.astype(np.float32))

    def fit(self, x: Any, y: Any, epochs: int = 1, batch_size: int = 32, validation_split: float = 0.0,
            validation_data: tuple | None = None, shuffle: bool = True, verbose: int = 1, seed: int | None = None,
            out: str | None = "runs", callbacks: Any = (), **recipe: Any) -> Any:
        """Train on arrays, as Keras' ``fit``; returns a History whose ``history`` maps metric names
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
        spec = self.to_spec()
        run_dir = start_run(spec, run_recipe, out) if out is not None else None
        xt, yt = self._inputs(x), self._targets(y)
        if validation_data is not None:
            xv, yv = self._inputs(validation_data[0]), self._targets(validation_data[1])
        else:  # Keras: the last fraction of the data, before shuffling
            cut = int(len(xt) * (1 - validation_split))
            xt, yt, xv, yv = xt[:cut], yt[:cut], xt[cut:], yt[cut:]
        fitted = fit_spec(spec, run_recipe, self._task, Splits(xt, yt, xv, yv), model=self.model_,
                          output_activation=self._head, callbacks=callbacks, run_dir=run_dir, verbose=verbose)
        history = fitted.history
        finish_run(run_dir, spec, fitted.engine, history, fitted.seconds, data="arrays", source="fit()",
                   test_metrics={}, classes=None,
                   sizes={"train_samples": len(xt), "val_samples": len(xv), "test_samples": 0})
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
