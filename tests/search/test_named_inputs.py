"""search over a graph-form space with two named inputs (the ``named_task`` fixture), for every
task kind: the default objective is the task's headline validation metric, with its direction."""

from __future__ import annotations

import math

import pytest
import yaml

from archlab.cli import run
from archlab.search import search
from archlab.tasks import direction_of, get_task

from ..conftest import TASK_KINDS

pytestmark = pytest.mark.usefixtures("one_thread")


def _space(spec: dict) -> dict:
    spec["train"]["epochs"] = 1
    spec["graph"]["out"]["layers"][0]["dense"]["units"] = {"choice": [4, 16]}
    return spec


@pytest.mark.parametrize("task", TASK_KINDS)
def test_search_trains_two_input_trials_on_the_task_metric(tmp_path, named_task, task) -> None:
    _, spec = named_task(task)
    result = search(_space(spec), None, 2, pruner="none", sampler="random", out=tmp_path)
    metric = get_task(task).default_metrics[0]
    (objective,) = result.objectives
    assert objective.name == f"val_{metric}"
    assert objective.direction == ("maximize" if direction_of(metric, task) == "max" else "minimize")
    values = [t.value for t in result.study.trials]
    assert len(values) == 2 and all(math.isfinite(v) for v in values)
    best = max(values) if objective.direction == "maximize" else min(values)
    assert result.best[0]["values"] == {f"val_{metric}": best}
    chosen = yaml.safe_load(open(result.best[0]["spec_path"]).read())  # noqa: SIM115
    assert chosen["graph"]["out"]["layers"][0]["dense"]["units"] in (4, 16) and set(chosen["inputs"]) == {"ids", "num"}


def test_the_search_command_runs_two_input_trials_in_worker_processes(tmp_path, named_task, capsys) -> None:
    _, spec = named_task("regression")
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(_space(spec), sort_keys=False))
    code = run(["search", str(path), "--trials", "2", "--workers", "2", "--pruner", "none", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "search: 2/2 trials, best val_mse " in out  # the progress line names the default objective
    run_dir = tmp_path / "search-two-inputs-regression"
    assert out.strip().splitlines()[-1] == f"run: {run_dir}"
    assert set(yaml.safe_load((run_dir / "best.yaml").read_text())["inputs"]) == {"ids", "num"}
