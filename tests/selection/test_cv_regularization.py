"""cv sweeps of train.* paths and of regularization knobs: the values reach training, and the
diagnosis reads the sweep as regularization."""

from __future__ import annotations

import json

import pytest
import yaml

import archlab
from archlab.cli import run
from archlab.exceptions import SpecError
from archlab.selection import _cv, cross_validate, diagnose_regularization

BLOCK = {"input": [1, 8, 8], "task": {"kind": "classification", "classes": 10},
         "layers": ["flatten", {"dense": {"units": 16, "activation": "relu"}}, {"dropout": {"rate": 0.1}},
                    {"residual": {"layers": [{"dense": {"units": 16, "activation": "relu"}}]}},
                    {"dense": {"units": 10, "activation": "softmax"}}]}


@pytest.mark.parametrize(("base_train", "path", "value", "where"), [
    (None, "train.weight_decay", 1e-4, ("optimizer", "weight_decay")),
    # the spec writes the setting in the other form (or the same): the swept value replaces it
    ({"optimizer": {"name": "adamw", "weight_decay": 1e-2}}, "train.weight_decay", 1e-4, ("optimizer", "weight_decay")),
    ({"optimizer": "adamw", "weight_decay": 1e-2}, "train.optimizer.weight_decay", 1e-4, ("optimizer", "weight_decay")),
    ({"weight_decay": 1e-2}, "train.weight_decay", 1e-4, ("optimizer", "weight_decay")),
    ({"optimizer": "adamw"}, "train.optimizer.weight_decay", 1e-3, ("optimizer", "weight_decay")),
    (None, "train.label_smoothing", 0.1, ("label_smoothing",)),
    ({"epochs": 1}, "train.max_norm", 3.0, ("max_norm",)),
    ({"early_stopping": True}, "train.schedule.min_lr", 1e-5, ("schedule", "min_lr")),
])
def test_any_train_path_sets_the_recipe_value(base_train, path, value, where):
    from archlab.training import resolve_recipe

    base = dict(BLOCK) | ({"train": base_train} if base_train is not None else {})
    (config,) = _cv._materialise(base, [(path, [value])], None, {"seed": 0})
    recipe = resolve_recipe(archlab.load(config["spec"]).to_dict().get("train")).model_dump()
    for key in where:
        recipe = recipe[key]
    assert recipe == value
    assert base == dict(BLOCK) | ({"train": base_train} if base_train is not None else {})  # the base is unchanged


@pytest.mark.parametrize(("path", "value"), [("layers[2].dropout.rate", 0.3), ("layers[3].residual.drop_path", 0.2)])
def test_layer_paths_set_the_built_model(path, value):
    (config,) = _cv._materialise(BLOCK, [(path, [value])], None, {"seed": 0})
    model = archlab.build(config["spec"])
    assert (model.net[2].p if "dropout" in path else model.net[3].drop_path) == value


def test_what_each_fold_fixes_or_an_option_sets_cannot_be_swept(small_digits, tmp_path):
    with pytest.raises(SpecError, match=r"without early stopping .* sweeping train.early_stopping changes nothing"):
        cross_validate(BLOCK, small_digits, ["train.early_stopping.patience=1,3"], folds=2, out=tmp_path)
    with pytest.raises(ValueError, match=r"--sweep train.epochs: --epochs sets it for every configuration"):
        cross_validate(BLOCK, small_digits, ["train.epochs=1,2"], folds=2, out=tmp_path, epochs=1)
    with pytest.raises(ValueError, match=r"--sweep train.seed: --seed sets it .* use --repeats"):
        cross_validate(BLOCK, small_digits, ["train.seed=1,2"], folds=2, out=tmp_path)
    assert not list(tmp_path.iterdir())  # refused before anything was trained or written


def test_a_max_norm_sweep_trains_each_value_and_reads_as_regularization(small_digits, tmp_path):
    spec = BLOCK | {"train": {"optimizer": {"name": "adam", "lr": 0.01}}}
    result = cross_validate(spec, small_digits, ["train.max_norm=null,0.05"], folds=2, out=tmp_path, epochs=3,
                            batch_size=32)
    free, tight = result.configs
    assert free["params"] == tight["params"]
    # the bound reached training: incoming weights of norm 0.05 cannot fit even the training folds
    assert tight["train_mean"] < free["train_mean"] - 0.2
    assert result.diagnosis.startswith("under-fitting: more max-norm only lowers validation accuracy")
    assert "Next move: less regularization (train.max_norm none), or more capacity: layers[1].dense.units x2 " \
           "(16 -> 32)." in result.diagnosis


def test_cv_cli_sweeps_train_weight_decay_on_digits(tmp_path, capsys):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "tiny-cnn", "input": [1, 8, 8], "task": {"kind": "classification", "classes": 10},
        "layers": [{"conv2d": {"filters": 2, "kernel_size": 3, "padding": "same", "activation": "relu"}},
                   {"maxpool2d": {"pool_size": 2}}, "flatten", {"dense": {"units": 10, "activation": "softmax"}}],
        "train": {"batch_size": 64, "optimizer": {"name": "adamw", "lr": 0.01}}}))
    code = run(["cv", str(spec), "--data", "digits", "--folds", "2", "--epochs", "1",
                "--sweep", "train.weight_decay=0,1e-4,1e-3", "--out", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert code == 0, out
    (run_dir,) = (tmp_path / "runs").iterdir()
    saved = json.loads((run_dir / "cv.json").read_text())
    assert [c["values"] for c in saved["configs"]] == [{"train.weight_decay": v} for v in (0, 1e-4, 1e-3)]
    assert f"diagnosis: {saved['diagnosis']}" in " ".join(out.split())
    # the regularization reading, its advice naming this spec's paths: the first conv's width, image augmentation
    assert saved["diagnosis"] == diagnose_regularization(saved["configs"], "train.weight_decay", capacity=(
        "layers[0].conv2d.filters x2 (2 -> 4)"), augment="train.augment: [shift, rotate]")
    assert "Next move: " in saved["diagnosis"]
    assert (run_dir / "capacity_curve.png").read_bytes()[:4] == b"\x89PNG"  # drawn against the knob's values
    chosen = archlab.load(run_dir / "chosen.yaml").to_dict()
    # the shortcut is written as the key it stands for, beside the spec's optimizer settings
    assert chosen["train"]["optimizer"] == {"name": "adamw", "lr": 0.01,
                                            "weight_decay": saved["chosen"]["train.weight_decay"]}


def test_exponent_notation_is_a_number_as_the_issue_writes_it():
    from archlab.selection import parse_sweeps

    assert parse_sweeps(["train.weight_decay=0,1e-4,1E-3,2.5e-2"]) == [("train.weight_decay", [0, 1e-4, 1e-3, 0.025])]
    assert parse_sweeps(["x=1e,e5"]) == [("x", ["1e", "e5"])]  # not numbers: left as YAML reads them
