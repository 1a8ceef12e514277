"""archlab search on the command line: the report it prints, and one message with exit code 2 for bad input."""

from __future__ import annotations

import json

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
    (["--report", "x"], "--report x: no local study at {out}/search-x/study.db; give the --out the search used, "
                        "or --storage URL"),
    ([], "give a SPACE spec to search"),
    (["--sampler", "bayes"], "--sampler 'bayes': choose one of tpe, random, grid, nsga2"),
    (["--sampler", "cmaes"], "--sampler 'cmaes': choose one of tpe, random, grid, nsga2"),
    (["--objective", "accuracy", "--objective", "params", "--pruner", "median"], "--pruner median needs a single"),
    (["--objective", "speed"], "--objective 'speed': use a validation metric"),
    (["--max-params", "-5"], "Invalid value for '--max-params'"),
    (["--max-flops", "0"], "Invalid value for '--max-flops'"),
    (["--timeout", "0"], "--timeout must be a positive number, got 0.0"),
    (["--timeout", "-3"], "--timeout must be a positive number, got -3.0"),
    (["--seed", "-1"], "Invalid value for '--seed'"),
])
def test_bad_options_exit_2_with_one_message_before_any_work(capsys, tmp_path, space, args, message):
    first = [str(space)] if args[:1] != ["--report"] and args else []
    code, out, err = cli(capsys, "search", *first, *args, "--data", "digits", "--out", str(tmp_path))
    assert code == 2 and message.format(out=tmp_path) in " ".join(err.split()) and "Traceback" not in err
    assert not (tmp_path / "search-tiny").exists()  # refused before the study or its folder was made


def test_the_api_refuses_non_positive_budgets_too(tmp_path):
    from archlab.search import search

    for option, value in (("max_params", -5), ("max_flops", 0), ("timeout", 0.0), ("epochs", 0)):
        with pytest.raises(ValueError, match=f"--{option.replace('_', '-')} must be a positive number"):
            search(SPACE, "digits", 2, out=tmp_path, **{option: value})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("inside", [False, True])
def test_an_out_that_is_a_file_is_refused_before_any_work(capsys, tmp_path, space, inside):
    target = tmp_path / "a-file"
    target.write_text("not a folder")
    out = target / "runs" if inside else target
    code, _, err = cli(capsys, "search", str(space), "--data", "digits", "--out", str(out))
    assert code == 2 and "Traceback" not in err
    expected = f"--out {out}: {target} is a file" if inside else f"--out {target} is a file"
    assert expected in err and "give the folder that receives the run directories" in err


def test_data_defaults_to_the_space_train_data_else_it_asks_for_data(capsys, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE))  # no train.data
    code, _, err = cli(capsys, "search", str(path), "--trials", "1", "--out", str(tmp_path))
    assert code == 2 and ("train.data: no data set: pass --data NAME (audio:DIR, criteo-sample, csv:PATH, digits, "
                          "fsdd, mnist, movielens-100k, multi30k, npy:DIR, npz:PATH or text:PATH[,PATH]) or set "
                          "train.data") in err
    path.write_text(yaml.safe_dump({**SPACE, "train": {**SPACE["train"], "data": "digits"}}))
    code, out, err = cli(capsys, "search", str(path), "--trials", "1", "--pruner", "none", "--quiet",
                         "--out", str(tmp_path))
    assert code == 0, err
    record = json.loads((tmp_path / "search-tiny" / "search.json").read_text())
    assert record["data"] == "digits" and "study 'tiny': 1 trials: 1 complete" in out
    code, again, err = cli(capsys, "search", "--report", "tiny", "--out", str(tmp_path))  # the local study
    assert code == 0 and "study 'tiny': 1 trials: 1 complete" in again, err


def test_batch_size_overrides_every_trial_and_is_part_of_the_study(capsys, tmp_path, space):
    import optuna

    args = ["search", str(space), "--data", "digits", "--pruner", "none", "--quiet", "--out", str(tmp_path)]
    code, _, err = cli(capsys, *args, "--trials", "1", "--batch-size", "7")
    assert code == 0, err
    [trial] = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'search-tiny' / 'study.db'}").trials
    assert yaml.safe_load(trial.user_attrs["spec"])["train"]["batch_size"] == 7
    code, _, err = cli(capsys, *args, "--trials", "2", "--batch-size", "9")  # not comparable: refused
    assert code == 2 and "batch_size: 7 -> 9" in err
    code, _, err = cli(capsys, *args, "--batch-size", "0")
    assert code == 2 and "Invalid value for '--batch-size'" in err


def test_the_bare_postgresql_url_of_the_docs_works_against_a_live_server(capsys, tmp_path, space, postgres_url):
    import optuna

    scheme, rest = postgres_url.split("://", 1)
    assert scheme == "postgresql+psycopg2"  # the fixture names the driver; the docs' form does not
    bare = f"postgresql://{rest}"
    code, out, err = cli(capsys, "search", str(space), "--data", "digits", "--trials", "2", "--pruner", "none",
                         "--quiet", "--storage", bare, "--study", "bare-url", "--out", str(tmp_path))
    assert code == 0, err
    assert "study 'bare-url': 2 trials: 2 complete" in out
    trials = optuna.load_study(study_name="bare-url", storage=postgres_url).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    code, again, err = cli(capsys, "search", "--report", "bare-url", "--storage", bare)
    assert code == 0 and "study 'bare-url': 2 trials: 2 complete" in again, err


def test_a_malformed_marker_exits_2_naming_its_path(capsys, tmp_path):
    bad = {**SPACE, "layers": [SPACE["layers"][0], {"dense": {"units": {"choice": []}}}, SPACE["layers"][2]]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    code, _, err = cli(capsys, "search", str(path), "--out", str(tmp_path))
    assert code == 2 and "layers[1].dense.units: {choice: ...} needs a non-empty list of options" in err


def test_an_unreachable_storage_is_one_line(capsys, tmp_path, space):
    code, _, err = cli(capsys, "search", str(space), "--data", "digits", "--storage", "postgresql://u:pw@127.0.0.1:9/db",
                       "--out", str(tmp_path))
    assert code == 1 and err.count("\n") == 1 and "cannot open the study storage postgresql://u:***@" in err


def test_ctrl_c_is_one_line_and_exit_code_130(capsys, tmp_path, space, monkeypatch):
    import archlab.search

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(archlab.search, "search", interrupted)  # the command imports it when it runs
    code, _, err = cli(capsys, "search", str(space), "--out", str(tmp_path))
    assert code == 130 and "Traceback" not in err
    assert err == (f"interrupted: the finished trials are kept in the study; continue with: archlab search {space} "
                   f"--out {tmp_path}\n")


def test_report_prints_a_study_that_archlab_did_not_create(capsys, tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 'other.db'}"
    study = optuna.create_study(study_name="plain", storage=url)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    code, out, err = cli(capsys, "search", "--report", "plain", "--storage", url)
    assert code == 0, err
    assert "study 'plain': 3 trials: 3 complete" in out and f"best: trial {study.best_trial.number}, value0" in out


def test_the_report_counts_a_surplus_trial_apart_from_failed_ones(capsys, tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 'raced.db'}"
    study = optuna.create_study(study_name="raced", storage=url, directions=["minimize"])
    study.optimize(lambda t: (t.suggest_float("x", -1, 1)) ** 2, n_trials=2)
    late, broken = study.ask(), study.ask()
    late.set_user_attr("surplus", "the study already had 2 trials when this one began")
    study.tell(late, state=optuna.trial.TrialState.FAIL)
    study.tell(broken, state=optuna.trial.TrialState.FAIL)
    code, out, err = cli(capsys, "search", "--report", "raced", "--storage", url)
    assert code == 0, err
    assert ("study 'raced': 4 trials: 2 complete, 0 pruned, 1 failed, 1 surplus (begun as the study filled up, "
            "stepped back)") in " ".join(out.split())
