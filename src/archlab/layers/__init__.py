"""Layer types: the registry, the built-in families, and Keras-style item constructors.

Importing this package registers every built-in layer type.
"""

from . import _activations, attention, audio, conv, core, llm, recsys, recurrent  # noqa: F401  (registers the built-ins)
from ._keras import *  # noqa: F403
from ._keras import __all__ as _keras_all
from ._keras import keras_class
from ._registry import (
    SEQUENCE_STATIC,
    Cost,
    InputRule,
    KeepsChannels,
    KerasStyle,
    LayerParams,
    LayerRegistry,
    LayerType,
    NoParams,
    Quantization,
    StructuredPruning,
    TensorInfo,
    TransformerShape,
    get_layer,
    list_layers,
    register_layer,
    registry,
)

__all__ = ["SEQUENCE_STATIC", "Cost", "InputRule", "KeepsChannels", "KerasStyle", "LayerParams", "LayerRegistry",
           "LayerType", "NoParams", "Quantization", "StructuredPruning", "TensorInfo", "TransformerShape", "get_layer",
           "list_layers", "register_layer", "registry", *_keras_all]


def __getattr__(name: str) -> type:
    """``archlab.layers.MyLayer``: the Keras-style constructor of a type registered after import
    (a plugin's), from its ``keras`` trait."""
    cls = keras_class(name) if name[:1].isupper() else None
    if cls is None:
        raise AttributeError(f"module 'archlab.layers' has no attribute {name!r}")
    return cls
