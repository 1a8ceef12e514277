"""archlab.design.suggest: the right template, shapes from the data, budgets, and a spec that trains."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import archlab
from archlab.data import load_dataset
from archlab.design import DesignError, suggest

#: The repository's sibling folder with the real data sets (see shared/data/README.md).
SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture(scope="module")
def criteo() -> archlab.Dataset:
    """DeepCTR's 200-row Criteo sample: 39 categorical fields, a binary click target."""
    if not (SHARED_DATA / "criteo_sample").is_dir():
        pytest.skip(f"no criteo_sample copy at {SHARED_DATA}")
    return load_dataset("criteo-sample", SHARED_DATA.resolve())


def write_csv(path: Path, n: int = 300, features: int = 6) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, features))
    y = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1).astype(int)
    lines = [",".join([*(f"f{i}" for i in range(features)), "label"])]
    lines += [",".join([*(f"{v:.4f}" for v in row), str(t)]) for row, t in zip(x, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_binary_csv(path: Path, n: int = 200, target: str = "binary") -> Path:
    """Four features and a 0/1 label (``target="binary"``) or a real-valued one (``"regression"``)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4))
    y = (x[:, 0] > 0).astype(int) if target == "binary" else x[:, 0] * 2 + 0.5
    lines = ["f0,f1,f2,f3,label"] + [",".join([*(f"{v:.4f}" for v in row), str(t)])
                                     for row, t in zip(x, y, strict=True)]
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


# --- the head and recipe come from the task (archlab.tasks) ----------------------------------------

def test_binary_data_gets_one_sigmoid_unit_and_the_binary_recipe(tmp_path: Path) -> None:
    s = suggest(f"csv:{write_binary_csv(tmp_path / 'b.csv')}?task=binary")
    data = s.spec.to_dict()
    assert s.template == "mlp"
    assert last_layer(s.spec) == {"dense": {"units": 1, "activation": "sigmoid"}}
    assert data["task"] == {"kind": "binary"}
    train = data["train"]
    assert train["metrics"] == ["auc", "log_loss", "accuracy"]
    assert train["early_stopping"]["monitor"] == "val_auc" and train["early_stopping"]["mode"] == "max"
    assert train["validation"] == "stratified"
    assert "Task: binary" in " ".join(s.reasons) and "val_auc (higher is better)" in " ".join(s.reasons)


def test_regression_data_gets_a_linear_output_and_the_regression_recipe(tmp_path: Path) -> None:
    s = suggest(f"csv:{write_binary_csv(tmp_path / 'r.csv', target='regression')}")
    data = s.spec.to_dict()
    assert last_layer(s.spec) == {"dense": {"units": 1}}
    assert data["task"] == {"kind": "regression"}
    train = data["train"]
    assert train["metrics"] == ["mse", "rmse", "mae", "r2"]
    assert train["early_stopping"]["monitor"] == "val_mse" and train["early_stopping"]["mode"] == "min"
    assert "validation" not in train  # regression does not stratify: the recipe's default split


def test_classification_keeps_classes_and_accuracy() -> None:
    train = suggest("digits").spec.to_dict()["train"]
    assert train["metrics"] == ["accuracy", "macro_f1"]
    assert train["early_stopping"] == {"monitor": "val_accuracy", "mode": "max", "patience": 8, "restore_best": True}


def test_categorical_fields_get_deepfm_over_the_data_vocabulary(criteo: archlab.Dataset) -> None:
    s = suggest(criteo)
    data = s.spec.to_dict()
    assert s.template == "deepfm"
    assert data["input"] == {"shape": [39], "dtype": "long"}
    assert archlab.spec.get_at(data, "first_order.input_dim") == criteo.vocab_size == 2287
    assert archlab.spec.get_at(data, "embed.input_dim") == criteo.vocab_size
    assert archlab.spec.get_at(data, "first_order.output_dim") == 1  # a weight per id, not a width
    assert archlab.spec.get_at(data, "embed.output_dim") == s.width
    assert archlab.spec.get_at(data, "hidden.layers[0].dense.units") == 4 * s.width
    assert archlab.spec.get_at(data, "hidden.times") == s.depth
    assert data["layers"][-1] == "sigmoid" and data["task"] == {"kind": "binary"}
    train = data["train"]
    assert train["metrics"] == ["auc", "log_loss", "accuracy"]
    assert train["early_stopping"]["monitor"] == "val_auc" and train["early_stopping"]["mode"] == "max"
    assert (train["batch_size"], train["schedule"], train["early_stopping"]["patience"]) == (256, "none", 6)
    assert "categorical fields" in " ".join(s.reasons)


def test_fields_width_and_depth_follow_the_rules(criteo: archlab.Dataset) -> None:
    # 80,000 rows like MovieLens's training split: width 2^round(log2(2 x 16.3)) = 32, depth 5 - 2 = 3
    rows = np.resize(np.arange(len(criteo.x_train)), 80_000)
    big = dataclasses.replace(criteo, x_train=criteo.x_train[rows], y_train=criteo.y_train[rows])
    s = suggest(big)
    assert (s.width, s.depth) == (32, 3)
    assert s.params == archlab.analyze(s.spec).total_params
    assert s.params == 2287 * 33 + 39 * 32 * 128 + 128 + 2 * (128 * 128 + 128) + 129


def test_two_class_fields_data_trains_as_binary(criteo: archlab.Dataset) -> None:
    # DeepFM ends in one score: two-class data of task classification takes the task that uses it
    two = dataclasses.replace(criteo, task="classification")
    s = suggest(two)
    assert s.spec.to_dict()["task"] == {"kind": "binary"}
    assert "task classification of criteo-sample cannot use but task binary can" in " ".join(s.reasons)


def test_real_valued_fields_data_drops_the_sigmoid(criteo: archlab.Dataset) -> None:
    ratings = dataclasses.replace(criteo, task="regression", classes=None, y_train=criteo.y_train.astype(np.float32),
                                  y_test=criteo.y_test.astype(np.float32))
    data = suggest(ratings).spec.to_dict()
    assert data["task"] == {"kind": "regression"}
    assert "sigmoid" not in data["layers"] and data["train"]["early_stopping"]["monitor"] == "val_mse"


def test_many_class_fields_data_is_a_clear_error(criteo: archlab.Dataset) -> None:
    three = dataclasses.replace(criteo, task="classification", classes=("a", "b", "c"))
    with pytest.raises(DesignError, match="no task trains on it with 1 output.*write the spec's head yourself"):
        suggest(three)


def test_suggested_fields_spec_trains_and_reports_test_auc(criteo: archlab.Dataset, one_thread: None) -> None:
    s = suggest(criteo)
    result = archlab.train(s.spec, data_dir=SHARED_DATA.resolve(), out=None, verbose=0, epochs=1, device="cpu")
    assert 0.0 <= result.test_metrics["auc"] <= 1.0
    assert set(result.test_metrics) >= {"auc", "log_loss", "accuracy"}


def test_below_the_data_cap_the_smallest_size_is_kept() -> None:
    ds = load_dataset("digits")
    tiny = dataclasses.replace(ds, x_train=ds.x_train[:10], y_train=ds.y_train[:10])  # cap: 500 parameters
    s = suggest(tiny)
    assert s.width == 4 and s.depth == 1  # the smallest small-cnn, not the rule's width
    assert "kept the smallest that meets the budgets, width 4, depth 1" in " ".join(s.reasons)
    assert "within the data cap" not in " ".join(s.reasons)


def test_named_inputs_are_refused_with_what_to_do_instead(tmp_path):
    path = tmp_path / "two.npz"
    np.savez(path, **{"x/ids": np.zeros((20, 3), np.int64), "x/num": np.zeros((20, 4)), "y": np.arange(20) % 2})
    with pytest.raises(DesignError, match=r"has named inputs \(ids \[3\], num \[4\]\); suggest proposes a one-input "
                                          r"spec.*graph-form spec with one branch per input"):
        suggest(f"npz:{path}")
