"""archlab cv: what it prints and writes, and how bad input fails (exit 2, one message)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

import archlab.selection._cv as cv_module
from archlab.cli import run

TINY_CNN = {
    "name": "tiny-cnn",
    "input": [1, 8, 8],
    "task": {"kind": "classification", "classes": 10},
    "layers": [
        {"conv2d": {"filters": 2, "kernel_size": 3, "padding": "same", "activation": "relu"}},
        {"maxpool2d": {"pool_size": 2}},
        "flatten",
        {"dense": {"units": 10, "activation": "softmax"}},
    ],
    "train": {"data": "digits", "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}},
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_CNN))
    return path


def test_cv_prints_table_diagnosis_and_run(spec_file, tmp_path, capsys):
    code = run(["cv", str(spec_file), "--data", "digits", "--folds", "2", "--epochs", "1",
                "--sweep", "layers[0].conv2d.filters=1,2", "--out", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2-fold cross-validation on digits" in out and "layers[0].conv2d.filters" in out
    assert "one-standard-error rule" in out and "diagnosis: " in out
    assert "[1/4] config" in out  # plain progress lines when not a terminal
    run_dir = tmp_path / "runs" / out.split("run: ")[-1].strip().split("/")[-1]
    assert run_dir.is_dir()
    for name in ("cv.jsonl", "cv.json", "cv.csv", "capacity_curve.png", "chosen.yaml"):
        assert (run_dir / name).is_file(), name
    assert len(json.loads((run_dir / "cv.json").read_text())["configs"]) == 2


def test_quiet_prints_no_progress(spec_file, tmp_path, capsys):
    code = run(["cv", str(spec_file), "--folds", "2", "--epochs", "1", "--quiet", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "[1/2]" not in out and "no capacity curve" in out


@pytest.mark.parametrize(("args", "fragment"), [
    (["--sweep", "layers[0].conv2d.filters=4,wide"], "configuration 1 (layers[0].conv2d.filters='wide')"),
    (["--sweep", "layers[7].conv2d.filters=4"], "configuration 0 (layers[7].conv2d.filters=4)"),
    (["--sweep", "layers[0].conv2d.filters"], "expected PATH=V1,V2"),
    (["--folds", "1"], "--folds must be at least 2"),
    (["--jobs", "0"], "--jobs must be at least 1"),
])
def test_bad_input_exits_2_with_one_message(spec_file, tmp_path, capsys, args, fragment):
    code = run(["cv", str(spec_file), "--epochs", "1", "--out", str(tmp_path / "runs"), *args])
    captured = capsys.readouterr()
    assert code == 2
    assert fragment in captured.err and "Traceback" not in captured.err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("cv.jsonl"))


def test_missing_spec_exits_2(tmp_path, capsys):
    assert run(["cv", str(tmp_path / "nope.yaml")]) == 2


def test_data_defaults_to_the_specs_train_data(tmp_path, capsys):
    """--data is the spec's train.data; a spec without one asks for --data (before any work)."""
    spec = tmp_path / "mnist.yaml"
    spec.write_text(yaml.safe_dump({**TINY_CNN, "train": {**TINY_CNN["train"], "data": "npz:absent.npz"}}))
    assert run(["cv", str(spec), "--folds", "2", "--epochs", "1", "--out", str(tmp_path / "runs")]) == 2
    assert "absent.npz" in capsys.readouterr().err  # the spec's data set was the one asked for, not digits
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump({**TINY_CNN, "train": {"batch_size": 64}}))
    assert run(["cv", str(bare), "--folds", "2", "--epochs", "1", "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert ("train.data: no data set: pass --data NAME (audio:DIR, criteo-sample, csv:PATH, digits, fsdd, mnist, "
            "movielens-100k, multi30k, npy:DIR, npz:PATH or text:PATH[,PATH]) or set train.data") in err
    assert not (tmp_path / "runs").exists()


def test_ctrl_c_prints_the_command_that_continues_and_exits_130(spec_file, tmp_path, capsys, monkeypatch):
    fit_one = cv_module._fit_one
    calls = []

    def interrupted_on_the_third(task):
        calls.append(task)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return fit_one(task)

    monkeypatch.setattr(cv_module, "_fit_one", interrupted_on_the_third)
    args = ["cv", str(spec_file), "--folds", "2", "--epochs", "1", "--sweep", "layers[0].conv2d.filters=1,2",
            "--out", str(tmp_path / "runs"), "-q"]
    assert run(args) == 130
    err = capsys.readouterr().err
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert err.strip().splitlines() == [
        f"interrupted: 2 finished training(s) are saved in {run_dir}; continue with: archlab cv {spec_file} "
        f"--folds 2 --sweep 'layers[0].conv2d.filters=1,2' --epochs 1 --out {tmp_path / 'runs'} --quiet "
        f"--resume {run_dir}"]
    monkeypatch.setattr(cv_module, "_fit_one", fit_one)
    again = shlex.split(err.split("continue with: ")[1])[1:]
    assert run(again) == 0  # the printed command continues the sweep
    assert len((run_dir / "cv.jsonl").read_text().splitlines()) == 4
    assert "run: " in capsys.readouterr().out


def test_ctrl_c_before_any_fold_finished_keeps_nothing(spec_file, tmp_path, capsys, monkeypatch):
    def interrupted(task):
        raise KeyboardInterrupt

    monkeypatch.setattr(cv_module, "_fit_one", interrupted)
    assert run(["cv", str(spec_file), "--folds", "2", "--epochs", "1", "--out", str(tmp_path / "runs")]) == 130
    assert capsys.readouterr().err == ("interrupted: no training had finished, so nothing was kept (the run "
                                       "directory is removed)\n")
    assert list((tmp_path / "runs").iterdir()) == []


def test_an_out_that_is_a_file_is_refused_before_any_work(spec_file, tmp_path, capsys, monkeypatch):
    taken = tmp_path / "runs"
    taken.write_text("not a folder")
    monkeypatch.setattr(cv_module, "_folds", lambda *a: pytest.fail("the data was split before --out was checked"))
    code = run(["cv", str(spec_file), "--epochs", "1", "--out", str(taken)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"--out {taken} is a file; give the folder that receives the run directories" in err


LOGREG_CRITEO = """
name: logreg-criteo
input: {shape: [39], dtype: long}
task: {kind: binary}
layers:
  - embedding: {input_dim: 2287, output_dim: 1, init_std: 0.01}
    name: weights
  - reduce: {op: sum, axis: 0}
  - bias
  - sigmoid
train: {data: criteo-sample, batch_size: 32, optimizer: {name: adam, lr: 0.01}}
"""


def test_cv_scores_auc_per_fold_on_categorical_fields(tmp_path, capsys):
    shared = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()
    if not (shared / "criteo_sample").is_dir():
        pytest.skip(f"no criteo_sample copy at {shared}")
    spec = tmp_path / "logreg.yaml"
    spec.write_text(LOGREG_CRITEO)
    code = run(["cv", str(spec), "--data-dir", str(shared), "--folds", "2", "--epochs", "1", "--metric", "auc",
                "--sweep", "weights.init_std=0.01,0.1", "--out", str(tmp_path / "runs"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "val auc" in out
    run_dir = next((tmp_path / "runs").iterdir())
    saved = json.loads((run_dir / "cv.json").read_text())
    assert saved["metric"] == "auc" and saved["direction"] == "max"
    folds = [json.loads(line) for line in (run_dir / "cv.jsonl").read_text().splitlines()]
    folds = [r for r in folds if r["kind"] == "fold"]
    assert len(folds) == 4  # 2 configurations x 2 folds
    for row in folds:
        assert row["metric"] == "auc" and 0.0 <= row["val_auc"] <= 1.0 and 0.0 <= row["train_auc"] <= 1.0
    best = max(saved["configs"], key=lambda r: r["val_mean"])  # max: a higher AUC is better
    assert saved["configs"].index(best) == saved["best_index"]
