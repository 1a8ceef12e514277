"""archlab ensemble: SAMME's weights by hand and against scikit-learn, per-sample weights in the
loss, the bootstrap, the ensemble directory, the cyclic cosine schedule and its snapshots (also
across a resume), --jobs 2 against --jobs 1, and each bad input through the CLI."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from archlab.cli import run
from archlab.exceptions import Interrupted, SpecError
from archlab.spec import dump, load
from archlab.tasks import get_task
from archlab.training import (
    Bootstrap,
    Callback,
    Engine,
    RunError,
    ensemble,
    load_run,
    load_weights,
    prepare_model,
    prepare_splits,
    resolve_recipe,
    restore_run,
    samme_update,
    train,
)
from archlab.training._engine import weighted_loss
from archlab.training._runs import checkpoint_metadata


def _tiny(helpers, **train_section) -> dict:
    return helpers.spec_with(helpers.tiny, **{"data": "digits", "batch_size": 64, "device": "cpu", **train_section})


# -- SAMME -----------------------------------------------------------------------------------------
def test_samme_update_against_a_hand_computation() -> None:
    # uniform weights, one mistake in four, K = 3: err 1/4, alpha = log(3) + log(2) = log 6,
    # the wrong row's weight x6, then all divided by 9/4 so that they average 1
    alpha, err, w = samme_update(np.ones(4), np.array([True, False, False, False]), 3)
    assert err == pytest.approx(0.25) and alpha == pytest.approx(math.log(6))
    np.testing.assert_allclose(w, [24 / 9, 4 / 9, 4 / 9, 4 / 9])
    # uneven weights, K = 4: err (1.5 + 1) / 4 = 0.625, alpha = log(0.375 / 0.625) + log 3 = log 1.8
    alpha, err, w = samme_update(np.array([0.5, 1.5, 1.0, 1.0]), np.array([False, True, True, False]), 4)
    assert err == pytest.approx(0.625) and alpha == pytest.approx(math.log(1.8))
    np.testing.assert_allclose(w, np.array([0.5, 2.7, 1.8, 1.0]) * 4 / 6)
    # no mistake: err 0 is clipped to 1/(2n) = 1/8, a finite alpha log(7) + log(2); the weights stay
    alpha, err, w = samme_update(np.ones(4), np.zeros(4, bool), 3)
    assert err == 0 and alpha == pytest.approx(math.log(14))
    np.testing.assert_allclose(w, np.ones(4))
    # every row wrong: err 1 (the caller drops the member) with a finite alpha, clipped at 1 - 1/8
    alpha, err, _ = samme_update(np.ones(4), np.ones(4, bool), 3)
    assert err == 1 and alpha == pytest.approx(math.log(1 / 7) + math.log(2))


def test_samme_chain_matches_sklearn_adaboost() -> None:
    """Three rounds of a fixed weak learner (the weighted majority class, sklearn's DummyClassifier)
    on a 3-class toy: the errors and alphas of AdaBoostClassifier, which implements SAMME."""
    from sklearn.dummy import DummyClassifier
    from sklearn.ensemble import AdaBoostClassifier

    x, y = np.zeros((6, 1)), np.array([0, 0, 0, 1, 1, 2])
    boost = AdaBoostClassifier(DummyClassifier(strategy="most_frequent"), n_estimators=3).fit(x, y)
    w, alphas, errors = np.ones(6), [], []
    for _ in range(3):
        predicted = np.argmax(np.bincount(y, weights=w, minlength=3))
        alpha, err, w = samme_update(w, y != predicted, 3)
        alphas.append(alpha)
        errors.append(err)
    np.testing.assert_allclose(errors, boost.estimator_errors_)
    np.testing.assert_allclose(alphas, boost.estimator_weights_)
    np.testing.assert_allclose(errors, [1 / 2, 5 / 9, 0.6])  # by hand: see docs/ensembles.md


# -- per-sample weights ------------------------------------------------------------------------------
def test_weighted_loss_is_the_weighted_mean_of_the_per_sample_losses() -> None:
    torch.manual_seed(0)
    out, y = torch.randn(5, 3), torch.tensor([0, 2, 1, 1, 0])
    w = torch.tensor([1.0, 0.0, 2.0, 0.5, 0.0])
    loss = get_task("classification").loss(0.1)
    reference = F.cross_entropy(out, y, reduction="none", label_smoothing=0.1)
    # Keras' sample_weight: the mean over the batch of w_i l_i, the weights as given (not / sum w)
    assert weighted_loss(loss, out, y, w).item() == pytest.approx(((reference * w).sum() / 5).item())
    kept = w > 0  # rows of weight 0 add nothing to the sum, and still count in the batch size
    assert weighted_loss(loss, out, y, w).item() == pytest.approx(
        weighted_loss(loss, out[kept], y[kept], w[kept]).item() * 3 / 5)
    assert weighted_loss(loss, out, y, torch.ones(5)).item() == pytest.approx(loss(out, y).item())
    # a batch of light rows counts for less than the same rows heavy: the weights scale the loss
    assert weighted_loss(loss, out, y, 0.5 * torch.ones(5)).item() == pytest.approx(0.5 * loss(out, y).item())


def test_rows_of_weight_zero_train_as_if_absent(helpers, digits) -> None:
    """One full batch, no shuffle: weight 0 on half the rows, and N/N' = 2 on the rest (so that the
    weights average 1, as the ensemble normalises them), gives the weights of training on the rest."""
    spec = load(_tiny(helpers, epochs=2, batch_size=400, shuffle=False, validation_split=0.0))
    recipe = resolve_recipe(spec.to_dict()["train"])
    task = get_task("classification")
    x = torch.from_numpy(digits.x_train[:400].astype(np.float32))
    y = torch.from_numpy(digits.y_train[:400].astype(np.int64))
    keep = torch.arange(400) % 2 == 0

    def fitted(xs, ys, weight=None):
        model, head = prepare_model(spec, recipe, task)
        Engine(model, recipe, task, verbose=0, output_activation=head).fit(xs, ys, sample_weight=weight)
        return model.state_dict()

    weighted = fitted(x, y, keep.float() * 2.0)  # mean over 400 of 2 l on the 200 kept = their mean loss
    alone = fitted(x[keep], y[keep])
    for key in alone:
        torch.testing.assert_close(weighted[key], alone[key], rtol=1e-5, atol=1e-6)


def test_sample_weights_are_refused_on_the_streaming_path(helpers) -> None:
    with pytest.raises(SpecError, match="streams it from disk"):
        train(_tiny(helpers, epochs=1, data_loading="stream"), out=None, verbose=0, sample_weight=torch.ones(1293))


# -- the bootstrap -----------------------------------------------------------------------------------
def test_bootstrap_is_seeded_with_replacement_and_keeps_the_validation_rows(helpers, digits) -> None:
    rows = Bootstrap(3)(100)
    np.testing.assert_array_equal(rows, Bootstrap(3)(100))
    assert not np.array_equal(rows, Bootstrap(4)(100))
    assert len(rows) == 100 and rows.min() >= 0 and rows.max() < 100 and len(np.unique(rows)) < 100
    spec = load(_tiny(helpers))
    recipe = resolve_recipe(spec.to_dict()["train"])
    task = get_task("classification")
    plain = prepare_splits(digits, recipe, task, spec)
    bagged = prepare_splits(digits, recipe, task, spec, train_rows=Bootstrap(0))
    drawn = Bootstrap(0)(len(plain.y))
    torch.testing.assert_close(bagged.x, plain.x[drawn])
    torch.testing.assert_close(bagged.y, plain.y[drawn])
    torch.testing.assert_close(bagged.x_val, plain.x_val)
    torch.testing.assert_close(bagged.y_val, plain.y_val)


# -- the ensemble directory, --jobs --------------------------------------------------------------------
def test_a_member_on_chosen_rows_resumes_only_with_them(helpers, tmp_path: Path) -> None:
    member = train(_tiny(helpers, epochs=1), out=None, into=tmp_path / "m", train_rows=Bootstrap(0), verbose=0).run_dir
    with pytest.raises(RunError, match="trained on train_rows of its own"):
        train(resume=member, epochs=2, verbose=0)
    assert train(resume=member, epochs=2, verbose=0, train_rows=Bootstrap(0)).summary["epochs_run"] == 2


def test_bagging_directory_and_jobs_2_equal_jobs_1(helpers, tmp_path: Path) -> None:
    spec = _tiny(helpers, epochs=1)
    one = ensemble(spec, method="bagging", members=2, jobs=1, out=tmp_path / "one")
    two = ensemble(spec, method="bagging", members=2, jobs=2, out=tmp_path / "two")
    for a, b in zip(one.members, two.members, strict=True):
        helpers.assert_same_tensors(a.dir / "last.safetensors", b.dir / "last.safetensors")
    root = one.ensemble_dir
    doc = json.loads((root / "ensemble.json").read_text())
    assert {"format", "method", "combine", "task", "data", "members", "info"} <= set(doc)
    assert (doc["format"], doc["method"], doc["combine"], doc["task"], doc["data"]) == (
        "archlab-ensemble/1", "bagging", "mean", "classification", "digits")
    assert (root / "spec.yaml").read_text() == dump(load(spec))
    assert [m["dir"] for m in doc["members"]] == ["members/00", "members/01"]
    for i, entry in enumerate(doc["members"]):
        assert entry["weight"] == 1.0 and entry["seed"] == i and entry["bootstrap_seed"] == i
        assert entry["train_rows"] == 1293  # digits' 1437 training rows less the last 10% for validation
        assert entry["out_of_bag"] == 1293 - len(np.unique(Bootstrap(i)(1293)))
        restored = restore_run(root / entry["dir"], entry["weights"])  # an ordinary run directory
        assert restored.task.name == "classification"
        summary = json.loads((root / entry["dir"] / "summary.json").read_text())
        assert summary["test"] == entry["test"] == one.members[i].test_metrics


@pytest.mark.parametrize("method", ["bagging", "boosting", "seeds"])
def test_members_validation_split_under_stratified(helpers, tmp_path: Path, digits, method) -> None:
    """validation: stratified draws its split with the seed: bagging and boosting members keep the
    base seed's (validation_seed), so every member validates on the same rows and boosting's
    weights, one per training row by position, land on the same rows; seeds members stay exactly
    ``train --seed S+i``, whose splits differ."""
    result = ensemble(_tiny(helpers, epochs=1, validation="stratified"), method=method, members=2, seed=3,
                      out=tmp_path)
    task = get_task("classification")
    splits = []
    for i, member in enumerate(result.members):
        spec, recipe = load_run(member.dir)
        assert recipe.seed == 3 + i and recipe.validation_seed == (None if method == "seeds" else 3)
        splits.append(prepare_splits(digits, recipe, task, spec, train_rows=None))
    same = torch.equal(splits[0].y_val, splits[1].y_val) and torch.equal(splits[0].x_val, splits[1].x_val)
    assert same == (method != "seeds")
    if method == "boosting":  # the training rows too, in the same order: what the weights index
        torch.testing.assert_close(splits[0].x, splits[1].x, rtol=0, atol=0)


def test_boosting_via_the_cli(helpers, tmp_path: Path, capsys, digits) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(dump(load(_tiny(helpers, epochs=1))))
    code = run(["ensemble", str(spec), "--method", "boosting", "--members", "2", "--jobs", "2", "--out",
                str(tmp_path / "runs")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "--jobs 2 does not apply to --method boosting" in captured.err
    assert captured.out.count("]: test accuracy") == 2  # a progress line per member
    # then the combination scored beside its members (evaluate's table and file)
    assert "boosting ensemble of 2, combined by vote: test accuracy" in captured.out
    root = Path(captured.out.strip().splitlines()[-1].removeprefix("ensemble: "))
    doc = json.loads((root / "ensemble.json").read_text())
    assert doc["combine"] == "vote" and len(doc["members"]) == 2
    for entry in doc["members"]:
        err = entry["error"]
        assert entry["weight"] == pytest.approx(math.log((1 - err) / err) + math.log(9))
    # member 0 trained on uniform weights: its error is the plain fraction of training rows it gets wrong
    first = doc["members"][0]
    restored = restore_run(root / first["dir"], first["weights"])
    x = torch.from_numpy(digits.x_train[:1293].astype(np.float32))
    with torch.no_grad():
        wrong = restored.model.eval()(x).argmax(1).numpy() != digits.y_train[:1293]
    assert first["error"] == pytest.approx(wrong.mean())
    assert doc["info"]["boosting"]["errors"][:2] == [m["error"] for m in doc["members"]]
    scored = json.loads((root / "evaluation-test-best.json").read_text())
    assert [m["dir"] for m in scored["members"]] == [m["dir"] for m in doc["members"]]


# -- cyclic cosine and snapshots ------------------------------------------------------------------------
class _Rates(Callback):
    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_batch_end(self, engine, step, loss) -> None:
        self.rates.append(engine.step_lr)


class _StopBefore(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_start(self, engine, epoch) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_cyclic_cosine_rates_snapshots_and_resume(helpers, tmp_path: Path) -> None:
    spec = _tiny(helpers, epochs=4, optimizer={"lr": 0.01}, schedule={"name": "cyclic_cosine", "cycles": 2})
    rows = np.arange(200)  # 200 rows in batches of 64: 4 steps an epoch, cycles of 8 steps
    rates = _Rates()
    whole = train(spec, out=None, into=tmp_path / "whole", train_rows=rows, callbacks=[rates], verbose=0).run_dir
    expected = [0.005 * (1 + math.cos(math.pi * (s % 8) / 8)) for s in range(16)]  # Huang et al., eq. 2
    np.testing.assert_allclose(rates.rates, expected, rtol=1e-12)
    assert rates.rates[8] == pytest.approx(0.01)  # the restart
    for i, epoch in ((1, 2), (2, 4)):
        assert checkpoint_metadata(whole / f"snapshot-{i}.safetensors")["epoch"] == epoch
    assert not (whole / "snapshot-3.safetensors").exists()
    # interrupted before epoch 4 (after snapshot 1), then resumed: the same snapshots, kept and numbered on
    with pytest.raises(Interrupted):
        train(spec, out=None, into=tmp_path / "cut", train_rows=rows, callbacks=[_StopBefore(4)], verbose=0)
    assert (tmp_path / "cut" / "snapshot-1.safetensors").is_file()
    assert not (tmp_path / "cut" / "snapshot-2.safetensors").exists()
    train(resume=tmp_path / "cut", verbose=0, train_rows=rows)
    for i in (1, 2):
        name = f"snapshot-{i}.safetensors"
        helpers.assert_same_tensors(whole / name, tmp_path / "cut" / name)
    saved = checkpoint_metadata(tmp_path / "cut" / "last.safetensors")["snapshots"]
    assert [s["weights"] for s in saved] == ["snapshot-1", "snapshot-2"]


def test_snapshot_ensemble_lists_one_runs_snapshots(helpers, tmp_path: Path) -> None:
    result = ensemble(_tiny(helpers, epochs=2), method="snapshot", members=2, out=tmp_path)
    doc = json.loads((result.ensemble_dir / "ensemble.json").read_text())
    assert [(m["dir"], m["weights"]) for m in doc["members"]] == [("members/00", "snapshot-1"),
                                                                  ("members/00", "snapshot-2")]
    member = result.ensemble_dir / "members" / "00"
    restored = restore_run(member, "last")
    load_weights(member / "snapshot-1.safetensors", restored.model)  # weights of the member's own spec
    last = load_file(str(member / "snapshot-2.safetensors"))
    final = load_file(str(member / "last.safetensors"))
    for key, value in last.items():  # the last cycle ends with the run
        assert torch.equal(value, final[key])


# -- bad input ---------------------------------------------------------------------------------------
@pytest.fixture
def few_rows(tmp_path: Path) -> str:
    """8 training rows of 8 classes: 7 left once validation takes its 10%."""
    rng = np.random.default_rng(0)
    path = tmp_path / "few.npz"
    np.savez(path, x=rng.random((8, 1, 8, 8)), y=np.arange(8), x_test=rng.random((8, 1, 8, 8)), y_test=np.arange(8))
    return f"npz:{path}"


@pytest.mark.parametrize(("args", "message"), [
    (["--members", "1"], "an ensemble needs at least 2 members"),
    (["--members", "0"], "an ensemble needs at least 2 members"),
    (["--method", "bagin"], "did you mean 'bagging'"),
    (["--method", "snapshot", "--members", "3", "--epochs", "2"], "the run has 2 epoch(s): give --epochs 3 "),
    (["--method", "snapshot", "--members", "2", "--epochs", "3"], "the run has 3 epoch(s): give --epochs 2 or 4 "),
    (["--method", "snapshot", "--members", "2", "--epochs", "2", "--early-stopping"],
     "train.early_stopping: --method snapshot: its 2 members are the ends of 2 cycles; early stopping would cut "
     "them: drop train.early_stopping"),
    (["--method", "boosting", "--regression"], "boosting (SAMME) supports classification; this spec's task is "
                                               "regression; use --method bagging or seeds"),
    (["--method", "bagging", "--few-rows"], "a bootstrap of 7 training rows cannot hold all 8 classes"),
    (["--method", "seeds", "--wide"], "the spec's input is (1, 8, 9) but digits gives samples of shape (1, 8, 8)"),
])
def test_bad_input_exits_2_before_any_training(helpers, tmp_path: Path, capsys, few_rows, args, message) -> None:
    spec = copy.deepcopy(_tiny(helpers, epochs=1))
    if "--regression" in args:
        spec["task"] = {"kind": "regression"}
        spec["layers"][-1] = {"dense": {"units": 1}}
    if "--few-rows" in args:
        spec["train"]["data"] = few_rows
        spec["task"] = {"kind": "classification", "classes": 8}
        spec["layers"][-1] = {"dense": {"units": 8, "activation": "softmax"}}
    if "--wide" in args:
        spec["input"] = [1, 8, 9]
    if "--early-stopping" in args:
        spec["train"]["early_stopping"] = {"patience": 1}
    path = tmp_path / "spec.yaml"
    path.write_text(dump(load(spec)))
    out = tmp_path / "runs"
    flags = [a for a in args if a not in ("--regression", "--few-rows", "--wide", "--early-stopping")]
    assert run(["ensemble", str(path), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split()) and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())  # nothing was trained or written


def test_boosting_whose_first_member_is_at_chance_is_a_failed_run(helpers, tmp_path: Path, capsys) -> None:
    """Every input alike (zeros) and labels half 0, half 1: any model predicts one class for all, a
    weighted error of exactly 1/2 = 1 - 1/K. Found after training: exit 1 (TrainingError), not 2."""
    path = tmp_path / "flat.npz"
    y = np.arange(20) % 2  # 18 training rows (9 of each class) once validation takes the last 2
    np.savez(path, x=np.zeros((20, 1, 8, 8)), y=y, x_test=np.zeros((4, 1, 8, 8)), y_test=np.arange(4) % 2)
    spec = copy.deepcopy(_tiny(helpers, epochs=1, data=f"npz:{path}"))
    spec["task"] = {"kind": "classification", "classes": 2}
    spec["layers"][-1] = {"dense": {"units": 2, "activation": "softmax"}}
    file = tmp_path / "spec.yaml"
    file.write_text(dump(load(spec)))
    assert run(["ensemble", str(file), "--method", "boosting", "--members", "2", "--out", str(tmp_path / "runs")]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "the first member is no better than chance on the training rows (weighted error 0.5000)" in err
    assert "Traceback" not in err
