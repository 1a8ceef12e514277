"""archlab.search end to end on scikit-learn's digits with tiny MLP spaces (about a second per search)."""

from __future__ import annotations

import json

import optuna
import pytest
import yaml

from archlab.exceptions import SpecError
from archlab.search import StorageError, load_report, search

pytestmark = pytest.mark.usefixtures("one_thread")


def mlp_space(**train) -> dict:
    return {
        "name": "mlp-space",
        "input": [1, 8, 8],
        "layers": [
            {"flatten": None},
            {"choice": [
                {"dense": {"units": {"choice": [16, 64, 256]}, "activation": "relu"}},
                {"sequential": {"name": "two", "layers": [{"dense": {"units": 32, "activation": "tanh"}},
                                                          {"dense": {"units": 32, "activation": "tanh"}}]}},
            ]},
            {"dropout": {"rate": {"float": [0.0, 0.4]}}},
            {"dense": {"units": 10, "activation": "softmax"}},
        ],
        "train": {"epochs": 3, "batch_size": 64, "optimizer": {"name": "adam", "lr": {"float": [1e-3, 1e-2],
                                                                                          "log": True}},
                  **train},
    }


def states(study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def test_a_search_stores_each_sampled_spec_and_writes_the_best_spec_table_and_plots(tmp_path):
    seen = []
    result = search(mlp_space(), "digits", 6, pruner="none", out=tmp_path, on_progress=seen.append)
    study = result.study
    assert states(study) == {"COMPLETE": 6}
    for t in study.trials:
        spec = yaml.safe_load(t.user_attrs["spec"])
        first = spec["layers"][1]
        if t.params["layers[1]"] == "dense":
            assert first["dense"]["units"] == t.params["layers[1].choice[0].dense.units"]
        else:
            assert first["sequential"]["name"] == "two"
            assert "layers[1].choice[0].dense.units" not in t.params  # not sampled: conditional
        assert spec["train"]["optimizer"]["lr"] == t.params["train.optimizer.lr"]
        assert t.user_attrs["epochs_trained"] == 3 and t.user_attrs["params"] > 0
    run = result.run_dir
    assert run == tmp_path / "search-mlp-space"
    best = study.best_trial
    assert yaml.safe_load((run / "best.yaml").read_text()) == yaml.safe_load(best.user_attrs["spec"])
    assert result.best[0]["number"] == best.number and best.value > 0.85
    rows = json.loads((run / "trials.json").read_text())
    assert [r["number"] for r in rows] == list(range(6))
    assert (run / "trials.csv").read_text().splitlines()[0].startswith("number,state,val_accuracy,params")
    for plot in ("history.png", "importances.png"):
        assert (run / plot).read_bytes()[:4] == b"\x89PNG"
    assert seen[0].finished == 0 and seen[-1].finished == 6 and seen[-1].best == pytest.approx(best.value)


def test_budgets_prune_before_training_with_the_reason(tmp_path):
    result = search(mlp_space(), "digits", 8, pruner="none", max_params=5_000, out=tmp_path, seed=1)
    pruned = [t for t in result.study.trials if t.state.name == "PRUNED"]
    kept = [t for t in result.study.trials if t.state.name == "COMPLETE"]
    assert pruned and kept
    for t in pruned:
        assert t.user_attrs["pruned_by"] == "budget" and "epochs_trained" not in t.user_attrs
        assert t.user_attrs["pruned_reason"] == (f"over budget: {t.user_attrs['params']:,} parameters > "
                                                 "--max-params 5,000")
    assert all(t.user_attrs["params"] <= 5_000 for t in kept)


def test_an_invalid_sampled_spec_costs_no_training_and_is_recorded_as_pruned(tmp_path):
    space = mlp_space()
    space["layers"][2] = {"choice": [{"dropout": {"rate": 0.1}}, {"conv2d": {"filters": 4, "kernel_size": 3}}]}
    result = search(space, "digits", 6, sampler="random", pruner="none", out=tmp_path, seed=0)
    invalid = [t for t in result.study.trials if t.user_attrs.get("pruned_by") == "invalid"]
    assert invalid and all(t.params["layers[2]"] == "conv2d" for t in invalid)
    assert all("invalid spec: layers[2]" in t.user_attrs["pruned_reason"] for t in invalid)
    assert all(t.state.name == "COMPLETE" for t in result.study.trials if t.params["layers[2]"] == "dropout")


def test_asha_stops_weak_trials_early_and_reports_every_epoch(tmp_path):
    # 9 epochs: ASHA's rungs are at 1, 3 and 9, so its top rung is the last epoch
    result = search(mlp_space(epochs=9), "digits", 14, pruner="asha", out=tmp_path, seed=0)
    trials = result.study.trials
    pruned = [t for t in trials if t.user_attrs.get("pruned_by") == "pruner"]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert pruned, "ASHA pruned nothing in 14 trials"
    for t in pruned:
        assert t.user_attrs["epochs_trained"] < 9 and "stopped by the asha pruner" in t.user_attrs["pruned_reason"]
        assert sorted(t.intermediate_values) == list(range(1, t.user_attrs["epochs_trained"] + 1))
        assert sum(c.number < t.number for c in complete) >= 5  # ASHA decides once 5 trials have completed
    assert all(len(t.intermediate_values) == 9 for t in complete)


def test_several_objectives_give_a_pareto_front_saved_as_specs(tmp_path):
    result = search(mlp_space(), "digits", 8, objectives=["val_accuracy", "params:min"], out=tmp_path, seed=2)
    front = result.best
    assert front and (tmp_path / "search-mlp-space" / "pareto.png").is_file()
    values = [(t.values[0], t.values[1]) for t in result.study.trials if t.state.name == "COMPLETE"]
    for member in front:
        acc, params = member["values"]["val_accuracy"], member["values"]["params"]
        assert not any(a >= acc and p <= params and (a, p) != (acc, params) for a, p in values)  # not dominated
        spec = yaml.safe_load(open(member["spec_path"]).read())
        assert spec["layers"][1]  # a concrete spec, no markers left
        assert "choice" not in json.dumps(spec)


def test_pruners_need_a_single_objective(tmp_path):
    with pytest.raises(ValueError, match="--pruner asha needs a single objective"):
        search(mlp_space(), "digits", 2, objectives=["val_accuracy", "params"], pruner="asha", out=tmp_path)


def test_the_same_study_name_resumes_up_to_the_requested_count(tmp_path):
    first = search(mlp_space(), "digits", 3, pruner="none", out=tmp_path, study="s")
    numbers = {t.number: t.values for t in first.study.trials}
    again = search(mlp_space(), "digits", 5, pruner="none", out=tmp_path, study="s")
    assert len(again.study.trials) == 5 and {t.number: t.values for t in again.study.trials[:3]} == numbers
    done = search(mlp_space(), "digits", 5, pruner="none", out=tmp_path, study="s")
    assert len(done.study.trials) == 5  # already complete: nothing more is trained


def test_a_study_with_another_space_is_refused_unless_forced(tmp_path):
    search(mlp_space(), "digits", 2, pruner="none", out=tmp_path, study="s")
    other = mlp_space()
    other["layers"][2]["dropout"]["rate"] = {"float": [0.0, 0.6]}
    with pytest.raises(SpecError, match=r"study 's' .* exists with a different search: layers\[2\].dropout.rate: "
                                        r"\{float: \[0.0, 0.4\]\} -> \{float: \[0.0, 0.6\]\}.*--force"):
        search(other, "digits", 3, pruner="none", out=tmp_path, study="s")
    with pytest.raises(SpecError, match=r"objectives: \['val_accuracy:max'\] -> \['val_loss:min'\]"):
        search(mlp_space(), "digits", 3, pruner="none", out=tmp_path, study="s", objectives=["val_loss"])
    forced = search(other, "digits", 3, pruner="none", out=tmp_path, study="s", force=True)
    assert len(forced.study.trials) == 3


def test_malformed_markers_fail_before_any_study_exists(tmp_path):
    space = mlp_space()
    space["layers"][2]["dropout"]["rate"] = {"int": [5, 1]}
    with pytest.raises(SpecError, match=r"layers\[2\].dropout.rate: \{int: \[5, 1\]\} has low > high"):
        search(space, "digits", 2, out=tmp_path)
    assert not (tmp_path / "search-mlp-space").exists()


def test_an_unreachable_storage_is_one_clear_message(tmp_path):
    url = "postgresql+psycopg2://ann:secret@127.0.0.1:9/nas"
    with pytest.raises(StorageError, match=r"cannot open the study storage postgresql\+psycopg2://ann:\*\*\*@127.0.0.1"
                                           r":9/nas: .*Check the URL") as info:
        search(mlp_space(), "digits", 2, storage=url, out=tmp_path)
    assert "secret" not in str(info.value)


def test_grid_search_covers_the_grid_once(tmp_path):
    space = {"name": "g", "input": [1, 8, 8], "layers": [
        {"flatten": None}, {"dense": {"units": {"choice": [8, 32]}, "activation": "relu"}},
        {"dropout": {"rate": {"float": [0.0, 0.2], "step": 0.2}}}, {"dense": {"units": 10, "activation": "softmax"}}],
        "train": {"epochs": 1}}
    result = search(space, "digits", 10, sampler="grid", pruner="none", out=tmp_path)
    points = sorted((t.params["layers[1].dense.units"], t.params["layers[2].dropout.rate"])
                    for t in result.study.trials)
    assert points == [(8, 0.0), (8, 0.2), (32, 0.0), (32, 0.2)]  # the grid ran out before 10 trials


def test_report_rereads_a_study_from_its_storage(tmp_path):
    result = search(mlp_space(), "digits", 3, pruner="none", out=tmp_path, study="r")
    url = f"sqlite:///{result.run_dir / 'study.db'}"
    report = load_report("r", url)
    assert report.best[0]["number"] == result.study.best_trial.number
    with pytest.raises(ValueError, match="no study 'nope' .* it holds: r"):
        load_report("nope", url)


def test_optuna_sees_the_directions_of_the_objectives(tmp_path):
    result = search(mlp_space(), "digits", 2, objectives=["val_loss", "latency:min"], out=tmp_path)
    assert result.study.directions == [optuna.study.StudyDirection.MINIMIZE] * 2
    assert all(t.user_attrs["latency_ms"] > 0 for t in result.study.trials)


def test_a_trial_started_after_the_study_is_full_steps_back_as_surplus():
    from archlab.search._search import SearchConfig, SurplusTrial, TrialRunner

    study = optuna.create_study()
    for value in (0.5, 0.6):
        study.add_trial(optuna.trial.create_trial(value=value))
    runner = TrialRunner(SearchConfig(space=mlp_space(), data="digits", trials=2, study="x", storage=""), None)
    study.optimize(runner, n_trials=5, catch=(SurplusTrial,))  # as a worker that raced past the count
    late = study.trials[-1]
    assert len(study.trials) == 3 and late.state.name == "FAIL"  # it stopped the worker, too
    assert late.user_attrs["surplus"] == "the study already had 2 trials when this one began"


def test_report_reads_a_study_that_archlab_did_not_create(tmp_path):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    study = optuna.create_study(study_name="plain", storage=url, directions=["minimize"])
    study.optimize(lambda t: (t.suggest_float("x", -1, 1)) ** 2, n_trials=4)
    report = load_report("plain", url)
    assert [o.name for o in report.objectives] == ["value0"]
    assert report.best[0]["number"] == study.best_trial.number


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_a_resumed_study_samples_new_configurations_instead_of_replaying_its_first_trials(tmp_path, sampler):
    first = search(mlp_space(epochs=1), "digits", 2, sampler=sampler, pruner="none", out=tmp_path, seed=0)
    before = [t.params for t in first.study.trials]
    resumed = search(mlp_space(epochs=1), "digits", 4, sampler=sampler, pruner="none", out=tmp_path, seed=0)
    trials = resumed.study.trials
    assert [t.params for t in trials[:2]] == before and len(trials) == 4
    lrs = [t.params["train.optimizer.lr"] for t in trials]  # a float: equal only when the sampler replays
    assert len(set(lrs)) == 4
    assert trials[2].params != trials[0].params and trials[3].params != trials[1].params


def test_a_stopped_searchs_running_trials_of_its_own_workers_are_failed_and_no_one_elses():
    """A worker killed mid-trial (or stopped between Optuna creating a trial and running it) leaves a
    RUNNING trial; the parent marks its own workers' ones FAIL, and leaves other machines' alone."""
    import socket
    from types import SimpleNamespace

    import optuna

    from archlab.search._search import _fail_trials_of

    study = optuna.create_study()
    ours, theirs, done = study.ask(), study.ask(), study.ask()
    ours.set_user_attr("worker", f"{socket.gethostname()}:4242")
    theirs.set_user_attr("worker", "another-machine:4242")
    done.set_user_attr("worker", f"{socket.gethostname()}:4242")
    study.tell(done, 0.5)
    _fail_trials_of(study, [SimpleNamespace(pid=4242)])
    states = [t.state.name for t in study.get_trials()]
    assert states == ["FAIL", "RUNNING", "COMPLETE"]
