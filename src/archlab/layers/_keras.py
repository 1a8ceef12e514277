"""Keras-style constructors that write spec items: ``Conv2D(32, (3, 3), activation="relu")``
is ``{conv2d: {filters: 32, kernel_size: 3, activation: relu}}``.

They hold no weights and do no work: the spec stays the one source of truth, and
``archlab.Sequential([...]).spec`` is the same dict a person would write in YAML.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._registry import KerasStyle, LayerType, registry

# The constructors of layer types come from each type's ``keras`` trait (``keras_class``); these
# are the ones for what is not one layer type (connections, Input, Activation, Bidirectional).
_OWN = ["Activation", "Bidirectional", "Input", "KerasLayer", "Parallel", "Repeat", "Residual", "keras_class"]

# Keras writes (3, 3) where the spec's short form is 3.
_SQUARE = ("kernel_size", "strides", "pool_size", "dilation_rate", "padding")


def _plain(key: str, value: Any) -> Any:
    if isinstance(value, tuple):
        value = list(value)
    if key in _SQUARE and isinstance(value, list) and value and all(v == value[0] for v in value):
        return value[0]
    return value


def _items(layers: Any) -> list:
    return [layer.item if isinstance(layer, KerasLayer) else layer for layer in layers]


class KerasLayer:
    """Base of the constructors: positional arguments in Keras' order, keywords as in the spec."""

    type_name: ClassVar[str] = ""
    positional: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[dict[str, Any]] = {}
    renames: ClassVar[dict[str, str]] = {}

    def __init__(self, *args: Any, name: str | None = None, input_shape: Any = None, tie: str | None = None,
                 trainable: bool = True, **kwargs: Any) -> None:
        if len(args) > len(self.positional):
            raise TypeError(f"{type(self).__name__} takes at most {len(self.positional)} positional arguments "
                            f"({', '.join(self.positional)}), got {len(args)}")
        params = dict(self.defaults)
        params.update(zip(self.positional, args, strict=False))
        params.update({self.renames.get(k, k): v for k, v in kwargs.items()})
        self.params = {k: _plain(k, v) for k, v in params.items()}
        self.name, self.tie, self.trainable = name, tie, trainable
        self.input_shape = list(input_shape) if input_shape is not None else None

    @property
    def item(self) -> Any:
        """The spec item this constructor writes."""
        extras = {k: v for k, v in (("name", self.name), ("tie", self.tie)) if v is not None}
        if not self.trainable:
            extras["trainable"] = False
        if not self.params and not extras:
            return self.type_name
        return {self.type_name: self.params or None, **extras}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.item!r})"


_classes: dict[str, tuple[LayerType, type[KerasLayer]]] = {}


def _make(layer_type: LayerType, keras: KerasStyle) -> type[KerasLayer]:
    held = _classes.get(layer_type.name)
    if held is not None and held[0] is layer_type:  # one class per registration, so isinstance holds
        return held[1]
    cls = type(keras.name, (KerasLayer,), {"type_name": layer_type.name, "positional": keras.args,
                                           "defaults": dict(keras.defaults), "renames": dict(keras.renames),
                                           "__doc__": f"Writes a ``{layer_type.name}`` spec item.",
                                           "__module__": "archlab.layers"})
    _classes[layer_type.name] = (layer_type, cls)
    return cls


def keras_class(name: str) -> type[KerasLayer] | None:
    """The Keras-style constructor called ``name`` (``Conv2D``, or an alias such as ``MaxPool2D``),
    made from the ``keras`` trait of the layer type that declares it, built-in or a plugin's;
    None when no registered type does.

    Example:
        >>> keras_class("Dense")(10, activation="relu").item
        {'dense': {'units': 10, 'activation': 'relu'}}
    """
    for type_name in registry:
        layer_type = registry.get(type_name)
        keras = layer_type.keras
        if keras is not None and name in (keras.name, *keras.aliases):
            return _make(layer_type, keras)
    return None


def _builtins() -> dict[str, type[KerasLayer]]:
    """The constructors of the types registered so far (the built-ins, at import), by every name."""
    found: dict[str, type[KerasLayer]] = {}
    for layer_type in registry.registered():
        if layer_type.keras is not None:
            cls = _make(layer_type, layer_type.keras)
            found.update(dict.fromkeys((layer_type.keras.name, *layer_type.keras.aliases), cls))
    return found


class Activation(KerasLayer):
    """``Activation("relu")`` writes the bare item ``relu``."""

    def __init__(self, activation: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.type_name = activation


class Bidirectional(KerasLayer):
    """``Bidirectional(LSTM(64))`` writes ``{lstm: {units: 64, bidirectional: true}}``."""

    def __init__(self, layer: KerasLayer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.type_name = layer.type_name
        self.params = {**layer.params, "bidirectional": True}
        self.input_shape = self.input_shape or layer.input_shape


class Input(KerasLayer):
    """``Input(shape=(128,), dtype="long")``: the input of a Sequential, as its first element;
    ``pad_id=0`` declares the id that pads the sequences (the model masks the padding)."""

    def __init__(self, shape: Any, dtype: str = "float", pad_id: int | None = None) -> None:
        super().__init__()
        self.input_shape = list(shape)
        self.dtype = dtype
        self.pad_id = pad_id

    @property
    def input(self) -> Any:
        if self.dtype == "float" and self.pad_id is None:
            return self.input_shape
        declared = {"shape": self.input_shape, "dtype": self.dtype}
        return declared if self.pad_id is None else declared | {"pad_id": self.pad_id}


class Residual(KerasLayer):
    """y = f(x) + shortcut(x); ``post`` layers follow the addition; ``drop_path``: stochastic depth."""

    type_name = "residual"

    def __init__(self, layers: list, shortcut: str = "auto", post: list | None = None, drop_path: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.params = {"layers": _items(layers)}
        if shortcut != "auto":
            self.params["shortcut"] = shortcut
        if post:
            self.params["post"] = _items(post)
        if drop_path:
            self.params["drop_path"] = drop_path


class Parallel(KerasLayer):
    """Branches that read the same input, joined by ``merge`` (concat, add, mean, max, mul)."""

    type_name = "parallel"

    def __init__(self, branches: list[list], merge: str = "concat", axis: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.params = {"merge": merge, "branches": [_items(b if isinstance(b, list) else [b]) for b in branches]}
        if axis is not None:
            self.params["axis"] = axis


class Repeat(KerasLayer):
    """The same block ``times`` times; ``share_weights=True`` reuses one set of weights."""

    type_name = "repeat"

    def __init__(self, layers: list, times: int, share_weights: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.params = {"times": times, "layers": _items(layers)}
        if share_weights:
            self.params["share_weights"] = True


_BUILTIN = _builtins()
globals().update(_BUILTIN)
__all__ = sorted([*_OWN, *_BUILTIN])
