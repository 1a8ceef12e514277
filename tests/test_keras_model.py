"""``archlab.Model``: Keras' compile / fit / evaluate / predict on any spec, a graph of two named
inputs for every task kind (the ``named_task`` fixture) included."""

from __future__ import annotations

import json

import numpy as np
import pytest

import archlab
from archlab import layers
from archlab.data import load_dataset
from archlab.exceptions import SpecError

from .conftest import TASK_KINDS

pytestmark = pytest.mark.usefixtures("one_thread")


def _loss_of(task: str, outputs: np.ndarray, y: np.ndarray) -> float:
    """The task's loss computed from the predicted outputs (probabilities, or values for regression)."""
    p = outputs.astype(np.float64)
    if task == "classification":
        return float(-np.log(p[np.arange(len(y)), y]).mean())
    if task in ("binary", "multilabel"):
        p, y = p.reshape(y.shape), y.astype(np.float64)
        return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
    return float(((p.reshape(y.shape) - y) ** 2).mean())


@pytest.mark.parametrize("task", TASK_KINDS)
def test_model_fits_evaluates_and_predicts_a_two_input_spec(named_task, task, tmp_path) -> None:
    data, spec = named_task(task)
    ds = load_dataset(data)
    model = archlab.Model(spec)
    model.compile(optimizer={"name": "adam", "lr": 0.01}, seed=0, device="cpu")  # the task: the spec's
    history = model.fit(ds.x_train, ds.y_train, epochs=6, batch_size=32, validation_split=0.2, verbose=0,
                        out=tmp_path)
    losses = history.history["loss"]
    assert history.epoch == [1, 2, 3, 4, 5, 6] and len(history.history["val_loss"]) == 6
    assert losses[-1] < 0.8 * losses[0]  # it learned
    summary = json.loads((history.run_dir / "summary.json").read_text())
    assert (summary["train_samples"], summary["val_samples"]) == (153, 39)  # Keras: the last 20% of 192
    recipe = archlab.training.load_run(history.run_dir)[1]
    assert recipe.loss == archlab.tasks.get_task(task).loss_name

    # the last epoch's val_loss is evaluate's on the same rows, and both are the loss of predict's outputs
    x_val = {name: a[153:] for name, a in ds.x_train.items()}
    metrics = model.evaluate(x_val, ds.y_train[153:], return_dict=True)
    assert metrics["loss"] == pytest.approx(history.history["val_loss"][-1], rel=1e-5)
    outputs = model.predict(ds.x_test)
    assert outputs.shape == (48, {"classification": 3, "multilabel": 2}.get(task, 1))
    assert model.evaluate(ds.x_test, ds.y_test, return_dict=True)["loss"] == pytest.approx(
        _loss_of(task, outputs, ds.y_test), rel=1e-4)


def test_model_reads_inputs_by_name_and_refuses_a_missing_one(named_task, tmp_path) -> None:
    data, spec = named_task("regression")
    ds = load_dataset(data)
    model = archlab.Model(spec)
    model.compile(loss="mse", metrics=["mae"], seed=1, device="cpu")
    swapped = {"num": ds.x_test["num"], "ids": ds.x_test["ids"].astype(np.float32)}  # any order, ids as floats
    np.testing.assert_array_equal(model.predict(swapped), model.predict(ds.x_test))
    loss, mae = model.evaluate(ds.x_test, ds.y_test)
    assert mae == pytest.approx(np.abs(model.predict(ds.x_test)[:, 0] - ds.y_test).mean(), rel=1e-5)
    with pytest.raises(SpecError, match=r"input 'num' is not one x provides; it provides ids") as caught:
        model.fit({"ids": ds.x_train["ids"]}, ds.y_train, out=tmp_path, verbose=0)
    assert caught.value.path == "inputs.num"
    assert list(tmp_path.iterdir()) == []  # refused before a run directory was made
    with pytest.raises(SpecError, match=r"x holds 192 samples but y 10"):
        model.fit(ds.x_train, ds.y_train[:10], out=None, verbose=0)


def test_compile_checks_the_loss_against_the_spec_task(named_task, tmp_path) -> None:
    data, spec = named_task("multilabel")
    ds = load_dataset(data)
    model = archlab.Model(spec)
    model.compile(loss="binary_crossentropy", device="cpu")  # trains multilabel heads too
    history = model.fit(ds.x_train, ds.y_train, verbose=0, out=tmp_path)
    assert archlab.training.load_run(history.run_dir)[1].loss == "multilabel_binary_cross_entropy"
    with pytest.raises(SpecError, match=r"the spec's task is multilabel, which does not train with mse") as caught:
        model.compile(loss="mse")
    assert caught.value.path == "task.kind"


def test_model_of_a_sequential_spec_file_trains_as_sequential_does(tmp_path) -> None:
    """One owner: Sequential is a Model whose spec is written from layers, so the same spec and
    seed give the same history either way."""
    digits = load_dataset("digits")
    seq = archlab.Sequential([layers.Flatten(input_shape=(1, 8, 8)), layers.Dense(16, activation="relu"),
                              layers.Dense(10, activation="softmax")], name="m")
    path = tmp_path / "m.yaml"
    path.write_text(archlab.dump(seq.spec), encoding="utf-8")
    histories = []
    for model in (seq, archlab.Model(path)):
        assert isinstance(model, archlab.Model)
        model.compile(loss="sparse_categorical_crossentropy", metrics=["acc"], seed=2, device="cpu")
        h = model.fit(digits.x_train[:300], digits.y_train[:300], epochs=2, batch_size=64, validation_split=0.1,
                      verbose=0, out=None)
        histories.append({k: v for k, v in h.history.items() if k not in ("seconds", "samples_per_s")})
    assert histories[0] == histories[1] and set(histories[0]) >= {"loss", "accuracy", "val_accuracy"}
    assert archlab.Model(path).count_params() == seq.count_params() == 64 * 16 + 16 + 16 * 10 + 10
    assert "dense" in archlab.Model(path).summary()


def test_summary_and_params_of_a_two_input_spec(named_task) -> None:
    _, spec = named_task("binary")
    model = archlab.Model(spec)
    # embedding 10x4, dense 4->8, dense 20->16, dense 16->1
    assert model.count_params() == 40 + (4 * 8 + 8) + (20 * 16 + 16) + (16 + 1) == sum(
        p.numel() for p in model.build().parameters())
    text = model.summary()
    assert "graph.emb.layers[0]" in text and "embedding" in text and "graph.out.layers[1]" in text
    assert repr(model) == "Model('two-inputs-binary', inputs=['ids', 'num'])"
    spec_copy = model.spec
    spec_copy["name"] = "changed"
    assert model.spec["name"] == "two-inputs-binary"  # the dict is a copy
