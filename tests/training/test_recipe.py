"""The recipe: defaults, the ``train:`` section, command-line overrides and the errors of bad values."""

from __future__ import annotations

import pytest

from archlab.exceptions import SpecError
from archlab.training import Recipe, resolve_recipe


def test_defaults_are_the_seed_recipe() -> None:
    recipe = resolve_recipe(None)
    assert recipe == resolve_recipe({}) == Recipe()
    assert (recipe.optimizer.name, recipe.optimizer.lr, recipe.optimizer.weight_decay) == ("adam", 1e-3, 0.0)
    assert recipe.optimizer.betas == (0.9, 0.999)
    assert (recipe.batch_size, recipe.epochs) == (128, 10)
    assert (recipe.validation_split, recipe.validation, recipe.shuffle) == (0.1, "last", True)
    assert recipe.schedule.name == "none" and recipe.early_stopping is None and recipe.grad_clip is None
    # metrics None: the task's default metrics
    assert (recipe.loss, recipe.metrics, recipe.seed, recipe.data) == ("auto", None, 0, None)
    assert (recipe.device, recipe.precision, recipe.init, recipe.augment) == ("auto", "auto", "torch", [])


def test_train_section_is_parsed() -> None:
    recipe = resolve_recipe({
        "data": "digits", "epochs": 30, "batch_size": 32,
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4},
        "schedule": {"name": "step", "step_size": 5, "gamma": 0.5},
        "validation": "stratified", "validation_split": 0.2, "grad_clip": 1.0,
        "early_stopping": {"monitor": "val_accuracy", "patience": 10},
        "metrics": ["accuracy", "macro_f1", "top_k_accuracy"], "top_k": 3, "label_smoothing": 0.1,
    })
    assert (recipe.data, recipe.epochs, recipe.batch_size) == ("digits", 30, 32)
    assert recipe.optimizer.model_dump() == {"name": "sgd", "lr": 0.05, "weight_decay": 1e-4, "momentum": 0.9,
                                             "nesterov": True, "betas": (0.9, 0.999)}
    assert (recipe.schedule.name, recipe.schedule.step_size, recipe.schedule.gamma) == ("step", 5, 0.5)
    assert (recipe.validation, recipe.validation_split, recipe.grad_clip) == ("stratified", 0.2, 1.0)
    es = recipe.early_stopping
    assert (es.monitor, es.patience, es.min_delta, es.mode, es.restore_best) == ("val_accuracy", 10, 0.0, "auto", True)
    assert recipe.metrics == ["accuracy", "macro_f1", "top_k_accuracy"] and recipe.top_k == 3
    assert recipe.label_smoothing == 0.1


@pytest.mark.parametrize(("section", "expected"), [
    ({"optimizer": "sgd"}, ("sgd", 1e-3)),
    ({"schedule": "cosine"}, "cosine"),
    ({"schedule": None}, "none"),
    ({"early_stopping": True}, "val_loss"),
    ({"early_stopping": False}, None),
])
def test_short_forms(section: dict, expected: object) -> None:
    recipe = resolve_recipe(section)
    if "optimizer" in section:
        assert (recipe.optimizer.name, recipe.optimizer.lr) == expected
    elif "schedule" in section:
        assert recipe.schedule.name == expected
    else:
        assert (recipe.early_stopping.monitor if recipe.early_stopping else None) == expected


def test_overrides_win_and_none_means_not_given() -> None:
    section = {"epochs": 30, "batch_size": 32, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
               "data": "digits", "seed": 4}
    same = resolve_recipe(section, epochs=None, batch_size=None, lr=None, seed=None, data=None, device=None)
    assert same == resolve_recipe(section)
    recipe = resolve_recipe(section, epochs=2, lr=0.5, seed=7, data="mnist", device="cpu")
    assert (recipe.epochs, recipe.seed, recipe.data, recipe.device) == (2, 7, "mnist", "cpu")
    # lr goes to optimizer.lr and keeps the rest of the optimizer section
    assert (recipe.optimizer.name, recipe.optimizer.lr, recipe.optimizer.momentum) == ("sgd", 0.5, 0.9)
    assert recipe.batch_size == 32
    assert section["optimizer"] == {"name": "sgd", "lr": 0.05, "momentum": 0.9}  # the spec is not changed


def test_override_lr_on_a_short_optimizer() -> None:
    assert resolve_recipe({"optimizer": "sgd"}, lr=0.1).optimizer.model_dump()["lr"] == 0.1
    assert resolve_recipe(None, lr=0.1).optimizer.name == "adam"


def test_override_by_optimizer_name_keeps_lr() -> None:
    """train(..., optimizer="sgd", lr=...) sets both: the name override must not drop the lr."""
    recipe = resolve_recipe({"optimizer": {"name": "adam", "lr": 0.01}}, optimizer="sgd", lr=0.2)
    assert (recipe.optimizer.name, recipe.optimizer.lr) == ("sgd", 0.2)
    recipe = resolve_recipe({"optimizer": {"name": "adam", "lr": 0.01}}, optimizer="adamw")
    assert (recipe.optimizer.name, recipe.optimizer.lr) == ("adamw", 0.01)
    recipe = resolve_recipe({"schedule": {"name": "step", "step_size": 4}}, schedule="cosine")
    assert (recipe.schedule.name, recipe.schedule.step_size) == ("cosine", 4)


@pytest.mark.parametrize(("section", "overrides", "path", "fragments"), [
    ({"epochs": 0}, {}, "train.epochs", ["greater than or equal to 1", "got 0"]),
    ({"batch_size": "big"}, {}, "train.batch_size", ["valid integer", "'big'"]),
    ({"validation_split": 1.0}, {}, "train.validation_split", ["less than 1", "got 1.0"]),
    ({"validation_split": -0.1}, {}, "train.validation_split", ["greater than or equal to 0"]),
    ({}, {"lr": -1.0}, "train.optimizer.lr", ["greater than 0", "got -1.0"]),
    ({"optimizer": {"name": "sgd", "momentum": 1.5}}, {}, "train.optimizer.momentum", ["less than 1"]),
    ({"grad_clip": 0}, {}, "train.grad_clip", ["greater than 0"]),
    ({"label_smoothing": 1}, {}, "train.label_smoothing", ["less than 1"]),
    ({"early_stopping": {"patience": -1}}, {}, "train.early_stopping.patience", ["greater than or equal to 0"]),
    ({"schedule": {"name": "one_cycle", "pct_start": 1.0}}, {}, "train.schedule.pct_start", ["less than 1"]),
])
def test_bad_values_name_the_train_path(section: dict, overrides: dict, path: str, fragments: list[str]) -> None:
    with pytest.raises(SpecError) as info:
        resolve_recipe(section, **overrides)
    assert info.value.path == path
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(("section", "path", "suggestion", "listed"), [
    ({"epoch": 3}, "train.epoch", "did you mean 'epochs'?", "train takes: data, epochs, batch_size"),
    ({"optimizer": {"lrr": 0.1}}, "train.optimizer.lrr", "did you mean 'lr'?",
     "train.optimizer takes: name, lr, weight_decay, momentum, nesterov, betas"),
    ({"early_stopping": {"patiense": 2}}, "train.early_stopping.patiense", "did you mean 'patience'?",
     "train.early_stopping takes: monitor, patience"),
    ({"schedule": {"name": "step", "gama": 0.5}}, "train.schedule.gama", "did you mean 'gamma'?",
     "train.schedule takes: name, step_size, gamma"),
    ({"optimizer": "adamm"}, "train.optimizer.name", "did you mean 'adam'?", "'adam', 'adamw' or 'sgd'"),
    ({"schedule": "cosin"}, "train.schedule.name", "did you mean 'cosine'?", "'one_cycle'"),
    ({"loss": "crossentropy"}, "train.loss", "did you mean 'cross_entropy'?", "'binary_cross_entropy'"),
    ({"validation": "stratifed"}, "train.validation", "did you mean 'stratified'?", "'last', 'stratified' or 'group'"),
    ({"metrics": ["acuracy"]}, "train.metrics", "did you mean 'accuracy'?", "known: accuracy, auc, log_loss"),
])
def test_typos_get_a_suggestion(section: dict, path: str, suggestion: str, listed: str) -> None:
    with pytest.raises(SpecError) as info:
        resolve_recipe(section)
    assert info.value.path == path
    assert suggestion in str(info.value)
    assert listed in str(info.value)


def test_a_train_section_that_is_not_a_mapping() -> None:
    with pytest.raises(SpecError, match="'train' is a mapping") as info:
        resolve_recipe([1, 2])  # type: ignore[arg-type]
    assert info.value.path == "train"


def test_the_spec_train_section_reaches_train(tmp_path, helpers) -> None:
    """A typo in a spec's train: section stops archlab.training.train before any data is read."""
    from archlab.training import train

    with pytest.raises(SpecError, match=r"train\.optimizer\.lrr: unknown key 'lrr'; did you mean 'lr'\?"):
        train(helpers.spec_with(helpers.tiny, optimizer={"lrr": 1}), data="digits", out=tmp_path, verbose=0)
    assert list(tmp_path.iterdir()) == []  # nothing recorded
