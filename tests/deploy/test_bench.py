"""benchmark / bench_path / load_runner: sane rows, bounded time, the same threads for torch and
ONNX Runtime, and clear errors for files that are not models."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from archlab.builder import build
from archlab.deploy import ModelFileError, bench_path, benchmark, export_model, export_run, load_runner
from archlab.training import train

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"warmup": 2, "repeats": 10, "max_seconds": 0.2}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_mlp):
    return train(tiny_mlp, out=tmp_path_factory.mktemp("runs"), verbose=0).run_dir


def test_rows_are_consistent(tiny_mlp):
    model = build(tiny_mlp)
    rows = benchmark(model, batch_sizes=(1, 16, 64), **FAST)
    assert [r["batch_size"] for r in rows] == [1, 16, 64]
    for row in rows:
        assert set(row) == {"batch_size", "median_ms", "p95_ms", "samples_per_s", "repeats"}
        assert 0 < row["median_ms"] <= row["p95_ms"]
        assert row["samples_per_s"] == pytest.approx(row["batch_size"] / (row["median_ms"] / 1000))
        assert 5 <= row["repeats"] <= 10


def test_time_is_bounded_per_batch_size():
    calls = []

    def slow(x):
        calls.append(len(x))
        time.sleep(0.02)
        return x

    began = time.perf_counter()
    rows = benchmark(slow, (4,), (1, 2), warmup=3, repeats=1000, max_seconds=0.05, min_repeats=3)
    assert time.perf_counter() - began < 1.0
    assert [r["repeats"] for r in rows] == [3, 3]  # the budget ran out after min_repeats
    assert all(r["median_ms"] >= 20 for r in rows)
    assert calls.count(1) in (4, 5)  # warm-up cut short (1 or 2 of 3 calls) after max_seconds / 2; 3 timed


def test_inputs_are_made_once_outside_the_timed_calls():
    seen = []
    benchmark(lambda x: seen.append(id(x)), (3,), (4,), warmup=2, repeats=5, min_repeats=5)
    assert len(set(seen)) == 1


def test_onnx_runner_uses_torchs_thread_count(run_dir, tmp_path):
    path = export_run(run_dir, out=tmp_path / "m.onnx", samples=20).path
    assert torch.get_num_threads() == 1
    runner = load_runner(path)
    assert runner.kind == "onnx" and runner.threads == 1
    assert runner.input_shape == (1, 8, 8) and runner.input_dtype == np.float32
    rows = benchmark(runner, batch_sizes=(1, 8), **FAST)
    assert all(r["median_ms"] <= r["p95_ms"] for r in rows)


def test_bench_path_on_runs_and_files(run_dir, tmp_path):
    torch_result = bench_path(run_dir, batch_sizes=(1, 4), **FAST)
    assert torch_result.runtime == "torch" and torch_result.file == run_dir / "best.safetensors"
    assert torch_result.size_bytes == (run_dir / "best.safetensors").stat().st_size
    onnx_result = bench_path(run_dir, format="onnx", batch_sizes=(2,), **FAST)  # no export yet: a temporary one
    assert onnx_result.runtime == "onnx" and onnx_result.temporary and not onnx_result.file.exists()
    assert not (run_dir / "export").exists()
    exported = export_run(run_dir, format="torchscript", samples=20).path  # RUN/export/model.pt
    ts_result = bench_path(run_dir, format="torchscript", batch_sizes=(2,), data="digits", **FAST)
    assert ts_result.file == exported and not ts_result.temporary
    file_result = bench_path(exported, format="torch", batch_sizes=(3,), threads=1, **FAST)
    assert file_result.runtime == "torchscript" and file_result.rows[0]["batch_size"] == 3


def test_token_id_models_get_int64_inputs(tmp_path):
    spec = {"input": {"shape": [6], "dtype": "long"}, "layers": [
        {"embedding": {"input_dim": 20, "output_dim": 8}}, "global_avgpool1d", {"dense": {"units": 3}}]}
    model = build(spec).eval()
    ids = torch.randint(0, 20, (10, 6))
    path = export_model(model, tmp_path / "ids.onnx", example=ids[:2], check_inputs=ids).path
    for runner in (load_runner(model), load_runner(path)):
        assert runner.input_dtype == np.int64 and runner.input_shape == (6,)
        assert [r["batch_size"] for r in benchmark(runner, batch_sizes=(1, 4), **FAST)] == [1, 4]


def test_bench_path_errors(run_dir, tmp_path):
    onnx_file = export_run(run_dir, out=tmp_path / "m.onnx", samples=20).path
    with pytest.raises(ValueError, match=r"m.onnx is an ONNX file; --format torch needs a run directory"):
        bench_path(onnx_file, format="torch")
    with pytest.raises(ValueError, match=r"format is one of torch, onnx, torchscript, got 'onx'; did you mean 'onnx'"):
        bench_path(run_dir, format="onx")
    with pytest.raises(ValueError, match="batch sizes are positive integers"):
        bench_path(run_dir, batch_sizes=(0,))
    with pytest.raises(ValueError, match=r"takes samples of shape \(1, 8, 8\), the inputs have \(4,\)"):
        benchmark(load_runner(onnx_file), inputs=np.zeros((3, 4), np.float32))


def test_files_that_are_not_models(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 not a model")
    with pytest.raises(ModelFileError, match="garbage.onnx is not a model ONNX Runtime can load"):
        load_runner(garbage)
    with pytest.raises(ModelFileError, match="does not exist"):
        load_runner(tmp_path / "missing.onnx")
    with pytest.raises(ModelFileError, match="is a folder, not a model file"):
        load_runner(tmp_path)
