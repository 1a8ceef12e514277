"""The same seed on the CPU gives the same run, bit for bit; another seed gives another run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from archlab.training import read_metrics, train


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    spec = {
        "name": "det", "input": [1, 8, 8], "task": {"kind": "classification", "classes": 10},
        "layers": [
            {"conv2d": {"filters": 8, "kernel_size": 3, "padding": "same", "activation": "relu"}},
            {"maxpool2d": {"pool_size": 2}}, "flatten", {"dropout": {"rate": 0.3}},
            {"dense": {"units": 32, "activation": "relu"}}, {"dense": {"units": 10, "activation": "softmax"}},
        ],
        "train": {"data": "digits", "epochs": 2, "batch_size": 64, "schedule": "cosine", "augment": "shift",
                  "metrics": ["accuracy", "macro_f1"], "device": "cpu"},
    }
    out = tmp_path_factory.mktemp("det")
    return {name: train(spec, out=out / name, verbose=0, seed=seed).run_dir
            for name, seed in (("a", 1), ("b", 1), ("c", 2))}


def rows(run: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("seconds", "samples_per_s")}
            for row in read_metrics(run / "metrics.jsonl")]


def tensors(run: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(run / name))


def test_same_seed_same_metrics(runs: dict[str, Path]) -> None:
    a, b = rows(runs["a"]), rows(runs["b"])
    assert len(a) == 2 and set(a[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "val_macro_f1",
                                         "lr"}
    assert a == b
    eval_a = json.loads((runs["a"] / "evaluation-test.json").read_text())
    eval_b = json.loads((runs["b"] / "evaluation-test.json").read_text())
    assert {k: v for k, v in eval_a.items() if k != "run"} == {k: v for k, v in eval_b.items() if k != "run"}


@pytest.mark.parametrize("name", ["best.safetensors", "last.safetensors"])
def test_same_seed_same_weights(runs: dict[str, Path], name: str) -> None:
    a, b = tensors(runs["a"], name), tensors(runs["b"], name)
    assert sorted(a) == sorted(b)
    for key in a:  # weights, and in last.safetensors optimizer moments and RNG states too
        assert torch.equal(a[key], b[key]), key


def test_other_seed_other_run(runs: dict[str, Path]) -> None:
    a, c = rows(runs["a"]), rows(runs["c"])
    assert [r["loss"] for r in a] != [r["loss"] for r in c]
    wa, wc = tensors(runs["a"], "last.safetensors"), tensors(runs["c"], "last.safetensors")
    assert any(not torch.equal(wa[k], wc[k]) for k in wa if k.startswith("model."))
