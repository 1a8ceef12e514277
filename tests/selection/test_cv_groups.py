"""cv --groups: folds of whole groups (leave-one-group-out, GroupKFold), scored per held-out group."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from archlab.cli import run
from archlab.selection import cross_validate

SPEAKERS = np.array(["ann", "bob", "cy", "dee", "eve", "fay"])


@pytest.fixture(scope="module")
def grouped(small_digits):
    """small_digits with six made-up speakers, 50 rows each (row i: speaker i % 6)."""
    return dataclasses.replace(small_digits, groups_train=SPEAKERS[np.arange(300) % 6],
                               groups_test=SPEAKERS[np.arange(len(small_digits.y_test)) % 6])


@pytest.mark.parametrize("folds", [None, 3])
def test_group_folds_never_share_a_group_and_score_each(grouped, tiny_cnn, tmp_path, folds):
    result = cross_validate(tiny_cnn, grouped, folds=folds, groups="speaker", out=tmp_path, epochs=1)
    run_dir = result.run_dir
    held_out = json.loads((run_dir / "folds.json").read_text())["validation"]
    assert len(held_out) == (6 if folds is None else 3)  # leave-one-group-out, else GroupKFold(3)
    for val in held_out:
        train = np.setdiff1d(np.arange(300), val)
        assert set(grouped.groups_train[train]) & set(grouped.groups_train[val]) == set()
    row = result.configs[0]
    assert row["folds"] == len(held_out) and sorted(row["groups"]) == sorted(SPEAKERS)
    # a fold's validation accuracy is the row-weighted mean of its groups' own scores (50 rows each)
    fold_rows = [json.loads(line) for line in (run_dir / "cv.jsonl").read_text().splitlines()]
    for fold in fold_rows:
        assert fold["val_accuracy"] == pytest.approx(np.mean(list(fold["val_groups"].values())), abs=1e-6)
        assert len(fold["val_groups"]) == 6 // len(held_out)
    saved = json.loads((run_dir / "cv.json").read_text())
    assert saved["groups"] == "speaker" and saved["configs"][0]["groups"] == row["groups"]


def test_groups_refused_without_groups_and_bad_folds(small_digits, grouped, tiny_cnn, tmp_path):
    with pytest.raises(ValueError, match="--groups speaker: digits has no groups to hold out"):
        cross_validate(tiny_cnn, small_digits, groups="speaker", out=tmp_path)
    with pytest.raises(ValueError, match="the data has 6 groups, so --folds is 2 to 6"):
        cross_validate(tiny_cnn, grouped, folds=7, groups="speaker", out=tmp_path)
    assert list(tmp_path.iterdir()) == []  # refused before any run directory


def test_cli_groups_on_digits_exits_2(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\ninput: [1, 8, 8]\nlayers:\n- flatten: {}\n- dense: {units: 10}\n")
    code = run(["cv", str(spec), "--data", "digits", "--groups", "speaker", "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "digits has no groups" in err and "Traceback" not in err
