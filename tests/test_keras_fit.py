"""The Keras-style training API: Sequential.compile / fit / evaluate / predict on digits (on the CPU)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import archlab
from archlab import layers
from archlab.data import load_dataset
from archlab.exceptions import SpecError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def mlp(units: int = 64) -> archlab.Sequential:
    return archlab.Sequential([
        layers.Flatten(input_shape=(1, 8, 8)),
        layers.Dense(units, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ], name="digits-mlp")


@pytest.fixture(scope="module")
def fitted(digits, tmp_path_factory: pytest.TempPathFactory):
    model = mlp()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], seed=0,
                  device="cpu")
    out = tmp_path_factory.mktemp("keras-runs")
    history = model.fit(digits.x_train, digits.y_train, epochs=3, batch_size=32, validation_split=0.1, verbose=0,
                        out=out)
    return model, history, out


def test_fit_returns_a_keras_history(fitted) -> None:
    _, history, out = fitted
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history.history)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert len(history.history[key]) == 3, key
    assert history.epoch == [1, 2, 3]
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["lr"] == [1e-3] * 3
    assert history.run_dir is not None and history.run_dir.parent == out
    rows = [json.loads(line) for line in (history.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_accuracy"] for r in rows] == history.history["val_accuracy"]
    summary = json.loads((history.run_dir / "summary.json").read_text())
    assert (summary["train_samples"], summary["val_samples"]) == (1293, 144)  # Keras: the last 10%
    assert archlab.load(history.run_dir / "spec.yaml").to_dict() == fitted[0].to_spec().to_dict()
    assert {"best.safetensors", "last.safetensors", "curves.png"} <= {p.name for p in history.run_dir.iterdir()}


def test_evaluate_and_predict(fitted, digits) -> None:
    model, _, _ = fitted
    loss, accuracy = model.evaluate(digits.x_test, digits.y_test)
    assert accuracy > 0.8
    as_dict = model.evaluate(digits.x_test, digits.y_test, return_dict=True)
    assert as_dict == {"loss": loss, "accuracy": accuracy}
    probs = model.predict(digits.x_test)
    assert probs.shape == (360, 10) and probs.dtype == np.float32
    assert (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (probs.argmax(1) == digits.y_test).mean() == pytest.approx(accuracy, abs=1e-6)
    # the loss is the cross-entropy of the predicted probabilities
    nll = -np.log(probs[np.arange(360), digits.y_test].astype(np.float64)).mean()
    assert loss == pytest.approx(nll, rel=1e-4)


class Captured(Exception):
    """Raised by the fake Engine.fit to stop fit() once the arrays are captured."""


def test_validation_split_is_the_last_rows(digits, monkeypatch: pytest.MonkeyPatch) -> None:
    from archlab.training import Engine

    seen = {}

    def capture(self, x, y, x_val=None, y_val=None, **kwargs):
        seen.update(x=x, x_val=x_val, y_val=y_val)
        raise Captured

    monkeypatch.setattr(Engine, "fit", capture)
    model = mlp(8)
    model.compile(device="cpu")
    with pytest.raises(Captured):
        model.fit(digits.x_train, digits.y_train, validation_split=0.25, out=None, verbose=0)
    cut = math.floor(len(digits.x_train) * 0.75)
    np.testing.assert_array_equal(seen["x"].numpy(), digits.x_train[:cut])
    np.testing.assert_array_equal(seen["x_val"].numpy(), digits.x_train[cut:])
    np.testing.assert_array_equal(seen["y_val"].numpy(), digits.y_train[cut:])


def test_categorical_crossentropy_with_one_hot_targets(digits, tmp_path: Path) -> None:
    model = mlp(16)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"], device="cpu")
    one_hot = np.eye(10, dtype=np.float32)[digits.y_train]
    history = model.fit(digits.x_train, one_hot, epochs=1, batch_size=64, verbose=0, out=None)
    assert history.run_dir is None and list(tmp_path.iterdir()) == []
    loss, accuracy = model.evaluate(digits.x_test, np.eye(10, dtype=np.float32)[digits.y_test])
    assert (loss, accuracy) == pytest.approx(model.evaluate(digits.x_test, digits.y_test))  # labels work too
    with torch.no_grad():  # the trained module is the spec without its softmax: logits
        logits = model.model_.eval()(torch.from_numpy(digits.x_test))
    assert loss == pytest.approx(F.cross_entropy(logits, torch.from_numpy(digits.y_test)).item(), rel=1e-5)
    assert accuracy == pytest.approx((logits.argmax(1).numpy() == digits.y_test).mean(), abs=1e-6)


def test_validation_data_and_no_metrics(digits) -> None:
    model = mlp(16)
    model.compile(optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9}, loss="sparse_categorical_crossentropy",
                  device="cpu")
    history = model.fit(digits.x_train, digits.y_train, epochs=2, batch_size=64, verbose=0, out=None,
                        validation_data=(digits.x_test, digits.y_test))
    assert set(history.history) == {"loss", "val_loss", "lr", "seconds", "samples_per_s"}
    result = model.evaluate(digits.x_test, digits.y_test)
    assert isinstance(result, float)  # Keras: a scalar when there are no metrics
    assert result == pytest.approx(history.history["val_loss"][-1], rel=1e-6)  # the same data, the same weights


def test_fit_twice_continues(digits) -> None:
    model = mlp(16)
    model.compile(seed=3, device="cpu")
    first = model.fit(digits.x_train, digits.y_train, epochs=1, batch_size=64, verbose=0, out=None)
    second = model.fit(digits.x_train, digits.y_train, epochs=1, batch_size=64, verbose=0, out=None)
    assert second.history["loss"][0] < first.history["loss"][0]  # from the trained weights, not afresh


def test_same_seed_same_history(digits) -> None:
    histories = []
    for _ in range(2):
        model = mlp(16)
        model.compile(seed=5, device="cpu")
        h = model.fit(digits.x_train, digits.y_train, epochs=2, batch_size=64, validation_split=0.1, verbose=0,
                      out=None)
        histories.append({k: v for k, v in h.history.items() if k not in ("seconds", "samples_per_s")})
    assert histories[0] == histories[1]


def test_fit_before_compile(digits) -> None:
    model = mlp()
    for call in (lambda: model.fit(digits.x_train, digits.y_train, out=None),
                 lambda: model.evaluate(digits.x_test, digits.y_test),
                 lambda: model.predict(digits.x_test)):
        with pytest.raises(SpecError, match=r"call compile\(\) before fit\(\), evaluate\(\) or predict\(\)"):
            call()


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"loss": "hinge"}, "unknown loss 'hinge'"),
    ({"metrics": ["precision"]}, "unknown metric 'precision'"),
    ({"optimizer": "rmsprop"}, "train.optimizer.name"),
])
def test_compile_errors(kwargs: dict, fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment):
        mlp().compile(**kwargs)


def test_out_none_writes_nothing(digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    model = mlp(8)
    model.compile(device="cpu")
    history = model.fit(digits.x_train[:200], digits.y_train[:200], epochs=1, verbose=0, out=None,
                        validation_split=0.1)
    assert history.run_dir is None
    assert list(tmp_path.iterdir()) == []


def test_fit_takes_a_users_callbacks_which_can_stop_it(digits) -> None:
    from archlab.training import Callback

    class StopAtAccuracy(Callback):
        """Keras' favourite example: stop once the training accuracy passes a threshold."""

        def __init__(self) -> None:
            self.seen: list[float] = []

        def on_epoch_end(self, engine, epoch: int, logs: dict) -> bool:
            self.seen.append(logs["accuracy"])
            return logs["accuracy"] > 0.5

    model = mlp(32)
    model.compile(metrics=["accuracy"], seed=0, device="cpu")
    stopper = StopAtAccuracy()
    history = model.fit(digits.x_train, digits.y_train, epochs=20, batch_size=32, verbose=0, out=None,
                        callbacks=[stopper])
    assert stopper.seen == history.history["accuracy"]
    assert history.stopped_early and len(history.epoch) < 20
    assert history.history["accuracy"][-1] > 0.5 and all(a <= 0.5 for a in history.history["accuracy"][:-1])
