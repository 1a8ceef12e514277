"""shrink() on a tiny trained digits run: fewer parameters, accuracy within max_drop, and a new
run directory that evaluate can read."""

from __future__ import annotations

import json

import pytest

import archlab
from archlab.compress import shrink
from archlab.training import evaluate_run, train

pytestmark = pytest.mark.usefixtures("one_thread")

OVERSIZED = {
    "name": "digits-oversized",
    "input": [1, 8, 8],
    "task": {"kind": "classification", "classes": 10},
    "layers": [
        {"conv2d": {"filters": 8, "kernel_size": 3, "padding": "same", "use_bias": False}}, "batchnorm", "relu",
        {"repeat": {"times": 3, "layers": [{"residual": {"layers": [
            {"conv2d": {"filters": 8, "kernel_size": 3, "padding": "same", "use_bias": False}}, "batchnorm", "relu",
            {"conv2d": {"filters": 8, "kernel_size": 3, "padding": "same", "use_bias": False}}, "batchnorm"],
            "post": ["relu"]}}]}},
        "flatten",
        {"dense": {"units": 64, "activation": "relu"}},
        {"dense": {"units": 10, "activation": "softmax"}},
    ],
    "train": {"data": "digits", "epochs": 4, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.003},
              "validation_split": 0.2, "validation": "stratified", "device": "cpu"},
}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return train(OVERSIZED, out=out, verbose=0).run_dir


def test_shrink_reduces_params_within_max_drop(trained_run, tmp_path):
    result = shrink(trained_run, max_drop=3.0, finetune_epochs=1, max_steps=3, out=tmp_path)
    steps = result.steps
    start, kept = steps[0], [s for s in steps if s["kept"]]
    final = kept[-1]
    assert final["params"] < start["params"]
    assert final["params"] == archlab.analyze(result.spec).total_params
    assert final["val_accuracy"] >= start["val_accuracy"] - 0.03
    assert all(s["val_accuracy"] < start["val_accuracy"] - 0.03 for s in steps if not s["kept"])
    run_dir = result.run_dir
    for name in ("spec.yaml", "recipe.yaml", "best.safetensors", "last.safetensors", "shrink.json", "shrink.md"):
        assert (run_dir / name).is_file()
    assert json.loads((run_dir / "shrink.json").read_text())["steps"] == steps
    assert "| step | action |" in (run_dir / "shrink.md").read_text()
    evaluation = evaluate_run(run_dir)  # the new run is an ordinary run: evaluate reads it
    assert evaluation["metrics"]["accuracy"] == pytest.approx(result.test_after["accuracy"], abs=1e-6)
