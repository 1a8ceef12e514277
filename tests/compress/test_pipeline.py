"""archlab compress on tiny trained digits runs: steps in order, every model measured, the source
run untouched, and one clear error (before anything is written) for bad input."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml

import archlab
from archlab.builder import build_parsed, parse
from archlab.cli import run as cli_run
from archlab.compress import CompressStep, compress
from archlab.exceptions import SpecError
from archlab.training import RunError, evaluate_run, save_weights, train

pytestmark = pytest.mark.usefixtures("one_thread")

CNN = {
    "name": "digits-cnn-small",
    "input": [1, 8, 8],
    "task": {"kind": "classification", "classes": 10},
    "layers": [
        {"conv2d": {"filters": 16, "kernel_size": 3, "padding": "same", "activation": "relu"}},
        {"conv2d": {"filters": 32, "kernel_size": 3, "padding": "same", "activation": "relu"}},
        {"maxpool2d": {"pool_size": 2}},
        "flatten",
        {"dense": {"units": 128, "activation": "relu"}},
        {"dense": {"units": 10, "activation": "softmax"}},
    ],
    "train": {"data": "digits", "epochs": 6, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.002},
              "validation_split": 0.1, "validation": "stratified", "device": "cpu"},
}
STUDENT = {**CNN, "name": "student", "layers": [
    "flatten", {"dense": {"units": 24, "activation": "relu"}}, {"dense": {"units": 10, "activation": "softmax"}}]}


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    return train(CNN, out=tmp_path_factory.mktemp("runs"), verbose=0).run_dir


def digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_chain_of_steps_measures_every_model_and_leaves_the_run_untouched(cnn_run, tmp_path):
    before = digest(cnn_run)
    steps = [CompressStep("prune-structured", 0.5), CompressStep("prune-unstructured", 0.6),
             CompressStep("quantize", "static")]
    result = compress(cnn_run, steps, out=tmp_path / "c", finetune_epochs=2)
    assert digest(cnn_run) == before  # the source run was only read
    rows = {r["model"]: r for r in result.rows}
    assert list(rows) == ["original", "1-prune-structured", "2-prune-unstructured", "3-quantize"]
    original, pruned, sparse, int8 = rows.values()
    assert original["params"] == archlab.analyze(CNN).total_params
    # half the channels of both convs and the dense layer: the second conv's FLOPs fall to a quarter
    assert pruned["flops"] < 0.5 * original["flops"] and pruned["params"] < 0.5 * original["params"]
    assert pruned["test_accuracy"] > original["test_accuracy"] - 0.03
    assert sparse["params"] == pruned["params"] and sparse["flops"] == pruned["flops"]
    assert sparse["nonzero_params"] <= 0.45 * sparse["params"]  # 60% of the weights are still zero after fine-tuning
    assert sparse["onnx_bytes"] == pytest.approx(pruned["onnx_bytes"], rel=0.02)  # dense file: zeros take room
    assert sparse["onnx_gzip_bytes"] < 0.7 * pruned["onnx_gzip_bytes"]  # ...which compression sees
    assert int8["format"] == "onnx int8" and int8["onnx_bytes"] < 0.4 * sparse["onnx_bytes"]
    assert int8["test_accuracy"] > sparse["test_accuracy"] - 0.02
    for r in result.rows:
        for key in ("onnxrt_b1_ms", "onnxrt_b256_ms"):
            assert 0 < r[key] <= r[key.replace("_ms", "_p95_ms")]
        assert ("torch_b1_ms" in r) == (r["format"] == "fp32")
    out = result.out_dir
    record = json.loads((out / "compression.json").read_text())
    assert record["steps"] == ["prune-structured 0.5", "prune-unstructured 0.6", "quantize static"]
    assert record["models"] == json.loads(json.dumps(result.rows))
    report = (out / "compression.md").read_text()
    assert "| 3-quantize | onnx int8 |" in report and "dense CPU kernels" in report
    assert "2-prune-unstructured: 6" in report and "net.0.weight" in report  # the real sparsity, per layer
    assert (out / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    notes = json.loads((out / "2-prune-unstructured" / "compress.json").read_text())
    assert notes["sparsity"]["overall"] >= 0.6
    assert result.final_dir == out / "3-quantize"


def test_a_pruned_step_is_an_ordinary_run_whose_spec_round_trips(cnn_run, tmp_path):
    result = compress(cnn_run, [CompressStep("prune-structured", 0.25)], out=tmp_path / "c", finetune_epochs=1)
    step = result.out_dir / "1-prune-structured"
    spec = archlab.load(step / "spec.yaml")
    assert archlab.load(archlab.dump(spec)) == spec
    layers = [item for item in spec.to_dict()["layers"] if isinstance(item, dict)]
    widths = [item["conv2d"]["filters"] if "conv2d" in item else item["dense"]["units"]
              for item in layers if "conv2d" in item or "dense" in item]
    assert widths == [12, 24, 96, 10]  # a quarter of every prunable layer's outputs removed, the output layer kept
    evaluation = evaluate_run(step)
    assert evaluation["metrics"]["accuracy"] == pytest.approx(result.rows[1]["test_accuracy"], abs=1e-6)


def test_distillation_and_lowrank_steps(cnn_run, tmp_path):
    result = compress(cnn_run, [CompressStep("lowrank", 8), CompressStep("distill", str(cnn_run))],
                      student=STUDENT, distill_epochs=12, out=tmp_path / "c", finetune_epochs=1)
    original, factored, student = result.rows
    assert factored["params"] < original["params"]
    notes = json.loads((result.out_dir / "1-lowrank" / "compress.json").read_text())
    assert notes["factored"] == ["layers[4] 512x128 -> rank 8", "layers[5] 128x10 -> rank 8"]
    assert student["params"] == archlab.analyze(STUDENT).total_params
    assert student["test_accuracy"] > 0.8
    assert yaml.safe_load((result.out_dir / "2-distill" / "spec.yaml").read_text())["name"] == "student"


# -- bad input ------------------------------------------------------------------------------------
def fake_run(folder, spec: dict):
    """A run directory with untrained weights: enough for the checks that come before any work."""
    folder.mkdir()
    (folder / "spec.yaml").write_text(archlab.dump(spec))
    (folder / "recipe.yaml").write_text(yaml.safe_dump({"data": "digits"}))
    save_weights(folder / "best.safetensors", build_parsed(parse(archlab.load(spec))))
    return folder


ATTENTION = {"name": "att", "input": [8, 8], "task": {"kind": "classification", "classes": 10}, "layers": [
    {"dense": {"units": 16}}, {"multi_head_attention": {"num_heads": 2}}, "flatten",
    {"dense": {"units": 10, "activation": "softmax"}}], "train": {"data": "digits"}}


@pytest.mark.parametrize(("case", "error", "message"), [
    ("missing weights", RunError, "best.safetensors does not exist: compress needs a trained run"),
    ("edited spec", RunError, "the weights do not match the run's spec"),
    ("static attention", SpecError, "layers[1] (multi_head_attention): static int8 quantization covers "
                                    "convolutional and dense layers"),
    ("quantize not last", ValueError, "--quantize must be the last step (it is step 1 of 2)"),
    ("bad ratio", ValueError, "--prune-structured takes the fraction to remove, in (0, 1); got 1.5"),
    ("no steps", ValueError, "no compression step given"),
])
def test_bad_input_is_one_clear_error_before_anything_is_written(tmp_path, case, error, message):
    spec = ATTENTION if case == "static attention" else CNN
    run = fake_run(tmp_path / "run", spec)
    steps = {"static attention": [CompressStep("quantize", "static")],
             "quantize not last": [CompressStep("quantize", "dynamic"), CompressStep("lowrank", 4)],
             "bad ratio": [CompressStep("prune-structured", 1.5)], "no steps": []}.get(
        case, [CompressStep("prune-structured", 0.5)])
    if case == "missing weights":
        (run / "best.safetensors").unlink()
    if case == "edited spec":
        edited = {**CNN, "layers": [{"conv2d": {"filters": 4, "kernel_size": 3}}, *CNN["layers"][1:]]}
        (run / "spec.yaml").write_text(archlab.dump(edited))
    before = digest(run)
    with pytest.raises(error) as info:
        compress(run, steps, out=tmp_path / "out")
    assert message in str(info.value)
    assert not (tmp_path / "out").exists() and digest(run) == before


def test_out_is_the_parent_folder_and_a_file_there_is_refused_before_any_work(tmp_path, monkeypatch):
    run = fake_run(tmp_path / "run", CNN)
    (tmp_path / "taken").write_text("a file")
    import archlab.data

    def no_loading(*args, **kwargs):
        raise AssertionError("the data was loaded before --out was checked")

    monkeypatch.setattr(archlab.data, "load_dataset", no_loading)
    taken = tmp_path / "taken"
    for out, message in ((taken, f"--out {taken} is a file"), (taken / "c", f"--out {taken / 'c'}: {taken} is a file")):
        with pytest.raises(ValueError, match="give the folder that receives the run directories") as info:
            compress(run, [CompressStep("prune-structured", 0.5)], out=out)
        assert message in str(info.value)


def test_the_cli_runs_steps_in_the_order_given(cnn_run, tmp_path, capsys):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "keep.txt").write_text("mine: --out is a parent folder, other things may live there")
    code = cli_run(["compress", str(cnn_run), "--lowrank", "8", "--prune-structured", "0.25", "--finetune-epochs",
                    "0", "--out", str(tmp_path / "c"), "-q"])
    out = capsys.readouterr().out
    assert code == 0
    [folder] = [p for p in (tmp_path / "c").iterdir() if p.is_dir()]
    assert folder.name.startswith("compress-digits-cnn-small-")
    assert [p.name for p in sorted(folder.iterdir()) if p.is_dir()] == ["0-original", "1-lowrank", "2-prune-structured"]
    assert "final model: " + str(folder / "2-prune-structured") in out
    code = cli_run(["compress", str(cnn_run), "--prune-unstructured", "2", "--out", str(tmp_path / "d")])
    assert code == 2 and "--prune-unstructured takes the fraction to remove" in capsys.readouterr().err


def test_every_model_folder_is_taken_by_the_run_commands_and_the_int8_one_by_bench(tiny_mlp, tmp_path, capsys):
    import numpy as np

    source = train(tiny_mlp, out=tmp_path / "runs", verbose=0).run_dir
    code = cli_run(["compress", str(source), "--prune-structured", "0.5", "--quantize", "dynamic",
                    "--finetune-epochs", "1", "--batch-size", "16", "--out", str(tmp_path / "c"), "-q"])
    out = capsys.readouterr().out
    assert code == 0
    [folder] = (tmp_path / "c").iterdir()
    final = folder / "2-quantize"
    assert f"final model: {final}" in out
    record = json.loads((folder / "compression.json").read_text())
    accuracy = [r["test_accuracy"] for r in record["models"]]
    assert record["finetune_batch_size"] == 16  # --batch-size; each model folder keeps the run's recipe
    assert yaml.safe_load((folder / "1-prune-structured" / "recipe.yaml").read_text())["batch_size"] == 64
    sample = tmp_path / "sample.npy"
    np.save(sample, np.zeros((1, 1, 8, 8), np.float32))
    for i, name in enumerate(("0-original", "1-prune-structured")):  # PyTorch models: complete runs
        model = folder / name
        assert evaluate_run(model)["metrics"]["accuracy"] == pytest.approx(accuracy[i], abs=1e-6)
        assert cli_run(["bench", str(model), "--batch-sizes", "1,4", "--max-seconds", "0.05"]) == 0
        assert f"model file: {model / 'best.safetensors'}" in capsys.readouterr().out
        assert cli_run(["export", str(model), "--out", str(tmp_path / f"{name}.onnx"), "-q"]) == 0
        assert capsys.readouterr().out.startswith(f"exported: {tmp_path / f'{name}.onnx'} (ONNX opset 20")
        assert cli_run(["predict", str(model), str(sample)]) == 0
        assert capsys.readouterr().out.startswith("sample 0: ")
    assert cli_run(["bench", str(final), "--batch-sizes", "1,4", "--max-seconds", "0.05"]) == 0  # int8 ONNX
    text = capsys.readouterr().out
    assert "on ONNX Runtime" in " ".join(text.split()) and f"model file: {final / 'model.onnx'}" in text
    for argv in (["evaluate", str(final)], ["predict", str(final), str(sample)], ["export", str(final)],
                 ["shrink", str(final)]):
        assert cli_run(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert f"{final} holds an ONNX model, not a PyTorch run" in err and f"archlab bench {final}" in err


@pytest.mark.parametrize(("name", "params"), [("mnist-student", 30_762), ("mnist-student-tiny", 7_834)])
def test_the_mnist_student_examples_are_under_a_quarter_of_the_seed_cnn(name, params):
    from pathlib import Path

    examples = Path(__file__).parents[2] / "examples"
    path = examples / "compress" / f"{name}.yaml"
    teacher = archlab.analyze(examples / "seed-mnist-cnn.yaml").total_params
    assert archlab.analyze(path).total_params == params and f"{params:,}" in path.read_text()
    assert params * 4 <= teacher


def test_structured_pruning_can_keep_channel_counts_in_blocks_of_16(cnn_run, tmp_path):
    result = compress(cnn_run, [CompressStep("prune-structured", 0.5)], out=tmp_path / "c", finetune_epochs=0,
                      channel_multiple=16)
    spec = archlab.load(result.out_dir / "1-prune-structured" / "spec.yaml").to_dict()
    widths = [item["conv2d"]["filters"] if "conv2d" in item else item["dense"]["units"]
              for item in spec["layers"] if isinstance(item, dict) and ("conv2d" in item or "dense" in item)]
    assert widths == [16, 16, 64, 10]  # 16 -> 8 rounds up to one block of 16; 32 -> 16; 128 -> 64


def test_a_student_that_a_later_quantize_step_cannot_take_is_refused_first(tmp_path):
    run = fake_run(tmp_path / "run", CNN)
    steps = [CompressStep("distill", str(run)), CompressStep("quantize", "static")]
    with pytest.raises(SpecError, match=r"layers\[1\] \(multi_head_attention\): static int8 quantization"):
        compress(run, steps, student=ATTENTION, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
