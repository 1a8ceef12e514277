"""archlab shrink on the command line: a table and a new run; bad input exits 2."""

from __future__ import annotations

import shutil

import pytest
import yaml

from archlab.cli import run
from archlab.training import train

pytestmark = pytest.mark.usefixtures("one_thread")



def test_shrink_cli_writes_a_run(tmp_path, capsys, tiny_mlp):
    run_dir = train(tiny_mlp, out=tmp_path / "runs", verbose=0).run_dir
    code = run(["shrink", str(run_dir), "--max-drop", "100", "--finetune-epochs", "0", "--max-steps", "1",
                "--out", str(tmp_path / "small"), "--batch-size", "16"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "archlab shrink" in out and "prune layers[1] 32->24" in out
    new_runs = list((tmp_path / "small").iterdir())
    assert len(new_runs) == 1 and (new_runs[0] / "shrink.json").is_file()
    assert yaml.safe_load((new_runs[0] / "recipe.yaml").read_text())["batch_size"] == 16  # tuned at that batch
    assert run(["evaluate", str(new_runs[0])]) == 0


def test_shrink_cli_bad_input_exits_2(tmp_path, capsys, tiny_mlp):
    assert run(["shrink", str(tmp_path / "missing"), "--data", "digits"]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "spec.yaml").write_text("input: [4]\nlayers: [{dense: {units: 2}}]\n")
    assert run(["shrink", str(broken), "--data", "digits"]) == 2
    assert "missing recipe.yaml" in capsys.readouterr().err
    run_dir = train(tiny_mlp, out=tmp_path / "runs", verbose=0).run_dir
    no_weights = tmp_path / "no-weights"
    shutil.copytree(run_dir, no_weights)
    (no_weights / "best.safetensors").unlink()
    assert run(["shrink", str(no_weights), "--data", "digits"]) == 2
    assert "best.safetensors does not exist" in capsys.readouterr().err
    assert run(["shrink", str(run_dir), "--max-drop", "-1"]) == 2


def test_shrink_that_removes_nothing_says_so_and_writes_no_run(tmp_path, capsys, tiny_mlp):
    # flatten -> the output layer: no block to bypass and no prunable channel (the output layer keeps its width)
    single = {**tiny_mlp, "name": "single", "layers": ["flatten", {"dense": {"units": 10, "activation": "softmax"}}]}
    run_dir = train(single, out=tmp_path / "runs", verbose=0).run_dir
    code = run(["shrink", str(run_dir), "--finetune-epochs", "0", "--out", str(tmp_path / "small"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "nothing could be removed within --max-drop 0.5 points" in " ".join(out.split())
    assert "no run written" in out and "run: " not in out
    assert not (tmp_path / "small").exists()


def test_shrink_quiet_prints_no_step_lines_and_an_out_that_is_a_file_is_refused_first(tmp_path, capsys, caplog,
                                                                                       tiny_mlp):
    import logging

    run_dir = train(tiny_mlp, out=tmp_path / "runs", verbose=0).run_dir
    args = ["shrink", str(run_dir), "--max-drop", "100", "--finetune-epochs", "0", "--max-steps", "1",
            "--out", str(tmp_path / "small")]
    caplog.set_level(logging.INFO)  # the root logger: what reaches it is what a user would see
    assert run(args) == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "archlab" and r.getMessage().startswith("shrink")]
    assert lines[0].startswith("shrink: start 2410 params") and lines[1].startswith("shrink step 1: prune")
    caplog.clear()
    assert run([*args, "--quiet"]) == 0
    assert [r.getMessage() for r in caplog.records if r.name == "archlab"] == []
    capsys.readouterr()
    (tmp_path / "file").write_text("a file")
    assert run(["shrink", str(run_dir), "--out", str(tmp_path / "file")]) == 2
    assert f"--out {tmp_path / 'file'} is a file" in capsys.readouterr().err
