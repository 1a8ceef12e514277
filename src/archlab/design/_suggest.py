"""Rules of thumb: a starting spec from the data's shape and size (``archlab suggest``).

The rules, written down once here and in docs/design.md:

1. **Template** from the data's kind: categorical fields (``Dataset.fields``) -> ``deepfm``;
   rank 1 float features -> ``mlp``; integer ids (T,) ->
   ``rnn-attention`` up to 256 steps, ``transformer-small`` beyond; (T, F) float ->
   ``rnn-attention`` without its embedding; images (C, H, W) -> ``small-cnn`` when both sides
   are at most 32, ``resnet-small`` otherwise.
2. **Width** grows with the log of the number of training samples N:
   width = 2 ** round(log2(k * log2 N)), k per template (mlp 12, CNNs 3, sequence models 6).
3. **Depth** grows one step per decade of N: depth = clamp(round(log10 N) - 2, 1, max), and a
   CNN has at most floor(log2(min(H, W))) - 2 pooling stages, so its last feature map keeps a
   side of at least 4 (2 for 8x8 images).
4. **Data cap**: at most 50 parameters per training sample (unless even the smallest size is
   above it); past that a small data set is memorized faster than it is learned.
5. **Budgets** (``budget_params``, ``budget_flops``) are hard: among the template's sizes at or
   below the suggested width and depth (widths in steps of x3/4 and x1/2), the widest that meets
   every limit is taken and, at that width, the deepest; when none does, a DesignError says
   how small the smallest is.
6. **Head and recipe from the task** (``archlab.tasks``, the data set's task): the output is the
   first size the task's ``check_output`` accepts, with its ``output_activation``; the metrics are
   its ``evaluation_metrics``, early stopping watches the first of them on the validation split
   (its direction from the metric registry), and the split is stratified when the task stratifies.
"""

from __future__ import annotations

import copy
import math
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from archlab.analysis import analyze
from archlab.data import Dataset, load_dataset
from archlab.exceptions import ArchlabError, SpecError
from archlab.spec import Spec, load, set_at
from archlab.tasks import TaskKind, direction_of, get_task, list_tasks

from ._templates import InputKind, TemplateInfo, get_template_info, load_template

__all__ = ["DATA_CAP_PER_SAMPLE", "DesignError", "Suggestion", "suggest"]

DATA_CAP_PER_SAMPLE = 50
_WIDTH_KEYS = ("filters", "units", "output_dim", "ff_dim")
_LONG_SEQUENCE = 256


class DesignError(ArchlabError, ValueError):
    """No template fits the data, or no size of the chosen template meets the budget."""


@dataclass
class Suggestion:
    """A suggested starting spec and the reasons for it.

    Attributes:
        spec: a concrete Spec: input and output set from the data, a ``train:`` recipe naming the data.
        reasons: plain sentences, in order: the data, the template, width and depth, budgets.
        template: the template's name.
        width: the chosen width (the template's main width value).
        depth: the chosen depth (the template's depth value).
        params: parameters of ``spec`` (archlab.analyze).
        flops: FLOPs per sample of ``spec``.
    """

    spec: Spec
    reasons: list[str] = field(default_factory=list)
    template: str = ""
    width: int = 0
    depth: int = 0
    params: int = 0
    flops: int = 0


def _pow2(x: float) -> int:
    return 2 ** max(0, round(math.log2(max(x, 1.0))))


def _raw_integer_inputs(ds: Dataset) -> bool:
    """Were the inputs integers before loading? npz files keep their dtype; loaders make float32."""
    if np.issubdtype(ds.x_train.dtype, np.integer):
        return True
    if ds.name.startswith("npz:") and Path(ds.source).is_file():
        try:
            with np.load(ds.source, allow_pickle=False) as archive:
                return "x" in archive.files and np.issubdtype(archive["x"].dtype, np.integer)
        except (OSError, ValueError, zipfile.BadZipFile):
            return False
    return False


def data_kind(ds: Dataset) -> tuple[InputKind, str]:
    """The kind of input (fields, tabular, image, tokens, sequence) and a sentence saying why."""
    shape = ds.input_shape
    rank = len(shape)
    if ds.fields is not None:
        return "fields", (f"inputs are {len(ds.fields)} categorical fields per sample, ids in one id space of "
                          f"{_fmt(ds.vocab_size)}: recommendation or click-through data")
    if rank == 3:
        return "image", f"inputs of shape {shape} are (channels, height, width): images"
    if rank == 2:
        return "sequence", f"inputs of shape {shape} are (time steps, features): a sequence of feature vectors"
    if rank == 1:
        x = ds.x_train
        whole = bool(np.all(np.equal(np.mod(x, 1), 0))) and float(x.min()) >= 0
        if _raw_integer_inputs(ds) and whole and shape[0] > 1:
            return "tokens", (f"inputs are {shape[0]} non-negative integers per sample stored as integers: "
                              "a sequence of token ids")
        return "tabular", f"inputs are {shape[0]} numeric features per sample: tabular data"
    raise DesignError(f"data {ds.name!r}: inputs of rank {rank} {shape} match no template; the templates take "
                      "(features,), (time, features), (token ids,) or (channels, height, width)")


def _choose_template(kind: InputKind, ds: Dataset) -> tuple[TemplateInfo, str]:
    shape = ds.input_shape
    if kind == "fields":
        return get_template_info("deepfm"), ("DeepFM learns each field's weight, every pair of fields through "
                                             "a factorization machine, and higher-order mixes through an MLP, "
                                             "all from one embedding of the ids")
    if kind == "tabular":
        return get_template_info("mlp"), "an MLP is the standard model for a table of features"
    if kind == "image":
        side = max(shape[1:])
        if side <= 32:
            return get_template_info("small-cnn"), (f"images with sides up to 32 ({shape[1]}x{shape[2]}) are "
                                                    "learned well by a plain CNN of stacked 3x3 convolutions")
        return get_template_info("resnet-small"), (f"images with a side above 32 ({shape[1]}x{shape[2]}) need "
                                                   "more depth; residual blocks keep a deep CNN trainable")
    if kind == "sequence":
        return get_template_info("rnn-attention"), ("a GRU reads the feature vectors step by step and attention "
                                                    "pools the steps (no embedding: the inputs are already vectors)")
    if shape[0] <= _LONG_SEQUENCE:
        return get_template_info("rnn-attention"), (f"{shape[0]} steps is short enough for a GRU; attention "
                                                    "pooling lets it use every step, not just the last")
    return get_template_info("transformer-small"), (f"{shape[0]} steps is long for an RNN (over {_LONG_SEQUENCE}); "
                                                    "self-attention reaches every step directly")


def _scale_widths(items: list[Any], factor: float) -> list[Any]:
    """Every width value in ``items`` (recursively through connections) times ``factor``."""
    out = []
    for item in items:
        if isinstance(item, dict):
            new = {}
            for key, value in item.items():
                if isinstance(value, dict):
                    value = {k: (max(1, round(v * factor)) if k in _WIDTH_KEYS and isinstance(v, int) else
                                 _scale_widths(v, factor) if k in ("layers", "post") and isinstance(v, list)
                                 else v)
                             for k, v in value.items()}
                new[key] = value
            item = new
        out.append(item)
    return out


def _output_shapes(ds: Dataset, outputs: int | None) -> list[tuple[int, ...]]:
    """The output sizes a head may have, most specific first: one unit per class, one, one per target."""
    if outputs is not None:
        return [(outputs,)]
    sizes = [ds.num_classes] if ds.num_classes else []
    sizes += [1, math.prod(ds.y_train.shape[1:])]
    return [(n,) for n in dict.fromkeys(sizes)]


def _accepts(task: TaskKind, ds: Dataset, shape: tuple[int, ...]) -> bool:
    try:
        task.check_data(ds)
        task.check_output(shape, ds)
    except SpecError:
        return False
    return True


def _choose_task(ds: Dataset, outputs: int | None = None) -> tuple[TaskKind, int, str]:
    """The task to train, its output units and a sentence saying why.

    The data set's own task (``Dataset.task``, through the tasks registry) and the first output size
    its ``check_output`` accepts; a template whose body ends in ``outputs`` units that the data's
    task cannot use (DeepFM's one score on two-class data) takes the first registered task that
    trains on the data with that many (binary).

    Raises:
        DesignError: no registered task trains on the data with the template's outputs.
    """
    own = get_task(ds.task, where="data")
    for shape in _output_shapes(ds, outputs):
        if _accepts(own, ds, shape):
            return own, shape[0], f"the data set's task is {own.name}"
    if outputs is not None:
        for name in list_tasks():
            task = get_task(name)
            if _accepts(task, ds, (outputs,)):
                return task, outputs, (f"the template ends in {outputs} output(s), which task {own.name} of "
                                       f"{ds.name} cannot use but task {task.name} can")
    raise DesignError(f"data {ds.name!r} ({ds.task}): no task trains on it with "
                      + (f"{outputs} output(s), as the template ends" if outputs is not None else "any output size")
                      + "; write the spec's head yourself (archlab templates lists the starting points)")


def _head(task: TaskKind, units: int) -> dict[str, Any]:
    """The output layer: ``units`` units with the task's output activation (none for a linear output)."""
    dense: dict[str, Any] = {"units": units}
    if task.output_activation is not None:
        dense["activation"] = task.output_activation
    return {"dense": dense}


def _sized(base: dict[str, Any], info: TemplateInfo, ds: Dataset, kind: InputKind, task: TaskKind, units: int,
           width: int, depth: int) -> dict[str, Any]:
    """The template at ``width`` and ``depth``, with input, output and task from the data."""
    data = dict(base)
    if info.width_paths:
        for path, multiple in info.width_paths:
            data = set_at(data, path, width * multiple)
    else:
        *body, head = data["layers"]
        data["layers"] = [*_scale_widths(body, width / info.base_width), head]
    data = set_at(data, info.depth_path, depth)
    if info.name == "resnet-small":  # stage2 follows the downsampling block, so one block fewer
        data = set_at(data, "stage2.times", max(1, depth - 1))
    shape = list(ds.input_shape)
    if kind in ("tokens", "fields"):
        vocab = ds.vocab_size if kind == "fields" else int(max(ds.x_train.max(), ds.x_test.max())) + 1
        data["input"] = {"shape": shape, "dtype": "long"}
        for path in info.vocab_paths:
            data = set_at(data, path, vocab)
        if info.name == "transformer-small":
            data = set_at(data, "pos.max_len", shape[0])
    else:
        data["input"] = shape
        if kind == "sequence":  # vectors already: drop the embedding
            data["layers"] = [item for item in data["layers"] if not (isinstance(item, dict) and
                                                                      item.get("name") == "embed")]
    data["task"] = {"kind": task.name}
    if task.target_dtype == "long" and ds.num_classes:  # class ids: the spec says how many
        data["task"]["classes"] = ds.num_classes
    layers = list(data["layers"])
    if info.outputs is None:
        layers[-1] = _head(task, units)
    elif task.output_activation is None:  # the body's outputs are the prediction
        layers = layers[:-1]
    else:
        layers[-1] = task.output_activation
    data["layers"] = layers
    return data


def _recipe(info: TemplateInfo, ds: Dataset, task: TaskKind) -> dict[str, Any]:
    """A training recipe that works for the template at this data size and for the task (docs/design.md)."""
    n = len(ds.x_train)
    recipe: dict[str, Any] = {"data": ds.name, "epochs": 30 if n < 10_000 else 15 if n < 100_000 else 10,
                              "batch_size": 32 if n < 5_000 else 128, "optimizer": {"name": "adam", "lr": 0.001},
                              "schedule": "cosine", "validation_split": 0.1}
    recipe.update(copy.deepcopy(dict(info.recipe)))
    metrics = list(task.evaluation_metrics)
    monitor = f"val_{metrics[0]}" if metrics else "val_loss"
    if task.stratify:
        recipe["validation"] = "stratified"
    recipe.update(metrics=metrics, early_stopping={"monitor": monitor, "mode": direction_of(monitor, task.name),
                                                   "patience": info.patience, "restore_best": True})
    return recipe


def _slug(text: str) -> str:
    stem = Path(text.split(":", 1)[-1].split("?", 1)[0]).stem if ":" in text else text
    return re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-") or "data"


def _fmt(n: int) -> str:
    return f"{n:,}"


def suggest(data: Dataset | str, budget_params: int | None = None, budget_flops: int | None = None, *,
            data_dir: str | Path | None = None) -> Suggestion:
    """Propose a starting spec for a data set from rules of thumb, with the reasons.

    Args:
        data: a Dataset, or a name for ``archlab.data.load_dataset`` (``digits``, ``csv:PATH`` ...).
        budget_params: the most parameters the spec may have (archlab.analyze's total_params).
        budget_flops: the most FLOPs per sample it may take (archlab.analyze's flops).
        data_dir: passed to ``load_dataset`` with a name.

    Returns:
        A Suggestion: ``.spec`` (with a ``train:`` recipe) and ``.reasons``.

    Raises:
        DesignError: the inputs fit no template, a budget is not positive, or even the template's
            smallest size is over budget.

    Example:
        >>> from archlab.design import suggest
        >>> s = suggest("digits")
        >>> s.template, s.spec.to_dict()["input"], s.spec.to_dict()["layers"][-1]
        ('small-cnn', [1, 8, 8], {'dense': {'units': 10, 'activation': 'softmax'}})
    """
    for label, value in (("budget_params", budget_params), ("budget_flops", budget_flops)):
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise DesignError(f"{label} must be a positive integer, got {value!r}")
    ds = data if isinstance(data, Dataset) else load_dataset(data, data_dir=data_dir)
    if ds.named:  # the templates are one-input models; joining several inputs is a design choice
        shapes = ", ".join(f"{k} {list(v)}" for k, v in ds.input_shapes.items())
        raise DesignError(f"data {ds.name!r} has named inputs ({shapes}); suggest proposes a one-input spec from its "
                          "templates. Write a graph-form spec with one branch per input (docs/training.md, 'Named "
                          "inputs'), or suggest a spec for one input's data")
    n = len(ds.y_train)
    kind, kind_reason = data_kind(ds)
    info, why = _choose_template(kind, ds)
    task, units, task_why = _choose_task(ds, info.outputs)
    head = _head(task, units)["dense"]
    reasons = [f"Data: {ds.describe()}.", f"Kind: {kind_reason}.",
               f"Template: {info.name} ({info.purpose}), because {why}.",
               f"Task: {task.name}, because {task_why}: {units} output unit{'s' if units > 1 else ''}"
               + (f" with {head['activation']}" if "activation" in head else ", linear") + "."]

    # Rule 2: width with the log of the sample count.
    log_n = math.log2(max(n, 2))
    width = max(info.min_width, _pow2(info.width_factor * log_n))
    reasons.append(f"Width {width}: width grows with the log of the training set, 2^round(log2({info.width_factor:g} "
                   f"x log2 N)) with N = {_fmt(n)} samples (log2 N = {log_n:.1f}).")
    # Rule 3: depth, one step per decade of samples, limited by the image size for CNNs.
    max_depth = info.max_depth
    depth_note = ""
    if info.name == "small-cnn":
        side = min(ds.input_shape[1:])
        max_depth = max(1, min(max_depth, int(math.floor(math.log2(side))) - 2))
        depth_note = (f"; a side of {side} pixels allows at most {max_depth} pooling "
                      f"stage{'s' if max_depth > 1 else ''}")
    depth = min(max_depth, max(1, round(math.log10(max(n, 1))) - 2))
    reasons.append(f"Depth {depth} ({info.depth_path}): one more level per decade of samples, round(log10 N) - 2 "
                   f"= {round(math.log10(max(n, 1))) - 2}, kept between 1 and {info.max_depth}{depth_note}.")

    base = load_template(info.name).to_dict()
    base["name"] = f"{info.name}-{_slug(ds.name)}"[:60]

    # Candidate sizes: widths in steps of x3/4 and x1/2 down to the template's minimum, and every depth
    # at or below the rule's.
    steps = {top >> i for top in (width, width * 3 // 4) for i in range(12)}
    widths = sorted((w for w in steps if w >= info.min_width and w % 4 == 0), reverse=True)
    sized: dict[tuple[int, int], tuple[dict[str, Any], int, int]] = {}
    for w in widths:
        for d in range(depth, 0, -1):
            candidate = _sized(base, info, ds, kind, task, units, w, d)
            a = analyze(load(candidate))
            sized[(w, d)] = (candidate, a.total_params, a.flops)

    cap = DATA_CAP_PER_SAMPLE * n
    limits = [("data cap", cap, "params")]
    if budget_params is not None:
        limits.append(("parameter budget", budget_params, "params"))
    if budget_flops is not None:
        limits.append(("FLOP budget", budget_flops, "flops"))

    def fits(key: tuple[int, int], with_cap: bool) -> bool:
        _, p, f = sized[key]
        return all((p if what == "params" else f) <= limit for label, limit, what in limits
                   if with_cap or label != "data cap")

    first = sized[(width, depth)]
    # The widest size that fits and, at that width, the deepest: narrowing is tried before
    # removing depth (removing a CNN stage can even add parameters, through the flatten).
    chosen = max((k for k in sized if fits(k, True)), default=None)
    if chosen is None:  # the data cap is a guideline; budgets are not
        fitting = [k for k in sized if fits(k, False)]
        if not fitting:
            smallest = min(sized, key=lambda k: sized[k][1])
            _, p, f = sized[smallest]
            wanted = " and ".join(f"{label} {_fmt(limit)}" for label, limit, _ in limits if label != "data cap")
            raise DesignError(f"no size of template {info.name} meets the {wanted}: the smallest (width "
                              f"{smallest[0]}, depth {smallest[1]}) has {_fmt(p)} parameters and {_fmt(f)} FLOPs "
                              "per sample; raise the budget")
        # the fewest parameters, and of equal ones the widest and deepest
        chosen = min(fitting, key=lambda k: (sized[k][1], -k[0], -k[1]))
        reasons.append(f"Data cap: {DATA_CAP_PER_SAMPLE} parameters per sample ({_fmt(cap)}) is below even the "
                       f"smallest size; kept the smallest that meets the budgets, width {chosen[0]}, depth "
                       f"{chosen[1]}: {_fmt(sized[chosen][1])} parameters, {_fmt(sized[chosen][2])} FLOPs. "
                       "Regularize, or get more data.")
        width, depth = chosen
    elif chosen == (width, depth):
        reasons.append(f"Size: {_fmt(first[1])} parameters, {_fmt(first[2])} FLOPs per sample; within the data cap "
                       f"of {DATA_CAP_PER_SAMPLE} parameters per training sample ({_fmt(cap)})"
                       + "".join(f" and the {label} ({_fmt(limit)})" for label, limit, _ in limits[1:]) + ".")
    else:
        over = [f"the {label} ({_fmt(limit)})" for label, limit, what in limits
                if (first[1] if what == "params" else first[2]) > limit]
        reasons.append(f"Budget: width {width}, depth {depth} has {_fmt(first[1])} parameters and {_fmt(first[2])} "
                       f"FLOPs, over {' and '.join(over)}; the widest smaller size that fits is width "
                       f"{chosen[0]}, depth {chosen[1]}: {_fmt(sized[chosen][1])} parameters, "
                       f"{_fmt(sized[chosen][2])} FLOPs.")
        width, depth = chosen
    spec_dict, params, flops = sized[chosen]
    description = (f"Suggested by archlab suggest from template {info.name} for {ds.name} "
                   f"(width {width}, depth {depth}).")
    recipe = _recipe(info, ds, task)
    spec_dict = {"name": spec_dict["name"], "description": description,
                 **{k: v for k, v in spec_dict.items() if k != "name"}, "train": recipe}
    stopping = recipe["early_stopping"]
    schedule = "a cosine schedule" if recipe["schedule"] == "cosine" else "a constant learning rate"
    reasons.append(f"Recipe: {recipe['optimizer']['name']} at lr {recipe['optimizer']['lr']:g} with {schedule}, "
                   f"batch {recipe['batch_size']} and up to {recipe['epochs']} epochs; task {task.name}'s metrics "
                   f"({', '.join(recipe['metrics'])}), early stopping on {stopping['monitor']} "
                   f"({'higher' if stopping['mode'] == 'max' else 'lower'} is better) over a "
                   f"{'stratified ' if task.stratify else ''}10% validation split.")
    spec = load(spec_dict)
    return Suggestion(spec=spec, reasons=reasons, template=info.name, width=width, depth=depth, params=params,
                      flops=flops)
