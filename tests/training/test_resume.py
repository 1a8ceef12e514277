"""Resume: a training process killed mid-epoch, resumed with ``archlab train --resume``, ends with
exactly the weights and metrics of the uninterrupted run; broken run directories fail clearly."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

import archlab
from archlab.cli import run
from archlab.training import RunError, load_weights, read_metrics, start_run, train

STEPS_PER_EPOCH = 41  # ceil(1293 / 32): digits' 1437 training rows less the last 10% for validation
EPOCHS = 4

# Runs train() on the spec and, through a forward pre-hook (which changes no computation), stops
# forever in the middle of epoch 3 after writing a marker file, so the test can kill it there.
CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import torch
    import archlab.training._fit as fit
    import archlab.training._train as tr

    torch.set_num_threads(1)  # as the tests' process (see conftest.one_thread)

    spec, out, marker, stop_at = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    prepare = fit.prepare_model

    def prepare_and_watch(*args, **kwargs):
        model, head = prepare(*args, **kwargs)
        count = [0]

        def hook(module, inputs):
            if module.training:
                count[0] += 1
                if count[0] == stop_at:
                    marker.write_text(str(count[0]))
                    time.sleep(600)

        model.register_forward_pre_hook(hook)
        return model, head

    fit.prepare_model = prepare_and_watch
    tr.train(spec, out=out, verbose=0)
""")


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = {
        "name": "resume", "input": [1, 8, 8], "task": {"kind": "classification", "classes": 10},
        "layers": [
            {"conv2d": {"filters": 8, "kernel_size": 3, "padding": "same", "activation": "relu"}},
            {"maxpool2d": {"pool_size": 2}}, "flatten", {"dropout": {"rate": 0.25}},
            {"dense": {"units": 32, "activation": "relu"}}, {"dense": {"units": 10, "activation": "softmax"}},
        ],
        # every piece of state a resume must restore: shuffling and augmentation (own generator),
        # dropout (global RNG), Adam moments, a per-step schedule, early-stopping bookkeeping
        "train": {"data": "digits", "epochs": EPOCHS, "batch_size": 32, "schedule": "cosine", "augment": "shift",
                  "metrics": ["accuracy", "macro_f1"], "seed": 5, "device": "cpu",
                  "early_stopping": {"monitor": "val_accuracy", "patience": 10}},
    }
    path = tmp_path_factory.mktemp("spec") / "resume.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def reference(spec_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run."""
    return train(spec_path, out=tmp_path_factory.mktemp("reference"), verbose=0).run_dir


def timeless(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("seconds", "samples_per_s")} for row in rows]


def same_tensors(a: Path, b: Path) -> None:
    with safe_open(str(a), framework="pt") as fa, safe_open(str(b), framework="pt") as fb:
        assert sorted(fa.keys()) == sorted(fb.keys())
        for key in fa.keys():
            assert torch.equal(fa.get_tensor(key), fb.get_tensor(key)), f"{key} differs: {a} vs {b}"


def kill_mid_epoch(spec_path: Path, out: Path) -> Path:
    """Start the training process, wait until it is inside epoch 3, SIGKILL it; return its run dir."""
    marker, log = out / "marker", out / "child.log"
    stop_at = 2 * STEPS_PER_EPOCH + STEPS_PER_EPOCH // 2
    with open(log, "w") as stderr, subprocess.Popen(
            [sys.executable, "-c", CHILD, str(spec_path), str(out / "runs"), str(marker), str(stop_at)],
            stdout=subprocess.DEVNULL, stderr=stderr) as proc:
        try:
            deadline = time.monotonic() + 240
            while not marker.exists():
                if proc.poll() is not None:
                    pytest.fail(f"the training process ended before epoch 3 (code {proc.returncode}): "
                                f"{log.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    pytest.fail("the training process did not reach epoch 3 in time")
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == -signal.SIGKILL
    (run_dir,) = (out / "runs").iterdir()
    return run_dir


def test_killed_mid_epoch_then_resumed_equals_the_uninterrupted_run(
        spec_path: Path, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = kill_mid_epoch(spec_path, tmp_path)

    # what the killed process left: two finished epochs and a loadable last checkpoint
    assert [r["epoch"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2]
    with safe_open(str(run_dir / "last.safetensors"), framework="pt") as handle:
        meta = handle.metadata()
        assert json.loads(meta["epoch"]) == 2
        keys = list(handle.keys())
    assert any(k.startswith("optimizer.") for k in keys) and {"rng.torch", "rng.shuffle"} <= set(keys)
    model = archlab.build(archlab.load(run_dir / "spec.yaml"))
    load_weights(run_dir / "last.safetensors", model)
    assert not (run_dir / "summary.json").exists()
    assert not list(run_dir.glob(".*.tmp"))  # no half-written files left behind

    code = run(["train", "--resume", str(run_dir)])  # no -q: the epoch lines show where it continued
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "epoch 3/4" in out and "epoch 4/4" in out and "epoch 2/4" not in out  # continued, not restarted
    assert f"run: {run_dir}" in out

    assert timeless(read_metrics(run_dir / "metrics.jsonl")) == timeless(read_metrics(reference / "metrics.jsonl"))
    same_tensors(run_dir / "best.safetensors", reference / "best.safetensors")
    same_tensors(run_dir / "last.safetensors", reference / "last.safetensors")
    resumed = json.loads((run_dir / "summary.json").read_text())
    uninterrupted = json.loads((reference / "summary.json").read_text())
    assert resumed["test"] == uninterrupted["test"]
    assert resumed["best_epoch"] == uninterrupted["best_epoch"] and resumed["epochs_run"] == EPOCHS
    cm = json.loads((run_dir / "evaluation-test.json").read_text())["confusion_matrix"]
    assert cm == json.loads((reference / "evaluation-test.json").read_text())["confusion_matrix"]


def test_resuming_a_finished_run_trains_nothing(reference: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(reference, tmp_path / reference.name))
    result = train(resume=copy, verbose=0)
    assert result.run_dir == copy
    assert timeless(read_metrics(copy / "metrics.jsonl")) == timeless(read_metrics(reference / "metrics.jsonl"))
    same_tensors(copy / "last.safetensors", reference / "last.safetensors")
    assert result.test_metrics == json.loads((reference / "summary.json").read_text())["test"]


def test_resume_without_a_finished_epoch(spec_path: Path, tmp_path: Path) -> None:
    spec = archlab.load(spec_path)
    from archlab.training import resolve_recipe

    run_dir = start_run(spec, resolve_recipe(spec.to_dict()["train"]), tmp_path)
    with pytest.raises(RunError, match="has no last.safetensors: no epoch finished, so there is nothing to resume"):
        train(resume=run_dir, verbose=0)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_resume_from_a_corrupted_checkpoint(reference: Path, tmp_path: Path, damage: str) -> None:
    copy = Path(shutil.copytree(reference, tmp_path / "run"))
    last = copy / "last.safetensors"
    blob = last.read_bytes()
    last.write_bytes({"garbage": b"not a safetensors file at all" * 10, "truncated": blob[: len(blob) // 2],
                      "empty": b""}[damage])
    with pytest.raises(RunError) as info:
        train(resume=copy, verbose=0)
    assert str(last) in str(info.value) and "not a readable safetensors checkpoint" in str(info.value)


def test_resume_from_weights_only(reference: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(reference, tmp_path / "run"))
    shutil.copy(copy / "best.safetensors", copy / "last.safetensors")
    with pytest.raises(RunError, match="holds weights only, not a training state"):
        train(resume=copy, verbose=0)


def test_resume_cli_errors(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = Path(shutil.copytree(reference, tmp_path / "run"))
    (copy / "last.safetensors").write_bytes(b"\x00" * 16)
    assert run(["train", "--resume", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "last.safetensors" in err and "Traceback" not in err
    assert run(["train", "--resume", str(copy), "--lr", "0.1"]) == 2
    assert "--resume continues a run with its own spec and recipe; drop --lr (only --epochs may extend it)" in \
        capsys.readouterr().err


# -- Ctrl-C ----------------------------------------------------------------------------------------

# As CHILD, through the command line: stops forever at a training step so the test can press Ctrl-C.
CLI_CHILD = CHILD.replace("tr.train(spec, out=out, verbose=0)", """
from archlab.cli import run
sys.exit(run(["train", spec, "--out", out, "-q"]))
""")


def interrupt_at(spec_path: Path, out: Path, stop_at: int) -> subprocess.CompletedProcess:
    """Run ``archlab train`` in a process, send it SIGINT (Ctrl-C) at training step ``stop_at``."""
    marker = out / "marker"
    proc = subprocess.Popen([sys.executable, "-c", CLI_CHILD, str(spec_path), str(out / "runs"), str(marker),
                             str(stop_at)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"the training process ended early (code {proc.returncode}): {proc.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the training process did not reach the step in time")
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_ctrl_c_prints_the_resume_command_and_exits_130(spec_path: Path, reference: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    done = interrupt_at(spec_path, tmp_path, 2 * STEPS_PER_EPOCH + 5)  # inside epoch 3
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"interrupted: epoch 2 of {EPOCHS} is saved; continue with: archlab train --resume {run_dir}"]
    assert run(["train", "--resume", str(run_dir), "-q"]) == 0  # the printed command continues it
    capsys.readouterr()
    assert timeless(read_metrics(run_dir / "metrics.jsonl")) == timeless(read_metrics(reference / "metrics.jsonl"))
    same_tensors(run_dir / "last.safetensors", reference / "last.safetensors")


def test_ctrl_c_in_the_first_epoch_keeps_nothing(spec_path: Path, tmp_path: Path) -> None:
    done = interrupt_at(spec_path, tmp_path, 5)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines() == [
        "interrupted: no epoch had finished, so nothing was kept (the run directory is removed)"]
    assert list((tmp_path / "runs").iterdir()) == []


# -- one process per run ---------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from archlab.training._runs import lock_run

    with lock_run(Path(sys.argv[1])):
        Path(sys.argv[2]).write_text("locked")
        time.sleep(600)
""")


def test_a_second_process_on_a_run_is_refused_with_the_holder(reference: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    copy = Path(shutil.copytree(reference, tmp_path / "run"))
    marker = tmp_path / "locked"
    with subprocess.Popen([sys.executable, "-c", HOLDER, str(copy), str(marker)]) as holder:
        try:
            deadline = time.monotonic() + 60
            while not marker.exists():
                assert holder.poll() is None and time.monotonic() < deadline, "the lock holder did not start"
                time.sleep(0.05)
            assert run(["train", "--resume", str(copy)]) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"error: {copy} is in use: process {holder.pid} on ") and "is training in it" in err
            assert len(err.strip().splitlines()) == 1
        finally:
            holder.kill()  # a killed holder leaves no stale lock: the kernel drops it
            holder.wait()
    assert train(resume=copy, verbose=0).run_dir == copy


# -- extending a finished run ----------------------------------------------------------------------

#: A smaller spec with a step schedule (which does not depend on the epoch count), dropout,
#: shuffling and augmentation: everything an extension must continue as one longer run would.
STEP_SPEC = {
    "name": "extend", "input": [1, 8, 8], "task": {"kind": "classification", "classes": 10},
    "layers": [{"conv2d": {"filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"}},
               {"maxpool2d": {"pool_size": 2}}, "flatten", {"dropout": {"rate": 0.25}},
               {"dense": {"units": 10, "activation": "softmax"}}],
    "train": {"data": "digits", "batch_size": 64, "augment": "shift", "seed": 5, "device": "cpu",
              "schedule": {"name": "step", "step_size": 1, "gamma": 0.7},
              "early_stopping": {"monitor": "val_accuracy", "patience": 10}},
}


def test_resume_with_more_epochs_extends_a_finished_run_as_one_longer_run(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    spec = {**STEP_SPEC, "train": {**STEP_SPEC["train"], "epochs": 4}}
    longer = train(spec, out=tmp_path / "four", verbose=0).run_dir
    short = train({**spec, "train": {**spec["train"], "epochs": 2}}, out=tmp_path / "two", verbose=0).run_dir
    code = run(["train", "--resume", str(short), "--epochs", "4"])
    out = capsys.readouterr().out
    assert code == 0
    assert "epoch 3/4" in out and "epoch 4/4" in out and "epoch 2/4" not in out
    assert yaml.safe_load((short / "recipe.yaml").read_text())["epochs"] == 4
    assert timeless(read_metrics(short / "metrics.jsonl")) == timeless(read_metrics(longer / "metrics.jsonl"))
    same_tensors(short / "last.safetensors", longer / "last.safetensors")
    same_tensors(short / "best.safetensors", longer / "best.safetensors")
    assert json.loads((short / "summary.json").read_text())["test"] == json.loads(
        (longer / "summary.json").read_text())["test"]


def test_extensions_that_would_not_be_one_longer_run_are_refused(reference: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    copy = Path(shutil.copytree(reference, tmp_path / "run"))
    before = (copy / "recipe.yaml").read_text()
    assert run(["train", "--resume", str(copy), "--epochs", "6"]) == 2
    err = capsys.readouterr().err
    assert f"--epochs 6 with --resume {copy}: the run's cosine schedule spans its 4 epochs" in err
    assert "train a new run with --epochs 6" in err
    assert run(["train", "--resume", str(copy), "--epochs", "3"]) == 2
    assert "the run has already trained 4 epoch(s); give more than 4 to extend it" in capsys.readouterr().err
    assert (copy / "recipe.yaml").read_text() == before  # nothing changed


def test_a_run_stopped_early_is_not_extended(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = {**STEP_SPEC, "train": {**STEP_SPEC["train"], "epochs": 30, "optimizer": {"name": "adam", "lr": 0.05},
                                   "early_stopping": {"monitor": "val_loss", "patience": 1}}}
    result = train(spec, out=tmp_path, verbose=0)
    assert result.history.stopped_early
    assert run(["train", "--resume", str(result.run_dir), "--epochs", "40"]) == 2
    assert f"the run stopped early at epoch {len(result.history.epoch)} (val_loss did not improve)" in \
        capsys.readouterr().err
