"""archlab.design.suggest: the right template, shapes from the data, budgets, and a spec that trains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import archlab
from archlab.design import DesignError, suggest


def write_csv(path: Path, n: int = 300, features: int = 6) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, features))
    y = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1).astype(int)
    lines = [",".join([*(f"f{i}" for i in range(features)), "label"])]
    lines += [",".join([*(f"{v:.4f}" for v in row), str(t)]) for row, t in zip(x, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_ids(path: Path, n: int = 400, steps: int = 20, vocab: int = 50, long: bool = False) -> Path:
    rng = np.random.default_rng(0)
    x = rng.integers(0, vocab, size=(n, 300 if long else steps)).astype(np.int64)
    y = (x[:, 0] > vocab // 2).astype(np.int64)
    np.savez(path, x=x, y=y)
    return path


def last_layer(spec: archlab.Spec) -> dict:
    return spec.to_dict()["layers"][-1]


def test_digits_gets_the_small_cnn() -> None:
    s = suggest("digits")
    data = s.spec.to_dict()
    assert s.template == "small-cnn"
    assert data["input"] == [1, 8, 8]
    assert last_layer(s.spec) == {"dense": {"units": 10, "activation": "softmax"}}
    assert data["task"] == {"kind": "classification", "classes": 10}
    assert data["train"]["data"] == "digits"
    text = " ".join(s.reasons)
    assert "small-cnn" in text and "images" in text and "1,437 samples" in text and "Depth" in text
    assert s.params == archlab.analyze(s.spec).total_params


def test_csv_table_gets_the_mlp(tmp_path: Path) -> None:
    name = f"csv:{write_csv(tmp_path / 'table.csv')}"
    s = suggest(name)
    assert s.template == "mlp"
    assert s.spec.to_dict()["input"] == [6]
    assert last_layer(s.spec)["dense"]["units"] == 3
    assert "tabular" in " ".join(s.reasons)
    assert s.spec.to_dict()["train"]["data"] == name
    archlab.build(s.spec)


def test_npz_token_ids_get_a_sequence_model(tmp_path: Path) -> None:
    s = suggest(f"npz:{write_ids(tmp_path / 'ids.npz')}")
    data = s.spec.to_dict()
    assert s.template == "rnn-attention"
    assert data["input"] == {"shape": [20], "dtype": "long"}
    assert data["layers"][0]["embedding"]["input_dim"] <= 50
    assert last_layer(s.spec)["dense"]["units"] == 2
    assert "token ids" in " ".join(s.reasons)
    model = archlab.build(s.spec).eval()
    assert tuple(model(torch.randint(0, 50, (3, 20))).shape) == (3, 2)


def test_long_token_sequences_get_the_transformer(tmp_path: Path) -> None:
    s = suggest(f"npz:{write_ids(tmp_path / 'long.npz', long=True)}")
    assert s.template == "transformer-small"
    assert s.spec.to_dict()["input"] == {"shape": [300], "dtype": "long"}


def test_float_npz_is_not_taken_for_ids(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "f.npz", x=rng.normal(size=(200, 5)).astype(np.float32), y=np.arange(200) % 2)
    assert suggest(f"npz:{tmp_path / 'f.npz'}").template == "mlp"


@pytest.mark.parametrize("budget", [30_000, 12_000, 2_000])
def test_parameter_budget_is_respected(budget: int) -> None:
    s = suggest("digits", budget_params=budget)
    assert archlab.analyze(s.spec).total_params <= budget
    assert "parameter budget" in " ".join(s.reasons)


def test_flop_budget_is_respected() -> None:
    s = suggest("digits", budget_flops=500_000)
    assert archlab.analyze(s.spec).flops <= 500_000


@pytest.mark.parametrize("kwargs", [{"budget_params": 50}, {"budget_flops": 100}])
def test_impossible_budget_is_a_clear_error(kwargs: dict) -> None:
    with pytest.raises(DesignError, match="no size of template small-cnn meets .* the smallest .* raise the budget"):
        suggest("digits", **kwargs)


def test_bad_budget_value() -> None:
    with pytest.raises(DesignError, match="budget_params must be a positive integer, got 0"):
        suggest("digits", budget_params=0)


def test_suggested_digits_spec_trains_well(one_thread: None) -> None:
    s = suggest("digits")
    result = archlab.train(s.spec, out=None, verbose=0, epochs=3, device="cpu")
    assert result.test_metrics["accuracy"] > 0.9


def test_suggested_token_spec_trains_on_npz_ids(tmp_path: Path, one_thread: None) -> None:
    # npz inputs are loaded as float32; a dtype: long spec must still get int64 ids.
    s = suggest(f"npz:{write_ids(tmp_path / 'ids.npz', n=120)}", budget_params=5_000)
    result = archlab.train(s.spec, out=None, verbose=0, epochs=1, device="cpu")
    assert 0.0 <= result.test_metrics["accuracy"] <= 1.0
