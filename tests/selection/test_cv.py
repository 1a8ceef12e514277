"""cross_validate on a small digits subset: numbers, outputs, bad input, resume, parallel folds."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

import archlab
from archlab.exceptions import SpecError
from archlab.selection import _cv, cross_validate, parse_sweeps

SWEEP = ["layers[0].conv2d.filters=1,4"]


@pytest.fixture(scope="module")
def result(tiny_cnn, small_digits, tmp_path_factory):
    return cross_validate(tiny_cnn, small_digits, SWEEP, folds=3, out=tmp_path_factory.mktemp("cv"),
                          learning_curve=True, fractions=(0.5, 1.0))


def test_parse_sweeps_reads_yaml_scalars():
    assert parse_sweeps(["a.b=1,2.5,same,null,true"]) == [("a.b", [1, 2.5, "same", None, True])]


@pytest.mark.parametrize("bad", ["layers[0].conv2d.filters", "=1,2", "x=", "x=1,,2"])
def test_parse_sweeps_rejects_malformed(bad):
    with pytest.raises(ValueError, match="--sweep"):
        parse_sweeps([bad])


def test_table_has_the_measures(result, tiny_cnn):
    assert [c["values"] for c in result.configs] == [{"layers[0].conv2d.filters": 1}, {"layers[0].conv2d.filters": 4}]
    for row in result.configs:
        assert row["folds"] == 3 and 0 <= row["val_mean"] <= 1 and row["val_std"] >= 0
        assert row["gap"] == pytest.approx(row["train_mean"] - row["val_mean"])
        assert row["seconds"] > 0
    spec4 = archlab.spec.set_at(tiny_cnn, "layers[0].conv2d.filters", 4)
    assert result.configs[1]["params"] == archlab.analyze(spec4).total_params
    assert result.configs[1]["flops"] == archlab.analyze(spec4).flops
    assert result.diagnosis.split(":")[0] in ("under-fitting", "over-fitting", "balanced")


def test_outputs_exist_and_parse(result):
    run = result.run_dir
    assert run.name.startswith("cv-tiny-cnn-")
    lines = [json.loads(line) for line in (run / "cv.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "fold" for r in lines) == 6 and sum(r["kind"] == "learning_curve" for r in lines) == 6
    saved = json.loads((run / "cv.json").read_text())
    assert saved["one_se_index"] == result.one_se_index and saved["chosen_rule"] == "one-standard-error"
    rows = list(csv.DictReader((run / "cv.csv").open()))
    assert [int(r["layers[0].conv2d.filters"]) for r in rows] == [1, 4]
    chosen = archlab.load(run / "chosen.yaml")
    assert chosen.to_dict()["layers"][0]["conv2d"]["filters"] == result.chosen["values"]["layers[0].conv2d.filters"]
    assert "one standard error" in (run / "chosen.yaml").read_text()
    for png in ("capacity_curve.png", "learning_curve.png"):
        assert (run / png).read_bytes()[:4] == b"\x89PNG"
    assert [r["fraction"] for r in result.learning_curve] == [0.5, 1.0]
    assert result.learning_answer


def test_bad_configurations_are_reported_before_training(tiny_cnn, small_digits, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(_cv, "_fit_one", lambda task: calls.append(task))
    sweeps = [("layers[0].conv2d.filters", [4, "wide", -1])]
    with pytest.raises(SpecError) as info:
        cross_validate(tiny_cnn, small_digits, sweeps, folds=2, out=tmp_path)
    message = str(info.value)
    assert "2 of 3 sweep configuration(s) are invalid" in message and "nothing was trained" in message
    assert "configuration 1 (layers[0].conv2d.filters='wide')" in message
    assert "configuration 2 (layers[0].conv2d.filters=-1)" in message
    assert "configuration 0" not in message
    assert calls == [] and not list(tmp_path.iterdir())


def test_a_path_that_does_not_exist(tiny_cnn, small_digits, tmp_path):
    with pytest.raises(SpecError, match=r"configuration 0 \(layers\[9\]\.conv2d\.filters=8\)"):
        cross_validate(tiny_cnn, small_digits, ["layers[9].conv2d.filters=8"], folds=2, out=tmp_path)


def test_a_value_that_breaks_the_output_shape(tiny_cnn, small_digits, tmp_path):
    with pytest.raises(SpecError, match="layers\\[3\\].dense.units=7.*10 classes"):
        cross_validate(tiny_cnn, small_digits, ["layers[3].dense.units=10,7"], folds=2, out=tmp_path)


def test_fewer_samples_per_class_than_folds(tiny_cnn, small_digits, tmp_path):
    import dataclasses

    few = dataclasses.replace(small_digits, x_train=small_digits.x_train[:40], y_train=small_digits.y_train[:40])
    with pytest.raises(ValueError, match=r"class \d+ has only \d sample\(s\), fewer than --folds 5"):
        cross_validate(tiny_cnn, few, SWEEP, folds=5, out=tmp_path)


def test_resume_skips_finished_folds(tiny_cnn, small_digits, tmp_path, monkeypatch):
    real = _cv._fit_one
    calls = []

    def crash_after_two(task):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(task)
        return real(task)

    monkeypatch.setattr(_cv, "_fit_one", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        cross_validate(tiny_cnn, small_digits, SWEEP, folds=2, out=tmp_path)
    (run,) = tmp_path.iterdir()
    assert len((run / "cv.jsonl").read_text().splitlines()) == 2  # what finished is on disk
    calls.clear()
    monkeypatch.setattr(_cv, "_fit_one", lambda task: calls.append(task) or real(task))
    resumed = cross_validate(tiny_cnn, small_digits, SWEEP, folds=2, out=tmp_path, resume=run)
    assert len(calls) == 2 and resumed.trained == 2 and resumed.run_dir == run
    fresh = cross_validate(tiny_cnn, small_digits, SWEEP, folds=2, out=tmp_path / "fresh")
    assert [c["val_mean"] for c in resumed.configs] == [c["val_mean"] for c in fresh.configs]


def test_resume_with_other_arguments_is_refused(tiny_cnn, small_digits, tmp_path):
    first = cross_validate(tiny_cnn, small_digits, ["layers[0].conv2d.filters=1"], folds=2, out=tmp_path)
    with pytest.raises(ValueError, match="differs from the interrupted one in sweeps"):
        cross_validate(tiny_cnn, small_digits, ["layers[0].conv2d.filters=2"], folds=2, resume=first.run_dir)


def test_two_jobs_give_the_same_numbers(tiny_cnn, small_digits, tmp_path):
    one = cross_validate(tiny_cnn, small_digits, SWEEP, folds=2, out=tmp_path / "one", jobs=1)
    two = cross_validate(tiny_cnn, small_digits, SWEEP, folds=2, out=tmp_path / "two", jobs=2)
    key = ("val_mean", "val_std", "train_mean", "params", "flops")
    assert [[c[k] for k in key] for c in one.configs] == [[c[k] for k in key] for c in two.configs]
    assert yaml.safe_load((one.run_dir / "chosen.yaml").read_text()) == yaml.safe_load(
        (two.run_dir / "chosen.yaml").read_text())
