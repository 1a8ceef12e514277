"""export_run / export_model: ONNX and TorchScript files that match PyTorch on held-out samples at
several batch sizes, carry the run's spec and metrics, and are never left behind when they do not."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import archlab
from archlab.builder import build
from archlab.data import load_dataset
from archlab.deploy import ExportError, export_model, export_run, load_run_model, load_runner, read_metadata
from archlab.training import RunError, evaluate_run, load_run, train

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = {"data": "digits", "epochs": 2, "batch_size": 64, "device": "cpu", "validation_split": 0.2}

# conv, batchnorm, a residual add, a concat of two branches, pooling, dropout, dense
CNN = {
    "name": "cnn",
    "input": [1, 8, 8],
    "task": {"kind": "classification", "classes": 10},
    "layers": [
        {"conv2d": {"filters": 8, "kernel_size": 3, "padding": "same", "use_bias": False}}, "batchnorm", "relu",
        {"residual": {"layers": [{"conv2d": {"filters": 8, "kernel_size": 3, "padding": "same"}}], "post": ["relu"]}},
        {"parallel": {"branches": [[{"conv2d": {"filters": 4, "kernel_size": 1}}],
                                   [{"conv2d": {"filters": 4, "kernel_size": 3, "padding": "same"}}]]}},
        {"maxpool2d": {"pool_size": 2}}, "flatten", {"dropout": {"rate": 0.25}},
        {"dense": {"units": 32, "activation": "relu"}},
        {"dense": {"units": 10, "activation": "softmax"}},
    ],
    "train": TRAIN,
}

# Sequence models over (time, features) = (8, 8): what export must handle beyond convolutions.
RNN = {"input": [8, 8], "layers": [
    {"lstm": {"units": 16, "return_sequences": True, "bidirectional": True, "num_layers": 2}},
    {"gru": {"units": 16, "return_sequences": True}},
    {"simple_rnn": {"units": 8, "return_sequences": True}},
    {"additive_attention": {"units": 8}},
    {"dense": {"units": 10, "activation": "softmax"}}]}
TRANSFORMER = {"input": [8, 8], "layers": [
    {"dense": {"units": 16}},
    {"transformer_encoder": {"num_heads": 2, "ff_dim": 32, "norm_first": True, "activation": "gelu"}},
    {"multi_head_attention": {"num_heads": 4}},
    "layernorm", "global_avgpool1d",
    {"dense": {"units": 10, "activation": "softmax"}}]}
TOKENS = {"input": {"shape": [12], "dtype": "long"}, "layers": [
    {"embedding": {"input_dim": 50, "output_dim": 16}}, {"positional_embedding": {"max_len": 12}},
    {"transformer_encoder": {"num_heads": 4, "ff_dim": 32}},
    {"additive_attention": {"units": 8, "query": "learned"}},
    {"dense": {"units": 4, "activation": "softmax"}}]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_mlp):
    out = tmp_path_factory.mktemp("runs")
    return {spec["name"]: train(spec, out=out, verbose=0).run_dir for spec in (tiny_mlp, CNN)}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def cnn_onnx(runs, tmp_path_factory):
    return export_run(runs["cnn"], out=tmp_path_factory.mktemp("export") / "cnn.onnx")


def test_onnx_matches_torch_on_held_out_samples_at_batch_1_and_7(runs, cnn_onnx, digits):
    result = cnn_onnx
    assert result.format == "onnx" and result.opset == 20 and result.path.is_file()
    assert result.checked_samples == 256 and result.batch_sizes == (1, 7, 248)
    assert result.max_abs_diff < 1e-5
    assert result.size_bytes == result.path.stat().st_size
    # an independent check: a fresh ONNX Runtime session against the run's PyTorch model
    _, _, _, model = load_run_model(runs["cnn"])
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "input" and session.get_outputs()[0].name == "output"
    assert session.get_inputs()[0].shape[0] == "batch"  # the dynamic batch axis
    for batch in (digits.x_test[300:301], digits.x_test[301:308]):
        got = session.run(None, {"input": batch})[0]
        with torch.no_grad():
            expected = model(torch.from_numpy(batch)).numpy()
        assert got.shape == (len(batch), 10)
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)  # the spec's softmax is in the file


def test_onnx_file_has_no_debug_paths(cnn_onnx):
    """The exporter's per-node stack traces (local file paths) are stripped."""
    model = onnx.load(str(cnn_onnx.path))
    assert all(len(node.metadata_props) == 0 for node in model.graph.node)
    assert b"site-packages" not in cnn_onnx.path.read_bytes()


def test_metadata_round_trip(runs, cnn_onnx, tmp_path):
    meta = read_metadata(cnn_onnx.path)
    spec, _ = load_run(runs["cnn"])
    assert archlab.load(meta["archlab.spec"]) == spec
    record = json.loads(meta["archlab.metrics"])
    assert record["data"] == "digits" and record["weights"] == "best" and record["samples"] == 360
    # the exported weights' own test metrics, as archlab evaluate computes them (in a copy: it writes files)
    assert record["metrics"] == evaluate_run(shutil.copytree(runs["cnn"], tmp_path / "copy"))["metrics"]
    assert set(record["metrics"]) == {"loss", "accuracy", "macro_f1"}
    assert meta["archlab.version"] == archlab.__version__
    assert meta["archlab.source_run"] == str(runs["cnn"].resolve())


@pytest.mark.parametrize("spec", [RNN, TRANSFORMER, TOKENS], ids=["lstm-gru-elman", "transformer", "token-ids"])
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_sequence_models_export_with_parity(spec, fmt, tmp_path):
    torch.manual_seed(0)
    model = build(spec).eval()  # dropout off, for the comparison after the export
    shape = tuple(spec["input"]["shape"]) if isinstance(spec["input"], dict) else tuple(spec["input"])
    if isinstance(spec["input"], dict):
        inputs = torch.randint(0, 50, (20, *shape))
    else:
        inputs = torch.randn(20, *shape)
    path = tmp_path / ("model.onnx" if fmt == "onnx" else "model.pt")
    result = export_model(model, path, format=fmt, example=inputs[:2], check_inputs=inputs, metadata={"k": "v"})
    assert result.max_abs_diff < 1e-5 and result.batch_sizes == (1, 7, 12)
    runner = load_runner(path)
    assert runner.kind == fmt
    odd = inputs[:5].numpy()  # a batch size the check did not use
    with torch.no_grad():
        np.testing.assert_allclose(runner(odd), model(torch.from_numpy(odd)).numpy(), rtol=1e-3, atol=1e-5)
    assert read_metadata(path) == {"k": "v"}


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_round_trip(runs, digits, tmp_path):
    result = export_run(runs["tiny"], format="torchscript", out=tmp_path / "tiny.pt", samples=50)
    assert result.format == "torchscript" and result.opset is None and result.max_abs_diff < 1e-6
    loaded = torch.jit.load(str(result.path))
    _, _, _, model = load_run_model(runs["tiny"])
    x = torch.from_numpy(digits.x_test[:9])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    runner = load_runner(result.path)
    assert runner.kind == "torchscript" and runner.input_shape == (1, 8, 8)
    spec, _ = load_run(runs["tiny"])
    assert archlab.load(read_metadata(result.path)["archlab.spec"]) == spec


def test_default_path_is_in_the_run(runs, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(runs["tiny"], run_dir)
    result = export_run(run_dir, samples=20)
    assert result.path == run_dir / "export" / "model.onnx" and result.path.is_file()
    assert export_run(run_dir, format="torchscript", samples=20).path == run_dir / "export" / "model.pt"


def _perturbed(monkeypatch, amount: float) -> None:
    """Read every exported file back through a runner that adds ``amount`` to one output."""
    from archlab.deploy import _export

    real = _export.load_runner

    def perturbed(path):
        runner = real(path)
        inner = runner.run

        def run(x):
            out = inner(x).copy()
            out[-1, 3] += amount
            return out

        runner.run = run
        return runner

    monkeypatch.setattr(_export, "load_runner", perturbed)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_parity_failure_raises_and_leaves_no_file(runs, tmp_path, monkeypatch, fmt):
    _perturbed(monkeypatch, 0.01)
    path = tmp_path / "out" / ("model.onnx" if fmt == "onnx" else "model.pt")
    with pytest.raises(ExportError) as err:
        export_run(runs["tiny"], format=fmt, out=path, samples=20)
    message = str(err.value)
    assert "differs from PyTorch: max |diff| 0.01" in message
    assert "atol 1e-05, rtol 0.001" in message and "sample 19 (in a batch of 12), output [3]" in message
    assert "not kept" in message
    assert not path.exists() and list(path.parent.iterdir()) == []  # no temporary file either


def test_failed_export_keeps_the_previous_file(runs, tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    first = export_run(runs["tiny"], out=path, samples=20)
    before = path.read_bytes()
    _perturbed(monkeypatch, 1.0)
    with pytest.raises(ExportError):
        export_run(runs["tiny"], out=path, samples=20)
    assert path.read_bytes() == before and first.size_bytes == len(before)


def test_zero_tolerance_fails_on_float_rounding(runs, tmp_path):
    """ONNX Runtime's and PyTorch's convolution kernels round differently (diffs of ~1e-7), so a
    zero tolerance is a real failure of a real export, not a monkeypatch."""
    with pytest.raises(ExportError, match=r"max \|diff\| [0-9.e-]+ over 64 held-out samples.*atol 0, rtol 0"):
        export_run(runs["cnn"], out=tmp_path / "exact.onnx", samples=64, rtol=0, atol=0)
    assert list(tmp_path.iterdir()) == []


def test_opset_below_the_exporter_is_refused(runs, tmp_path):
    with pytest.raises(ExportError, match=r"opset 13 was asked for but the exporter produced opset 18.*--opset 18"):
        export_run(runs["tiny"], out=tmp_path / "old.onnx", opset=13, samples=20)
    assert not (tmp_path / "old.onnx").exists()
    assert export_run(runs["tiny"], out=tmp_path / "o18.onnx", opset=18, samples=20).opset == 18


def test_run_directory_errors(runs, tmp_path):
    with pytest.raises(RunError, match="is not a run directory"):
        export_run(tmp_path / "missing")
    no_weights = tmp_path / "no-weights"
    shutil.copytree(runs["tiny"], no_weights)
    (no_weights / "best.safetensors").unlink()
    with pytest.raises(RunError, match=r"best.safetensors does not exist"):
        export_run(no_weights)
    assert not (no_weights / "export").exists()
    foreign = tmp_path / "foreign"
    shutil.copytree(runs["tiny"], foreign)
    shutil.copy(runs["cnn"] / "best.safetensors", foreign / "best.safetensors")  # weights from another spec
    with pytest.raises(RunError, match=r"foreign/best.safetensors: the weights do not match the run's spec"):
        export_run(foreign)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(runs["tiny"], corrupt)
    (corrupt / "best.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="is not a readable safetensors checkpoint"):
        export_run(corrupt)
    with pytest.raises(ValueError, match="format is one of onnx, torchscript"):
        export_run(runs["tiny"], format="tflite")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weights is best or last"):
        export_run(runs["tiny"], weights="final")


def test_last_weights(runs, tmp_path):
    result = export_run(runs["tiny"], out=tmp_path / "last.onnx", weights="last", samples=20)
    assert json.loads(read_metadata(result.path)["archlab.metrics"])["weights"] == "last"


def test_spatial_dropout_and_drop_path_export_as_the_eval_model(tmp_path):
    spec = {"input": [2, 8, 8], "layers": [
        {"conv2d": {"filters": 4, "kernel_size": 3, "padding": "same"}}, {"spatial_dropout": {"rate": 0.3}},
        {"residual": {"layers": [{"conv2d": {"filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"}}],
                      "drop_path": 0.2}}, "flatten", {"dense": {"units": 3}}]}
    torch.manual_seed(0)
    model = build(spec).train()  # exported in eval mode: both are the identity there
    check = torch.randn(10, 2, 8, 8)
    result = export_model(model, tmp_path / "m.onnx", example=check[:2], check_inputs=check)
    assert model.training and result.checked_samples == 10
    with torch.no_grad():
        expected = model.eval()(check).numpy()
    got = load_runner(tmp_path / "m.onnx")(check.numpy())
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
