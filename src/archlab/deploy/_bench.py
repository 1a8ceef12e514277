"""benchmark() and bench_path(): inference latency and throughput of a model, a file or a run.

The method: inputs made once per batch size (never inside the timed call), a few warm-up calls
(first calls allocate buffers and pick kernels), then timed calls with ``time.perf_counter``
until ``repeats`` calls or ``max_seconds`` have passed (at least ``min_repeats``), so a batch of
256 through a large model stays bounded. The median is the headline (robust to a busy machine),
p95 shows the jitter. Torch and ONNX Runtime run with the same intra-op thread count.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from archlab._inputs import is_named, map_inputs, num_rows

from ._export import InputInfo, Runner, _task_name, export_run, file_size, load_run_model, load_runner, read_metadata

__all__ = ["BenchResult", "bench_path", "benchmark", "timed_calls"]

log = logging.getLogger("archlab")

BENCH_FORMATS = ("torch", "onnx", "torchscript")


@dataclass
class BenchResult:
    """bench_path's answer: what ran, from which file, and one row per batch size.

    Attributes:
        source: the run directory or model file given.
        runtime: ``"torch"``, ``"onnx"`` (ONNX Runtime) or ``"torchscript"``.
        file: the model file whose size is reported (a run's weights for torch).
        size_bytes: its size.
        temporary: the file was a temporary export, deleted after the benchmark.
        threads: intra-op threads of the runtime.
        rows: benchmark() rows.
    """

    source: Path
    runtime: str
    file: Path
    size_bytes: int
    threads: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    temporary: bool = False


def _batch(samples: Any, size: int) -> Any:
    """``size`` samples (of each named input), cycling through ``samples`` when there are fewer."""
    index = np.arange(size) % num_rows(samples)
    return map_inputs(lambda a: np.ascontiguousarray(a[index]), samples)


def _synthetic(shape: tuple[int, ...], dtype: np.dtype, rows: int, rng: np.random.Generator) -> np.ndarray:
    """Random normal floats (not zeros: no sparse or denormal shortcuts), or zeros for int64
    token ids, since id 0 is below every embedding's input_dim."""
    return np.zeros((rows, *shape), dtype) if dtype.kind in "iu" else rng.standard_normal((rows, *shape)).astype(dtype)


def _named_inputs(specs: dict[str, InputInfo], inputs: Any, rows: int, rng: np.random.Generator) -> dict:
    """Samples for each input of a several-input model: the given arrays by name (extra ones are
    left out), else synthetic ones of each input's shape and dtype."""
    if inputs is None:
        unknown = [name for name, (shape, _) in specs.items() if shape is None]
        if unknown:
            raise ValueError(f"the shape of the input(s) {', '.join(unknown)} is unknown for this model: pass "
                             "inputs= (a dict of arrays by input name)")
        return {name: _synthetic(shape, dtype, rows, rng) for name, (shape, dtype) in specs.items()}  # type: ignore[arg-type]
    if not is_named(inputs) or any(name not in inputs for name in specs):
        given = ", ".join(inputs) if is_named(inputs) else "one array"
        raise ValueError(f"the model takes the inputs {', '.join(specs)}; the inputs given are {given}")
    chosen = {}
    for name, (shape, dtype) in specs.items():
        array = np.asarray(inputs[name], dtype=dtype)
        if shape is not None and tuple(array.shape[1:]) != tuple(shape):
            raise ValueError(f"the model's input {name!r} takes samples of shape {tuple(shape)}, the inputs have "
                             f"{tuple(array.shape[1:])}")
        chosen[name] = array
    return chosen


def timed_calls(runner: Callable[[np.ndarray], Any], x: np.ndarray, *, warmup: int = 3, repeats: int = 100,
                max_seconds: float = 2.0, min_repeats: int = 5) -> list[float]:
    """Seconds of each timed call of ``runner(x)``: ``warmup`` untimed calls first (stopped early
    after ``max_seconds / 2``; at least one), then between ``min_repeats`` and ``repeats`` calls,
    stopping once ``max_seconds`` have passed."""
    started = time.perf_counter()
    for i in range(max(warmup, 1)):
        runner(x)
        if i + 1 < warmup and time.perf_counter() - started > max_seconds / 2:
            break
    times: list[float] = []
    began = time.perf_counter()
    while len(times) < max(repeats, min_repeats):
        t0 = time.perf_counter()
        runner(x)
        times.append(time.perf_counter() - t0)
        if len(times) >= min_repeats and time.perf_counter() - began > max_seconds:
            break
    return times


def benchmark(runner: Runner | Callable[[np.ndarray], Any] | nn.Module | str | Path,
              input_shape: Sequence[int] | None = None, batch_sizes: Sequence[int] = (1, 32, 256), *,
              inputs: np.ndarray | None = None, warmup: int = 3, repeats: int = 100, max_seconds: float = 2.0,
              min_repeats: int = 5, seed: int = 0) -> list[dict[str, Any]]:
    """Time a model on batches of each size.

    Args:
        runner: a Runner (load_runner), a module or model file (loaded with load_runner), or any
            callable on a numpy batch.
        input_shape: one sample's shape without the batch axis (default: the runner's).
        batch_sizes: the batch sizes to time.
        inputs: samples to feed (cycled to fill a batch); for a model of several inputs a dict of
            arrays by input name. Default random normal floats, or zeros for an int64 (token id)
            input, since id 0 is always in range; for each input of a several-input model alike.
        warmup: untimed calls first (stopped early after ``max_seconds / 2``; at least one).
        repeats: timed calls at most.
        max_seconds: time budget of the timed calls per batch size, after ``min_repeats``.
        min_repeats: timed calls at least, whatever the budget.
        seed: for the random inputs.

    Returns:
        One dict per batch size: ``batch_size``, ``median_ms``, ``p95_ms``, ``samples_per_s``
        (batch size / median) and ``repeats``.

    Example:
        >>> rows = benchmark(lambda x: x * 2, (4,), (1, 8), repeats=5, min_repeats=2)
        >>> [r["batch_size"] for r in rows], all(r["median_ms"] <= r["p95_ms"] for r in rows)
        ([1, 8], True)
    """
    if not isinstance(runner, Runner) and isinstance(runner, nn.Module | str | Path):
        runner = load_runner(runner)
    sizes = [int(b) for b in batch_sizes]
    if not sizes or any(b < 1 for b in sizes):
        raise ValueError(f"batch sizes are positive integers, got {list(batch_sizes)}")
    if warmup < 0 or repeats < 1 or min_repeats < 1 or max_seconds <= 0:
        raise ValueError("warmup >= 0, repeats >= 1, min_repeats >= 1 and max_seconds > 0 are needed")
    rng = np.random.default_rng(seed)
    named = runner.inputs if isinstance(runner, Runner) else None
    if named is not None:
        inputs = _named_inputs(named, inputs, max(sizes), rng)
    else:
        known = runner.input_dtype if isinstance(runner, Runner) else None
        dtype = np.dtype(np.float32) if known is None else known
        if inputs is None:
            shape = tuple(input_shape) if input_shape is not None else getattr(runner, "input_shape", None)
            if shape is None:
                raise ValueError("the input shape is unknown for this model: pass input_shape (without the batch "
                                 "axis)")
            inputs = _synthetic(shape, dtype, max(sizes), rng)
        expected = getattr(runner, "input_shape", None)
        if expected is not None and tuple(np.shape(inputs)[1:]) != tuple(expected):
            raise ValueError(f"the model takes samples of shape {tuple(expected)}, the inputs have "
                             f"{tuple(np.shape(inputs)[1:])}")
        inputs = np.asarray(inputs, dtype=dtype)
    rows = []
    for size in sizes:
        x = _batch(inputs, size)  # made once, outside the timed calls
        times = timed_calls(runner, x, warmup=warmup, repeats=repeats, max_seconds=max_seconds,
                            min_repeats=min_repeats)
        median = float(np.median(times))
        rows.append({"batch_size": size, "median_ms": 1000 * median, "p95_ms": 1000 * float(np.percentile(times, 95)),
                     "samples_per_s": size / median, "repeats": len(times)})
    return rows


def bench_path(path: str | Path, *, format: str | None = None, batch_sizes: Sequence[int] = (1, 32, 256),
               data: str | None = None, data_dir: str | Path | None = None, weights: str = "best",
               threads: int | None = None, **options: Any) -> BenchResult:
    """Benchmark a run directory or a model file, as ``archlab bench`` does.

    A run with ``format="torch"`` (its default) times the PyTorch model and reports the size of
    its weights file; ``"onnx"`` or ``"torchscript"`` uses ``RUN/export/model.onnx`` (``.pt``) when it
    was exported from the same weights, else exports to a temporary file first. A model file
    runs in its own runtime (a TorchScript file also answers to ``"torch"``).

    Args:
        path: a run directory or an ``.onnx`` / TorchScript file.
        format: ``"torch"``, ``"onnx"`` or ``"torchscript"``; default: torch for a run, the file's kind for a file.
        batch_sizes: the batch sizes to time.
        data: time on this data set's test samples instead of random inputs.
        weights: a run's ``best`` or ``last`` weights.
        threads: intra-op threads for torch and ONNX Runtime alike (default: torch's current setting).
        **options: benchmark()'s warmup, repeats, max_seconds, min_repeats.

    Raises:
        RunError, ModelFileError: a bad run or file. ValueError: an unknown or mismatched format.
    """
    from archlab.exceptions import suggest

    path = Path(path)
    if format is not None and format not in BENCH_FORMATS:
        raise ValueError(f"format is one of {', '.join(BENCH_FORMATS)}, got {format!r}{suggest(format, BENCH_FORMATS)}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _bench_path(path, format, batch_sizes, data, data_dir, weights, options)
    finally:
        torch.set_num_threads(before)


def _bench_path(path: Path, format: str | None, batch_sizes: Sequence[int], data: str | None,
                data_dir: str | Path | None, weights: str, options: dict[str, Any]) -> BenchResult:
    with tempfile.TemporaryDirectory(prefix="archlab-bench-") as tmp:
        if path.is_dir() and not (path / "recipe.yaml").is_file() and (path / "model.onnx").is_file():
            path = path / "model.onnx"  # a model folder of compress without PyTorch weights (int8 ONNX)
        if path.is_dir():
            runner, file = _run_runner(path, format or "torch", weights, data, data_dir, Path(tmp))
        else:
            runner = load_runner(path)
            kind = runner.kind
            if format is not None and format != kind and not (format == "torch" and kind == "torchscript"):
                wanted = "a run directory or " + ("an ONNX file" if format == "onnx" else "a TorchScript file")
                raise ValueError(f"{path} is {'an ONNX' if kind == 'onnx' else 'a TorchScript'} file; --format "
                                 f"{format} needs {wanted}")
            file = path
        inputs = None
        if data is not None:
            from archlab.data import load_dataset

            inputs = load_dataset(data, data_dir).x_test
        rows = benchmark(runner, None, batch_sizes, inputs=inputs, **options)
        return BenchResult(path, runner.kind, file, file_size(file), runner.threads, rows,
                           temporary=Path(tmp) in file.parents)


def _run_runner(run_dir: Path, format: str, weights: str, data: str | None, data_dir: str | Path | None,
                tmp: Path) -> tuple[Runner, Path]:
    if format == "torch":
        _, _, _, model = load_run_model(run_dir, weights)
        return load_runner(model), run_dir / f"{weights}.safetensors"
    if _task_name(run_dir) == "seq2seq":
        raise ValueError(f"--format {format}: a seq2seq run exports as two files (an encoder and a decoder step, "
                         "archlab export), which bench does not time; bench the run on PyTorch (drop --format)")
    exported = run_dir / "export" / ("model.onnx" if format == "onnx" else "model.pt")
    if exported.is_file() and read_metadata(exported).get("archlab.weights") == weights:
        log.info("bench: using %s", exported)
        return load_runner(exported), exported
    result = export_run(run_dir, format=format, out=tmp / exported.name, data=data, data_dir=data_dir,  # type: ignore[arg-type]
                        weights=weights)
    return load_runner(result.path), result.path
