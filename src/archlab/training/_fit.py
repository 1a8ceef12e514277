"""The one fit path: a spec (or its model) trained on prepared splits.

``train``, ``cv``, ``search``, ``shrink``, ``compress`` (fine-tuning, distillation) and
``Sequential.fit`` all train through ``fit_spec``; what differs between them is the data they
prepare, the recipe, and the callbacks they pass.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from archlab.analysis import available_memory
from archlab.spec import Spec
from archlab.tasks import TaskKind, as_task

from ._callbacks import Callback
from ._engine import Engine, History, glorot_init, split_output_activation
from ._recipe import Recipe
from ._stream import choose_loading, spill

__all__ = ["FitResult", "Splits", "fit_spec", "prepare_model", "prepare_splits", "split_validation", "to_tensors"]


@dataclass(frozen=True)
class Splits:
    """Tensors as the engine takes them: training rows, validation rows (possibly none) and,
    optionally, the test split that ``fit_spec`` evaluates after training."""

    x: torch.Tensor
    y: torch.Tensor
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None


@dataclass
class FitResult:
    """The trained engine (its ``model``, ``evaluate``, ``rows``), its history and wall time; the
    test split's metrics and outputs when the splits had one."""

    engine: Engine
    history: History
    seconds: float
    test_metrics: dict[str, float] | None = None
    test_outputs: torch.Tensor | None = None
    #: how the training split was read: ``memory`` or ``stream`` (``choose_loading``), and why
    data_loading: str = "memory"
    data_loading_reason: str = ""

    @property
    def model(self) -> nn.Module:
        return self.engine.model


def split_validation(x: np.ndarray, y: np.ndarray, recipe: Recipe, task: TaskKind | str):
    """Keras' validation_split: the last fraction, before shuffling; or a stratified split, for the
    tasks whose splits stratify."""
    if recipe.validation_split == 0:
        return x, y, x[:0], y[:0]
    if recipe.validation == "stratified" and as_task(task).stratify:
        from sklearn.model_selection import train_test_split

        idx = np.arange(len(x))
        train_idx, val_idx = train_test_split(idx, test_size=recipe.validation_split, stratify=y,
                                              random_state=recipe.seed)
        return x[train_idx], y[train_idx], x[val_idx], y[val_idx]
    cut = int(len(x) * (1 - recipe.validation_split))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def ids_if_long(parsed: Any, x: np.ndarray) -> np.ndarray:
    """Token ids for a ``dtype: long`` input: loaders give float32, embeddings need int64."""
    from archlab.exceptions import SpecError

    info = None if parsed is None or parsed.is_graph else parsed.raw_inputs.get("input")
    if info is None or info.dtype != "long" or x.dtype == np.int64:
        return x
    if not np.array_equal(x, np.round(x)) or (x.size and x.min() < 0):
        raise SpecError("the spec's input is dtype: long (token ids) but the data holds non-integer or negative "
                        "values; use a float input or integer ids", "input")
    return x.astype(np.int64)


def to_tensors(x: np.ndarray, y: np.ndarray, task: TaskKind | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs as float32 (or int64 ids) and targets as the task's loss takes them."""
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32) if x.dtype != np.int64 else x)
    return xt, torch.from_numpy(as_task(task).targets(y))


def prepare_splits(dataset: Any, recipe: Recipe, task: TaskKind | str, parsed: Any = None, *,
                   train_samples: int | None = None, test: bool = False) -> Splits:
    """A data set's training split divided by the recipe's validation rule, as tensors; only the
    first ``train_samples`` training rows when given (the validation rows are taken first), and
    the test split when ``test``."""
    x_train = ids_if_long(parsed, dataset.x_train)
    x, y, x_val, y_val = split_validation(x_train, dataset.y_train, recipe, task)
    if train_samples is not None:
        x, y = x[:train_samples], y[:train_samples]
    tensors = (*to_tensors(x, y, task), *to_tensors(x_val, y_val, task))
    if test:
        tensors += to_tensors(ids_if_long(parsed, dataset.x_test), dataset.y_test, task)
    return Splits(*tensors)


def prepare_model(spec: Spec, recipe: Recipe, task: TaskKind | str) -> tuple[nn.Module, str | None]:
    """Seeded build (so the same seed gives the same initial weights), initialisation, and the
    final activation split off for a stable loss."""
    from archlab.builder import build_parsed, parse

    torch.manual_seed(recipe.seed)
    model = build_parsed(parse(spec))
    if recipe.init == "glorot":
        glorot_init(model)
    return model, split_output_activation(model, task)


def fit_spec(spec: Spec | None, recipe: Recipe, task: TaskKind | str, data: Splits, *, model: nn.Module | None = None,
             callbacks: Sequence[Callback] = (), run_dir: Path | None = None, resume: bool = False, verbose: int = 0,
             criterion: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
             output_activation: str | None = None) -> FitResult:
    """Train ``spec`` with ``recipe`` on ``data``, then evaluate its test split if it has one.

    Args:
        spec: the spec; its model is built seeded (``prepare_model``) unless ``model`` is given
            (then the spec may be None).
        recipe, task: the resolved recipe and the task (``resolve_task``, ``run_task``).
        data: ``prepare_splits``' tensors, or your own ``Splits``.
        model: a model to train in place instead (trained weights to fine-tune); its final
            activation is split off here, or pass ``output_activation`` if that is done already.
        callbacks: ``Callback``s of the caller (search's pruner, a user's own).
        run_dir: checkpoints and metrics go there (``start_run``); None keeps all in memory.
        resume: continue from ``run_dir``'s last checkpoint.
        verbose: 0 silent, 1 progress bars, 2 one line per epoch.
        criterion: the training loss in place of the task's (distillation; see ``Engine``).
    """
    if model is None:
        if spec is None:
            raise ValueError("fit_spec needs a spec or a model")
        model, output_activation = prepare_model(spec, recipe, task)
    elif output_activation is None:
        output_activation = split_output_activation(model, task)
    engine = Engine(model, recipe, task, run_dir=run_dir, verbose=verbose, output_activation=output_activation,
                    criterion=criterion)
    loading, reason = choose_loading(recipe.data_loading, data.x.nbytes, available_memory("cpu"))
    began = time.perf_counter()
    if loading == "stream":
        mapped, folder = spill(data.x, data.y, run_dir)
        try:
            history = engine.fit(mapped, data.y, data.x_val, data.y_val, resume=resume, callbacks=callbacks)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    else:
        history = engine.fit(data.x, data.y, data.x_val, data.y_val, resume=resume, callbacks=callbacks)
    result = FitResult(engine, history, time.perf_counter() - began, data_loading=loading,
                       data_loading_reason=reason)
    if data.x_test is not None:
        result.test_metrics, result.test_outputs = engine.evaluate(data.x_test, data.y_test)
    return result
