"""Training, evaluation and prediction of specs, with run directories that can be resumed.

``fit_spec`` is the one fit path every command trains through; ``Callback`` hooks into it.
"""

from archlab._paths import check_out_dir, check_out_file

from ._augment import AugmentEntry, register_augmentation
from ._callbacks import Callback, Snapshots
from ._engine import Engine, History, TrainingError, pick_device, split_output_activation
from ._ensemble import Bootstrap, EnsembleResult, Member, ensemble, samme_update
from ._ensemble_run import (
    Ensemble,
    EnsembleModel,
    RestoredEnsemble,
    ensemble_metrics,
    ensemble_summary,
    evaluate_ensemble,
    is_ensemble,
    predict_ensemble,
    read_ensemble,
    restore_ensemble,
)
from ._fit import (
    FitResult,
    Inputs,
    Splits,
    fit_spec,
    input_sources,
    model_inputs,
    prepare_model,
    prepare_splits,
    split_validation,
    to_tensors,
)
from ._memory import check_memory
from ._metrics import compute_metrics, make_loss
from ._recipe import SECTION_SHORTCUTS, SHORTCUTS, Recipe, expand_train_section, resolve_recipe
from ._runs import (
    RunError,
    atomic_write_text,
    load_weights,
    new_run_dir,
    read_metrics,
    save_weights,
)
from ._train import (
    RestoredRun,
    TrainResult,
    as_arrays,
    check_fit,
    declares_task,
    evaluate_run,
    finish_run,
    load_run,
    predict_run,
    resolve_task,
    restore_run,
    run_task,
    save_figure,
    start_run,
    train,
    write_run,
)

__all__ = [
    "AugmentEntry", "Bootstrap", "Callback", "Engine", "EnsembleResult", "FitResult", "History", "Inputs", "Member",
    "Recipe", "RestoredRun", "RunError", "SECTION_SHORTCUTS", "SHORTCUTS", "Snapshots", "Splits", "TrainResult",
    "TrainingError",
    "as_arrays", "atomic_write_text", "check_fit", "check_memory", "check_out_dir", "check_out_file", "compute_metrics",
    "declares_task", "ensemble", "evaluate_run", "expand_train_section", "finish_run", "fit_spec", "input_sources",
    "load_run", "load_weights",
    "make_loss", "model_inputs", "new_run_dir", "pick_device", "predict_run", "prepare_model", "prepare_splits",
    "read_metrics", "register_augmentation", "resolve_recipe", "resolve_task", "restore_run", "run_task",
    "samme_update", "save_figure", "save_weights", "split_output_activation", "split_validation", "start_run",
    "to_tensors", "train",
    "write_run",
    # ensemble run directories read back and used (_ensemble_run.py)
    "Ensemble", "EnsembleModel", "RestoredEnsemble", "ensemble_metrics", "ensemble_summary", "evaluate_ensemble",
    "is_ensemble", "predict_ensemble", "read_ensemble", "restore_ensemble",
]
