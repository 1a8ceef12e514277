"""Layer types: the registry, the built-in families, and Keras-style item constructors.

Importing this package registers every built-in layer type.
"""

from . import _activations, attention, conv, core, recsys, recurrent  # noqa: F401  (registers the built-ins)
from ._keras import *  # noqa: F403
from ._keras import __all__ as _keras_all
from ._registry import (
    Cost,
    InputRule,
    LayerParams,
    LayerRegistry,
    LayerType,
    NoParams,
    TensorInfo,
    get_layer,
    list_layers,
    register_layer,
    registry,
)

__all__ = ["Cost", "InputRule", "LayerParams", "LayerRegistry", "LayerType", "NoParams", "TensorInfo",
           "get_layer", "list_layers", "register_layer", "registry", *_keras_all]
