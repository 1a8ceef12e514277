"""quantize_onnx: int8 files a third the size or less when weights dominate, with digits test
accuracy within a point of fp32, and clear refusals for what a method cannot do."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import archlab
from archlab.builder import build
from archlab.data import load_dataset
from archlab.deploy import ExportError, export_model, export_run, load_runner, quantize_onnx, read_metadata
from archlab.exceptions import SpecError
from archlab.training import train

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = {"data": "digits", "epochs": 5, "batch_size": 32, "device": "cpu", "validation_split": 0.1,
         "optimizer": {"name": "adam", "lr": 0.003}}

# Weights dominate both files: 38,410 and 71,770 parameters.
MLP = {"name": "mlp", "input": [1, 8, 8], "task": {"kind": "classification", "classes": 10},
       "layers": ["flatten", {"dense": {"units": 512, "activation": "relu"}},
                  {"dense": {"units": 10, "activation": "softmax"}}], "train": TRAIN}
CNN = {"name": "cnn", "input": [1, 8, 8], "task": {"kind": "classification", "classes": 10},
       "layers": [{"conv2d": {"filters": 16, "kernel_size": 3, "padding": "same", "use_bias": False}}, "batchnorm",
                  "relu", {"conv2d": {"filters": 32, "kernel_size": 3, "padding": "same", "activation": "relu"}},
                  {"maxpool2d": {"pool_size": 2}}, "flatten", {"dropout": {"rate": 0.25}},
                  {"dense": {"units": 128, "activation": "relu"}}, {"dense": {"units": 10, "activation": "softmax"}}],
       "train": TRAIN}
ATTENTION = {"input": [8, 8], "layers": [
    {"dense": {"units": 16}}, "layernorm", "relu", {"multi_head_attention": {"num_heads": 2}},
    "global_avgpool1d", {"dense": {"units": 10, "activation": "softmax"}}]}
RECURRENT = {"input": [8, 8], "layers": [
    {"lstm": {"units": 32, "return_sequences": True}}, {"gru": {"units": 16}},
    {"dense": {"units": 10, "activation": "softmax"}}]}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    files = {}
    for spec in (MLP, CNN):
        run_dir = train(spec, out=out, verbose=0).run_dir
        files[spec["name"]] = export_run(run_dir, samples=64).path
    return files


def _accuracy(path, digits) -> float:
    return float((load_runner(path)(digits.x_test).argmax(axis=1) == digits.y_test).mean())


def _export_spec(spec: dict, path) -> None:
    torch.manual_seed(0)
    x = torch.randn(10, *spec["input"])
    export_model(build(spec), path, example=x[:2], check_inputs=x, metadata={"archlab.spec": archlab.dump(
        archlab.load(spec))})


def test_dynamic_shrinks_a_dense_model_and_keeps_accuracy(exported, digits, tmp_path):
    fp32 = exported["mlp"]
    result = quantize_onnx(fp32, tmp_path / "int8.onnx", mode="dynamic")
    assert result.mode == "dynamic" and result.ops_quantized == {"MatMul": 2} and result.float_layers == []
    ratio = result.size_bytes / fp32.stat().st_size
    assert ratio <= 0.30  # measured 0.28: 38,410 int8 weights, float biases, graph and metadata
    before, after = _accuracy(fp32, digits), _accuracy(result.path, digits)
    assert before >= 0.93  # a trained model, or the comparison means nothing (measured 0.95)
    assert abs(after - before) <= 0.01  # measured: identical (0.9500 -> 0.9500)


def test_static_shrinks_a_cnn_and_keeps_accuracy(exported, digits, tmp_path):
    fp32 = exported["cnn"]
    result = quantize_onnx(fp32, tmp_path / "int8.onnx", mode="static", calibration=digits.x_train[:256])
    assert result.ops_quantized == {"Conv": 2, "Gemm": 2}  # batchnorm was folded into the first conv
    assert result.method == "minmax" and result.calibration_samples == 256
    ratio = result.size_bytes / fp32.stat().st_size
    assert ratio <= 0.30  # measured 0.29 (per-channel scales and int32 biases add to the int8 weights)
    before, after = _accuracy(fp32, digits), _accuracy(result.path, digits)
    assert before >= 0.95  # measured 0.98
    assert abs(after - before) <= 0.01  # measured: identical (0.9806 -> 0.9806)
    assert 0 < result.max_abs_diff < 0.05  # on the calibration samples, probabilities


def test_dynamic_leaves_convolutions_in_float(exported, tmp_path):
    result = quantize_onnx(exported["cnn"], tmp_path / "int8.onnx", mode="dynamic")
    assert result.ops_quantized == {"MatMul": 2}
    assert result.float_layers == ["layers[0] (conv2d): ORT's ConvInteger is slower than float convolution",
                                   "layers[3] (conv2d): ORT's ConvInteger is slower than float convolution"]


def test_metadata_carries_over(exported, digits, tmp_path):
    result = quantize_onnx(exported["cnn"], tmp_path / "int8.onnx", mode="static", calibration=digits.x_train[:64],
                           method="percentile")
    fp32_meta, meta = read_metadata(exported["cnn"]), read_metadata(result.path)
    for key in ("archlab.spec", "archlab.metrics", "archlab.source_run", "archlab.version"):
        assert meta[key] == fp32_meta[key]
    assert json.loads(meta["archlab.quantization"]) == {
        "mode": "static", "weights": "int8", "format": "QDQ", "per_channel": True, "activations": "int8",
        "method": "percentile", "calibration_samples": 64}
    assert not any(key.startswith("onnx.") for key in meta)


def test_static_refuses_attention_naming_the_layer(tmp_path, digits):
    fp32 = tmp_path / "attention.onnx"
    _export_spec(ATTENTION, fp32)
    with pytest.raises(SpecError) as err:
        quantize_onnx(fp32, tmp_path / "int8.onnx", mode="static", calibration=np.zeros((8, 8, 8), np.float32))
    assert str(err.value).startswith("layers[3] (multi_head_attention): static int8 quantization covers "
                                     "convolutional and dense layers; use --quantize dynamic for attention")
    assert err.value.path == "layers[3]"
    assert not (tmp_path / "int8.onnx").exists()
    dynamic = quantize_onnx(fp32, tmp_path / "int8.onnx", mode="dynamic")  # what the message suggests works
    assert dynamic.ops_quantized["MatMul"] >= 4  # dense, q/k/v in-projection, out-projection, head


def test_dynamic_quantizes_lstm_and_says_gru_stays_float(tmp_path):
    fp32 = tmp_path / "rnn.onnx"
    _export_spec(RECURRENT, fp32)
    result = quantize_onnx(fp32, tmp_path / "int8.onnx", mode="dynamic")
    assert result.ops_quantized == {"LSTM": 1, "MatMul": 1}
    assert result.float_layers == ["layers[1] (gru): ONNX Runtime has no int8 GRU kernel"]
    x = np.random.default_rng(0).standard_normal((5, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(load_runner(result.path)(x), load_runner(fp32)(x), atol=0.02)


def test_bad_requests(exported, digits, tmp_path):
    out = tmp_path / "int8.onnx"
    with pytest.raises(ValueError, match="static quantization needs calibration samples"):
        quantize_onnx(exported["cnn"], out, mode="static")
    with pytest.raises(ValueError, match=r"calibration samples have shape \(64,\), the model takes \(1, 8, 8\)"):
        quantize_onnx(exported["cnn"], out, mode="static", calibration=digits.x_train[:10].reshape(10, 64))
    with pytest.raises(ValueError, match="mode is dynamic or static"):
        quantize_onnx(exported["cnn"], out, mode="int4")  # type: ignore[arg-type]
    conv_only = {"input": [1, 8, 8], "layers": [{"conv2d": {"filters": 4, "kernel_size": 3}}, "global_avgpool2d"]}
    with pytest.raises(SpecError, match=r"nothing to quantize here.*layers\[0\] \(conv2d\).*--quantize static"):
        quantize_onnx(exported["cnn"], out, mode="dynamic", spec=conv_only)
    assert not out.exists()


def test_a_broken_quantizer_leaves_no_file(exported, tmp_path, monkeypatch):
    import onnxruntime.quantization as ortq

    def broken(*args, **kwargs):
        raise RuntimeError("simulated quantizer failure")

    monkeypatch.setattr(ortq, "quantize_dynamic", broken)
    with pytest.raises(ExportError, match="ONNX Runtime could not quantize .* simulated quantizer failure"):
        quantize_onnx(exported["mlp"], tmp_path / "int8.onnx")
    assert list(tmp_path.iterdir()) == []
