"""archlab search on the command line: the report it prints, and one message with exit code 2 for bad input."""

from __future__ import annotations

import pytest
import yaml

from archlab.cli import run

pytestmark = pytest.mark.usefixtures("one_thread")

SPACE = {"name": "tiny", "input": [1, 8, 8], "layers": [
    {"flatten": None}, {"dense": {"units": {"choice": [8, 32]}, "activation": "relu"}},
    {"dense": {"units": 10, "activation": "softmax"}}], "train": {"epochs": 2}}


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    return path


def test_search_prints_progress_the_trials_and_the_best_spec(capsys, tmp_path, space):
    code, out, err = cli(capsys, "search", str(space), "--data", "digits", "--trials", "3", "--pruner", "none",
                         "--max-params", "1000", "--out", str(tmp_path))
    assert code == 0, err
    assert "search: 0/3 trials, no complete trial yet, 0 pruned" in out  # the plain progress line (not a TTY)
    assert "search: 3/3 trials" in out
    assert "study 'tiny': 3 trials:" in out and "best: trial" in out
    assert f"run: {tmp_path / 'search-tiny'}" in out
    best = yaml.safe_load((tmp_path / "search-tiny" / "best.yaml").read_text())
    assert best["layers"][1]["dense"]["units"] == 8  # 32 units is 2,410 parameters, over --max-params
    code, again, _ = cli(capsys, "search", "--report", "tiny", "--storage",
                         f"sqlite:///{tmp_path / 'search-tiny' / 'study.db'}")
    assert code == 0 and "study 'tiny': 3 trials:" in again and "over budget" not in again


@pytest.mark.parametrize(("args", "message"), [
    (["--report", "x"], "--report needs --storage URL"),
    ([], "give a SPACE spec to search"),
    (["--sampler", "bayes"], "--sampler 'bayes': choose one of tpe, random, grid, nsga2, cmaes"),
    (["--objective", "accuracy", "--objective", "params", "--pruner", "median"], "--pruner median needs a single"),
    (["--objective", "speed"], "--objective 'speed': use a validation metric"),
])
def test_bad_options_exit_2_with_one_message(capsys, tmp_path, space, args, message):
    first = [str(space)] if args[:1] != ["--report"] and args else []
    code, out, err = cli(capsys, "search", *first, *args, "--out", str(tmp_path))
    assert code == 2 and message in err and "Traceback" not in err


def test_a_malformed_marker_exits_2_naming_its_path(capsys, tmp_path):
    bad = {**SPACE, "layers": [SPACE["layers"][0], {"dense": {"units": {"choice": []}}}, SPACE["layers"][2]]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    code, _, err = cli(capsys, "search", str(path), "--out", str(tmp_path))
    assert code == 2 and "layers[1].dense.units: {choice: ...} needs a non-empty list of options" in err


def test_an_unreachable_storage_is_one_line(capsys, tmp_path, space):
    code, _, err = cli(capsys, "search", str(space), "--storage", "postgresql://u:pw@127.0.0.1:9/db",
                       "--out", str(tmp_path))
    assert code == 1 and err.count("\n") == 1 and "cannot open the study storage postgresql://u:***@" in err


def test_ctrl_c_is_one_line_and_exit_code_130(capsys, tmp_path, space, monkeypatch):
    import archlab.search

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(archlab.search, "search", interrupted)  # the command imports it when it runs
    code, _, err = cli(capsys, "search", str(space), "--out", str(tmp_path))
    assert code == 130 and err.startswith("interrupted: the finished trials are kept") and "Traceback" not in err


def test_report_prints_a_study_that_archlab_did_not_create(capsys, tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 'other.db'}"
    study = optuna.create_study(study_name="plain", storage=url)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    code, out, err = cli(capsys, "search", "--report", "plain", "--storage", url)
    assert code == 0, err
    assert "study 'plain': 3 trials: 3 complete" in out and f"best: trial {study.best_trial.number}, value0" in out
