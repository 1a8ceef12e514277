"""Scaling out and crash safety, as a person would run them: ``python -m archlab search`` processes
against a real PostgreSQL server (two workers on one study) and against SQLite (a worker killed
mid-trial, then the same command again)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import optuna
import pytest
import yaml

pytestmark = pytest.mark.timeout(240)

# Each trial trains a few seconds of small CNN on digits, long enough to be caught mid-trial.
SPACE = {
    "name": "cnn-space",
    "input": [1, 8, 8],
    "layers": [
        {"conv2d": {"filters": {"choice": [8, 16]}, "kernel_size": 3, "padding": "same", "activation": "relu"}},
        {"flatten": None},
        {"dense": {"units": {"int": [16, 64], "log": True}, "activation": "relu"}},
        {"dense": {"units": 10, "activation": "softmax"}},
    ],
    "train": {"epochs": 2, "batch_size": 32, "optimizer": {"name": "adam", "lr": {"float": [1e-3, 1e-2],
                                                                                      "log": True}}},
}


def archlab_search(*args: str) -> list[str]:
    return [sys.executable, "-m", "archlab", "search", *args, "--quiet"]


def trial_states(db: Path) -> list[tuple[int, str]]:
    """(number, state) of every trial, read without Optuna: opening the storage with Optuna from here
    could create its tables while the worker does, a race no user has."""
    if not db.exists():
        return []
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as connection:
            return connection.execute("SELECT number, state FROM trials ORDER BY number").fetchall()
    except sqlite3.OperationalError:  # no tables yet, or locked for a moment
        return []


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def counted_trials(trials: list) -> list:
    """The trials that count towards --trials. Two workers that both begin a trial while the study
    is one short record one more; the later steps back, failed and marked surplus, before training."""
    surplus = [t for t in trials if "surplus" in t.user_attrs]
    assert all(t.state.name == "FAIL" and "epochs_trained" not in t.user_attrs for t in surplus)
    assert len(surplus) <= 1  # two workers: at most one of them can be late
    return [t for t in trials if "surplus" not in t.user_attrs]


def test_two_worker_processes_share_one_study_on_postgresql(tmp_path, postgres_url):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    done = subprocess.run(archlab_search(str(space), "--data", "digits", "--trials", "8", "--workers", "2",
                                         "--storage", postgres_url, "--study", "shared", "--pruner", "none",
                                         "--out", str(tmp_path)),
                          capture_output=True, text=True, env=environment(), timeout=200)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    every = study.get_trials()
    trials = counted_trials(every)
    assert len(trials) == 8 and sorted(t.number for t in every) == list(range(len(every)))  # each recorded once
    assert {t.state.name for t in trials} == {"COMPLETE"}
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers trained trials
    assert (tmp_path / "search-shared" / "best.yaml").is_file()
    assert f"study 'shared': {len(every)} trials: 8 complete" in done.stdout
    report = subprocess.run([sys.executable, "-m", "archlab", "search", "--report", "shared", "--storage",
                             postgres_url], capture_output=True, text=True, env=environment(), timeout=60)
    assert report.returncode == 0 and f"best: trial {study.best_trial.number}" in report.stdout


def test_two_workers_share_the_default_sqlite_study(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    done = subprocess.run(archlab_search(str(space), "--data", "digits", "--trials", "6", "--workers", "2",
                                         "--out", str(tmp_path)),
                          capture_output=True, text=True, env=environment(), timeout=200)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="cnn-space", storage=f"sqlite:///{tmp_path / 'search-cnn-space' / 'study.db'}")
    trials = counted_trials(study.trials)
    assert len(trials) == 6 and sorted(t.number for t in study.trials) == list(range(len(study.trials)))
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}


def test_a_killed_worker_loses_no_finished_trial_and_the_same_command_resumes(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({**SPACE, "train": {**SPACE["train"], "epochs": 40}}))
    db = tmp_path / "search-cnn-space" / "study.db"
    command = archlab_search(str(space), "--data", "digits", "--trials", "4", "--pruner", "none",
                             "--heartbeat", "1", "--out", str(tmp_path))
    log = tmp_path / "worker.log"
    with open(log, "w") as stderr, subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr,
                                                    env=environment()) as proc:
        deadline = time.monotonic() + 150
        before: list[tuple[int, str]] = []
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            states = trial_states(db)
            if "COMPLETE" in {s for _, s in states} and states[-1][1] == "RUNNING":
                before = states
                break
        assert proc.poll() is None, f"the worker ended before it could be killed: {log.read_text()[-2000:]}"
        assert before, "no trial finished in time"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    study = optuna.load_study(study_name="cnn-space", storage=f"sqlite:///{db}")
    finished = {t.number: t.values for t in study.get_trials() if t.number in {n for n, s in before if s == "COMPLETE"}}
    killed = before[-1][0]
    assert study.trials[killed].state.name == "RUNNING"
    time.sleep(2.5)  # twice the heartbeat: the killed trial is now stale
    again = subprocess.run(command, capture_output=True, text=True, env=environment(), timeout=200)
    assert again.returncode == 0, again.stderr
    trials = optuna.load_study(study_name="cnn-space", storage=f"sqlite:///{db}").get_trials()
    assert {t.number: t.values for t in trials if t.number in finished} == finished  # nothing finished was lost
    assert trials[killed].state.name == "FAIL"
    assert sum(t.state.name == "COMPLETE" for t in trials) == 4 and len(trials) == 5
    assert "1 failed" in again.stdout


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_mid_trial_prints_one_line_with_the_command_that_continues_and_exits_130(tmp_path, workers):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({**SPACE, "train": {**SPACE["train"], "epochs": 40}}))
    db = tmp_path / "search-cnn-space" / "study.db"
    args = ["search", str(space), "--data", "digits", "--trials", "3", "--pruner", "none", "--out", str(tmp_path),
            "--workers", str(workers), "--quiet"]
    # its own process group: Ctrl-C on a terminal signals the whole group, the workers too
    with subprocess.Popen([sys.executable, "-m", "archlab", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=environment(), start_new_session=True) as proc:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None and ("RUNNING" not in {s for _, s in
                                                                                          trial_states(db)}):
            time.sleep(0.2)
        time.sleep(1.0)  # well inside the trial's training loop (40 epochs take far longer)
        assert proc.poll() is None, "the search ended before it could be interrupted"
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err == f"interrupted: the finished trials are kept in the study; continue with: archlab {' '.join(args)}\n"
    assert "Traceback" not in out + err and "[W " not in err  # no Optuna warning with a KeyboardInterrupt traceback
    assert {s for _, s in trial_states(db)} <= {"FAIL", "COMPLETE"}  # the interrupted trials failed: they do not count
    assert "FAIL" in {s for _, s in trial_states(db)}


def test_an_interrupt_wrapped_by_python_is_still_an_interrupt():
    from archlab.search._search import by_interrupt

    class Named:
        def __set_name__(self, owner, name):
            raise KeyboardInterrupt

    # Python 3.11 wraps a KeyboardInterrupt raised in __set_name__ (a class made mid-import) in a RuntimeError
    with pytest.raises(BaseException) as caught:
        type("Owner", (), {"field": Named()})
    assert by_interrupt(caught.value)
    assert not by_interrupt(RuntimeError("a trial's own error")) and not by_interrupt(None)
