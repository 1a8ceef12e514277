"""The engine: validation split, optimizers, LR schedules, weight decay, gradient clipping, early
stopping and non-finite losses, each checked by value on tiny models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import archlab
from archlab.training import Callback, Engine, TrainingError, load_weights, resolve_recipe, train
from archlab.training import _train as train_module

LINEAR = {"name": "linear", "input": [4], "layers": [{"dense": {"units": 3}}]}
MLP = {"name": "mlp", "input": [4], "layers": [{"dense": {"units": 8, "activation": "relu"}}, {"dense": {"units": 3}}]}


def toy(n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=gen)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 1).long()


def engine(spec: dict = MLP, seed: int = 0, run_dir: Path | None = None, **recipe: object) -> Engine:
    torch.manual_seed(seed)
    model = archlab.build(spec)
    return Engine(model, resolve_recipe({"device": "cpu", **recipe}), "cross_entropy", run_dir=run_dir, verbose=0)


def record_steps(eng: Engine) -> list[dict]:
    """Per optimizer step, the learning rate and the gradient norm the step sees (a step pre-hook)."""
    seen: list[dict] = []

    def hook(optimizer, args, kwargs):
        grads = [p.grad for p in eng.model.parameters() if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
        seen.append({"lr": optimizer.param_groups[0]["lr"], "norm": norm})

    eng.optimizer.register_step_pre_hook(hook)
    return seen


# -- validation split ---------------------------------------------------------------------------

class Captured(Exception):
    """Raised by the fake Engine.fit to stop train() once the arrays are captured."""


@pytest.fixture
def captured_fit(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Capture what train() hands Engine.fit, and skip the training itself."""
    seen: dict = {}

    def fake_fit(self, x, y, x_val=None, y_val=None, **kwargs):
        seen.update(x=x, y=y, x_val=x_val, y_val=y_val)
        raise Captured

    monkeypatch.setattr(train_module.Engine, "fit", fake_fit)
    return seen


@pytest.mark.parametrize("fraction", [0.1, 0.25])
def test_validation_split_is_the_last_fraction_before_shuffling(captured_fit: dict, digits, helpers,
                                                                fraction: float) -> None:
    with pytest.raises(Captured):
        train(helpers.tiny, data="digits", out=None, verbose=0, validation_split=fraction)
    n = len(digits.x_train)
    cut = math.floor(n * (1 - fraction))  # Keras: split_at = floor(n * (1 - validation_split))
    assert len(captured_fit["x_val"]) == n - cut
    np.testing.assert_array_equal(captured_fit["x"].numpy(), digits.x_train[:cut])
    np.testing.assert_array_equal(captured_fit["y"].numpy(), digits.y_train[:cut])
    np.testing.assert_array_equal(captured_fit["x_val"].numpy(), digits.x_train[cut:])
    np.testing.assert_array_equal(captured_fit["y_val"].numpy(), digits.y_train[cut:])


def test_no_validation_split(captured_fit: dict, digits, helpers) -> None:
    with pytest.raises(Captured):
        train(helpers.tiny, data="digits", out=None, verbose=0, validation_split=0.0)
    assert len(captured_fit["x"]) == len(digits.x_train) and len(captured_fit["x_val"]) == 0


def test_stratified_validation_keeps_class_proportions(captured_fit: dict, digits, helpers) -> None:
    spec = helpers.spec_with(helpers.tiny, validation="stratified", validation_split=0.2)
    with pytest.raises(Captured):
        train(spec, data="digits", out=None, verbose=0)
    y_all, y_val = digits.y_train, captured_fit["y_val"].numpy()
    assert len(y_val) == len(y_all) - math.floor(0.8 * len(y_all))  # the same size as validation: last
    for c in range(10):
        assert abs((y_val == c).sum() - 0.2 * (y_all == c).sum()) <= 1, c
    # the two parts are the training rows, each exactly once
    rows = np.concatenate([captured_fit["x"].numpy(), captured_fit["x_val"].numpy()]).reshape(len(y_all), -1)
    labels = np.concatenate([captured_fit["y"].numpy(), y_val])
    both = np.column_stack([rows, labels])
    original = np.column_stack([digits.x_train.reshape(len(y_all), -1), y_all])
    np.testing.assert_array_equal(both[np.lexsort(both.T)], original[np.lexsort(original.T)])
    # not simply the last rows
    assert not np.array_equal(captured_fit["x_val"].numpy(), digits.x_train[-len(y_val):])


# -- optimizers ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("optimizer", "cls", "expected"), [
    ({"name": "adam"}, torch.optim.Adam, {"lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 0.0}),
    ({"name": "adam", "lr": 0.01, "betas": [0.8, 0.99], "weight_decay": 1e-4}, torch.optim.Adam,
     {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 1e-4}),
    ({"name": "adamw", "lr": 0.002, "weight_decay": 0.05}, torch.optim.AdamW,
     {"lr": 0.002, "betas": (0.9, 0.999), "weight_decay": 0.05}),
    ({"name": "sgd", "lr": 0.1}, torch.optim.SGD, {"lr": 0.1, "momentum": 0.0, "nesterov": False}),
    ({"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}, torch.optim.SGD,
     {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}),
])
def test_optimizers_are_the_torch_classes(optimizer: dict, cls: type, expected: dict) -> None:
    eng = engine(optimizer=optimizer)
    assert type(eng.optimizer) is cls
    group = eng.optimizer.param_groups[0]
    for key, value in expected.items():
        assert group[key] == value, key
    assert sum(p.numel() for p in group["params"]) == sum(p.numel() for p in eng.model.parameters())


# -- learning-rate schedules --------------------------------------------------------------------

EPOCHS, STEPS = 4, 4  # 32 samples, batch 8


def run_schedule(schedule: dict, lr: float = 0.1) -> tuple[list[float], list[float], Engine]:
    eng = engine(optimizer={"name": "sgd", "lr": lr}, schedule=schedule, epochs=EPOCHS, batch_size=8)
    steps = record_steps(eng)
    history = eng.fit(*toy(EPOCHS * 8))
    assert len(steps) == EPOCHS * STEPS
    return history.history["lr"], [s["lr"] for s in steps], eng


def test_no_schedule_keeps_the_rate() -> None:
    epochs, steps, _ = run_schedule({"name": "none"})
    assert epochs == [0.1] * EPOCHS and steps == [0.1] * EPOCHS * STEPS


def test_step_schedule() -> None:
    epochs, steps, eng = run_schedule({"name": "step", "step_size": 2, "gamma": 0.5})
    expected = [0.1 * 0.5 ** ((e - 1) // 2) for e in range(1, EPOCHS + 1)]  # the rate each epoch trains with
    assert epochs == pytest.approx(expected)
    assert steps == pytest.approx([lr for lr in expected for _ in range(STEPS)])
    assert eng.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** 2)  # what epoch 5 would use


def test_cosine_schedule_anneals_per_step() -> None:
    epochs, steps, eng = run_schedule({"name": "cosine", "min_lr": 0.01})
    total = EPOCHS * STEPS

    def cosine(t: int) -> float:
        return 0.01 + (0.1 - 0.01) * (1 + math.cos(math.pi * t / total)) / 2

    assert steps == pytest.approx([cosine(t) for t in range(total)])
    assert epochs == pytest.approx([cosine(e * STEPS) for e in range(EPOCHS)])  # each epoch's first step
    assert eng.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)


@pytest.mark.parametrize(("max_lr", "peak"), [(1.0, 1.0), (None, 10 * 0.1)])
def test_one_cycle_schedule(max_lr: float | None, peak: float) -> None:
    schedule = {"name": "one_cycle", "pct_start": 0.25, **({"max_lr": max_lr} if max_lr else {})}
    epochs, steps, _ = run_schedule(schedule)
    total = EPOCHS * STEPS
    initial, final = peak / 25, peak / 25 / 1e4  # torch's div_factor and final_div_factor
    warm_end = 0.25 * total - 1

    def anneal(start: float, end: float, pct: float) -> float:
        return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)

    expected = [anneal(initial, peak, t / warm_end) if t <= warm_end else
                anneal(peak, final, (t - warm_end) / (total - 1 - warm_end)) for t in range(total)]
    assert steps == pytest.approx(expected)
    assert max(steps) == pytest.approx(peak) and steps[-1] == pytest.approx(final)
    assert epochs == pytest.approx(steps[::STEPS])


# -- weight decay, gradient clipping ------------------------------------------------------------

@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_weight_decay_shrinks_the_weights_by_lr_times_decay(name: str) -> None:
    """One full-batch step from the same weights: decay adds exactly -lr * wd * w (decoupled in AdamW;
    for SGD the gradient gains wd * w)."""
    x, y = toy(16)
    lr, wd = 0.1, 0.3
    results = []
    for decay in (0.0, wd):
        eng = engine(LINEAR, optimizer={"name": name, "lr": lr, "weight_decay": decay}, epochs=1, batch_size=16,
                     shuffle=False)
        before = {k: v.clone() for k, v in eng.model.state_dict().items()}
        eng.fit(x, y)
        results.append(eng.model.state_dict())
    for key, w0 in before.items():
        torch.testing.assert_close(results[1][key] - results[0][key], -lr * wd * w0, atol=1e-6, rtol=1e-4)
        assert not torch.equal(results[1][key], results[0][key])


def test_adam_weight_decay_changes_the_result() -> None:
    x, y = toy()
    a = engine(optimizer={"name": "adam", "lr": 0.01}, epochs=2, batch_size=8)
    b = engine(optimizer={"name": "adam", "lr": 0.01, "weight_decay": 0.5}, epochs=2, batch_size=8)
    a.fit(x, y), b.fit(x, y)
    norm = [sum(p.square().sum() for p in e.model.parameters()).item() for e in (a, b)]
    assert norm[1] < norm[0]


def test_grad_clip_bounds_the_gradient_norm() -> None:
    x, y = toy()
    unclipped = engine(optimizer={"name": "sgd", "lr": 0.01}, epochs=1, batch_size=8)
    free = record_steps(unclipped)
    unclipped.fit(x, y)
    clip = 0.5 * min(s["norm"] for s in free)
    assert clip > 0
    clipped = engine(optimizer={"name": "sgd", "lr": 0.01}, epochs=1, batch_size=8, grad_clip=clip)
    seen = record_steps(clipped)
    clipped.fit(x, y)
    assert len(seen) == 4
    for s in seen:
        assert s["norm"] <= clip * (1 + 1e-5)
    assert seen[0]["norm"] == pytest.approx(clip, rel=1e-4)  # same first gradient, scaled down to the bound
    assert not all(torch.equal(p, q) for p, q in zip(clipped.model.parameters(), unclipped.model.parameters(),
                                                     strict=True))


# -- early stopping -----------------------------------------------------------------------------

def scripted(eng: Engine, values: list[float], key: str = "loss") -> None:
    """Make the validation metric follow ``values``, one per epoch."""
    it = iter(values)

    def evaluate(x, y):
        v = next(it)
        return ({"loss": v} if key == "loss" else {"loss": 1.0, key: v}), None

    eng.evaluate = evaluate


@pytest.mark.parametrize(("values", "patience", "mode", "key", "best", "last"), [
    # best at 2, then no improvement: Keras stops after `patience` epochs without improvement
    ([1.0, 0.5, 0.6, 0.7, 0.8, 0.4, 0.3], 2, "auto", "loss", 2, 4),
    ([1.0, 0.5, 0.6, 0.7, 0.8, 0.4, 0.3], 3, "auto", "loss", 2, 5),
    ([1.0, 0.5, 0.4, 0.45, 0.3], 1, "auto", "loss", 3, 4),
    ([1.0, 0.5, 0.6, 0.7], 0, "auto", "loss", 2, 3),
    ([1.0, 0.9, 0.8, 0.7], 1, "auto", "loss", 4, 4),  # always improving: runs every epoch
    # accuracy is maximised (auto mode)
    ([0.3, 0.6, 0.5, 0.55, 0.9], 2, "auto", "accuracy", 2, 4),
    ([0.3, 0.6, 0.5, 0.55, 0.9], 2, "min", "accuracy", 1, 3),
])
def test_early_stopping_stops_at_the_right_epoch(values: list[float], patience: int, mode: str, key: str,
                                                 best: int, last: int) -> None:
    eng = engine(epochs=len(values), batch_size=16,
                 early_stopping={"monitor": f"val_{key}", "patience": patience, "mode": mode})
    scripted(eng, values, key)
    x, y = toy()
    history = eng.fit(x, y, x[:4], y[:4])
    assert history.epoch == list(range(1, last + 1))
    assert history.best_epoch == best
    assert history.stopped_early == (last < len(values))


def test_min_delta() -> None:
    eng = engine(epochs=6, batch_size=16, early_stopping={"patience": 2, "min_delta": 0.1})
    scripted(eng, [1.0, 0.95, 0.92, 0.5, 0.45, 0.44])  # 0.95 and 0.92 are not improvements by 0.1
    x, y = toy()
    history = eng.fit(x, y, x[:4], y[:4])
    assert history.best_epoch == 1 and history.epoch == [1, 2, 3]


class Snapshots(Callback):
    """The weights at the end of every epoch (before restore_best)."""

    def __init__(self, into: dict[int, dict]) -> None:
        self.into = into

    def on_epoch_end(self, engine: Engine, epoch: int, logs: dict) -> None:
        self.into[epoch] = {k: v.clone() for k, v in engine.model.state_dict().items()}


def test_restore_best_restores_the_best_epoch(tmp_path: Path, helpers) -> None:
    eng = engine(epochs=6, batch_size=8, run_dir=tmp_path, optimizer={"name": "sgd", "lr": 0.1},
                 early_stopping={"patience": 2})
    scripted(eng, [1.0, 0.5, 0.7, 0.8, 0.9, 1.0])
    snapshots: dict[int, dict] = {}
    x, y = toy()
    history = eng.fit(x, y, x[:4], y[:4], callbacks=[Snapshots(snapshots)])
    assert history.epoch == [1, 2, 3, 4] and history.best_epoch == 2
    final = eng.model.state_dict()
    for key, value in snapshots[2].items():
        assert torch.equal(final[key], value)
    assert not all(torch.equal(final[k], v) for k, v in snapshots[4].items())
    # best.safetensors holds epoch 2; last.safetensors epoch 4
    best = archlab.build(MLP)
    meta = load_weights(tmp_path / "best.safetensors", best)
    assert meta["epoch"] == 2 and meta["val_loss"] == 0.5
    for key, value in best.state_dict().items():
        assert torch.equal(final[key], value)
    last = archlab.build(MLP)
    load_weights(tmp_path / "last.safetensors", last)
    for key, value in last.state_dict().items():
        assert torch.equal(snapshots[4][key], value)


def test_without_restore_best_the_last_weights_stay(tmp_path: Path) -> None:
    eng = engine(epochs=5, batch_size=8, optimizer={"name": "sgd", "lr": 0.1},
                 early_stopping={"patience": 1, "restore_best": False})
    scripted(eng, [1.0, 0.5, 0.7, 0.8, 0.9])
    snapshots: dict[int, dict] = {}
    x, y = toy()
    history = eng.fit(x, y, x[:4], y[:4], callbacks=[Snapshots(snapshots)])
    assert history.epoch == [1, 2, 3]
    for key, value in eng.model.state_dict().items():
        assert torch.equal(snapshots[3][key], value)


def test_monitoring_a_metric_that_is_not_recorded() -> None:
    eng = engine(epochs=2, batch_size=16, early_stopping={"monitor": "val_macro_f1"})
    x, y = toy()
    with pytest.raises(TrainingError, match="cannot monitor 'val_macro_f1'.*val_loss"):
        eng.fit(x, y, x[:4], y[:4])


def test_monitor_without_validation_defaults_to_the_training_loss() -> None:
    x, y = toy()
    history = engine(epochs=2, batch_size=8).fit(x, y)
    assert "val_loss" not in history.history
    losses = history.history["loss"]
    assert history.best_epoch == 1 + losses.index(min(losses))


# -- non-finite losses --------------------------------------------------------------------------

def test_nan_in_the_data_names_epoch_and_step() -> None:
    x, y = toy()
    x[9, 2] = float("nan")  # in the third batch of 4
    eng = engine(epochs=2, batch_size=4, shuffle=False)
    with pytest.raises(TrainingError, match=r"the loss became nan at epoch 1, step 3 .*no epoch had finished"):
        eng.fit(x, y)


def test_non_finite_loss_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    x, y = toy()
    eng = engine(epochs=3, batch_size=8, run_dir=tmp_path)

    class Poison(Callback):  # after epoch 1 is saved, a weight becomes NaN
        def on_epoch_start(self, engine: Engine, epoch: int) -> None:
            if epoch == 2:
                with torch.no_grad():
                    next(engine.model.parameters())[0, 0] = float("nan")

    with pytest.raises(TrainingError) as info:
        eng.fit(x, y, x[:4], y[:4], callbacks=[Poison()])
    message = str(info.value)
    assert "at epoch 2, step 1" in message
    assert str(tmp_path / "last.safetensors") in message and "end of epoch 1" in message
    model = archlab.build(MLP)
    load_weights(tmp_path / "last.safetensors", model)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with safe_open(str(tmp_path / "last.safetensors"), framework="pt") as handle:
        assert json.loads(handle.metadata()["epoch"]) == 1
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]


def test_absurd_learning_rate_through_train(digits, helpers) -> None:
    # 1e30 overflows the second step's loss; 1e15 gives a finite 3e28, which the divergence rule stops (below)
    spec = helpers.spec_with(helpers.tiny, optimizer={"name": "sgd", "lr": 1e30}, epochs=2, batch_size=32)
    with pytest.raises(TrainingError, match=r"the loss became (nan|inf) at epoch 1, step \d+ \(learning rate 1e\+30\)"):
        train(spec, data="digits", out=None, verbose=0)


def test_a_finite_loss_far_above_the_untrained_models_stops_as_diverged(digits, helpers, tmp_path: Path) -> None:
    spec = helpers.spec_with(helpers.tiny, optimizer={"name": "sgd", "lr": 1e15}, epochs=2, batch_size=32)
    with pytest.raises(TrainingError, match=r"the loss reached \S+, more than 1000 times the untrained model's "
                                            r"2\.\d+: training diverged, at epoch 1, step 2 "):
        train(spec, data="digits", out=None, verbose=0)
    # the reference is the first step's loss, kept in the checkpoint so that a resumed run uses the same
    result = train(helpers.spec_with(helpers.tiny, epochs=1, batch_size=32), data="digits", out=tmp_path, verbose=0)
    with safe_open(str(result.run_dir / "last.safetensors"), framework="pt") as handle:
        reference = json.loads(handle.metadata()["reference_loss"])
    assert 2.0 < reference < 2.6 and reference > result.history.history["loss"][0]  # ~ln 10, then it learns
