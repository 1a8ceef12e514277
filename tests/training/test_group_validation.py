"""validation: group: whole groups held out of training, refused on data without groups."""

from __future__ import annotations

import numpy as np
import pytest

from archlab.cli import run
from archlab.data import Dataset
from archlab.exceptions import SpecError
from archlab.training import prepare_splits, resolve_recipe

SPEC = {"name": "lin", "input": [2], "layers": [{"dense": {"units": 2}}]}


def grouped(n: int = 60, groups: np.ndarray | None = None) -> Dataset:
    """Rows whose first feature is their index, so each split row maps back to its group."""
    x = np.column_stack([np.arange(n), np.zeros(n)]).astype(np.float32)
    y = np.arange(n) % 2
    g = np.array([f"s{i % 6}" for i in range(n)]) if groups is None else groups
    return Dataset("grouped", x, y, x[:4], y[:4], "classification", ("a", "b"), "memory",
                   groups_train=g, groups_test=g[:4])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_validation_groups_are_never_trained_on(seed: int) -> None:
    data = grouped()
    recipe = resolve_recipe({"validation": "group", "validation_split": 0.3, "seed": seed})
    splits = prepare_splits(data, recipe, "classification", SPEC)
    train_rows = splits.x[:, 0].long().numpy()
    val_rows = splits.x_val[:, 0].long().numpy()
    train_groups, val_groups = set(data.groups_train[train_rows]), set(data.groups_train[val_rows])
    assert train_groups.isdisjoint(val_groups) and val_groups
    assert train_groups | val_groups == set(data.groups_train)
    # every row once, and 30% of the 6 groups (sklearn's GroupShuffleSplit rounds up: 2) held out
    assert sorted([*train_rows, *val_rows]) == list(range(60)) and len(val_groups) == 2
    np.testing.assert_array_equal(splits.y_val.numpy(), data.y_train[val_rows])


def test_validation_group_refused_without_groups() -> None:
    x, y = np.zeros((8, 2), np.float32), np.arange(8) % 2
    plain = Dataset("plain", x, y, x, y, "classification", ("a", "b"), "memory")
    recipe = resolve_recipe({"validation": "group"})
    with pytest.raises(SpecError, match="train.validation: group holds out whole groups, but plain has none") as info:
        prepare_splits(plain, recipe, "classification", SPEC)
    assert info.value.path == "train.validation"
    with pytest.raises(SpecError, match=r"only \['s0'\]"):
        prepare_splits(grouped(groups=np.array(["s0"] * 60)), recipe, "classification", SPEC)


def test_cli_train_validation_group_on_digits_exits_2(tmp_path, capsys: pytest.CaptureFixture) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\ninput: [1, 8, 8]\nlayers:\n- flatten: {}\n- dense: {units: 10}\n"
                    "train: {data: digits, epochs: 1}\n")
    code = run(["train", str(spec), "--validation", "group", "--out", str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "digits has none" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()
