"""Tasks and metrics as registry entries: each task's loss, output check, metrics against
scikit-learn, one direction read by early stopping, search and cv, plugins, and training per task."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn import metrics as skm

import archlab
from archlab.exceptions import SpecError
from archlab.search._study import parse_objectives
from archlab.selection import cross_validate
from archlab.selection._diagnose import one_standard_error
from archlab.tasks import Predictions, TaskKind, direction_of, get_task, list_tasks, register_task, score, tasks
from archlab.training import Engine, predict_run, resolve_recipe, train


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """One thread, as every training test (tests/conftest.py says why)."""


def npz(tmp_path: Path, target, name: str, samples: int = 200, seed: int = 0) -> str:
    """A small data set of 4 features whose targets ``target(x)`` depend on them, as ``npz:PATH``."""
    x = np.random.default_rng(seed).normal(size=(samples, 4)).astype(np.float32)
    path = tmp_path / f"{name}.npz"
    np.savez(path, x=x, y=target(x))
    return f"npz:{path}"


def mlp(task: dict, units: int, activation: str | None = None, **train_section) -> dict:
    last = {"units": units, **({"activation": activation} if activation else {})}
    return {"name": "t", "input": [4], "task": task,
            "layers": [{"dense": {"units": 16, "activation": "relu"}}, {"dense": last}],
            "train": {"device": "cpu", "epochs": 3, "batch_size": 32, "optimizer": {"lr": 0.01}, **train_section}}


# -- losses and output checks --------------------------------------------------------------------
def test_each_task_has_its_loss_on_logits() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=gen)
    ids = torch.tensor([0, 2, 1, 1, 0, 2])
    bits = (torch.rand(6, 3, generator=gen) > 0.5).float()
    one = torch.randn(6, 1, generator=gen)
    yes = torch.tensor([1.0, 0, 1, 0, 0, 1])
    assert get_task("classification").loss()(logits, ids) == pytest.approx(F.cross_entropy(logits, ids).item())
    assert get_task("binary").loss()(one, yes) == pytest.approx(
        F.binary_cross_entropy_with_logits(one[:, 0], yes).item())
    assert get_task("multilabel").loss()(logits, bits) == pytest.approx(
        F.binary_cross_entropy_with_logits(logits, bits).item())
    assert get_task("regression").loss()(one, yes) == pytest.approx(F.mse_loss(one[:, 0], yes).item())


def test_binary_needs_one_output_unit(tmp_path: Path) -> None:
    data = npz(tmp_path, lambda x: (x[:, 0] > 0).astype(np.int64), "bin")
    with pytest.raises(SpecError) as info:
        train(mlp({"kind": "binary"}, 2, "softmax"), data=data, out=None, verbose=0)
    assert info.value.path == "layers"
    assert "task binary needs one output unit" in str(info.value)
    assert "dense: {units: 1, activation: sigmoid}" in str(info.value)


def test_data_set_task_and_spec_task_meet_in_one_rule(tmp_path: Path) -> None:
    data = npz(tmp_path, lambda x: x[:, 0].astype(np.float32), "reg")  # a regression data set
    with pytest.raises(SpecError) as info:
        train(mlp({"kind": "classification", "classes": 2}, 2, "softmax"), data=data, out=None, verbose=0)
    assert info.value.path == "task.kind" and "regression data set" in str(info.value)


# -- metrics ----------------------------------------------------------------------------------------
def test_metrics_equal_scikit_learn_on_fixed_arrays() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 50)
    probs = rng.dirichlet(np.ones(4), 50)
    labels = probs.argmax(1)
    got = score(Predictions(y, probs, labels), ["accuracy", "macro_f1", "top_k_accuracy"], top_k=2)
    assert got["macro_f1"] == skm.f1_score(y, labels, average="macro")
    assert got["accuracy"] == skm.accuracy_score(y, labels)
    assert got["top_2_accuracy"] == skm.top_k_accuracy_score(y, probs, k=2)

    yb, p = rng.integers(0, 2, 40), rng.random(40)
    got = score(Predictions(yb, p, (p > 0.5).astype(int)), ["auc", "log_loss", "accuracy"])
    assert got == {"auc": skm.roc_auc_score(yb, p), "log_loss": skm.log_loss(yb, p),
                   "accuracy": skm.accuracy_score(yb, p > 0.5)}

    yr, pr = rng.normal(size=30), rng.normal(size=30)
    got = score(Predictions(yr, pr, pr), ["mse", "rmse", "mae", "r2"])
    assert got["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(yr, pr)))
    assert got["r2"] == skm.r2_score(yr, pr) and got["mae"] == skm.mean_absolute_error(yr, pr)

    ym = rng.integers(0, 2, (30, 3))
    pm = rng.random((30, 3))
    got = score(Predictions(ym, pm, (pm > 0.5).astype(int)), ["micro_f1", "macro_f1", "subset_accuracy"])
    assert got["micro_f1"] == skm.f1_score(ym, pm > 0.5, average="micro")
    assert got["subset_accuracy"] == skm.accuracy_score(ym, pm > 0.5)


def test_macro_f1_of_the_engine_equals_scikit_learn() -> None:
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 4, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    torch.manual_seed(0)
    model = archlab.build({"name": "m", "input": [4], "layers": [{"dense": {"units": 3}}]})
    engine = Engine(model, resolve_recipe({"device": "cpu", "metrics": ["macro_f1"]}), "classification", verbose=0)
    got, out = engine.evaluate(x, y)
    assert got["macro_f1"] == pytest.approx(skm.f1_score(y.numpy(), out.argmax(1).numpy(), average="macro"))


# -- one direction for early stopping, search and cv ------------------------------------------------
@pytest.mark.parametrize(("key", "direction"), [("val_auc", "max"), ("val_r2", "max"), ("val_log_loss", "min"),
                                                ("val_rmse", "min"), ("val_top_5_accuracy", "max")])
def test_early_stopping_and_search_read_the_registry_direction(key: str, direction: str) -> None:
    kind = {"val_auc": "binary", "val_log_loss": "binary", "val_top_5_accuracy": "classification"}.get(key,
                                                                                                      "regression")
    model = archlab.build({"name": "m", "input": [4], "layers": [{"dense": {"units": 1}}]})
    recipe = resolve_recipe({"device": "cpu", "early_stopping": {"monitor": key},
                             "metrics": [key.removeprefix("val_").replace("top_5", "top_k")]})
    from archlab.training._callbacks import EarlyStopping

    stopping = EarlyStopping(Engine(model, recipe, kind, verbose=0), has_val=True)
    assert (stopping.monitor, stopping.mode) == (key, direction)
    assert parse_objectives([key])[0].direction == ("maximize" if direction == "max" else "minimize")
    assert direction_of(key) == direction


def test_one_standard_error_follows_a_min_direction() -> None:
    rows = [{"params": 10, "val_mean": 0.50, "val_se": 0.01}, {"params": 100, "val_mean": 0.30, "val_se": 0.01},
            {"params": 1000, "val_mean": 0.295, "val_se": 0.01}]
    assert one_standard_error(rows, "min") == 1  # the lowest error is best; 100 params is within one SE of it
    assert one_standard_error(rows, "max") == 0


def test_cv_maximises_auc_on_a_binary_task(tmp_path: Path) -> None:
    data = npz(tmp_path, lambda x: (x[:, 0] + 0.3 * x[:, 1] > 0).astype(np.int64), "cvbin", seed=1)
    spec = mlp({"kind": "binary"}, 1, "sigmoid", epochs=4)
    result = cross_validate(spec, data, ["layers[0].dense.units=1,16"], folds=2, out=tmp_path, seed=0)
    assert (result.metric, result.direction) == ("auc", "max")
    means = [c["val_mean"] for c in result.configs]
    assert result.best_index == int(np.argmax(means))
    rows = [json.loads(line) for line in (result.run_dir / "cv.jsonl").read_text().splitlines()]
    assert all(0 <= r["val_auc"] <= 1 for r in rows)


# -- errors: unknown names, metrics that do not apply ---------------------------------------------
def test_unknown_task_suggests() -> None:
    with pytest.raises(SpecError) as info:
        archlab.load({"name": "x", "input": [4], "task": {"kind": "regresion"}, "layers": [{"dense": {"units": 1}}]})
    assert info.value.path == "task.kind" and "did you mean 'regression'?" in str(info.value)
    assert "known: binary, classification, language_model, multilabel, regression, seq2seq" in str(info.value)


@pytest.mark.parametrize(("task", "section", "path", "fragment"), [
    ({"kind": "classification", "classes": 2}, {"metrics": ["auc"]}, "train.metrics[0]",
     "metric 'auc' does not apply to task classification"),
    ({"kind": "regression"}, {"early_stopping": {"monitor": "val_auc"}}, "train.early_stopping.monitor",
     "metric 'auc' does not apply to task regression"),
    ({"kind": "regression"}, {"early_stopping": {"monitor": "val_rsme"}}, "train.early_stopping.monitor",
     "did you mean 'rmse'?"),
])
def test_metric_that_does_not_apply_is_a_spec_error(tmp_path: Path, task: dict, section: dict, path: str,
                                                    fragment: str) -> None:
    data = npz(tmp_path, lambda x: (x[:, 0] > 0).astype(np.int64) if task["kind"] == "classification"
               else x[:, 0].astype(np.float32), "d")
    units = 2 if task["kind"] == "classification" else 1
    with pytest.raises(SpecError) as info:
        train(mlp(task, units, **section), data=data, out=None, verbose=0)
    assert info.value.path == path and fragment in str(info.value)


# -- training per task ----------------------------------------------------------------------------
def test_multilabel_trains_with_binary_cross_entropy(tmp_path: Path) -> None:
    data = npz(tmp_path, lambda x: (x[:, :3] > 0).astype(np.float32), "ml")
    result = train(mlp({"kind": "multilabel"}, 3, "sigmoid", epochs=2), data=data, out=tmp_path, verbose=0)
    run = result.run_dir
    model = archlab.build(archlab.load(run / "spec.yaml"))
    archlab.training.load_weights(run / "last.safetensors", model)
    archlab.training.split_output_activation(model, "multilabel")
    ds = archlab.data.load_dataset(data)
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(ds.x_test))
    want = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(ds.y_test)).item()
    assert result.test_metrics["loss"] == pytest.approx(want, rel=1e-5)
    assert {"micro_f1", "macro_f1", "subset_accuracy"} <= set(result.test_metrics)
    assert (run / "per-label-f1-test.png").is_file()


def test_binary_reports_auc_log_loss_accuracy_and_draws_roc(tmp_path: Path) -> None:
    data = npz(tmp_path, lambda x: (x[:, 0] > 0).astype(np.int64), "bin", seed=2)
    result = train(mlp({"kind": "binary"}, 1, "sigmoid"), data=data, out=tmp_path, verbose=0)
    ds = archlab.data.load_dataset(data)
    assert {"loss", "auc", "log_loss", "accuracy"} == set(result.test_metrics)
    assert result.test_metrics["auc"] > 0.8  # the target is the sign of one feature
    assert result.test_metrics["log_loss"] == pytest.approx(result.test_metrics["loss"], rel=1e-4)
    assert (result.run_dir / "roc-test.png").is_file() and (result.run_dir / "pr-test.png").is_file()
    assert len(ds.y_test) == json.loads((result.run_dir / "evaluation-test.json").read_text())["samples"]
    np.save(tmp_path / "one.npy", ds.x_test[:1])
    top = predict_run(result.run_dir, tmp_path / "one.npy")[0]["top"]  # both classes, the likelier first
    assert [t["class"] for t in top] in (["0", "1"], ["1", "0"]) and top[0]["probability"] >= 0.5
    assert sum(t["probability"] for t in top) == pytest.approx(1.0)


def test_regression_reports_rmse_r2_and_draws_residuals(tmp_path: Path) -> None:
    data = npz(tmp_path, lambda x: (2 * x[:, 0] - x[:, 1]).astype(np.float32), "reg")
    result = train(mlp({"kind": "regression"}, 1, epochs=8), data=data, out=tmp_path, verbose=0)
    m = result.test_metrics
    assert m["rmse"] == pytest.approx(math.sqrt(m["mse"]), rel=1e-6)
    assert m["r2"] > 0.5 and m["mse"] == pytest.approx(m["loss"], rel=1e-4)
    assert (result.run_dir / "residuals-test.png").is_file()


def test_a_plugin_task_takes_part(tmp_path: Path) -> None:
    @register_task("absolute_regression", override=True)
    class AbsoluteRegression(TaskKind):
        """Regression trained on the mean absolute error."""

        loss_name = "l1"
        default_metrics = ("mae",)
        data_tasks = ("regression",)

        def loss(self, label_smoothing: float = 0.0):
            return lambda out, y: F.l1_loss(out.reshape(y.shape), y.float())

        def check_output(self, shape, dataset) -> None:
            if shape != (1,):
                raise SpecError("one output unit", "layers")

    try:
        assert "absolute_regression" in list_tasks()
        get_metric_task = get_task("absolute_regression")
        data = npz(tmp_path, lambda x: x[:, 0].astype(np.float32), "abs")
        result = train(mlp({"kind": "absolute_regression"}, 1), data=data, out=None, verbose=0)
        assert result.test_metrics["loss"] == pytest.approx(result.test_metrics["mae"], rel=1e-4)
        assert get_metric_task.name == "absolute_regression"
    finally:
        tasks.unregister("absolute_regression")


def test_search_maximises_auc_on_a_binary_task(tmp_path: Path) -> None:
    import optuna

    from archlab.search import search

    data = npz(tmp_path, lambda x: (x[:, 0] + 0.3 * x[:, 1] > 0).astype(np.int64), "sbin", seed=4)
    space = mlp({"kind": "binary"}, 1, "sigmoid", epochs=2)
    space["layers"][0]["dense"]["units"] = {"choice": [1, 2, 16]}
    result = search(space, data, 3, objectives=["val_auc"], pruner="none", out=tmp_path, seed=0)
    assert result.study.directions == [optuna.study.StudyDirection.MAXIMIZE]
    values = [t.value for t in result.study.trials if t.value is not None]
    assert result.best[0]["values"]["val_auc"] == max(values)


def test_search_objective_that_does_not_apply_fails_before_any_study(tmp_path: Path) -> None:
    from archlab.search import search

    data = npz(tmp_path, lambda x: x[:, 0].astype(np.float32), "sreg")
    space = mlp({"kind": "regression"}, 1)
    space["layers"][0]["dense"]["units"] = {"choice": [2, 16]}
    with pytest.raises(SpecError, match="metric 'auc' does not apply to task regression"):
        search(space, data, 1, objectives=["val_auc"], out=tmp_path)
    assert not list(tmp_path.glob("search-*"))


def test_a_run_recorded_before_tasks_still_evaluates(tmp_path: Path) -> None:
    """Old runs wrote ``loss: mse`` or ``auto`` and ``metrics: [accuracy]`` whatever the task."""
    import yaml

    from archlab.training import evaluate_run

    data = npz(tmp_path, lambda x: x[:, 0].astype(np.float32), "old")
    spec = mlp({"kind": "regression"}, 1, epochs=1)
    del spec["task"]  # old specs often named no task: the data set's (regression) decides
    run = train(spec, data=data, out=tmp_path, verbose=0).run_dir
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    (run / "recipe.yaml").write_text(yaml.safe_dump({**recipe, "loss": "mse", "metrics": ["accuracy"]}))
    result = evaluate_run(run)
    assert {"loss", "mse", "rmse", "mae", "r2"} == set(result["metrics"])
    assert "residuals-test-best.png" in result["files"]


@pytest.mark.parametrize("name", list_tasks())
def test_every_task_scores_its_own_metrics(name: str) -> None:
    """Contract over the registry: a task's loss is finite on logits, and each of its metrics applies
    to it, has a direction and computes a number from its predictions."""
    task = get_task(name)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 3 if name in ("classification", "multilabel") else 1, generator=gen)
    y = {"classification": torch.arange(12) % 3, "binary": (torch.arange(12) % 2).float(),
         "multilabel": (torch.rand(12, 3, generator=gen) > 0.5).float(),
         "regression": torch.randn(12, generator=gen),
         # sequence tasks: logits (N, T, V) and token ids (N, T), 0 being padding
         "seq2seq": torch.randint(0, 7, (12, 5), generator=gen),
         "language_model": torch.randint(0, 7, (12, 5), generator=gen)}[name]
    if y.dtype == torch.long and y.ndim == 2:
        logits = torch.randn(12, 5, 7, generator=gen)
    assert math.isfinite(task.loss()(logits, y).item())
    names = [*task.default_metrics, *task.evaluation_metrics]
    assert all(direction_of(m, name) in ("max", "min") for m in names)
    got = score(task.predictions(logits, y), names, top_k=2)
    assert got and all(isinstance(v, float) for v in got.values())


def test_a_task_without_its_loss_or_output_check_is_refused_at_registration() -> None:
    from archlab.exceptions import RegistryError

    class NoLoss(TaskKind):
        def check_output(self, shape, dataset) -> None:
            pass

    with pytest.raises(RegistryError, match=r"task 'no_loss' \(NoLoss\) must define loss$"):
        register_task("no_loss")(NoLoss)
    with pytest.raises(RegistryError, match=r"must define check_output and loss$"):
        register_task("bare")(type("Bare", (TaskKind,), {}))
    assert "no_loss" not in tasks and "bare" not in tasks


def test_roc_and_pr_figures_show_the_models_auc_and_average_precision_beside_chance() -> None:
    from archlab.tasks import _plots

    y, p = np.array([0, 1, 1, 0, 1, 0]), np.array([0.1, 0.8, 0.6, 0.4, 0.3, 0.2])
    roc = [t.get_text() for t in _plots.roc_figure(y, p, "t").axes[0].get_legend().get_texts()]
    pr = [t.get_text() for t in _plots.pr_figure(y, p, "t").axes[0].get_legend().get_texts()]
    assert roc == [f"model (AUC = {skm.roc_auc_score(y, p):.2f})", "Chance level (AUC = 0.5)"]
    assert pr == [f"model (AP = {skm.average_precision_score(y, p):.2f})", "Chance level (AP = 0.50)"]
