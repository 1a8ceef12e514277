"""Graph-form specs with several named inputs through train, evaluate and predict, for every task
kind (the ``named_task`` fixture: npz arrays ``x/ids`` and ``x/num``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import archlab
from archlab.cli import run
from archlab.exceptions import SpecError
from archlab.training import evaluate_run, predict_run, train

from ..conftest import TASK_KINDS

pytestmark = pytest.mark.usefixtures("one_thread")


def _baseline(task: str, data: str) -> float:
    """The test loss of always predicting the training targets' mean (or class shares): a model that
    learned from its inputs must do better."""
    ds = archlab.data.load_dataset(data)
    y_train, y_test = ds.y_train, ds.y_test
    if task == "classification":
        share = np.bincount(y_train, minlength=3) / len(y_train)
        return float(-np.log(share[y_test]).mean())
    if task in ("binary", "multilabel"):
        p = y_train.mean(axis=0)
        return float(-(y_test * np.log(p) + (1 - y_test) * np.log(1 - p)).mean())
    return float(((y_test - y_train.mean()) ** 2).mean())


@pytest.mark.parametrize("task", TASK_KINDS)
def test_a_two_input_spec_trains_evaluates_and_predicts_for_every_task(tmp_path, named_task, task) -> None:
    data, spec = named_task(task)
    spec["train"]["epochs"] = 12
    result = train(spec, out=tmp_path, verbose=0)
    assert result.test_metrics["loss"] < 0.8 * _baseline(task, data)  # it learned from both inputs
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["train_samples"] + summary["val_samples"] == 192 and summary["test_samples"] == 48

    evaluation = evaluate_run(result.run_dir, weights="last")  # the weights training tested
    assert evaluation["metrics"]["loss"] == pytest.approx(result.test_metrics["loss"], rel=1e-5)
    assert evaluation["samples"] == 48

    sample = tmp_path / "two.npz"
    np.savez(sample, ids=np.array([[1, 2, 3], [7, 8, 9]]), num=np.zeros((2, 4), np.float32))
    predictions = predict_run(result.run_dir, sample)
    assert len(predictions) == 2
    model = archlab.build(spec)
    assert set(model.input_names) == {"ids", "num"}


def test_the_model_reads_its_inputs_by_name_not_by_position(tmp_path, named_task) -> None:
    """npz archives list arrays in any order; the data set's order must not decide which input is which."""
    data, spec = named_task("regression")
    spec["inputs"] = {"num": spec["inputs"]["num"], "ids": spec["inputs"]["ids"]}  # the other order
    result = train(spec, out=None, verbose=0, epochs=1)
    assert np.isfinite(result.test_metrics["loss"])


def test_an_input_the_data_does_not_provide_is_named_with_those_it_does(tmp_path, named_task, capsys) -> None:
    data, spec = named_task("binary")
    spec["inputs"]["numbers"] = spec["inputs"].pop("num")
    spec["graph"]["dense"]["from"] = "numbers"
    with pytest.raises(SpecError, match=r"input 'numbers' is not one .* provides; it provides ids \(3,\), "
                                        r"num \(4,\)") as caught:
        train(spec, out=tmp_path, verbose=0)
    assert caught.value.path == "inputs.numbers"
    assert list(tmp_path.iterdir()) == []  # refused before a run directory was made

    capsys.readouterr()
    code = run(["train", _write(tmp_path, spec), "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: inputs.numbers: ") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def test_named_data_for_a_one_input_spec_says_to_write_the_graph_form(tmp_path, named_task) -> None:
    data, _ = named_task("binary")
    spec = {"name": "one", "input": [4], "task": {"kind": "binary"},
            "layers": [{"dense": {"units": 1, "activation": "sigmoid"}}], "train": {"data": data, "epochs": 1}}
    with pytest.raises(SpecError, match=r"gives the named inputs ids \(3,\), num \(4,\), but the spec has one "
                                        r"input: write it in the graph form with inputs: \{ids: \[3\], num: \[4\]\}"):
        train(spec, out=None, verbose=0)


def test_a_shape_that_differs_names_the_input(named_task) -> None:
    _, spec = named_task("binary")
    spec["inputs"]["num"] = [5]
    with pytest.raises(SpecError, match=r"inputs.num is \(5,\) but .* gives 'num' samples of shape \(4,\): set "
                                        r"inputs.num: \[4\]"):
        train(spec, out=None, verbose=0)


def test_streaming_named_inputs_trains_the_same_weights_as_memory(named_task) -> None:
    _, spec = named_task("binary")
    memory = train(spec, out=None, verbose=0, data_loading="memory")
    stream = train(spec, out=None, verbose=0, data_loading="stream")
    assert stream.summary["data_loading"] == "stream"
    assert stream.history.history["loss"] == pytest.approx(memory.history.history["loss"], rel=1e-6)


def test_predict_asks_for_every_input_and_the_same_number_of_samples(tmp_path, named_task) -> None:
    _, spec = named_task("binary")
    run = train(spec, out=tmp_path, verbose=0, epochs=1).run_dir
    partial = tmp_path / "partial.npz"
    np.savez(partial, ids=np.zeros((2, 3), np.int64))
    with pytest.raises(SpecError, match=r"partial.npz lacks the input\(s\) num; it holds ids"):
        predict_run(run, partial)
    uneven = tmp_path / "uneven.npz"
    np.savez(uneven, ids=np.zeros((2, 3), np.int64), num=np.zeros((3, 4), np.float32))
    with pytest.raises(SpecError, match=r"different numbers of samples \(ids: 2, num: 3\)"):
        predict_run(run, uneven)
    with pytest.raises(SpecError, match=r"give them as one .npz file with an array per input"):
        predict_run(run, _csv(tmp_path))


def _csv(tmp_path):
    path = tmp_path / "row.csv"
    path.write_text("1,2,3,0,0,0,0\n")
    return path


def _write(tmp_path, spec) -> str:
    import yaml

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)
