"""archlab: design neural-network architectures as declarative specs, see their capacity
before spending compute, and carry the same spec through every later stage.

Example:
    >>> import archlab
    >>> spec = archlab.load({"input": [4], "layers": [{"dense": {"units": 2}}]})
    >>> archlab.analyze(spec).total_params
    10
"""

from typing import TYPE_CHECKING

from . import layers
from ._lazy import lazy_attributes
from .analysis import Analysis, analyze
from .builder import parse
from .exceptions import ArchlabError, RegistryError, ShapeError, SpecError
from .layers import LayerType, get_layer, list_layers, register_layer
from .spec import Spec, dump, load

if TYPE_CHECKING:
    from . import plan
    from .builder import ArchlabModel, build
    from .data import DataError, Dataset, load_dataset
    from .model import Model
    from .plan import plan_training
    from .sequential import Sequential
    from .training import Callback, TrainingError, ensemble, evaluate_run, predict_run, train

# These import torch (or numpy): loaded on first use, so that `archlab validate` and
# `archlab schema`, which never build or train, start without them.
__getattr__, __dir__ = lazy_attributes(__name__, {
    "ArchlabModel": "archlab.builder", "build": "archlab.builder",
    "DataError": "archlab.data", "Dataset": "archlab.data", "load_dataset": "archlab.data",
    "Model": "archlab.model", "Sequential": "archlab.sequential",
    "Callback": "archlab.training", "TrainingError": "archlab.training", "evaluate_run": "archlab.training",
    "predict_run": "archlab.training", "train": "archlab.training", "ensemble": "archlab.training",
    "plan": "archlab.plan", "plan_training": "archlab.plan",  # light, but only `archlab plan` needs it
})

__version__ = "0.1.0"

__all__ = ["Analysis", "ArchlabError", "ArchlabModel", "Callback", "DataError", "Dataset", "LayerType", "Model",
           "RegistryError", "Sequential", "ShapeError", "Spec", "SpecError", "TrainingError", "__version__", "analyze",
           "build", "dump", "ensemble", "evaluate_run", "get_layer", "layers", "list_layers", "load", "load_dataset",
           "parse", "plan", "plan_training", "predict_run", "register_layer", "train"]
