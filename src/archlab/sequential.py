"""``archlab.Sequential``: the Keras way of writing a sequential spec in Python."""

from __future__ import annotations

import copy
from typing import Any

from .exceptions import SpecError
from .layers import KerasLayer
from .layers._keras import Input, _items
from .model import Model

__all__ = ["Sequential"]


class Sequential(Model):
    """A stack of layers that writes a spec, as ``keras.Sequential`` does; compile, fit, evaluate,
    predict and summary are ``archlab.Model``'s.

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
