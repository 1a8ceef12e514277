"""Search markers as Optuna distributions: conditional sampling, grids, labels, differences."""

from __future__ import annotations

import optuna
import pytest

from archlab.exceptions import SpecError
from archlab.search import choice_labels, dimensions, grid_space, sample, space_differences

SPACE = {
    "input": [4],
    "layers": [
        {"choice": [
            {"dense": {"units": {"int": [8, 64], "step": 8}, "activation": "relu"}},
            {"residual": {"layers": [{"dense": {"units": 4, "activation": {"choice": ["relu", "tanh"]}}}]}},
        ]},
        {"dropout": {"rate": {"float": [0.0, 0.5]}}},
        {"dense": {"units": 3}},
    ],
    "train": {"optimizer": {"name": "adam", "lr": {"float": [1e-4, 1e-1], "log": True}}},
}


def test_dimensions_name_every_marker_by_its_path_including_those_inside_options():
    paths = [d.path for d in dimensions(SPACE)]
    assert paths == ["layers[0]", "layers[0].choice[0].dense.units", "layers[0].choice[1].residual.layers[0].dense"
                     ".activation", "layers[1].dropout.rate", "train.optimizer.lr"]
    assert [d.conditional for d in dimensions(SPACE)] == [False, True, True, False, False]
    assert [d.size for d in dimensions(SPACE)] == [2, 8, 2, None, None]


def test_a_chosen_option_samples_only_its_own_markers():
    trial = optuna.trial.FixedTrial({"layers[0]": "residual",
                                     "layers[0].choice[1].residual.layers[0].dense.activation": "tanh",
                                     "layers[1].dropout.rate": 0.25, "train.optimizer.lr": 0.01})
    point = sample(trial, SPACE)
    assert point["layers"][0] == {"residual": {"layers": [{"dense": {"units": 4, "activation": "tanh"}}]}}
    assert point["layers"][1] == {"dropout": {"rate": 0.25}}
    assert point["train"]["optimizer"]["lr"] == 0.01
    assert set(trial.params) == {"layers[0]", "layers[0].choice[1].residual.layers[0].dense.activation",
                                 "layers[1].dropout.rate", "train.optimizer.lr"}  # dense.units never asked


def test_sampling_with_a_real_study_stays_inside_the_bounds_and_the_step():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(40):
        trial = study.ask()
        point = sample(trial, SPACE)
        study.tell(trial, 0.0)
        first = point["layers"][0]
        if "dense" in first:
            assert first["dense"]["units"] in range(8, 65, 8)
        else:
            assert first["residual"]["layers"][0]["dense"]["activation"] in ("relu", "tanh")
        assert 0.0 <= point["layers"][1]["dropout"]["rate"] <= 0.5
        assert 1e-4 <= point["train"]["optimizer"]["lr"] <= 1e-1
    kinds = {t.params["layers[0]"] for t in study.trials}
    assert kinds == {"dense", "residual"}


def test_choice_labels_are_readable_and_unique():
    assert choice_labels((16, 32)) == [16, 32]
    assert choice_labels(({"name": "wide", "dense": {"units": 9}}, [1, 2])) == ["wide", "[1,2]"]
    assert choice_labels(({"dense": {"units": 1}}, {"dense": {"units": 2}})) == ["dense", "dense#1"]


def test_grid_space_enumerates_every_marker_and_refuses_a_float_without_step():
    space = {"a": {"int": [1, 7], "step": 3}, "b": {"choice": ["x", "y"]}, "c": {"float": [0.1, 0.3], "step": 0.1}}
    assert grid_space(space) == {"a": [1, 4, 7], "b": ["x", "y"], "c": [0.1, 0.2, 0.3]}
    with pytest.raises(SpecError, match=r"layers\[1\].dropout.rate: grid search needs every float marker"):
        grid_space(SPACE)


@pytest.mark.parametrize(("marker", "message"), [
    ({"int": [5, 1]}, r"layers\[1\].dropout.rate: \{int: \[5, 1\]\} has low > high"),
    ({"choice": []}, r"layers\[1\].dropout.rate: \{choice: ...\} needs a non-empty list"),
    ({"float": [0.1, 0.2], "lg": True}, r"unknown key 'lg' in a float marker; did you mean 'log'\?"),
])
def test_malformed_markers_are_spec_errors_with_their_path(marker, message):
    space = {**SPACE, "layers": [SPACE["layers"][0], {"dropout": {"rate": marker}}, SPACE["layers"][2]]}
    with pytest.raises(SpecError, match=message):
        dimensions(space)


def test_a_spec_without_markers_is_not_a_space():
    with pytest.raises(SpecError, match="no search markers"):
        dimensions({"input": [4], "layers": [{"dense": {"units": 2}}]})


def test_space_differences_name_the_changed_paths():
    changed = {**SPACE, "layers": [SPACE["layers"][0], {"dropout": {"rate": {"float": [0.0, 0.7]}}},
                                   SPACE["layers"][2]], "name": "x"}
    assert space_differences(SPACE, changed) == [
        "layers[1].dropout.rate: {float: [0.0, 0.5]} -> {float: [0.0, 0.7]}", "name: added"]
    assert space_differences(SPACE, SPACE) == []


def test_the_example_digits_space_has_seven_dimensions_and_valid_points():
    from pathlib import Path

    from archlab.builder import parse
    from archlab.spec import first_point, load

    space = load(Path(__file__).parents[2] / "examples" / "search" / "digits-space.yaml").to_dict()
    top = [d for d in dimensions(space) if not d.conditional]
    assert len(dimensions(space)) == 8 and len(top) == 6  # + filters and kernel size inside the conv2d option
    parse(first_point(space))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        parse(sample(study.ask(), space))
