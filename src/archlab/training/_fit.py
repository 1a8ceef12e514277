"""The one fit path: a spec (or its model) trained on prepared splits.

``train``, ``cv``, ``search``, ``shrink``, ``compress`` (fine-tuning, distillation) and
``Sequential.fit`` all train through ``fit_spec``; what differs between them is the data they
prepare, the recipe, and the callbacks they pass.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from archlab._inputs import SINGLE, as_named, fmt_shape, input_bytes, map_inputs
from archlab.analysis import available_memory
from archlab.exceptions import SpecError
from archlab.spec import Spec
from archlab.tasks import TaskKind, as_task

from ._callbacks import Callback
from ._engine import Engine, History, Inputs, glorot_init, split_output_activation
from ._recipe import Recipe
from ._stream import MappedSplit, choose_loading, spill

__all__ = ["FitResult", "Inputs", "Splits", "TrainRows", "check_validation", "fit_spec", "input_sources",
           "model_inputs", "prepare_model", "prepare_splits", "split_validation", "to_tensors"]

logger = logging.getLogger("archlab")


@dataclass(frozen=True)
class Splits:
    """Tensors as the engine takes them: training rows, validation rows (possibly none) and,
    optionally, the test split that ``fit_spec`` evaluates after training. Inputs are one tensor
    or, for a graph-form spec, a dict of tensors by input name; ``x`` may also be a MappedSplit
    (``prepare_splits(stream=True)`` over memory-mapped files), which ``fit_spec`` streams."""

    x: Inputs | MappedSplit
    y: torch.Tensor
    x_val: Inputs | None = None
    y_val: torch.Tensor | None = None
    x_test: Inputs | None = None
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


def split_validation(x: Any, y: np.ndarray, recipe: Recipe, task: TaskKind | str,
                     groups: np.ndarray | None = None, data_name: str = "the data"):
    """Keras' validation_split: the last fraction, before shuffling; or a stratified split, for the
    tasks whose splits stratify; or whole groups held out (``validation: group``: a seeded
    GroupShuffleSplit of ``groups``, one per row, taking ~validation_split of the groups), so no
    group is in both. Both are seeded with ``recipe.split_seed``. ``x`` is one array
    or named arrays (``archlab._inputs``).

    Raises:
        SpecError: ``validation: group`` without groups, or with fewer than two.
    """
    if recipe.validation == "group":
        _check_groups(groups, data_name)
    if recipe.validation_split == 0:
        return x, y, map_inputs(lambda a: a[:0], x), y[:0]
    if recipe.validation == "group":
        from sklearn.model_selection import GroupShuffleSplit

        splitter = GroupShuffleSplit(n_splits=1, test_size=recipe.validation_split, random_state=recipe.split_seed)
        train_idx, val_idx = next(splitter.split(np.zeros(len(y)), y, groups))
        return map_inputs(lambda a: a[train_idx], x), y[train_idx], map_inputs(lambda a: a[val_idx], x), y[val_idx]
    if recipe.validation == "stratified" and as_task(task).stratify:
        from sklearn.model_selection import train_test_split

        idx = np.arange(len(y))
        train_idx, val_idx = train_test_split(idx, test_size=recipe.validation_split, stratify=y,
                                              random_state=recipe.split_seed)
        return map_inputs(lambda a: a[train_idx], x), y[train_idx], map_inputs(lambda a: a[val_idx], x), y[val_idx]
    cut = int(len(y) * (1 - recipe.validation_split))
    return map_inputs(lambda a: a[:cut], x), y[:cut], map_inputs(lambda a: a[cut:], x), y[cut:]


def check_validation(dataset: Any, recipe: Recipe) -> None:
    """Refuse a validation rule the data set cannot follow (``validation: group`` without groups),
    before any work; a data set with its own validation split (``x_val``) validates on that.

    Raises:
        SpecError: as ``split_validation``.
    """
    if recipe.validation == "group" and getattr(dataset, "x_val", None) is None:
        _check_groups(getattr(dataset, "groups_train", None), dataset.name)


def _check_groups(groups: np.ndarray | None, data_name: str) -> None:
    """Refuse ``validation: group`` on data without at least two groups, before any work.

    Raises:
        SpecError: no groups, or only one.
    """
    if groups is None:
        raise SpecError(f"train.validation: group holds out whole groups, but {data_name} has none (no "
                        "groups_train); use data with groups (fsdd, or audio:DIR with a manifest's group column) "
                        "or validation: last / stratified", "train.validation")
    if len(np.unique(groups)) < 2:
        raise SpecError(f"train.validation: group needs two groups or more to hold one out, but {data_name}'s "
                        f"training split has only {np.unique(groups).tolist()}; use validation: last or stratified",
                        "train.validation")


def input_sources(parsed: Any, provided: dict[str, tuple[int, ...]], data_name: str) -> dict[str, str]:
    """Which of the data's inputs feeds each of the spec's: ``{spec input: data input}``.

    One array feeds a spec's one ``input`` (or a graph's only input); named arrays feed the
    graph form's ``inputs`` of the same names (the data may hold more); a spec with one
    ``input`` takes data with one named input. The shapes are ``check_fit``'s part.

    Raises:
        SpecError: a spec input the data does not provide (listing those it does), or one array
            for several inputs, or several named inputs for one.
    """
    wanted = list(parsed.raw_inputs)
    offered = ", ".join(f"{k} {fmt_shape(v)}" for k, v in provided.items())
    if SINGLE in provided and len(provided) == 1:  # one array
        if len(wanted) == 1:
            return {wanted[0]: SINGLE}
        raise SpecError(f"the spec takes the inputs {', '.join(wanted)} but {data_name} gives one input array "
                        f"{fmt_shape(provided[SINGLE])}; give the data named inputs (npz arrays 'x/<name>', or csv "
                        "categorical= with dense=), or write the spec with one input", "inputs")
    if not parsed.is_graph:
        if len(provided) == 1:
            return {SINGLE: next(iter(provided))}
        example = ", ".join(f"{k}: {list(v)}" for k, v in provided.items())
        raise SpecError(f"{data_name} gives the named inputs {offered}, but the spec has one input: write it in "
                        f"the graph form with inputs: {{{example}}} and a graph that reads them", "input")
    for name in wanted:
        if name not in provided:
            raise SpecError(f"the spec's input {name!r} is not one {data_name} provides; it provides {offered}: "
                            "rename the input, or give the data that input", f"inputs.{name}")
    return {name: name for name in wanted}


def _input_dtypes(parsed: Any, x: Any, data_name: str) -> dict[str, tuple[Any, Any]]:
    """Each spec input's data array (``input_sources``) and the dtype its model takes it in."""
    provided = {k: tuple(a.shape[1:]) for k, a in as_named(x).items()}
    arrays = as_named(x)
    return {name: (arrays[source], np.int64 if parsed.raw_inputs[name].dtype == "long" else np.float32)
            for name, source in input_sources(parsed, provided, data_name).items()}


def model_inputs(parsed: Any, x: Any, data_name: str = "the data") -> Any:
    """The data's inputs as the spec's model takes them: the arrays it reads (``input_sources``),
    each as its input's dtype: float32, or int64 for a ``dtype: long`` input (token or field ids;
    loaders give float32 for numbers that may be ids)."""
    converted = {}
    for name, (array, dtype) in _input_dtypes(parsed, x, data_name).items():
        where = "input" if not parsed.is_graph else f"inputs.{name}"
        if dtype == np.int64:
            if array.dtype != np.int64:
                if not np.array_equal(array, np.round(array)) or (array.size and array.min() < 0):
                    raise SpecError(f"the spec's {where} is dtype: long (token ids) but the data holds non-integer "
                                    "or negative values; use a float input or integer ids", where)
                array = array.astype(np.int64)
        elif array.dtype != np.float32:
            array = array.astype(np.float32)
        converted[name] = array
    return converted if parsed.is_graph else converted[SINGLE]


def to_tensors(x: Any, y: np.ndarray, task: TaskKind | str) -> tuple[Any, torch.Tensor]:
    """Inputs (one array or named arrays, already ``model_inputs``) as tensors in memory, and targets
    as the task's loss takes them. A memory-mapped array is read whole here: this is the in-memory path."""
    def tensor(a: np.ndarray) -> torch.Tensor:
        dtype = np.int64 if a.dtype == np.int64 else np.float32
        return torch.from_numpy(np.array(a, dtype=dtype) if isinstance(a, np.memmap)
                                else np.ascontiguousarray(a, dtype=dtype))

    return map_inputs(tensor, x), torch.from_numpy(as_task(task).targets(y))


def prepare_splits(dataset: Any, recipe: Recipe, task: TaskKind | str, spec: Any, *,
                   train_samples: int | None = None, test: bool = False, stream: bool = False,
                   train_rows: TrainRows | None = None) -> Splits:
    """A data set's training split divided by the recipe's validation rule, as the model inputs of
    ``spec`` (a Spec, or one already parsed; ``model_inputs``) in tensors; only the first
    ``train_samples`` training rows when given (the validation rows are taken first), and the test
    split when ``test``. A data set with a validation split of its own (``x_val``) validates on it.

    ``train_rows``: the training rows to train on, as indices into what is left after the
    validation rows are taken out (repeats allowed: a bootstrap sample), or a function of that
    count that draws them (``archlab.training.Bootstrap``); the validation rows stay the same.
    Such rows come from anywhere in the split, so they are read into memory (no streaming).

    With ``stream``, a data set whose training inputs are whole memory-mapped files (``npy:DIR``)
    and whose loading resolves to ``stream`` (``choose_loading``, on the files' size) is not read:
    ``x`` is a MappedSplit over those files, and the validation and test splits are tensors viewing
    the mapped pages, which the Engine evaluates batch by batch. Callers that index ``x`` themselves
    (compress's calibration) leave it off."""
    parsed = spec if hasattr(spec, "raw_inputs") else _parse(spec)
    check_validation(dataset, recipe)  # before reading any file
    if stream and train_rows is None:
        mapped = _mapped_splits(parsed, dataset, recipe, task, train_samples, test)
        if mapped is not None:
            return mapped
    x_train = model_inputs(parsed, dataset.x_train, dataset.name)
    if getattr(dataset, "x_val", None) is not None:  # a data set with its own validation split (Multi30k's val)
        x, y = x_train, dataset.y_train
        x_val, y_val = model_inputs(parsed, dataset.x_val, dataset.name), dataset.y_val
    else:
        x, y, x_val, y_val = split_validation(x_train, dataset.y_train, recipe, task,
                                              getattr(dataset, "groups_train", None), dataset.name)
    if train_samples is not None:
        x, y = map_inputs(lambda a: a[:train_samples], x), y[:train_samples]
    if train_rows is not None:
        rows = _rows(train_rows, len(y))
        x, y = map_inputs(lambda a: a[rows], x), y[rows]
    tensors = (*to_tensors(x, y, task), *to_tensors(x_val, y_val, task))
    if test:
        tensors += to_tensors(model_inputs(parsed, dataset.x_test, dataset.name), dataset.y_test, task)
    return Splits(*tensors)


#: ``prepare_splits``' training rows: indices, or a function of the training split's size that draws them.
TrainRows = np.ndarray | Callable[[int], np.ndarray]


def _rows(train_rows: TrainRows, n: int) -> np.ndarray:
    """The indices ``train_rows`` gives for a training split of ``n`` rows, checked.

    Raises:
        SpecError: indices that are not integers in [0, n), or none.
    """
    rows = np.asarray(train_rows(n) if callable(train_rows) else train_rows)
    if rows.ndim != 1 or not len(rows) or rows.dtype.kind not in "iu" or rows.min() < 0 or rows.max() >= n:
        raise SpecError(f"train_rows are indices into the {n} training rows (0 to {n - 1}), one or more; got "
                        f"{rows.shape} {rows.dtype} values")
    return rows


def _whole_file(a: Any) -> bool:
    """Whether ``a`` maps all of its .npy file, contiguously (a slice or a view of part of it is not
    the file, and a fancy-indexed copy is no memmap at all)."""
    if not isinstance(a, np.memmap) or not a.filename or not a.flags.c_contiguous:
        return False
    head = np.load(a.filename, mmap_mode="r")
    return len(head) == len(a) and head.size == a.size and head.dtype == a.dtype


def _mapped_splits(parsed: Any, dataset: Any, recipe: Recipe, task: TaskKind | str, train_samples: int | None,
                   test: bool) -> Splits | None:
    """``prepare_splits``' streaming form, or None when the training inputs are not whole
    memory-mapped files or the loading resolves to ``memory``."""
    plan = _input_dtypes(parsed, dataset.x_train, dataset.name)
    if recipe.validation == "group" or not all(_whole_file(a) for a, _ in plan.values()):
        return None  # groups pick rows all over the file: the in-memory path takes them
    n = len(dataset.y_train)
    cut = n if recipe.validation_split == 0 else int(n * (1 - recipe.validation_split))
    rows = cut if train_samples is None else min(cut, train_samples)
    nbytes = sum(rows * int(np.prod(a.shape[1:], dtype=np.int64)) * np.dtype(d).itemsize for a, d in plan.values())
    loading, reason = _loading(recipe, nbytes)
    if loading != "stream":
        return None
    if recipe.validation_split and recipe.validation == "stratified" and as_task(task).stratify:
        # A stratified split picks rows all over the file, which would copy them; the last rows are a slice.
        logger.warning("train.validation: stratified needs the training rows copied out of the memory-mapped "
                       "files of %s; using the last %g of them (validation: last) instead", dataset.name,
                       recipe.validation_split)
    for name, (array, dtype) in plan.items():
        if dtype == np.int64 and array.dtype.kind not in "iu":
            where = "input" if not parsed.is_graph else f"inputs.{name}"
            raise SpecError(f"the spec's {where} is dtype: long (token ids) but {dataset.name} holds {array.dtype} "
                            "values there; streaming reads the file as it is, so write the ids as integers", where)
    names = {name: Path(a.filename) for name, (a, _) in plan.items()}
    shapes = {name: tuple(a.shape[1:]) for name, (a, _) in plan.items()}
    dtypes = {name: np.dtype(d) for name, (_, d) in plan.items()}

    def single(value: dict) -> Any:
        return value if parsed.is_graph else value[SINGLE]

    targets = torch.from_numpy(as_task(task).targets(dataset.y_train))
    split = MappedSplit(single(names), targets[:rows], shapes=single(shapes), dtypes=single(dtypes), reason=reason)

    def viewed(x: Any, stop: slice) -> Any:
        # The rows as tensors over the mapped pages (copy-on-write maps, so torch may view them); an
        # input whose dtype the model does not take is converted, and so read, here.
        return single({name: torch.from_numpy(np.asarray(a[stop]) if a.dtype == dtypes[name] and a.flags.writeable
                                              else np.array(a[stop], dtype=dtypes[name]))
                       for name, (a, _) in _input_dtypes(parsed, x, dataset.name).items()})

    x_val, y_val = viewed(dataset.x_train, slice(cut, n)), targets[cut:]
    if not test:
        return Splits(split, split.y, x_val, y_val)
    return Splits(split, split.y, x_val, y_val, viewed(dataset.x_test, slice(None)),
                  torch.from_numpy(as_task(task).targets(dataset.y_test)))


def _loading(recipe: Recipe, nbytes: int) -> tuple[str, str]:
    """``choose_loading`` for the recipe; bucketing indexes the split in memory (``check_bucketing``
    refuses data_loading: stream with it)."""
    if recipe.bucketing:
        return "memory", "train.bucketing indexes the training split in memory"
    return choose_loading(recipe.data_loading, nbytes, available_memory("cpu"))


def _parse(spec: Any) -> Any:
    from archlab.builder import parse
    from archlab.spec import load

    return parse(load(spec))


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
             output_activation: str | None = None, sample_weight: torch.Tensor | None = None) -> FitResult:
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
        sample_weight: one float per row of ``data.y``: the loss is the batch mean of ``w l`` (``Engine.fit``).
    """
    if model is None:
        if spec is None:
            raise ValueError("fit_spec needs a spec or a model")
        model, output_activation = prepare_model(spec, recipe, task)
    elif output_activation is None:
        output_activation = split_output_activation(model, task)
    engine = Engine(model, recipe, task, run_dir=run_dir, verbose=verbose, output_activation=output_activation,
                    criterion=criterion)
    began = time.perf_counter()
    if isinstance(data.x, MappedSplit):  # prepare_splits' split over a data set's own files: read in place
        loading, reason = "stream", data.x.reason or "the training split is memory-mapped files"
        history = engine.fit(data.x, data.y, data.x_val, data.y_val, resume=resume, callbacks=callbacks,
                             sample_weight=sample_weight)
        return _finish(engine, history, began, loading, reason, data)
    loading, reason = _loading(recipe, input_bytes(data.x))
    if loading == "stream":
        mapped, folder = spill(data.x, data.y, run_dir)
        try:
            history = engine.fit(mapped, data.y, data.x_val, data.y_val, resume=resume, callbacks=callbacks,
                                 sample_weight=sample_weight)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    else:
        history = engine.fit(data.x, data.y, data.x_val, data.y_val, resume=resume, callbacks=callbacks,
                             sample_weight=sample_weight)
    return _finish(engine, history, began, loading, reason, data)


def _finish(engine: Engine, history: History, began: float, loading: str, reason: str, data: Splits) -> FitResult:
    result = FitResult(engine, history, time.perf_counter() - began, data_loading=loading,
                       data_loading_reason=reason)
    if data.x_test is not None:
        result.test_metrics, result.test_outputs = engine.evaluate(data.x_test, data.y_test)
    return result
