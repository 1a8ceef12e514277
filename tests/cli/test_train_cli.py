"""archlab train, evaluate and predict: what they print and write, and how bad input fails.

In-process through ``archlab.cli.run`` (fast), plus one real ``python -m archlab`` subprocess.
Bad input exits 2 with one ``error:`` line and no traceback; a failed run exits 1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import archlab
from archlab.cli import run
from archlab.data import load_dataset
from archlab.training import load_weights, train
from archlab.training._train import read_input

TINY = {
    "name": "tiny",
    "input": [1, 8, 8],
    "task": {"kind": "classification", "classes": 10},
    "layers": ["flatten", {"dense": {"units": 32, "activation": "relu"}},
               {"dense": {"units": 10, "activation": "softmax"}}],
}

# The seed CNN as the project ships it (the same spec the README and docs use).
SEED_YAML = (Path(__file__).resolve().parents[2] / "examples" / "seed-mnist-cnn.yaml").read_text()

SAMPLE_LINE = re.compile(r"^sample (\d+): (.+)$")


pytestmark = pytest.mark.usefixtures("one_thread")


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = run([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_bad_input(code: int, out: str, err: str, *fragments: str) -> None:
    """Exit 2, one error line, no traceback."""
    assert code == 2, (out, err)
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def write_spec(folder: Path, spec: dict | str, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained run directory (2 epochs of the tiny spec on digits)."""
    out = tmp_path_factory.mktemp("cli-runs")
    spec = {**TINY, "train": {"data": "digits", "epochs": 2, "batch_size": 64, "device": "cpu", "seed": 1}}
    return train(spec, out=out, verbose=0).run_dir


@pytest.fixture
def run_copy(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / trained.name))


def probabilities(run_dir: Path, x: np.ndarray, weights: str = "best") -> np.ndarray:
    """The spec's model (softmax included) with the run's weights: the independent reference."""
    model = archlab.build(archlab.load(run_dir / "spec.yaml")).eval()
    load_weights(run_dir / f"{weights}.safetensors", model)
    with torch.no_grad():
        return model(torch.from_numpy(np.asarray(x, dtype=np.float32))).numpy()


def parse_predictions(out: str) -> list[list[tuple[str, float]]]:
    samples = []
    for line in out.strip().splitlines():
        match = SAMPLE_LINE.match(line)
        assert match, line
        assert int(match.group(1)) == len(samples)
        pairs = [item.rsplit(" ", 1) for item in match.group(2).split(", ")]
        samples.append([(name, float(p)) for name, p in pairs])
    return samples


# -- train ---------------------------------------------------------------------------------------

def test_train_prints_the_run_and_the_test_metrics(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = write_spec(tmp_path, TINY)
    code, out, err = cli(capsys, "train", spec, "--data", "digits", "--epochs", 2, "--batch-size", 64, "--lr",
                         0.005, "--seed", 7, "--device", "cpu", "--out", tmp_path / "runs", "-q")
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    lines = out.strip().splitlines()
    assert lines[-2] == f"run: {run_dir}"
    summary = json.loads((run_dir / "summary.json").read_text())
    test = summary["test"]
    assert lines[-1] == f"test: loss {test['loss']:.4f}  accuracy {test['accuracy']:.4f}"
    assert test["accuracy"] > 0.7
    assert not [line for line in lines if line.startswith(("epoch ", "precision "))]  # -q: no progress output
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    assert (recipe["epochs"], recipe["batch_size"], recipe["optimizer"]["lr"], recipe["seed"]) == (2, 64, 0.005, 7)
    assert [json.loads(line)["lr"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [0.005] * 2


def test_train_takes_data_from_the_spec(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = write_spec(tmp_path, {**TINY, "train": {"data": "digits", "epochs": 1, "batch_size": 256}})
    code, out, err = cli(capsys, "train", spec, "--out", tmp_path)
    assert code == 0, err
    # without -q and without a terminal: one plain progress line per epoch, no bar
    assert [line.split()[1] for line in out.splitlines() if line.startswith("epoch ")] == ["1/1"]
    assert re.search(r"^test: loss \d+\.\d{4}  accuracy \d\.\d{4}$", out, re.M)


@pytest.mark.parametrize("where", ["runs", "runs/deeper"])
def test_an_out_that_is_a_file_is_refused_before_any_work(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    import archlab.data

    (tmp_path / "runs").write_text("not a folder")
    monkeypatch.setattr(archlab.data, "load_dataset", lambda *a: pytest.fail("data loaded before --out was checked"))
    spec = write_spec(tmp_path, TINY)
    code, out, err = cli(capsys, "train", spec, "--data", "digits", "--out", tmp_path / where)
    assert_bad_input(code, out, err, f"--out {tmp_path / where}", "is a file; give the folder that receives the run")


def test_non_finite_loss_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # 1e30: the first step's update overflows the next loss (1e15 gives a finite 3e28: diverged, below)
    spec = write_spec(tmp_path, {**TINY, "train": {"optimizer": {"name": "sgd", "lr": 1e30}, "batch_size": 32}})
    code, out, err = cli(capsys, "train", spec, "--data", "digits", "--epochs", 2, "--out", tmp_path / "runs", "-q")
    assert code == 1
    assert re.match(r"error: the loss became (nan|inf) at epoch 1, step \d+ \(learning rate 1e\+30\); no epoch had "
                    r"finished, so there is no checkpoint\. Lower the learning rate", err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


# -- evaluate ------------------------------------------------------------------------------------

def test_evaluate(capsys: pytest.CaptureFixture[str], run_copy: Path, digits) -> None:
    trained_record = (run_copy / "evaluation-test.json").read_bytes()
    code, out, err = cli(capsys, "evaluate", run_copy)
    assert code == 0, err
    result = json.loads((run_copy / "evaluation-test-best.json").read_text())
    assert (result["split"], result["weights"], result["samples"], result["data"]) == ("test", "best", 360, "digits")
    assert set(result["metrics"]) == {"loss", "accuracy", "macro_f1"}
    assert (run_copy / "confusion-test-best.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run_copy / "evaluation-test.json").read_bytes() == trained_record  # training's own record stays
    assert out.splitlines()[0] == "digits test (360 samples, best weights)"  # one line, never wrapped
    for key, value in result["metrics"].items():
        assert re.search(rf"{key}\s.*\s{value:.4f}", out), key
    assert f"written: {run_copy / 'evaluation-test-best.json'}, {run_copy / 'confusion-test-best.png'}" in out
    # the reported accuracy is the best weights' accuracy on the test split
    probs = probabilities(run_copy, digits.x_test)
    assert result["metrics"]["accuracy"] == pytest.approx((probs.argmax(1) == digits.y_test).mean(), abs=1e-6)
    cm = np.array(result["confusion_matrix"])
    assert cm.sum() == 360 and np.trace(cm) / 360 == pytest.approx(result["metrics"]["accuracy"], abs=1e-6)


def test_evaluate_last_weights_and_train_split(capsys: pytest.CaptureFixture[str], run_copy: Path, digits) -> None:
    code, out, err = cli(capsys, "evaluate", run_copy, "--weights", "last", "--split", "train")
    assert code == 0, err
    assert "digits train (1437 samples, last weights)" in " ".join(out.split())
    result = json.loads((run_copy / "evaluation-train-last.json").read_text())
    assert result["weights"] == "last" and result["samples"] == 1437
    probs = probabilities(run_copy, digits.x_train, "last")
    assert result["metrics"]["accuracy"] == pytest.approx((probs.argmax(1) == digits.y_train).mean(), abs=1e-6)
    assert (run_copy / "confusion-train-last.png").is_file()


def test_evaluations_of_other_data_weights_and_splits_overwrite_nothing(
        capsys: pytest.CaptureFixture[str], run_copy: Path, digits, tmp_path: Path) -> None:
    """Each (data, split, weights) has its own file; predict's class names follow the run's own data."""
    other = tmp_path / "other.npz"
    names = np.array([f"c{label}".encode() for label in digits.y_test])  # bytes: the classes are named by them
    np.savez(other, x=digits.x_test, y=names, x_test=digits.x_test, y_test=names)
    runs = [[], ["--weights", "last"], ["--split", "train"], ["--data", f"npz:{other}"]]
    for args in runs:
        code, out, err = cli(capsys, "evaluate", run_copy, *args)
        assert code == 0, err
    names = {"evaluation-test.json", "evaluation-test-best.json", "evaluation-test-last.json",
             "evaluation-train-best.json", "evaluation-test-best-npz-other.json"}
    assert {p.name for p in run_copy.glob("evaluation-*.json")} == names
    assert {p.name for p in run_copy.glob("confusion-*.png")} == {n.replace("evaluation", "confusion").replace(
        ".json", ".png") for n in names}
    records = {n: json.loads((run_copy / n).read_text()) for n in names}
    assert records["evaluation-test.json"]["weights"] == "final"  # training's record, untouched
    assert records["evaluation-test-last.json"]["weights"] == "last"
    assert records["evaluation-train-best.json"]["split"] == "train"
    assert records["evaluation-test-best-npz-other.json"]["classes"] == [f"c{i}" for i in range(10)]
    # predict names classes by the run's own data, not by the other data's evaluation
    np.save(tmp_path / "x.npy", digits.x_test[0])
    (run_copy / "evaluation-test.json").unlink()
    code, out, err = cli(capsys, "predict", run_copy, tmp_path / "x.npy")
    assert code == 0, err
    assert parse_predictions(out)[0][0][0] in [str(i) for i in range(10)]


@pytest.mark.parametrize(("args", "fragment"), [
    (["--weights", "middle"], "'middle' is not one of 'best', 'last'"),
    (["--split", "valid"], "--split 'valid': digits has the splits test, train"),
    (["--data", "digitz"], "unknown dataset 'digitz'; did you mean 'digits'?"),
])
def test_evaluate_bad_options(capsys: pytest.CaptureFixture[str], trained: Path, args: list[str],
                              fragment: str) -> None:
    code, out, err = cli(capsys, "evaluate", trained, *args)
    assert code == 2
    assert fragment in " ".join(err.replace("│", " ").split()) and "Traceback" not in err


def test_evaluate_and_predict_take_quiet(capsys: pytest.CaptureFixture[str], run_copy: Path, digits,
                                         tmp_path: Path) -> None:
    code, out, err = cli(capsys, "evaluate", run_copy, "--quiet")
    assert code == 0 and "written: " in out, err
    np.save(tmp_path / "x.npy", digits.x_test[0])
    code, out, err = cli(capsys, "predict", run_copy, tmp_path / "x.npy", "-q")
    assert code == 0 and out.startswith("sample 0: "), err


# -- predict -------------------------------------------------------------------------------------

def check_predictions(out: str, run_dir: Path, x: np.ndarray, top: int = 3) -> None:
    samples = parse_predictions(out)
    probs = probabilities(run_dir, x.reshape(-1, 1, 8, 8))
    assert len(samples) == len(probs)
    for shown, p in zip(samples, probs, strict=True):
        assert len(shown) == top
        assert shown[0][0] == str(int(p.argmax()))  # the model's top class
        order = np.argsort(-p)[:top]
        assert [name for name, _ in shown] == [str(i) for i in order]
        for (_, value), i in zip(shown, order, strict=True):
            assert value == pytest.approx(p[i], abs=1e-4)
        values = [v for _, v in shown]
        assert values == sorted(values, reverse=True) and sum(values) <= 1 + 1e-3


def test_predict_npy(capsys: pytest.CaptureFixture[str], trained: Path, digits, tmp_path: Path) -> None:
    one, batch = tmp_path / "one.npy", tmp_path / "batch.npy"
    np.save(one, digits.x_test[0])  # (1, 8, 8)
    np.save(batch, digits.x_test[:4])  # (4, 1, 8, 8)
    code, out, err = cli(capsys, "predict", trained, one)
    assert code == 0, err
    check_predictions(out, trained, digits.x_test[:1])
    code, out, err = cli(capsys, "predict", trained, batch, "--top", 10)
    assert code == 0, err
    check_predictions(out, trained, digits.x_test[:4], top=10)
    for sample in parse_predictions(out):
        assert sum(v for _, v in sample) == pytest.approx(1.0, abs=1e-3)  # all classes: the whole distribution


def test_predict_png(capsys: pytest.CaptureFixture[str], trained: Path, digits, tmp_path: Path) -> None:
    pixels = np.round(digits.x_test[5, 0] * 255).astype(np.uint8)  # (8, 8) grayscale
    path = tmp_path / "digit.png"
    Image.fromarray(pixels, mode="L").save(path)
    x = read_input(path, (1, 8, 8))
    assert x.shape == (1, 1, 8, 8)
    np.testing.assert_allclose(x[0], digits.x_test[5], atol=0.5 / 255 + 1e-6)
    code, out, err = cli(capsys, "predict", trained, path)
    assert code == 0, err
    check_predictions(out, trained, x)


def test_predict_csv(capsys: pytest.CaptureFixture[str], trained: Path, digits, tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    rows = digits.x_test[10:12].reshape(2, 64)
    header = ",".join(f"p{i}" for i in range(64))
    path.write_text(header + "\n" + "\n".join(",".join(repr(float(v)) for v in row) for row in rows) + "\n")
    code, out, err = cli(capsys, "predict", trained, path, "--top", 2)
    assert code == 0, err
    check_predictions(out, trained, rows, top=2)


# -- bad input: exit 2 with one message ----------------------------------------------------------

def test_missing_run_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for command in (["evaluate", tmp_path / "nope"], ["predict", tmp_path / "nope", tmp_path / "x.npy"]):
        assert_bad_input(*cli(capsys, *command), f"{tmp_path / 'nope'} is not a run directory")


def test_run_directory_without_spec(capsys: pytest.CaptureFixture[str], run_copy: Path) -> None:
    (run_copy / "spec.yaml").unlink()
    assert_bad_input(*cli(capsys, "evaluate", run_copy), "is missing spec.yaml", "not a complete archlab run")


def test_weights_that_do_not_match_the_spec(capsys: pytest.CaptureFixture[str], run_copy: Path, digits) -> None:
    spec = yaml.safe_load((run_copy / "spec.yaml").read_text())
    spec["layers"][1]["dense"]["units"] = 16
    (run_copy / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    assert_bad_input(*cli(capsys, "evaluate", run_copy), "best.safetensors: the weights do not match the run's spec",
                     "shape mismatch", "was spec.yaml edited")
    np.save(run_copy / "x.npy", digits.x_test[0])
    assert_bad_input(*cli(capsys, "predict", run_copy, run_copy / "x.npy"), "do not match the run's spec")


def test_missing_weights(capsys: pytest.CaptureFixture[str], run_copy: Path) -> None:
    (run_copy / "last.safetensors").unlink()
    assert_bad_input(*cli(capsys, "evaluate", run_copy, "--weights", "last"), "last.safetensors does not exist")


@pytest.mark.parametrize(("args", "fragment"), [
    (["--top", "0"], "--top is 1 or more (how many classes to show), got 0"),
    (["--beam", "2"], "--beam does not apply to a classification run (it predicts from arrays); it takes --top"),
    (["--top-p", "0.5", "--seed", "1"], "--top-p, --seed do not apply to a classification run"),
])
def test_predict_options_of_text_runs_or_bad_values_are_refused(capsys: pytest.CaptureFixture[str], trained: Path,
                                                                tmp_path: Path, digits, args: list[str],
                                                                fragment: str) -> None:
    np.save(tmp_path / "x.npy", digits.x_test[0])
    assert_bad_input(*cli(capsys, "predict", trained, tmp_path / "x.npy", *args), fragment)


@pytest.mark.parametrize(("name", "content", "fragment"), [
    ("short.npy", np.zeros(10, np.float32), "holds 10 values, not a multiple of the input (1, 8, 8) (64 values)"),
    ("wide.csv", "1,2,3\n", "holds 3 values, not a multiple of the input (1, 8, 8)"),
    ("x.json", "[1, 2]", "cannot read x.json: predict takes .npy, .png/.jpg, a .csv row or a .wav recording"),
    ("absent.npy", None, "does not exist"),
])
def test_predict_bad_input_file(capsys: pytest.CaptureFixture[str], trained: Path, tmp_path: Path, name: str,
                                content: object, fragment: str) -> None:
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content)
    elif content is not None:
        path.write_text(content)
    assert_bad_input(*cli(capsys, "predict", trained, path), fragment)


@pytest.mark.parametrize(("name", "content", "fragment"), [
    ("text.png", "not an image at all", "text.png: not an image PIL can read"),
    ("header.csv", ",".join(f"p{i}" for i in range(64)) + "\n", "holds no row of numbers (only a header, or nothing)"),
    ("empty.csv", "", "holds no row of numbers"),
    ("words.csv", "1,2\n3,x\n", "words.csv, line 2: '3,x' is not a row of comma-separated numbers"),
    ("ragged.csv", "1,2\n3\n", "the rows have different lengths (1, 2 values)"),
    ("broken.npy", "not numpy", "broken.npy: not a readable .npy array"),
])
def test_predict_unreadable_input(capsys: pytest.CaptureFixture[str], trained: Path, tmp_path: Path, name: str,
                                  content: str, fragment: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    assert_bad_input(*cli(capsys, "predict", trained, path), fragment)


def test_predict_warns_when_it_resizes_an_image(capsys: pytest.CaptureFixture[str], trained: Path, digits,
                                                tmp_path: Path) -> None:
    pixels = np.kron(np.round(digits.x_test[5, 0] * 255).astype(np.uint8), np.ones((2, 2), np.uint8))  # (16, 16)
    path = tmp_path / "big.png"
    Image.fromarray(pixels, mode="L").save(path)
    code, out, err = cli(capsys, "predict", trained, path)
    assert code == 0, err
    assert err == "warning: big.png: resized from 16x16 to 8x8 (width x height), the spec's input\n"
    assert len(parse_predictions(out)) == 1  # stdout holds the results alone
    same = tmp_path / "same.png"
    Image.fromarray(pixels[::2, ::2], mode="L").save(same)
    code, out, err = cli(capsys, "predict", trained, same)
    assert code == 0 and err == ""


def test_predict_needs_no_summary(capsys: pytest.CaptureFixture[str], run_copy: Path, digits, tmp_path: Path) -> None:
    """predict reads no summary.json: neither a missing nor a broken one stops it."""
    (run_copy / "evaluation-test.json").unlink()  # no class names on record: the indices name the classes
    np.save(tmp_path / "x.npy", digits.x_test[:2])
    for damage in ("garbage {", None):
        if damage is None:
            (run_copy / "summary.json").unlink()
        else:
            (run_copy / "summary.json").write_text(damage)
        code, out, err = cli(capsys, "predict", run_copy, tmp_path / "x.npy")
        assert code == 0, err
        check_predictions(out, run_copy, digits.x_test[:2])


def test_a_corrupt_evaluation_record_is_named(capsys: pytest.CaptureFixture[str], run_copy: Path, digits,
                                              tmp_path: Path) -> None:
    (run_copy / "evaluation-test.json").write_text('{"classes": [')
    np.save(tmp_path / "x.npy", digits.x_test[0])
    assert_bad_input(*cli(capsys, "predict", run_copy, tmp_path / "x.npy"),
                     f"{run_copy / 'evaluation-test.json'} is not valid JSON")


@pytest.mark.parametrize(("text", "fragment"), [
    ("epochs: [2\nbatch_size: 64\n", "recipe.yaml, line 2: not valid YAML"),
    ("epochs: two\n", "recipe.yaml is not a recipe archlab wrote (epochs: "),
    ("- just\n- a list\n", "recipe.yaml is not a recipe archlab wrote"),
])
def test_a_broken_recipe_yaml_is_named(capsys: pytest.CaptureFixture[str], run_copy: Path, digits, tmp_path: Path,
                                       text: str, fragment: str) -> None:
    (run_copy / "recipe.yaml").write_text(text)
    np.save(tmp_path / "x.npy", digits.x_test[0])
    for command in (["evaluate", run_copy], ["predict", run_copy, tmp_path / "x.npy"], ["train", "--resume", run_copy]):
        assert_bad_input(*cli(capsys, *command), str(run_copy / "recipe.yaml"), fragment.split("recipe.yaml")[1])


@pytest.mark.parametrize(("device", "fragment"), [
    ("foo", "--device foo (train.device): expected auto, cpu, cuda, cuda:N or mps"),
    ("cpuu", "did you mean 'cpu'?"),
    pytest.param("cuda", "this machine has no CUDA device", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="this machine has CUDA")),
    ("cuda:99", "cuda:99"),
])
def test_a_device_that_is_not_there_fails_before_the_data_loads(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch, device: str,
                                                                fragment: str) -> None:
    def no_loading(*args, **kwargs):
        raise AssertionError("the data was loaded")

    monkeypatch.setattr("archlab.data.load_dataset", no_loading)
    spec = write_spec(tmp_path, TINY)
    assert_bad_input(*cli(capsys, "train", spec, "--data", "digits", "--device", device, "--out", tmp_path / "runs"),
                     fragment)
    assert not (tmp_path / "runs").exists()


def test_precision_is_a_choice_of_the_parser(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = cli(capsys, "train", write_spec(tmp_path, TINY), "--data", "digits", "--precision", "fp16")
    assert code == 2 and "'fp16' is not one of 'auto', 'fp32', 'bf16'" in " ".join(err.replace("│", " ").split())


def test_a_huge_learning_rate_stops_as_diverged(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """--lr 1e6 used to end at a loss of 7e27 with exit 0; the loss passes 1000 times the untrained
    model's within the first epoch, and the run stops there."""
    spec = write_spec(tmp_path, {**TINY, "train": {"seed": 0, "device": "cpu"}})
    code, out, err = cli(capsys, "train", spec, "--data", "digits", "--epochs", 3, "--lr", "1e6",
                         "--out", tmp_path / "runs", "-q")
    assert code == 1, out
    match = re.match(r"error: the loss reached (\S+), more than 1000 times the untrained model's (\S+): training "
                     r"diverged, at epoch 1, step \d+ \(learning rate 1e\+06\); no epoch had finished", err)
    assert match, err
    assert float(match.group(1)) > 1000 * float(match.group(2)) and 2.0 < float(match.group(2)) < 2.6  # ~ln 10
    assert list((tmp_path / "runs").iterdir()) == []  # no epoch finished: no run directory left behind


def test_a_run_that_fails_before_its_first_epoch_leaves_no_directory(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import archlab.training._fit as trainer

    def crash(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(trainer, "prepare_model", crash)  # a crash after the run directory is made
    code, out, err = cli(capsys, "train", write_spec(tmp_path, TINY), "--data", "digits", "--out", tmp_path / "runs")
    assert code == 1 and "boom" in err
    assert list((tmp_path / "runs").iterdir()) == []


def test_early_stopping_says_which_epoch_was_restored(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = write_spec(tmp_path, {**TINY, "train": {"data": "digits", "epochs": 30, "batch_size": 64, "device": "cpu",
                                                   "optimizer": {"name": "adam", "lr": 0.05},
                                                   "early_stopping": {"monitor": "val_loss", "patience": 1}}})
    code, out, err = cli(capsys, "train", spec, "--out", tmp_path / "runs", "-q")
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stopped_early"] and summary["epochs_run"] < 30
    assert (f"early stopping: stopped after epoch {summary['epochs_run']} of 30 (val_loss did not improve for 1 "
            f"epochs); restored the weights of epoch {summary['best_epoch']}") in out


def test_unknown_data(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = write_spec(tmp_path, TINY)
    assert_bad_input(*cli(capsys, "train", spec, "--data", "digit", "--out", tmp_path / "runs"),
                     "unknown dataset 'digit'; did you mean 'digits'?",
                     "known: audio:DIR, criteo-sample, csv:PATH, digits, fsdd, mnist, movielens-100k, multi30k, "
                     "npy:DIR, npz:PATH, text:PATH[,PATH]")
    assert not (tmp_path / "runs").exists()  # nothing recorded


def test_spec_input_that_does_not_fit_the_data(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SEED_YAML)
    assert_bad_input(*cli(capsys, "train", spec, "--data", "digits", "--out", tmp_path / "runs"),
                     "input: the spec's input is (1, 28, 28) but digits gives samples of shape (1, 8, 8): "
                     "set input: [1, 8, 8]")
    assert not (tmp_path / "runs").exists()


def test_spec_output_that_does_not_fit_the_classes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = {**TINY, "task": {"kind": "classification"},
            "layers": ["flatten", {"dense": {"units": 4, "activation": "softmax"}}]}
    assert_bad_input(*cli(capsys, "train", write_spec(tmp_path, spec), "--data", "digits", "--out", tmp_path),
                     "the model's output is (4,) but digits has 10 classes",
                     "end the spec with dense: {units: 10, activation: softmax}")
    spec = {**TINY, "task": {"kind": "classification", "classes": 3}}
    assert_bad_input(*cli(capsys, "train", write_spec(tmp_path, spec), "--data", "digits", "--out", tmp_path),
                     "task.classes: task.classes is 3 but digits has 10 classes")


def test_no_data_given(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = write_spec(tmp_path, TINY)
    assert_bad_input(*cli(capsys, "train", spec, "--out", tmp_path / "runs"),
                     "train.data: no data set: pass --data NAME (audio:DIR, criteo-sample, csv:PATH, digits, "
                     "fsdd, mnist, movielens-100k, multi30k, npy:DIR, npz:PATH or text:PATH[,PATH]) or set train.data")


def test_data_help_names_every_source(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # one line per option
    code, out, _ = cli(capsys, "train", "--help")
    assert code == 0
    line = next(line for line in out.splitlines() if "--data " in line)
    assert ("audio:DIR, criteo-sample, csv:PATH, digits, fsdd, mnist, movielens-100k, multi30k, npy:DIR, npz:PATH "
            "or text:PATH[,PATH] (default: train.data)") in line


def test_bad_recipe_in_the_spec(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = write_spec(tmp_path, {**TINY, "train": {"optimizer": {"name": "adamm"}}})
    assert_bad_input(*cli(capsys, "train", spec, "--data", "digits", "--out", tmp_path / "runs"),
                     "train.optimizer.name: input should be 'adam', 'adamw' or 'sgd'; got 'adamm'; "
                     "did you mean 'adam'?")


def test_train_usage_errors(capsys: pytest.CaptureFixture[str], trained: Path, tmp_path: Path) -> None:
    code, _, err = cli(capsys, "train")
    assert code == 2 and "give a SPEC to train, or --resume RUN" in err
    code, _, err = cli(capsys, "train", write_spec(tmp_path, TINY), "--epochs", 0)
    assert code == 2 and "Traceback" not in err
    code, _, err = cli(capsys, "train", "--resume", trained, "--lr", "0.1")
    assert code == 2 and "--resume continues a run with its own spec and recipe" in err


def test_missing_spec_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = cli(capsys, "train", tmp_path / "absent.yaml", "--data", "digits")
    assert code == 2 and "absent.yaml" in err and "Traceback" not in err


def test_resume_without_a_finished_epoch(capsys: pytest.CaptureFixture[str], run_copy: Path) -> None:
    (run_copy / "last.safetensors").unlink()
    assert_bad_input(*cli(capsys, "train", "--resume", run_copy),
                     "has no last.safetensors: no epoch finished, so there is nothing to resume")


# -- a real process ------------------------------------------------------------------------------

def test_subprocess_train_then_predict(tmp_path: Path, digits) -> None:
    env = {**os.environ, "COLUMNS": "160", "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    spec = write_spec(tmp_path, TINY)

    def archlab_cli(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "archlab", *map(str, args)], capture_output=True, text=True,
                              env=env, timeout=180, check=False, cwd=tmp_path)

    done = archlab_cli("train", spec, "--data", "digits", "--epochs", 2, "--batch-size", 64, "--device", "cpu",
                       "-q")
    assert done.returncode == 0, done.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()  # the default --out is ./runs
    assert f"run: {Path('runs') / run_dir.name}" in done.stdout
    assert re.search(r"^test: loss \d+\.\d{4}  accuracy \d\.\d{4}$", done.stdout, re.M)
    np.save(tmp_path / "x.npy", digits.x_test[:2])
    done = archlab_cli("predict", run_dir, tmp_path / "x.npy")
    assert done.returncode == 0, done.stderr
    check_predictions(done.stdout, run_dir, digits.x_test[:2])
