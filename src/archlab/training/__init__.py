"""Training, evaluation and prediction of specs, with run directories that can be resumed."""

from ._engine import Engine, History, TrainingError, pick_device, split_output_activation
from ._metrics import compute_metrics, confusion_matrix, make_loss
from ._recipe import EarlyStoppingConfig, OptimizerConfig, Recipe, ScheduleConfig, resolve_recipe
from ._runs import RunError, load_weights, read_metrics, save_weights
from ._train import (
    TrainResult,
    evaluate_run,
    finish_run,
    load_run,
    plot_curves,
    predict_run,
    prepare_model,
    read_input,
    start_run,
    train,
)

__all__ = ["EarlyStoppingConfig", "Engine", "History", "OptimizerConfig", "Recipe", "RunError", "ScheduleConfig",
           "TrainResult", "TrainingError", "compute_metrics", "confusion_matrix", "evaluate_run", "finish_run",
           "load_run",
           "load_weights", "make_loss", "pick_device", "plot_curves", "predict_run", "prepare_model", "read_input",
           "read_metrics", "resolve_recipe", "save_weights", "split_output_activation", "start_run", "train"]
