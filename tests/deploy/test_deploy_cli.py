"""archlab export and archlab bench on the command line: what they print, and exit codes (bad
input 2, a failed parity check 1, one error line, no traceback)."""

from __future__ import annotations

import re
import shutil

import pytest

from archlab.cli import run
from archlab.training import train

pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_mlp):
    out = tmp_path_factory.mktemp("runs")
    other = {**tiny_mlp, "name": "other", "layers": ["flatten", {"dense": {"units": 10, "activation": "softmax"}}]}
    return {spec["name"]: train(spec, out=out, verbose=0).run_dir for spec in (tiny_mlp, other)}


def test_export_prints_file_size_and_parity(runs, tmp_path, capsys):
    out = tmp_path / "tiny.onnx"
    assert run(["export", str(runs["tiny"]), "-o", str(out), "--samples", "40"]) == 0
    captured = capsys.readouterr()
    text = captured.out
    size = out.stat().st_size
    assert f"exported: {out} (ONNX opset 20, {size:,} bytes" in text
    # progress on standard error, the results alone on standard output
    assert captured.err == f"export: {runs['tiny']} to onnx, then the parity check on 40 held-out test samples\n"
    assert "export:" not in text
    match = re.search(r"parity: max \|onnx - torch\| = (\S+) within atol 1e-05 \+ rtol 0\.001 \* \|torch\| on 40 "
                      r"held-out test samples \(batches of 1, 7, 32\): ok", text)
    assert match and float(match.group(1)) < 1e-5
    assert run(["export", str(runs["tiny"]), "--format", "torchscript", "--weights", "last", "--samples", "10",
                "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "(TorchScript," in captured.out and (runs["tiny"] / "export" / "model.pt").is_file()
    assert captured.err == ""  # --quiet: no progress line


def test_bench_prints_a_table_and_the_file_size(runs, capsys):
    code = run(["bench", str(runs["tiny"]), "--batch-sizes", "1,8", "--max-seconds", "0.1", "--threads", "1"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "on PyTorch, 1 thread" in text
    for header in ("batch size", "median ms", "p95 ms", "samples/s"):
        assert header in text
    rows = re.findall(r"│\s+(\d+) │\s+([\d.]+) │\s+([\d.]+) │\s+([\d,]+) │", text)
    assert [r[0] for r in rows] == ["1", "8"]
    assert all(float(median) <= float(p95) for _, median, p95, _ in rows)
    size = (runs["tiny"] / "best.safetensors").stat().st_size
    assert f"model file: {runs['tiny'] / 'best.safetensors'} ({size:,} bytes" in text
    assert run(["bench", str(runs["tiny"]), "--format", "onnx", "--batch-sizes", "4", "--max-seconds", "0.1"]) == 0
    text = capsys.readouterr().out
    assert "on ONNX Runtime" in text and "model file: temporary export" in text


@pytest.mark.parametrize("argv, message", [
    (["export", "{missing}"], "is not a run directory"),
    (["export", "{no_recipe}"], "missing recipe.yaml"),
    (["export", "{no_weights}"], "best.safetensors does not exist"),
    (["export", "{corrupt}"], "is not a readable safetensors checkpoint"),
    (["export", "{foreign}"], "best.safetensors: the weights do not match the run's spec"),
    (["export", "{tiny}", "--format", "tflite"], "format is one of onnx, torchscript, got 'tflite'"),
    (["export", "{tiny}", "--weights", "final"], "weights is best or last"),
    (["bench", "{tiny}", "--batch-sizes", "1,x"], "--batch-sizes takes positive integers"),
    (["bench", "{tiny}", "--batch-sizes", "0"], "--batch-sizes takes positive integers"),
    (["bench", "{tiny}", "--batch-size", "8"], "No such option: --batch-size"),  # one integer elsewhere: not here
    # checked before any work: the run given does not even exist
    (["bench", "{missing}", "--batch-sizes", "-1"], "--batch-sizes takes positive integers"),
    (["export", "{missing}", "--opset", "99"], "--opset 99: torch.onnx writes ONNX opsets 7 to "),
    (["export", "{missing}", "--opset", "5"], "--opset 5: torch.onnx writes ONNX opsets 7 to "),
    (["export", "{missing}", "--format", "torchscript", "--opset", "18"], "--opset applies to ONNX only"),
    (["export", "{missing}", "--out", "{folder}"], "is a folder; give the file to write"),
    (["export", "{missing}", "--out", "{garbage}/model.onnx"], "garbage.onnx is a file, not a folder"),
    (["bench", "{tiny}", "--format", "tensorrt"], "format is one of torch, onnx, torchscript"),
    (["bench", "{missing}"], "does not exist"),
    (["bench", "{garbage}"], "is not a model ONNX Runtime can load"),
])
def test_bad_input_exits_2(runs, tmp_path, capsys, argv, message):
    paths = {"missing": tmp_path / "missing", "tiny": runs["tiny"], "garbage": tmp_path / "garbage.onnx",
             "folder": tmp_path}
    (tmp_path / "garbage.onnx").write_bytes(b"not onnx")
    for name in ("no_recipe", "no_weights", "corrupt", "foreign"):
        paths[name] = shutil.copytree(runs["tiny"], tmp_path / name)
    (paths["no_recipe"] / "recipe.yaml").unlink()
    (paths["no_weights"] / "best.safetensors").unlink()
    (paths["corrupt"] / "best.safetensors").write_bytes(b"\x00" * 16)
    shutil.copy(runs["other"] / "best.safetensors", paths["foreign"] / "best.safetensors")
    code = run([arg.format(**paths) for arg in argv])
    captured = capsys.readouterr()
    assert code == 2, captured.out + captured.err
    assert message in " ".join(captured.err.split())
    assert "Traceback" not in captured.err


def test_parity_failure_exits_1(runs, tmp_path, capsys, monkeypatch):
    from archlab.deploy import _export

    real = _export.load_runner

    def perturbed(path):
        runner = real(path)
        inner = runner.run
        runner.run = lambda x: inner(x) + 0.5
        return runner

    monkeypatch.setattr(_export, "load_runner", perturbed)
    out = tmp_path / "bad.onnx"
    assert run(["export", str(runs["tiny"]), "--out", str(out), "--samples", "10", "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the exported onnx model differs from PyTorch: max |diff| 0.5")
    assert "Traceback" not in err and not out.exists()
