"""The run directory ``archlab train`` leaves: every file, read back and checked against the run."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

import archlab
from archlab.cli import run
from archlab.training import _runs as runs_module
from archlab.training import load_run, load_weights, resolve_recipe, save_weights

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EPOCHS = 3


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, helpers) -> tuple[Path, Path, dict]:
    """`archlab train` of a tiny spec on digits: (spec file, run directory, spec dict)."""
    folder = tmp_path_factory.mktemp("train")
    spec = helpers.spec_with(helpers.tiny, metrics=["accuracy", "macro_f1"], batch_size=64, seed=3)
    spec_path = folder / "tiny.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert run(["train", str(spec_path), "--data", "digits", "--epochs", str(EPOCHS), "--out", str(folder / "runs"),
                "--device", "cpu", "-q"]) == 0
    (run_dir,) = (folder / "runs").iterdir()
    return spec_path, run_dir, spec


def test_the_files(trained: tuple[Path, Path, dict]) -> None:
    _, run_dir, _ = trained
    assert run_dir.name.startswith("tiny-")
    names = {p.name for p in run_dir.iterdir()}
    assert names == {"spec.yaml", "recipe.yaml", "metrics.jsonl", "summary.json", "best.safetensors",
                     "last.safetensors", "curves.png", "confusion-test.png", "evaluation-test.json"}


def test_files_get_the_usual_permissions(trained: tuple[Path, Path, dict], tmp_path: Path) -> None:
    """Atomic writes go through mkstemp (mode 0600); the files end with the mode open() would give."""
    _, run_dir, _ = trained
    plain = tmp_path / "plain"
    plain.write_text("x")
    expected = stat.S_IMODE(plain.stat().st_mode)
    for name in ("spec.yaml", "recipe.yaml", "metrics.jsonl", "summary.json", "last.safetensors",
                 "best.safetensors", "evaluation-test.json"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == expected, name


def test_spec_and_recipe(trained: tuple[Path, Path, dict]) -> None:
    spec_path, run_dir, spec = trained
    assert archlab.load(run_dir / "spec.yaml").to_dict() == archlab.load(spec_path).to_dict()
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    expected = resolve_recipe(spec["train"], data="digits", epochs=EPOCHS, device="cpu")
    assert recipe == expected.model_dump(mode="json")
    assert recipe["epochs"] == EPOCHS and recipe["data"] == "digits" and recipe["seed"] == 3
    loaded_spec, loaded_recipe = load_run(run_dir)
    assert loaded_recipe == expected and loaded_spec.name == "tiny"


def test_metrics_jsonl(trained: tuple[Path, Path, dict], digits) -> None:
    _, run_dir, _ = trained
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))
    for row in rows:
        assert list(row) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "val_macro_f1", "lr",
                             "seconds", "samples_per_s"]
        assert 0 < row["accuracy"] <= 1 and 0 < row["val_accuracy"] <= 1 and row["lr"] == 1e-3
        assert row["seconds"] > 0 and row["samples_per_s"] > 0
        assert 1293 / (row["seconds"] + 5e-4) <= row["samples_per_s"] <= 1293 / max(row["seconds"] - 5e-4, 1e-9)
    assert rows[-1]["loss"] < rows[0]["loss"]  # it learns


def test_best_weights_give_the_recorded_validation_metrics(trained: tuple[Path, Path, dict], digits) -> None:
    """Reload best.safetensors and evaluate the validation rows (the last 10% of digits' training set)."""
    _, run_dir, spec = trained
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    best_row = min(rows, key=lambda r: r["val_loss"])
    model = archlab.build(spec).eval()
    meta = load_weights(run_dir / "best.safetensors", model)
    assert meta["epoch"] == best_row["epoch"] and meta["val_loss"] == best_row["val_loss"]
    cut = int(len(digits.x_train) * 0.9)
    x, y = torch.from_numpy(digits.x_train[cut:]), torch.from_numpy(digits.y_train[cut:])
    with torch.no_grad():
        probs = model(x)
    accuracy = (probs.argmax(1) == y).float().mean().item()
    assert accuracy == pytest.approx(best_row["val_accuracy"], abs=1e-6)
    loss = torch.nn.functional.nll_loss(probs.log(), y).item()
    assert loss == pytest.approx(best_row["val_loss"], rel=1e-4)


def test_safetensors_files(trained: tuple[Path, Path, dict]) -> None:
    _, run_dir, spec = trained
    for name in ("best.safetensors", "last.safetensors"):
        raw = (run_dir / name).read_bytes()
        header = int.from_bytes(raw[:8], "little")
        assert raw[8:9] == b"{" and json.loads(raw[8:8 + header])  # safetensors: a JSON header, no pickle
    best, last = load_file(str(run_dir / "best.safetensors")), load_file(str(run_dir / "last.safetensors"))
    state = archlab.build(spec).state_dict()
    assert set(best) == {f"model.{k}" for k in state}
    assert {k for k in last if k.startswith("model.")} == set(best)
    assert any(k.startswith("optimizer.") for k in last) and {"rng.torch", "rng.shuffle"} <= set(last)
    with safe_open(str(run_dir / "last.safetensors"), framework="pt") as handle:
        meta = {k: json.loads(v) for k, v in handle.metadata().items()}
    assert meta["epoch"] == EPOCHS and len(meta["rows"]) == EPOCHS
    assert meta["optimizer"]["param_groups"][0]["lr"] == 1e-3


def test_summary(trained: tuple[Path, Path, dict]) -> None:
    _, run_dir, spec = trained
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("name", "data", "source", "device", "precision", "epochs_run", "best_epoch", "stopped_early",
                "final", "test", "wall_seconds", "train_samples_per_s", "peak_memory_bytes", "params", "classes",
                "train_samples", "val_samples", "test_samples"):
        assert key in summary, key
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert summary["final"] == rows[-1]
    assert (summary["name"], summary["data"], summary["device"], summary["precision"]) == ("tiny", "digits", "cpu",
                                                                                           "fp32")
    assert (summary["train_samples"], summary["val_samples"], summary["test_samples"]) == (1293, 144, 360)
    assert summary["epochs_run"] == EPOCHS and summary["stopped_early"] is False
    assert summary["params"] == archlab.analyze(spec).total_params == 64 * 32 + 32 + 32 * 10 + 10
    assert summary["classes"] == [str(i) for i in range(10)]
    assert summary["peak_memory_bytes"] > 10_000_000 and summary["wall_seconds"] > 0
    expected_speed = 1293 * EPOCHS / sum(r["seconds"] for r in rows)
    assert summary["train_samples_per_s"] == pytest.approx(expected_speed, rel=1e-3)
    assert set(summary["test"]) == {"loss", "accuracy", "macro_f1"} and summary["test"]["accuracy"] > 0.5


def test_evaluation_and_confusion(trained: tuple[Path, Path, dict], digits) -> None:
    _, run_dir, spec = trained
    evaluation = json.loads((run_dir / "evaluation-test.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (evaluation["split"], evaluation["weights"], evaluation["samples"]) == ("test", "final", 360)
    cm = np.array(evaluation["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == len(digits.x_test) == 360
    assert (cm.sum(1) == np.bincount(digits.y_test, minlength=10)).all()  # rows are the true classes
    assert np.trace(cm) / cm.sum() == pytest.approx(evaluation["metrics"]["accuracy"], abs=1e-6)
    assert evaluation["metrics"] == summary["test"]
    # no early stopping: the final weights are last.safetensors'; recompute the matrix from them
    model = archlab.build(spec).eval()
    load_weights(run_dir / "last.safetensors", model)
    with torch.no_grad():
        pred = model(torch.from_numpy(digits.x_test)).argmax(1).numpy()
    from sklearn.metrics import confusion_matrix

    np.testing.assert_array_equal(cm, confusion_matrix(digits.y_test, pred, labels=np.arange(10)))


@pytest.mark.parametrize("name", ["curves.png", "confusion-test.png"])
def test_pngs(trained: tuple[Path, Path, dict], name: str) -> None:
    _, run_dir, _ = trained
    path = run_dir / name
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 10_000
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.width >= 300 and image.height >= 300
        assert len(np.unique(np.asarray(image.convert("L")))) > 10  # not a blank canvas


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = archlab.build({"name": "m", "input": [3], "layers": [{"dense": {"units": 2}}]})
    target = tmp_path / "last.safetensors"
    save_weights(target, model, {"epoch": 1})
    before = target.read_bytes()

    def dies_halfway(tensors, filename, metadata=None):
        Path(filename).write_bytes(before[: len(before) // 2])
        raise KeyboardInterrupt  # as a kill would, between the bytes and the rename

    monkeypatch.setattr(runs_module, "save_file", dies_halfway)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        save_weights(target, model, {"epoch": 2})
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["last.safetensors"]  # the temporary file is gone
    assert load_weights(target, archlab.build({"name": "m", "input": [3], "layers": [{"dense": {"units": 2}}]})) \
        == {"aliases": {}, "epoch": 1}


def test_tied_weights_round_trip(tmp_path: Path) -> None:
    """safetensors refuses shared storage: a tied head is stored once and restored as tied."""
    spec = {"name": "tied", "input": {"shape": [5], "dtype": "long"}, "layers": [
        {"embedding": {"input_dim": 11, "output_dim": 4}, "name": "emb"},
        {"dense": {"units": 11, "use_bias": False}, "tie": "emb"}]}
    torch.manual_seed(0)
    model = archlab.build(spec)
    save_weights(tmp_path / "w.safetensors", model)
    stored = load_file(str(tmp_path / "w.safetensors"))
    assert len(stored) == 1
    torch.manual_seed(1)
    other = archlab.build(spec)
    meta = load_weights(tmp_path / "w.safetensors", other)
    assert len(meta["aliases"]) == 1
    for key, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[key], value)
