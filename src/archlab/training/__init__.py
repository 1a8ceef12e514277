"""Training, evaluation and prediction of specs, with run directories that can be resumed."""

from ._callbacks import Callback
from ._engine import Engine, History, TrainingError, pick_device, split_output_activation
from ._memory import check_memory, training_memory
from ._metrics import compute_metrics, confusion_matrix, make_loss
from ._precision import PrecisionChoice, resolve_precision
from ._recipe import EarlyStoppingConfig, OptimizerConfig, Recipe, ScheduleConfig, resolve_recipe
from ._runs import (
    RunError,
    atomic_write_text,
    check_out_dir,
    check_out_file,
    load_weights,
    lock_run,
    new_run_dir,
    read_metrics,
    save_weights,
)
from ._train import (
    TrainResult,
    check_fit,
    check_recipe,
    evaluate_run,
    evaluation_name,
    finish_run,
    load_run,
    plot_curves,
    predict_run,
    prepare_model,
    read_input,
    resolve_task,
    run_task,
    save_figure,
    split_validation,
    start_run,
    to_tensors,
    train,
)

__all__ = [
    "Callback", "EarlyStoppingConfig", "Engine", "History", "OptimizerConfig", "PrecisionChoice", "Recipe",
    "RunError", "ScheduleConfig", "TrainResult", "TrainingError", "atomic_write_text", "check_fit", "check_memory",
    "check_out_dir", "check_out_file", "check_recipe", "compute_metrics", "confusion_matrix", "evaluate_run",
    "evaluation_name", "finish_run", "load_run", "load_weights", "lock_run", "make_loss", "new_run_dir",
    "pick_device", "plot_curves", "predict_run", "prepare_model", "read_input", "read_metrics", "resolve_precision",
    "resolve_recipe", "resolve_task", "run_task", "save_figure", "save_weights", "split_output_activation",
    "split_validation", "start_run", "to_tensors", "train", "training_memory",
]
