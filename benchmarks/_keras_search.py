"""KerasTuner's Hyperband on the Keras twin of examples/search/digits-space.yaml, stopped at a wall-clock budget.

Import after KERAS_BACKEND is set (benchmarks/search_efficiency.py sets it to ``torch``). Needs the
``bench`` extra (keras, keras-tuner).

The model space mirrors the archlab spec dimension by dimension:

- first layer: a choice between a Conv2D (filters 8/16/32/64, kernel 1/3/5, same padding, relu) and
  a residual block (two 3x3 Conv2D of 16 filters, the first with relu, added to a projection
  shortcut, then relu). The shortcut is what archlab builds for it: a 1x1 Conv2D without bias and a
  BatchNormalization with PyTorch's momentum and epsilon (0.1 -> Keras' 0.9, 1e-5);
- depth: 1-3 Conv2D of one searched width (16/32/64), 3x3, same padding, relu;
- 2x2 max pooling, flatten, dropout 0-0.5 in steps of 0.125, dense 16-128 (log) with relu, dense 10
  with softmax; Adam with the learning rate 1e-4..3e-2 (log); batch 32.

The budget: Optuna's ``timeout`` (what ``archlab.search.search`` uses) starts no trial once the time
is up and lets the running one finish. The tuner here does the same: its oracle answers STOPPED to
the request for a new trial once the deadline has passed (so ``tuner.search`` returns), and the
trial that is running then finishes. ``hyperband_iterations`` is unlimited so that the budget, not
the end of one Hyperband sweep (about 75 epochs with max_epochs=9, factor=3), ends the search.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import keras
import keras_tuner
import numpy as np
from keras import layers
from keras_tuner.src.engine import tuner as tuner_module
from keras_tuner.src.tuners.hyperband import HyperbandOracle

__all__ = ["build_model", "run_hyperband"]


def build_model(hp: keras_tuner.HyperParameters) -> keras.Model:
    inputs = keras.Input(shape=(8, 8, 1))
    first = hp.Choice("first", ["conv2d", "residual"])
    if first == "conv2d":
        with hp.conditional_scope("first", ["conv2d"]):
            x = layers.Conv2D(hp.Choice("first_filters", [8, 16, 32, 64]), hp.Choice("first_kernel", [1, 3, 5]),
                              padding="same", activation="relu")(inputs)
    else:
        f = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
        f = layers.Conv2D(16, 3, padding="same")(f)
        s = layers.Conv2D(16, 1, use_bias=False)(inputs)
        s = layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(s)
        x = layers.ReLU()(layers.Add()([f, s]))
    filters = hp.Choice("filters", [16, 32, 64])
    for _ in range(hp.Int("depth", 1, 3)):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(hp.Float("dropout", 0.0, 0.5, step=0.125))(x)
    x = layers.Dense(hp.Int("units", 16, 128, sampling="log"), activation="relu")(x)
    outputs = layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(hp.Float("lr", 1e-4, 3e-2, sampling="log")),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class _BudgetOracle(HyperbandOracle):
    """KerasTuner's Hyperband oracle that starts no trial after ``deadline`` (a time.perf_counter value)."""

    deadline = float("inf")

    def populate_space(self, trial_id: str) -> dict:
        if time.perf_counter() >= self.deadline:
            return {"status": "STOPPED"}
        return super().populate_space(trial_id)


class _RecordingHyperband(keras_tuner.Hyperband):
    """keras_tuner.Hyperband with the budget oracle, recording each epoch and trial with its time."""

    def __init__(self, hypermodel: Any, *, t0: float, deadline: float, objective: str, max_epochs: int,
                 factor: int, seed: int, **kwargs: Any) -> None:
        oracle = _BudgetOracle(objective, max_epochs=max_epochs, factor=factor, hyperband_iterations=None, seed=seed)
        oracle.deadline = deadline
        # keras_tuner.Hyperband.__init__ only builds its oracle and hands it to Tuner.__init__.
        tuner_module.Tuner.__init__(self, oracle=oracle, hypermodel=hypermodel, **kwargs)
        self.t0 = t0
        self.records: list[dict] = []
        self._epochs: dict[str, list[float]] = {}

    def on_epoch_end(self, trial: Any, model: Any, epoch: int, logs: dict | None = None) -> None:
        self._epochs.setdefault(trial.trial_id, []).append(float((logs or {}).get("val_accuracy", float("nan"))))
        super().on_epoch_end(trial, model, epoch, logs)

    def on_trial_end(self, trial: Any) -> None:
        super().on_trial_end(trial)
        trial = self.oracle.get_trial(trial.trial_id)  # the oracle's copy holds the score
        hp = trial.hyperparameters.values
        accs = self._epochs.get(trial.trial_id, [])
        self.records.append({
            "number": int(trial.trial_id), "state": str(trial.status), "end": time.perf_counter() - self.t0,
            "epochs_trained": len(accs), "to_epoch": int(hp.get("tuner/epochs", 0)),
            "from_epoch": int(hp.get("tuner/initial_epoch", 0)), "round": int(hp.get("tuner/round", 0)),
            # KerasTuner's own score: the best epoch's val_accuracy (its checkpoint is what get_best_models loads)
            "value": None if trial.score is None else float(trial.score),
            "final_value": accs[-1] if accs else None,  # the last epoch's val_accuracy, as archlab scores
            "params": {k: v for k, v in hp.items() if not k.startswith("tuner/")},
        })


def run_hyperband(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *,
                  budget: float, seed: int, max_epochs: int = 9, factor: int = 3, batch_size: int = 32) -> dict:
    """Search for ``budget`` seconds; images are (N, 1, 8, 8) as archlab loads them (transposed here)."""
    keras.utils.set_random_seed(seed)
    xt = np.ascontiguousarray(x_train.transpose(0, 2, 3, 1))
    xv = np.ascontiguousarray(x_val.transpose(0, 2, 3, 1))
    with tempfile.TemporaryDirectory(prefix="kt-hyperband-") as tmp:
        t0 = time.perf_counter()
        tuner = _RecordingHyperband(build_model, t0=t0, deadline=t0 + budget, objective="val_accuracy",
                                    max_epochs=max_epochs, factor=factor, seed=seed, directory=tmp,
                                    project_name=f"seed{seed}", overwrite=True)
        tuner.search(xt, y_train, validation_data=(xv, y_val), batch_size=batch_size, verbose=0)
        wall = time.perf_counter() - t0
    return {"trials": tuner.records, "wall": wall}
