"""cv on a graph-form spec with two named inputs (the ``named_task`` fixture), for every task kind:
each fold trains on its rows of both inputs and scores the task's headline metric."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from archlab.cli import run
from archlab.selection import cross_validate
from archlab.tasks import direction_of, get_task

from ..conftest import TASK_KINDS

pytestmark = pytest.mark.usefixtures("one_thread")

SWEEP = "graph.out.layers[0].dense.units=4,16"


@pytest.mark.parametrize("task", TASK_KINDS)
def test_cv_folds_both_named_inputs_and_scores_the_task_metric(tmp_path, named_task, task) -> None:
    _, spec = named_task(task)
    result = cross_validate(spec, None, [SWEEP], folds=2, epochs=1, out=tmp_path)
    metric = get_task(task).default_metrics[0]
    assert (result.metric, result.direction) == (metric, direction_of(metric, task))
    rows = [json.loads(line) for line in (result.run_dir / "cv.jsonl").read_text().splitlines()]
    assert sorted((r["config"], r["fold"]) for r in rows) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(r["train_samples"] == 96 for r in rows)  # half of the 192 training rows of both inputs
    assert all(math.isfinite(r[f"val_{metric}"]) and math.isfinite(r[f"train_{metric}"]) for r in rows)
    means = [c["val_mean"] for c in result.configs]
    best = means.index(max(means) if result.direction == "max" else min(means))
    assert result.best_index == best
    assert [c["values"][SWEEP.partition("=")[0]] for c in result.configs] == [4, 16]


def test_the_cv_command_takes_a_two_input_spec_in_worker_processes(tmp_path, named_task, capsys) -> None:
    _, spec = named_task("regression")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))  # the graph in its order
    here = cross_validate(spec, None, [SWEEP], folds=2, epochs=1, out=tmp_path / "one-process")
    code = run(["cv", str(path), "--sweep", SWEEP, "--folds", "2", "--epochs", "1", "--jobs", "2", "--out",
                str(tmp_path), "-q"])
    out = capsys.readouterr().out
    assert code == 0, out
    run_dir = tmp_path / out.strip().splitlines()[-1].removeprefix("run: ")
    record = json.loads((run_dir / "cv.json").read_text())
    assert (record["metric"], record["direction"]) == ("mse", "min")
    assert len(record["configs"]) == 2 and all(c["folds"] == 2 for c in record["configs"])
    # the workers received both named inputs: the same folds score the same as in one process
    assert [c["val_mean"] for c in record["configs"]] == pytest.approx([c["val_mean"] for c in here.configs])
    assert yaml.safe_load((run_dir / "chosen.yaml").read_text())["inputs"]["ids"]["dtype"] == "long"
