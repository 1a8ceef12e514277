"""archlab: design neural-network architectures as declarative specs, see their capacity
before spending compute, and carry the same spec through every later stage.

Example:
    >>> import archlab
    >>> spec = archlab.load({"input": [4], "layers": [{"dense": {"units": 2}}]})
    >>> archlab.analyze(spec).total_params
    10
"""

from . import layers
from .analysis import Analysis, analyze
from .builder import ArchlabModel, build, parse
from .data import DataError, Dataset, load_dataset
from .exceptions import ArchlabError, RegistryError, ShapeError, SpecError
from .layers import LayerType, get_layer, list_layers, register_layer
from .sequential import Sequential
from .spec import Spec, dump, load
from .training import TrainingError, evaluate_run, predict_run, train

__version__ = "0.1.0"

__all__ = ["Analysis", "ArchlabError", "ArchlabModel", "DataError", "Dataset", "LayerType", "RegistryError",
           "Sequential", "ShapeError", "Spec", "SpecError", "TrainingError", "__version__", "analyze", "build", "dump",
           "evaluate_run", "get_layer", "layers", "list_layers", "load", "load_dataset", "parse", "predict_run",
           "register_layer", "train"]
