"""export and bench on graph-form specs of two named inputs, for every task kind (the ``named_task``
fixture: ``ids``, int64 (3,), and ``num``, float (4,))."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from archlab.cli import run
from archlab.data import load_dataset
from archlab.deploy import (
    Runner,
    bench_path,
    benchmark,
    export_model,
    export_run,
    load_run_model,
    load_runner,
    quantize_onnx,
    read_metadata,
)
from archlab.training import evaluate_run, train

from ..conftest import TASK_KINDS

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def named_runs(named_task, tmp_path_factory):
    """``named_runs(task)`` -> (data name, run directory): the two-input spec of ``task`` trained
    for two epochs, once per module."""
    runs: dict[str, tuple[str, object]] = {}

    def get(task: str):
        if task not in runs:
            data, spec = named_task(task)
            spec["train"]["epochs"] = 2
            runs[task] = (data, train(spec, out=tmp_path_factory.mktemp(task), verbose=0).run_dir)
        return runs[task]

    return get


def _torch_outputs(run_dir, x: dict) -> np.ndarray:
    _, _, _, model = load_run_model(run_dir)
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in x.items()}).numpy()


@pytest.mark.parametrize("task", TASK_KINDS)
def test_export_names_and_types_each_onnx_input_and_matches_torch(named_runs, task) -> None:
    data, run_dir = named_runs(task)
    result = export_run(run_dir)
    assert result.checked_samples == 48 and result.batch_sizes == (1, 7, 40)  # the whole test split
    assert result.max_abs_diff <= 1e-5

    graph = onnx.load(str(result.path)).graph
    inputs = [(i.name, i.type.tensor_type.elem_type, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim])
              for i in graph.input]
    assert inputs == [("ids", onnx.TensorProto.INT64, ["batch", 3]), ("num", onnx.TensorProto.FLOAT, ["batch", 4])]

    test = load_dataset(data).x_test
    x = {"ids": test["ids"].astype(np.int64), "num": test["num"].astype(np.float32)}
    expected = _torch_outputs(run_dir, x)
    got = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"]).run(None, x)[0]
    assert got.shape == expected.shape == (48, {"classification": 3, "multilabel": 2}.get(task, 1))
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)

    # archlab's runner takes the arrays by name, in any order and dtype, and casts each to its input's
    runner = load_runner(result.path)
    assert runner.inputs == {"ids": ((3,), np.dtype(np.int64)), "num": ((4,), np.dtype(np.float32))}
    np.testing.assert_allclose(runner({"num": test["num"].astype(np.float64), "ids": test["ids"].astype(np.float32)}),
                               expected, atol=1e-5, rtol=0)
    # the metrics the file carries are evaluate's on the exported (best) weights
    recorded = json.loads(read_metadata(result.path)["archlab.metrics"])
    assert recorded["samples"] == 48
    assert recorded["metrics"]["loss"] == pytest.approx(evaluate_run(run_dir)["metrics"]["loss"], rel=1e-5)


def test_torchscript_export_of_two_inputs_runs_by_name(named_runs, tmp_path) -> None:
    data, run_dir = named_runs("binary")
    result = export_run(run_dir, format="torchscript", out=tmp_path / "model.pt")
    test = load_dataset(data).x_test
    x = {"ids": test["ids"].astype(np.int64), "num": test["num"].astype(np.float32)}
    runner = load_runner(result.path)
    assert (runner.kind, list(runner.inputs)) == ("torchscript", ["ids", "num"])
    np.testing.assert_allclose(runner(x), _torch_outputs(run_dir, x), atol=1e-5, rtol=0)


def test_a_runner_of_two_inputs_refuses_one_array(named_runs) -> None:
    _, run_dir = named_runs("regression")
    runner = load_runner(load_run_model(run_dir)[3])
    with pytest.raises(ValueError, match=r"takes the inputs ids, num as a dict of arrays by name; got one array"):
        runner(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"got num"):
        runner({"num": np.zeros((2, 4), np.float32)})


@pytest.mark.parametrize("task", TASK_KINDS)
def test_bench_times_a_two_input_run_in_torch_and_onnx(named_runs, task) -> None:
    data, run_dir = named_runs(task)
    for runtime in ("torch", "onnx"):
        result = bench_path(run_dir, format=runtime, batch_sizes=(1, 5), repeats=4, min_repeats=2, max_seconds=0.05,
                            warmup=1)
        assert result.runtime == runtime
        assert [r["batch_size"] for r in result.rows] == [1, 5]
        for row in result.rows:
            assert 2 <= row["repeats"] <= 4 and 0 < row["median_ms"] <= row["p95_ms"]
            assert row["samples_per_s"] == pytest.approx(row["batch_size"] / (row["median_ms"] / 1000))
    on_data = bench_path(run_dir, batch_sizes=(3,), data=data, repeats=2, min_repeats=1, warmup=0)
    assert [r["batch_size"] for r in on_data.rows] == [3]


def test_bench_makes_inputs_per_name_with_ids_in_range(named_runs) -> None:
    """The synthetic batch holds every input at its shape and dtype; token ids are 0, below any input_dim."""
    _, run_dir = named_runs("classification")
    real = load_runner(load_run_model(run_dir)[3])
    seen: list[dict] = []

    def record(x: dict) -> np.ndarray:
        seen.append({k: (v.shape, v.dtype, float(v.min()), float(v.max())) for k, v in x.items()})
        return real.run(x)

    rows = benchmark(Runner("torch", None, None, 1, None, record, real.inputs), batch_sizes=(2, 6), repeats=2,
                     min_repeats=1, warmup=0)
    assert [r["batch_size"] for r in rows] == [2, 6]
    assert {s["ids"][:2] for s in seen} == {((2, 3), np.dtype(np.int64)), ((6, 3), np.dtype(np.int64))}
    assert {s["num"][:2] for s in seen} == {((2, 4), np.dtype(np.float32)), ((6, 4), np.dtype(np.float32))}
    assert all(s["ids"][2:] == (0.0, 0.0) and s["num"][2] < s["num"][3] for s in seen)  # random floats, not zeros
    with pytest.raises(ValueError, match=r"takes the inputs ids, num; the inputs given are ids"):
        benchmark(real, batch_sizes=(1,), inputs={"ids": np.zeros((1, 3), np.int64)})


def test_export_and_bench_commands_on_a_two_input_run(named_runs, tmp_path, capsys) -> None:
    _, run_dir = named_runs("binary")
    capsys.readouterr()
    assert run(["export", str(run_dir), "--out", str(tmp_path / "m.onnx"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"exported: {tmp_path / 'm.onnx'} (ONNX opset" in out and "on 48 held-out test samples" in out
    assert run(["bench", str(tmp_path / "m.onnx"), "--batch-sizes", "1,4", "--max-seconds", "0.05"]) == 0
    table = capsys.readouterr().out
    assert "on ONNX Runtime" in table
    assert [row[0] for row in re.findall(r"│\s+(\d+) │\s+([\d.]+) │", table)] == ["1", "4"]


def test_dynamic_quantization_of_a_two_input_run(named_runs, tmp_path) -> None:
    data, run_dir = named_runs("binary")
    fp32 = export_run(run_dir, out=tmp_path / "fp32.onnx").path
    result = quantize_onnx(fp32, tmp_path / "int8.onnx", mode="dynamic")
    assert result.ops_quantized == {"Gather": 1, "MatMul": 3}  # the embedding table and the three dense layers
    assert [i.name for i in onnx.load(str(result.path)).graph.input] == ["ids", "num"]
    test = load_dataset(data).x_test
    fp32_out, int8_out = load_runner(fp32)(test), load_runner(result.path)(test)
    assert int8_out.shape == fp32_out.shape == (48, 1)
    assert np.abs(int8_out - fp32_out).max() < 0.05  # probabilities, a few int8 steps apart at most


def test_static_quantization_calibrates_every_input(tmp_path) -> None:
    """Static (QDQ) quantization takes calibration data by input name: ORT's reader gets a dict per batch."""
    from archlab import build

    spec = {"inputs": {"a": [4], "b": [3]},
            "graph": {"left": {"from": "a", "layers": [{"dense": {"units": 8, "activation": "relu"}}]},
                      "right": {"from": "b", "layers": [{"dense": {"units": 8, "activation": "relu"}}]},
                      "out": {"from": ["left", "right"], "merge": "concat", "layers": [{"dense": {"units": 2}}]}},
            "outputs": "out"}
    torch.manual_seed(0)
    model = build(spec)
    rng = np.random.default_rng(0)
    x = {"a": rng.normal(size=(100, 4)).astype(np.float32), "b": rng.normal(size=(100, 3)).astype(np.float32)}
    tensors = {k: torch.from_numpy(v) for k, v in x.items()}
    fp32 = export_model(model, tmp_path / "fp32.onnx", example={k: t[:2] for k, t in tensors.items()},
                        check_inputs=tensors).path
    result = quantize_onnx(fp32, tmp_path / "int8.onnx", mode="static", calibration={**x, "extra": x["a"]}, spec=spec)
    assert (result.calibration_samples, result.ops_quantized) == (100, {"Gemm": 3})
    assert result.max_abs_diff is not None and 0 < result.max_abs_diff < 0.1
    expected = _torch_like(model, x)
    assert np.abs(load_runner(result.path)(x) - expected).max() < 0.1
    with pytest.raises(ValueError, match=r"calibration lacks the input\(s\) b; it holds a"):
        quantize_onnx(fp32, tmp_path / "bad.onnx", mode="static", calibration={"a": x["a"]}, spec=spec)
    with pytest.raises(ValueError, match=r"the model takes the inputs a, b: give calibration as a dict"):
        quantize_onnx(fp32, tmp_path / "bad.onnx", mode="static", calibration=x["a"], spec=spec)
    with pytest.raises(ValueError, match=r"calibration samples of input 'b' have shape \(4,\), the model takes \(3,\)"):
        quantize_onnx(fp32, tmp_path / "bad.onnx", mode="static", calibration={"a": x["a"], "b": x["a"]}, spec=spec)
    assert not (tmp_path / "bad.onnx").exists()


def _torch_like(model, x: dict) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(**{k: torch.from_numpy(v) for k, v in x.items()}).numpy()


@pytest.mark.parametrize("task", TASK_KINDS)
def test_compress_measures_a_two_input_model_by_the_tasks_headline_metric(named_runs, task, tmp_path) -> None:
    """compress's measuring (``measure_models``) takes named test inputs and scores each task by the
    first of its evaluation metrics, as ``archlab evaluate`` computes it."""
    from archlab.compress._pipeline import _Model, _state, measure_models

    data, run_dir = named_runs(task)
    spec, _, _, model = load_run_model(run_dir)
    ds = load_dataset(data)
    models = [_Model("trained", spec, _state(model), directory=tmp_path / "trained")]
    if task == "binary":  # an int8 model, scored in ONNX Runtime
        fp32 = export_run(run_dir, out=tmp_path / "fp32.onnx").path
        int8 = quantize_onnx(fp32, tmp_path / "int8.onnx").path
        models.append(_Model("int8", spec, None, onnx_int8=int8))
    rows = measure_models(models, ds.x_test, ds.y_test, tmp_path, batch_sizes=(1, 64), rounds=1, task=task)
    metric = {"classification": "accuracy", "binary": "auc", "multilabel": "micro_f1", "regression": "mse"}[task]
    evaluated = evaluate_run(run_dir)["metrics"][metric]
    assert rows[0]["metric"] == metric
    assert rows[0][f"test_{metric}"] == pytest.approx(evaluated, rel=1e-5, abs=1e-6)
    assert rows[0]["format"] == "fp32" and rows[0]["params"] == sum(p.numel() for p in model.parameters())
    assert all(rows[0][f"{kind}_b{bs}_ms"] > 0 for kind in ("torch", "onnxrt") for bs in (1, 64))
    assert [i.name for i in onnx.load(rows[0]["path"]).graph.input] == ["ids", "num"]
    if task == "binary":
        assert rows[1]["format"] == "onnx int8" and "torch_b1_ms" not in rows[1]
        assert rows[1]["test_auc"] == pytest.approx(evaluated, abs=0.03)


def test_a_spec_of_two_outputs_is_refused_at_outputs_before_any_export(tmp_path, capsys) -> None:
    from archlab import build
    from archlab.spec import load
    from archlab.training import resolve_recipe, write_run

    spec = load({"name": "two-out", "inputs": {"a": [4]}, "outputs": ["h", "g"],
                 "graph": {"h": {"from": "a", "layers": [{"dense": {"units": 3}}]},
                           "g": {"from": "a", "layers": [{"dense": {"units": 2}}]}}})
    write_run(tmp_path / "run", spec, resolve_recipe({"data": "digits"}), build(spec))
    capsys.readouterr()
    assert run(["export", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("error: outputs: export takes a spec with one output; this one has the outputs h, g: keep "
                           "the one to deploy")
    assert not (tmp_path / "run" / "export").exists()
