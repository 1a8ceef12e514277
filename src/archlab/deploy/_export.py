"""export_model(), export_run(), read_metadata(), load_runner(): a trained model to a file that
runs without archlab, checked against PyTorch before it is kept.

ONNX goes through ``torch.onnx.export(..., dynamo=True)``, the exporter built on
``torch.export``. It is the default and the maintained path in torch 2.13: the TorchScript-based
exporter (``dynamo=False``) warns that it will be removed. Both export every archlab layer family
(conv, dense, pooling, batchnorm, dropout, residual adds, concat, LSTM/GRU, the Elman loop,
multi-head attention, transformer blocks) with the same outputs to ~1e-8; the dynamo exporter
keeps LSTM and GRU as single ONNX ``LSTM``/``GRU`` nodes (which ONNX Runtime's int8 quantizer
understands) and folds batchnorm into the convolution before it. It takes 1-3 s per model where
the old one takes 0.1 s; for a deployment artefact that is a fair price.

TorchScript goes through ``torch.jit.trace`` (``torch.jit.script`` cannot read the ``*args``
forward of ArchlabModel). TorchScript is deprecated in torch 2.13 as well; it is here for C++
(libtorch) consumers, and like ONNX it is only kept once it matches the model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from archlab._inputs import call_model, first_input, is_named, map_inputs, num_rows
from archlab._paths import check_out_file
from archlab.exceptions import ArchlabError, SpecError

if TYPE_CHECKING:
    from ._seq2seq import Seq2SeqExportResult

__all__ = ["ExportError", "ExportResult", "ModelFileError", "Runner", "check_export_options", "export_model",
           "export_run", "file_size", "load_run_model", "load_runner", "read_metadata", "supported_opsets"]

log = logging.getLogger("archlab")

Format = Literal["onnx", "torchscript"]
FORMATS = ("onnx", "torchscript")
#: The one TorchScript extra file that holds the metadata (``_extra_files`` only returns the
#: names asked for, so every key lives in one JSON document).
TORCHSCRIPT_METADATA = "archlab.json"
#: torch.onnx's lowest opset (its ONNX_MIN_OPSET). It writes opset 18 and converts from there: up to
#: any opset the onnx package defines, down only as far as a model's operators allow.
LOWEST_OPSET = 7


class ExportError(ArchlabError, RuntimeError):
    """An export failed: the exporter gave up, or the exported file does not compute what the
    model computes."""


class ModelFileError(ArchlabError, ValueError):
    """A model file is missing, unreadable, or not an ONNX model or TorchScript archive."""


@dataclass
class ExportResult:
    """What export_model wrote and how closely it matches PyTorch.

    Attributes:
        path: the model file.
        format: ``"onnx"`` or ``"torchscript"``.
        opset: the ONNX opset of the file (None for TorchScript).
        size_bytes: the file's size.
        max_abs_diff: the largest ``|exported - torch|`` over every checked output.
        checked_samples: how many held-out samples the check ran.
        batch_sizes: the batch sizes it ran them at (at least two: the batch axis is dynamic).
        rtol, atol: the tolerance, ``|exported - torch| <= atol + rtol * |torch|`` element-wise.
        ensemble: for an ensemble's export, its method, combination and members (dir, weights, weight).
    """

    path: Path
    format: str
    opset: int | None
    size_bytes: int
    max_abs_diff: float
    checked_samples: int
    batch_sizes: tuple[int, ...] = ()
    rtol: float = 1e-3
    atol: float = 1e-5
    ensemble: dict[str, Any] | None = None


#: One input's sample shape (without the batch axis; None when unknown) and the dtype the model reads.
InputInfo = tuple[tuple[int, ...] | None, np.dtype]


@dataclass
class Runner:
    """A model that takes a numpy batch and returns a numpy batch, whatever runs it; a model of
    several inputs takes a dict of arrays by input name.

    Attributes:
        kind: ``"torch"`` (an nn.Module), ``"onnx"`` (ONNX Runtime) or ``"torchscript"``.
        input_shape: one sample's shape without the batch axis, when known (one input only).
        input_dtype: the dtype the model reads (int64 for token ids), when known; inputs are cast to it.
        threads: intra-op threads (torch's setting when the runner was made; ONNX Runtime is given the same).
        path: the model file, None for an in-memory module.
        inputs: for a model of several inputs, each one's (shape, dtype) by name, in the model's
            order; None for a model of one input.
    """

    kind: str
    input_shape: tuple[int, ...] | None
    input_dtype: np.dtype | None
    threads: int
    path: Path | None
    run: Callable[[Any], np.ndarray] = field(repr=False)
    inputs: dict[str, InputInfo] | None = None

    def __call__(self, x: Any) -> np.ndarray:
        if self.inputs is None:
            if is_named(x) and len(x) == 1:  # a graph of one input, given by its name
                x = next(iter(x.values()))
            return self.run(np.ascontiguousarray(x, dtype=self.input_dtype))  # dtype None keeps x's own
        if not is_named(x) or not set(self.inputs) <= set(x):
            given = ", ".join(x) if is_named(x) else "one array"
            raise ValueError(f"the model takes the inputs {', '.join(self.inputs)} as a dict of arrays by name; "
                             f"got {given}")
        return self.run({name: np.ascontiguousarray(x[name], dtype=dtype)
                         for name, (_, dtype) in self.inputs.items()})


class _SingleInput(nn.Module):
    """A one-argument forward named ``input``: torch.export names the ONNX input after the
    argument and reads dynamic shapes by name, and ArchlabModel's forward is ``*args``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002  (the ONNX input's name)
        return self.model(input)


class _NamedInputs(nn.Module):
    """Positional arguments in the order of the spec's inputs, passed on by name: torch.onnx names
    the ONNX inputs from ``input_names`` in that order, and ArchlabModel's forward is ``*args``."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, args, strict=True)))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' internal chatter (deprecations, 'torchvision is not installed', version
    converter tracebacks) goes to archlab's debug log instead of the user's terminal."""
    names = ("torch.onnx", "onnxscript", "onnx_ir")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for w in caught:
            log.debug("export: %s: %s", w.category.__name__, w.message)
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _sibling_tmp(path: Path) -> Path:
    """A temporary name beside ``path`` with the same suffix, so the final rename is atomic."""
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


def _strip_node_metadata(graph: Any) -> None:
    """Drop the dynamo exporter's per-node debug records (stack traces with local file paths,
    FX node text): a third of a small model's file, and nothing a runtime reads."""
    for node in graph.node:
        del node.metadata_props[:]
        for attr in node.attribute:
            if attr.HasField("g"):
                _strip_node_metadata(attr.g)
            for sub in attr.graphs:
                _strip_node_metadata(sub)


def supported_opsets() -> tuple[int, int]:
    """The lowest and highest ONNX opset an export can ask for: torch.onnx's lowest, and the newest
    the installed onnx package defines (ONNX Runtime runs every opset up to it in the parity check)."""
    import onnx

    return LOWEST_OPSET, int(onnx.defs.onnx_opset_version())


def check_export_options(format: str, opset: int | None) -> None:
    """The format and opset, before any work (loading the run, the data, the exporter)."""
    if format not in FORMATS:
        raise ValueError(f"format is one of {', '.join(FORMATS)}, got {format!r}")
    if opset is None:
        return
    if format != "onnx":
        raise ValueError("--opset applies to ONNX only; drop it for TorchScript")
    low, high = supported_opsets()
    if not low <= opset <= high:
        raise ValueError(f"--opset {opset}: torch.onnx writes ONNX opsets {low} to {high}; pick one in that range, "
                         "or leave --opset out for the exporter's default")


def _export_onnx(model: nn.Module, example: Any, tmp: Path, metadata: dict[str, str],
                 opset: int | None, sequence_length: int | None = None) -> int:
    import onnx

    batch = torch.export.Dim("batch", min=1)  # one dimension for every input: they share the batch axis
    axes: dict[int, Any] = {0: batch}
    if sequence_length is not None:
        axes[1] = torch.export.Dim("length", min=1, max=sequence_length)
    if is_named(example):
        names = list(example)
        wrapper: nn.Module = _NamedInputs(model, names)
        args, dynamic = tuple(example.values()), {"args": tuple(dict(axes) for _ in names)}
    else:
        names, wrapper, args, dynamic = ["input"], _SingleInput(model), (example,), {"input": axes}
    try:
        with _quiet():
            torch.onnx.export(wrapper.eval(), args, str(tmp), dynamo=True, input_names=names,
                              output_names=["output"], opset_version=opset, external_data=False, verbose=False,
                              dynamic_shapes=dynamic)
    except Exception as exc:
        raise ExportError(f"torch.onnx could not export the model{f' at opset {opset}' if opset else ''}: "
                          f"{_summary(exc)}") from exc
    proto = onnx.load(str(tmp))
    actual = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and actual != opset:  # only below the opset it writes: converting up always works
        raise ExportError(f"opset {opset} was asked for but the exporter produced opset {actual}: torch.onnx "
                          f"writes opset {actual} and could not convert this model's operators down to {opset}; "
                          f"use --opset {actual} or higher")
    _strip_node_metadata(proto.graph)
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(tmp))
    return int(actual) if actual is not None else 0


def _export_torchscript(model: nn.Module, example: Any, tmp: Path, metadata: dict[str, str]) -> None:
    args = tuple(example.values()) if is_named(example) else (example,)  # traced positionally, in input order
    try:
        with _quiet(), torch.no_grad():
            traced = torch.jit.trace(model, args, check_trace=False)  # our own check follows
        traced.save(str(tmp), _extra_files={TORCHSCRIPT_METADATA: json.dumps(metadata)})
    except Exception as exc:
        raise ExportError(f"torch.jit.trace could not trace the model: {_summary(exc)}") from exc


def _summary(exc: BaseException) -> str:
    """The line of an exporter's long report that says what went wrong."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if "## Exception summary" in lines:  # the dynamo exporter's report
        after = lines[lines.index("## Exception summary") + 1:]
        if after:
            return after[0][:500]
    return (lines[0][:500] if lines else type(exc).__name__)


def _check_batches(count: int) -> list[slice]:
    """Batches of 1, 7 and the rest: every sample is checked once, at least two batch sizes."""
    edges = [0, 1, min(8, count), count]
    return [slice(a, b) for a, b in zip(edges, edges[1:], strict=False) if b > a]


def _compare(runner: Runner, model: nn.Module, check_inputs: Any, rtol: float,
             atol: float) -> tuple[float, tuple[int, ...], str | None]:
    """The largest |exported - torch|, the batch sizes run, and the element furthest beyond the
    tolerance described (None when every element is within it)."""
    worst_diff, worst_excess, failure = 0.0, 0.0, None
    sizes = []
    for batch in _check_batches(num_rows(check_inputs)):
        x = map_inputs(lambda t, b=batch: t[b], check_inputs)
        rows = num_rows(x)
        with torch.no_grad():
            expected = call_model(model, x).detach().cpu().numpy()
        got = np.asarray(runner(map_inputs(lambda t: t.cpu().numpy(), x)))
        sizes.append(rows)
        if got.shape != expected.shape:
            return worst_diff, tuple(sizes), (f"the exported model returns shape {got.shape} for a batch of {rows}, "
                                              f"PyTorch {expected.shape}")
        if not np.isfinite(got).all() and np.isfinite(expected).all():
            return float("inf"), tuple(sizes), f"the exported model returns NaN or inf for a batch of {rows}"
        diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
        worst_diff = max(worst_diff, float(diff.max()) if diff.size else 0.0)
        excess = diff - (atol + rtol * np.abs(expected.astype(np.float64)))
        if excess.size and float(excess.max()) > max(worst_excess, 0.0):
            worst_excess = float(excess.max())
            where = np.unravel_index(int(excess.argmax()), excess.shape)
            sample, index = batch.start + int(where[0]), tuple(int(i) for i in where[1:])
            failure = (f"sample {sample} (in a batch of {rows}), output {list(index)}: exported "
                       f"{got[where]:.6g} vs torch {expected[where]:.6g}, |diff| {diff[where]:.3g} > "
                       f"atol {atol:g} + rtol {rtol:g} * |torch| = {atol + rtol * abs(float(expected[where])):.3g}")
    return worst_diff, tuple(sizes), failure


def export_model(model: nn.Module, path: str | Path, *, format: Format = "onnx", example: Any,
                 check_inputs: Any, metadata: dict[str, str] | None = None, opset: int | None = None,
                 rtol: float = 1e-3, atol: float = 1e-5, sequence_length: int | None = None) -> ExportResult:
    """Export a one-output model of one input, or of several named ones, with a dynamic batch
    axis, and keep the file only if it computes what the model computes.

    The file is written beside ``path`` under a temporary name, read back (ONNX Runtime or
    ``torch.jit.load``), run on ``check_inputs`` in batches of 1, 7 and the rest, and compared
    element-wise with the model: ``|exported - torch| <= atol + rtol * |torch|``. Only then is it
    renamed to ``path``; a failed export leaves nothing there (an older file stays untouched).

    Args:
        model: the module; exported in eval mode (its mode is restored afterwards).
        path: where the file goes (ONNX: ``.onnx``; TorchScript: ``.pt``).
        format: ``"onnx"`` (input ``"input"``, output ``"output"``, batch axis ``"batch"``) or ``"torchscript"``.
        example: a batch to trace with (a tensor, or a dict of tensors by input name: the ONNX
            inputs then carry those names and dtypes, in that order, sharing the batch axis); a
            batch of one is repeated to two, because torch.export treats a size-1 axis as fixed.
        check_inputs: held-out samples (at least 3, so that two batch sizes run), in the form of ``example``.
        metadata: text stored in the file: ONNX ``metadata_props``, TorchScript extra file ``archlab.json``.
        opset: the ONNX opset (default: the exporter's, 20 in torch 2.13; 18 is the lowest it writes).
        rtol, atol: the parity tolerance.
        sequence_length: ONNX only: axis 1 of every input is dynamic too, from 1 to this length
            (a language model's prefix, ``length``); the check then also runs on the first half
            of each sample. ``example`` must be longer than one step.

    Returns:
        ExportResult with the file, its size and the largest difference seen.

    Raises:
        ExportError: the exporter failed, or the outputs differ beyond the tolerance (saying
            by how much, and for which sample and output).
        ValueError: an unknown format, too few check inputs, or a model with several outputs.

    Example:
        >>> import tempfile
        >>> from archlab import build
        >>> model = build({"input": [4], "layers": [{"dense": {"units": 3, "activation": "softmax"}}]})
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     result = export_model(model, Path(tmp) / "m.onnx", example=torch.randn(2, 4),
        ...                           check_inputs=torch.randn(9, 4), metadata={"note": "hi"})
        ...     read_metadata(result.path)["note"], result.checked_samples, result.batch_sizes
        ('hi', 9, (1, 7, 1))
    """
    check_export_options(format, opset)
    if sequence_length is not None and format != "onnx":
        raise ValueError("sequence_length applies to ONNX only")
    if num_rows(check_inputs) < 3:
        raise ValueError(f"check_inputs needs at least 3 samples (batches of 1 and 2 prove the dynamic batch "
                         f"axis), got {num_rows(check_inputs)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {str(k): str(v) for k, v in (metadata or {}).items()}
    was_training = model.training
    model.eval()
    if num_rows(example) < 2:
        example = map_inputs(lambda t: t.repeat(2, *([1] * (t.dim() - 1))), example)
    tmp = _sibling_tmp(path)
    try:
        with torch.no_grad():
            out = call_model(model, example)
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"export takes a model with one output tensor; this one returns {type(out).__name__}")
        opset_used: int | None = None
        if format == "onnx":
            opset_used = _export_onnx(model, example, tmp, metadata, opset, sequence_length)
        else:
            _export_torchscript(model, example, tmp, metadata)
        try:
            runner = load_runner(tmp)
        except ModelFileError as exc:
            raise ExportError(f"the exported {format} file does not load: {exc}") from exc
        max_diff, sizes, failure = _compare(runner, model, check_inputs, rtol, atol)
        if failure is None and sequence_length is not None:  # a shorter prefix proves the dynamic length
            half = max(1, first_input(check_inputs).shape[1] // 2)
            short, _, failure = _compare(runner, model, map_inputs(lambda t: t[:, :half], check_inputs), rtol, atol)
            max_diff = max(max_diff, short)
        if failure is not None:
            raise ExportError(f"the exported {format} model differs from PyTorch: max |diff| {max_diff:.3g} over "
                              f"{len(check_inputs)} held-out samples, beyond the tolerance (atol {atol:g}, rtol "
                              f"{rtol:g}); worst at {failure}. The file was not kept.")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        model.train(was_training)
    return ExportResult(path, format, opset_used, file_size(path), max_diff, num_rows(check_inputs), sizes, rtol,
                        atol)


def file_size(path: str | Path) -> int:
    """The size of a model file in bytes (ONNX files here never use external data)."""
    return Path(path).stat().st_size


def _test_metrics(run_dir: Path, weights: str, dataset: Any, x: Any) -> dict[str, float]:
    """The exported weights' metrics on the whole test split, computed as evaluate_run does
    (without writing files). summary.json's test metrics cannot stand in: they belong to the
    final epoch's weights, which are the best ones only when early stopping restored them."""
    from archlab.training import Engine, restore_run, to_tensors

    run = restore_run(run_dir, weights)
    task, recipe = run.task, run.recipe
    recorded = task.default_metrics if recipe.metrics is None else recipe.metrics
    # the file computes in fp32, whatever the run trained in
    recipe = recipe.model_copy(update={"metrics": sorted(set(recorded) | set(task.evaluation_metrics)),
                                       "precision": "fp32"})
    xt, yt = to_tensors(x, dataset.y_test, task)
    metrics, _ = Engine(run.model, recipe, task, verbose=0, output_activation=run.head).evaluate(xt, yt)
    return metrics


def _run_metadata(run_dir: Path, spec: Any, weights: str, data: str, metrics: dict[str, float],
                  samples: int) -> dict[str, str]:
    import archlab
    from archlab.spec import dump

    record = {"data": data, "split": "test", "samples": samples, "weights": weights, "metrics": metrics}
    return {"archlab.version": archlab.__version__, "archlab.spec": dump(spec),
            "archlab.metrics": json.dumps(record), "archlab.source_run": str(run_dir.resolve()),
            "archlab.weights": weights}


def load_run_model(run_dir: str | Path, weights: str = "best") -> tuple[Any, Any, Any, nn.Module]:
    """(spec, recipe, parsed spec, model) of a trained run: the full model the spec describes
    (final softmax included, unlike training's model) with the run's weights, in eval mode.

    Raises:
        RunError: a missing spec.yaml, recipe.yaml or weights file, or weights that do not match the spec.
        SpecError: a spec with several outputs (export takes one).
    """
    from archlab.builder import parse
    from archlab.training import restore_run

    if weights not in ("best", "last"):
        raise ValueError(f"weights is best or last, got {weights!r}")
    run = restore_run(run_dir, weights, logits=False)
    parsed = parse(run.spec)
    if parsed.is_graph and len(parsed.outputs) != 1:
        raise SpecError(f"export takes a spec with one output; this one has the outputs {', '.join(parsed.outputs)}:"
                        " keep the one to deploy", "outputs")
    return run.spec, run.recipe, parsed, run.model


def export_run(run_dir: str | Path, *, format: Format = "onnx", opset: int | None = None,
               out: str | Path | None = None, data: str | None = None, data_dir: str | Path | None = None,
               weights: str = "best", samples: int = 256, rtol: float = 1e-3, atol: float = 1e-5,
               on_event: Callable[[str], None] | None = None) -> ExportResult | Seq2SeqExportResult:
    """Export a trained run: the full model its spec describes (with the final softmax, so the
    file outputs what the spec says), checked on held-out samples of the data's test split.
    A seq2seq run exports as two ONNX files instead, an encoder and a decoder step, with its
    tokenizer, into a folder (``export_seq2seq_run``: a Seq2SeqExportResult).

    Args:
        run_dir: a run directory written by ``archlab train``, or an ensemble directory (one ONNX
            graph of its members and their combination, ``_export_ensemble``; ONNX only).
        format: ``"onnx"`` or ``"torchscript"``.
        opset: the ONNX opset (default: the exporter's).
        out: the file (default ``RUN/export/model.onnx`` or ``RUN/export/model.pt``); for a
            seq2seq run, the folder (default ``RUN/export``).
        data: the data set that gives the check samples (default: the run's).
        weights: ``"best"`` or ``"last"`` (``best.safetensors`` / ``last.safetensors``).
        samples: how many test samples the parity check runs.
        on_event: called with a progress line once the options and the run are checked.

    Returns:
        ExportResult. The file carries the spec (YAML), the exported weights' metrics on the
        whole test split (JSON, as ``archlab evaluate`` computes them), the archlab version and
        the source run (``read_metadata``).

    Raises:
        RunError: the run is missing files, or its weights do not match its spec (naming the file).
        SpecError, DataError: the data does not fit the spec, or cannot be loaded.
        ExportError: the export or its parity check failed.
    """
    from archlab.data import load_dataset
    from archlab.training import as_arrays, check_fit, model_inputs, run_task

    check_export_options(format, opset)
    if samples < 3:
        raise ValueError(f"samples must be at least 3 (two batch sizes), got {samples}")
    run_dir = Path(run_dir)
    from archlab.training import is_ensemble

    if is_ensemble(run_dir):  # one graph of the members and their combination
        return _export_ensemble(run_dir, format=format, opset=opset, out=out, data=data, data_dir=data_dir,
                                weights=weights, samples=samples, rtol=rtol, atol=atol, on_event=on_event)
    if _task_name(run_dir) == "seq2seq":  # two files: the encoder and a decoder step
        from ._seq2seq import check_seq2seq_options, export_seq2seq_run

        check_seq2seq_options(format, opset, out)
        return export_seq2seq_run(run_dir, opset=opset, out=out, data=data, data_dir=data_dir,  # type: ignore[return-value]
                                  weights=weights, samples=samples, rtol=rtol, atol=atol, on_event=on_event)
    target = Path(out) if out is not None else run_dir / "export" / ("model.onnx" if format == "onnx" else "model.pt")
    check_out_file(target)
    spec, recipe, parsed, model = load_run_model(run_dir, weights)
    if on_event is not None:
        on_event(f"export: {run_dir} to {format}, then the parity check on {samples} held-out test samples")
    name = data or recipe.data
    if name is None:
        raise SpecError("the run records no data set: pass --data NAME for the held-out check samples")
    task = run_task(spec, recipe)[0]
    dataset = as_arrays(load_dataset(name, data_dir), parsed, task, recipe, run_dir)  # text: the run's tokenizer
    check_fit(parsed, dataset, task)
    x = model_inputs(parsed, dataset.x_test, dataset.name)  # by name, int64 for token ids
    metrics = _test_metrics(run_dir, weights, dataset, x)
    # a graph of one input exports as one of any other spec (ONNX input "input")
    inputs = map_inputs(lambda a: torch.from_numpy(np.ascontiguousarray(a[:samples])), _one_or_named(x))
    if num_rows(inputs) < 3:
        raise ValueError(f"{dataset.name} has {num_rows(inputs)} test samples; the parity check needs at least 3")
    # a language model's ONNX file takes any prefix up to its context: one call is a decoder step
    length = first_input(inputs).shape[1] if task.name == "language_model" and format == "onnx" else None
    result = export_model(model, target, format=format, example=map_inputs(lambda t: t[:2], inputs),
                          check_inputs=inputs,
                          metadata=_run_metadata(run_dir, spec, weights, dataset.name, metrics, num_rows(x)),
                          opset=opset, rtol=rtol, atol=atol, sequence_length=length)
    if (run_dir / "tokenizer.json").is_file():  # a text run's export is usable alone: ids in, ids out
        _copy_atomic(run_dir / "tokenizer.json", target.parent / "tokenizer.json")
    return result


def _export_ensemble(run_dir: Path, *, format: Format, opset: int | None, out: str | Path | None, data: str | None,
                     data_dir: str | Path | None, weights: str, samples: int, rtol: float, atol: float,
                     on_event: Callable[[str], None] | None) -> ExportResult:
    """An ensemble directory as ONE ONNX graph of its EnsembleModel (the members' inputs in, the
    combined scores out), checked against the torch EnsembleModel as a run's export is, and
    carrying the ensemble's test metrics (``ensemble_metrics``) and its description (``archlab.ensemble``)."""
    from archlab.builder import parse
    from archlab.data import load_dataset
    from archlab.training import as_arrays, check_fit, ensemble_metrics, model_inputs, restore_ensemble, to_tensors

    if format != "onnx":
        raise ValueError(f"an ensemble ({run_dir}) exports to ONNX only, as one graph of its members and their "
                         "combination: drop --format torchscript")
    target = Path(out) if out is not None else run_dir / "export" / "model.onnx"
    check_out_file(target)
    restored = restore_ensemble(run_dir, weights)
    ensemble, first = restored.ensemble, restored.runs[0]
    members = [{"dir": m.name, "weights": m.weights, "weight": m.weight}
               for m in ensemble.members]
    described = {"method": ensemble.method, "combine": ensemble.combine, "task": ensemble.task, "members": members}
    if on_event is not None:
        on_event(f"export: {run_dir} ({len(members)} members, {ensemble.combine}) to onnx, then the parity check "
                 f"on {samples} held-out test samples")
    name = data or ensemble.data or first.recipe.data
    if name is None:
        raise SpecError("the ensemble records no data set: pass --data NAME for the held-out check samples")
    parsed = parse(first.spec)
    dataset = as_arrays(load_dataset(name, data_dir), parsed, first.task, first.recipe)
    check_fit(parsed, dataset, first.task)
    x = model_inputs(parsed, dataset.x_test, dataset.name)
    metrics = ensemble_metrics(restored, *to_tensors(x, dataset.y_test, first.task), fp32=True)[0]
    model = restore_ensemble(run_dir, weights).model  # a copy on the CPU: the metrics' engines moved theirs
    inputs = map_inputs(lambda a: torch.from_numpy(np.ascontiguousarray(a[:samples])), _one_or_named(x))
    if num_rows(inputs) < 3:
        raise ValueError(f"{dataset.name} has {num_rows(inputs)} test samples; the parity check needs at least 3")
    metadata = {**_run_metadata(run_dir, first.spec, weights, dataset.name, metrics, num_rows(x)),
                "archlab.ensemble": json.dumps(described)}
    result = export_model(model, target, format="onnx", example=map_inputs(lambda t: t[:2], inputs),
                          check_inputs=inputs, metadata=metadata, opset=opset, rtol=rtol, atol=atol)
    result.ensemble = described
    return result


def _copy_atomic(source: Path, path: Path) -> None:
    tmp = _sibling_tmp(path)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _task_name(run_dir: Path) -> str | None:
    """The run's task kind, or None when its spec or recipe cannot be read: the export then says
    why, once ``--out`` is checked, as for any run."""
    from archlab.training import load_run, run_task

    try:
        return run_task(*load_run(run_dir))[0].name
    except (ArchlabError, ValueError, OSError):
        return None


def _one_or_named(x: Any) -> Any:
    """Named inputs as they are, but the one array of a single-input graph by itself."""
    return next(iter(x.values())) if is_named(x) and len(x) == 1 else x


def _is_torchscript(path: Path) -> bool:
    return zipfile.is_zipfile(path)


def _check_file(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder, not a model file (a run directory? export it with archlab export)")
    if not path.is_file():
        raise ModelFileError(f"model file {str(path)!r} does not exist")
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The text metadata stored in an exported ONNX or TorchScript file (no model is loaded).

    Example:
        >>> read_metadata("missing.onnx")
        Traceback (most recent call last):
        ...
        archlab.deploy._export.ModelFileError: model file 'missing.onnx' does not exist
    """
    path = _check_file(path)
    if _is_torchscript(path):
        try:
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith(f"/extra/{TORCHSCRIPT_METADATA}")), None)
                return json.loads(archive.read(name).decode("utf-8")) if name else {}
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise ModelFileError(f"{path} is a damaged TorchScript archive: {exc}") from None
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelFileError(f"{path} is neither an ONNX model nor a TorchScript archive: {exc}") from None
    return {p.key: p.value for p in proto.metadata_props}


def _spec_inputs(metadata: dict[str, str]) -> dict[str, InputInfo] | None:
    """Each input's shape and dtype, by name in the spec's order, from the spec an exported file
    carries (None without one)."""
    if "archlab.spec" not in metadata:
        return None
    from archlab.builder import parse

    return {name: (tuple(info.shape), np.dtype(np.int64 if info.dtype == "long" else np.float32))
            for name, info in parse(metadata["archlab.spec"]).raw_inputs.items()}


def _runner(kind: str, threads: int, path: Path | None, run: Callable[[Any], np.ndarray],
            inputs: dict[str, InputInfo] | None) -> Runner:
    """A Runner of one input (``input_shape``, ``input_dtype``) or of several (``inputs``)."""
    if inputs is not None and len(inputs) > 1:
        return Runner(kind, None, None, threads, path, run, inputs)
    shape, dtype = next(iter(inputs.values())) if inputs else (None, None)
    return Runner(kind, shape, dtype, threads, path, run)


def _torch_runner(module: nn.Module) -> Runner:
    module.eval()
    inputs = None
    if hasattr(module, "spec") and getattr(module, "input_names", None):
        from archlab.spec import dump

        inputs = _spec_inputs({"archlab.spec": dump(module.spec)})

    def run(x: Any) -> np.ndarray:
        with torch.inference_mode():
            return call_model(module, map_inputs(torch.from_numpy, x)).cpu().numpy()

    return _runner("torch", torch.get_num_threads(), None, run, inputs)


def _ort_session(path: Path) -> Any:
    """An ONNX Runtime CPU session with torch's intra-op thread count (a fair comparison), errors only logged."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the same threads as torch: a fair comparison
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelFileError(f"{path} is not a model ONNX Runtime can load: {str(exc).splitlines()[0]}") from None


def _onnx_runner(path: Path) -> Runner:
    session = _ort_session(path)
    inputs: dict[str, InputInfo] = {}
    for arg in session.get_inputs():
        shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape[1:])
        inputs[arg.name] = (shape if -1 not in shape else None,
                            np.dtype(np.int64 if arg.type == "tensor(int64)" else np.float32))
    first, output = session.get_inputs()[0].name, session.get_outputs()[0].name

    def run(x: Any) -> np.ndarray:
        return session.run([output], x if is_named(x) else {first: x})[0]

    return _runner("onnx", session.get_session_options().intra_op_num_threads, path, run, inputs)


def _torchscript_runner(path: Path) -> Runner:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated; we know
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ModelFileError(f"{path} is not a loadable TorchScript archive: {str(exc).splitlines()[0]}") from None
    module.eval()
    inputs = _spec_inputs(read_metadata(path))

    def run(x: Any) -> np.ndarray:
        with torch.inference_mode():  # traced positionally, in the spec's input order
            args = [torch.from_numpy(x[name]) for name in inputs] if is_named(x) and inputs else [torch.from_numpy(x)]
            return module(*args).cpu().numpy()

    return _runner("torchscript", torch.get_num_threads(), path, run, inputs)


def load_runner(model: nn.Module | str | Path) -> Runner:
    """Something to call on a numpy batch (a dict of arrays by input name for a model of several
    inputs): an nn.Module (run by torch), an ``.onnx`` file (ONNX Runtime, CPU, with torch's
    intra-op thread count) or a TorchScript file (``torch.jit.load``). The kind of file is read
    from its content, not its name.

    Example:
        >>> from archlab import build
        >>> runner = load_runner(build({"input": [4], "layers": [{"dense": {"units": 3}}]}))
        >>> runner.kind, runner.input_shape, runner(np.zeros((2, 4))).shape
        ('torch', (4,), (2, 3))
    """
    if isinstance(model, nn.Module):
        return _torch_runner(model)
    path = _check_file(model)
    return _torchscript_runner(path) if _is_torchscript(path) else _onnx_runner(path)
