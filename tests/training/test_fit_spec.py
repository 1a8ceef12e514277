"""fit_spec is the one fit path: every command that trains reaches it, with the data it prepared."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
import torch

import archlab
import archlab.training
import archlab.training._train as train_module
from archlab.compress import CompressStep, compress, shrink
from archlab.search import search
from archlab.selection import cross_validate
from archlab.training import Splits, fit_spec, train

pytestmark = pytest.mark.usefixtures("one_thread")

CNN = {"name": "cnn", "input": [1, 8, 8], "task": {"kind": "classification", "classes": 10},
       "layers": [{"conv2d": {"filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"}},
                  {"maxpool2d": {"pool_size": 2}}, "flatten", {"dense": {"units": 16, "activation": "relu"}},
                  {"dense": {"units": 10, "activation": "softmax"}}],
       "train": {"data": "digits", "epochs": 1, "batch_size": 64, "device": "cpu"}}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(the calling module, training rows) of every fit_spec call; the real fit_spec still runs."""
    seen: list[tuple[str, int]] = []

    def spy(spec, recipe, task, data, **kwargs):
        caller = inspect.stack()[1].frame.f_globals["__name__"]
        seen.append((caller, len(data.x)))
        return fit_spec(spec, recipe, task, data, **kwargs)

    monkeypatch.setattr(archlab.training, "fit_spec", spy)  # the commands import it when they run
    monkeypatch.setattr(train_module, "fit_spec", spy)
    return seen


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(CNN, out=tmp_path_factory.mktemp("runs"), verbose=0).run_dir


def test_train_and_fit_reach_fit_spec(calls, digits) -> None:
    train(CNN, out=None, verbose=0)
    assert calls == [("archlab.training._train", 1293)]  # 1437 digits less the last 10% for validation
    model = archlab.Sequential([archlab.layers.Flatten(input_shape=(1, 8, 8)), archlab.layers.Dense(10)])
    model.compile(seed=0, device="cpu")
    model.fit(digits.x_train, digits.y_train, epochs=1, verbose=0, out=None)
    assert calls[-1] == ("archlab.model", 1437)  # Sequential.fit is Model.fit


def test_ensemble_reaches_fit_spec_for_every_member(calls, tmp_path: Path) -> None:
    archlab.ensemble(CNN, method="bagging", members=2, out=tmp_path)
    assert calls == [("archlab.training._train", 1293)] * 2  # each a bootstrap of the 1293 training rows
    calls.clear()
    archlab.ensemble(CNN, method="snapshot", members=2, epochs=2, out=tmp_path)
    assert calls == [("archlab.training._train", 1293)]  # one run, its two cycles' ends the members


def test_cv_reaches_fit_spec_for_every_fold(calls, digits, tmp_path: Path) -> None:
    small = dataclasses.replace(digits, x_train=digits.x_train[:300], y_train=digits.y_train[:300])
    cross_validate(CNN, small, folds=3, out=tmp_path, jobs=1)
    assert calls == [("archlab.selection._cv", 200)] * 3


def test_search_reaches_fit_spec_for_every_trial(calls, tmp_path: Path) -> None:
    space = {**CNN, "layers": [*CNN["layers"][:3], {"dense": {"units": {"choice": [8, 16]}, "activation": "relu"}},
                               CNN["layers"][-1]]}
    search(space, "digits", 2, pruner="none", out=tmp_path, seed=0)
    assert calls == [("archlab.search._search", 1293)] * 2  # the recipe's 10% held out, stratified


def test_shrink_and_compress_reach_fit_spec_to_fine_tune_and_distil(calls, run: Path, tmp_path: Path) -> None:
    shrink(run, max_steps=1, train_samples=100, out=None)
    assert calls and {c for c in calls} == {("archlab.compress._shrink", 100)}
    calls.clear()
    compress(run, [CompressStep("prune-structured", 0.5), CompressStep("distill", str(run))], out=tmp_path,
             train_samples=100, distill_epochs=1)
    assert calls == [("archlab.compress._pipeline", 100), ("archlab.compress._distill", 100)]


def test_fit_spec_trains_a_given_model_in_place_and_evaluates_the_test_split(digits) -> None:
    recipe = archlab.training.resolve_recipe({**CNN["train"], "epochs": 4, "optimizer": {"name": "adam", "lr": 0.01}})
    task = archlab.training.resolve_task(recipe, archlab.load(CNN))
    data = archlab.training.prepare_splits(digits, recipe, task, archlab.load(CNN), test=True)
    model, head = archlab.training.prepare_model(archlab.load(CNN), recipe, task)
    before = next(model.parameters()).detach().clone()
    result = fit_spec(None, recipe, task, data, model=model, output_activation=head)
    assert result.model is model and not torch.equal(before, next(model.parameters()))
    assert result.test_metrics == result.engine.evaluate(data.x_test, data.y_test)[0]
    assert 0.5 < result.test_metrics["accuracy"] <= 1.0 and len(data.x_test) == len(digits.x_test)
    with pytest.raises(ValueError, match="a spec or a model"):
        fit_spec(None, recipe, task, Splits(data.x, data.y))
