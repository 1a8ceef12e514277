"""Keras-style constructors that write spec items: ``Conv2D(32, (3, 3), activation="relu")``
is ``{conv2d: {filters: 32, kernel_size: 3, activation: relu}}``.

They hold no weights and do no work: the spec stays the one source of truth, and
``archlab.Sequential([...]).spec`` is the same dict a person would write in YAML.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "LSTM", "GRU", "Activation", "AdditiveAttention", "AveragePooling1D", "AveragePooling2D", "AvgPool1D",
    "AvgPool2D", "BatchNormalization", "Bidirectional", "Conv1D", "Conv2D", "Dense", "Dropout", "Embedding",
    "Flatten", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
    "Input", "KerasLayer", "LayerNormalization", "MaxPool1D", "MaxPool2D", "MaxPooling1D", "MaxPooling2D",
    "MultiHeadAttention", "Parallel", "PositionalEmbedding", "ReLU", "Repeat", "Reshape", "Residual",
    "SimpleRNN", "Softmax", "TransformerDecoder", "TransformerEncoder",
]

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


def _layer(class_name: str, type_name: str, positional: tuple[str, ...] = (), defaults: dict | None = None,
           renames: dict | None = None) -> type[KerasLayer]:
    return type(class_name, (KerasLayer,), {"type_name": type_name, "positional": positional,
                                           "defaults": defaults or {}, "renames": renames or {},
                                           "__doc__": f"Writes a ``{type_name}`` spec item."})


Dense = _layer("Dense", "dense", ("units",))
Conv1D = _layer("Conv1D", "conv1d", ("filters", "kernel_size"))
Conv2D = _layer("Conv2D", "conv2d", ("filters", "kernel_size"))
MaxPooling1D = MaxPool1D = _layer("MaxPooling1D", "maxpool1d", ("pool_size", "strides"), {"pool_size": 2})
MaxPooling2D = MaxPool2D = _layer("MaxPooling2D", "maxpool2d", ("pool_size", "strides"), {"pool_size": 2})
AveragePooling1D = AvgPool1D = _layer("AveragePooling1D", "avgpool1d", ("pool_size", "strides"), {"pool_size": 2})
AveragePooling2D = AvgPool2D = _layer("AveragePooling2D", "avgpool2d", ("pool_size", "strides"), {"pool_size": 2})
GlobalAveragePooling1D = _layer("GlobalAveragePooling1D", "global_avgpool1d")
GlobalAveragePooling2D = _layer("GlobalAveragePooling2D", "global_avgpool2d")
GlobalMaxPooling1D = _layer("GlobalMaxPooling1D", "global_maxpool1d")
GlobalMaxPooling2D = _layer("GlobalMaxPooling2D", "global_maxpool2d")
Flatten = _layer("Flatten", "flatten")
Reshape = _layer("Reshape", "reshape", ("shape",), renames={"target_shape": "shape"})
Dropout = _layer("Dropout", "dropout", ("rate",))
BatchNormalization = _layer("BatchNormalization", "batchnorm")
LayerNormalization = _layer("LayerNormalization", "layernorm")
ReLU = _layer("ReLU", "relu")
Softmax = _layer("Softmax", "softmax")
Embedding = _layer("Embedding", "embedding", ("input_dim", "output_dim"))
PositionalEmbedding = _layer("PositionalEmbedding", "positional_embedding", ("max_len",))
SimpleRNN = _layer("SimpleRNN", "simple_rnn", ("units",))
LSTM = _layer("LSTM", "lstm", ("units",))
GRU = _layer("GRU", "gru", ("units",))
AdditiveAttention = _layer("AdditiveAttention", "additive_attention", ("units",))
MultiHeadAttention = _layer("MultiHeadAttention", "multi_head_attention", ("num_heads",))
TransformerEncoder = _layer("TransformerEncoder", "transformer_encoder", ("num_heads", "ff_dim"))
TransformerDecoder = _layer("TransformerDecoder", "transformer_decoder", ("num_heads", "ff_dim"))


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
    """``Input(shape=(128,), dtype="long")``: the input of a Sequential, as its first element."""

    def __init__(self, shape: Any, dtype: str = "float") -> None:
        super().__init__()
        self.input_shape = list(shape)
        self.dtype = dtype

    @property
    def input(self) -> Any:
        return self.input_shape if self.dtype == "float" else {"shape": self.input_shape, "dtype": self.dtype}


class Residual(KerasLayer):
    """y = f(x) + shortcut(x); ``post`` layers follow the addition."""

    type_name = "residual"

    def __init__(self, layers: list, shortcut: str = "auto", post: list | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.params = {"layers": _items(layers)}
        if shortcut != "auto":
            self.params["shortcut"] = shortcut
        if post:
            self.params["post"] = _items(post)


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
