"""archlab suggest and archlab templates."""

from __future__ import annotations

from pathlib import Path

import pytest

import archlab
from archlab.cli import run
from archlab.design import list_templates


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = run([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_templates_lists_every_template(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "templates")
    assert code == 0
    for info in list_templates():
        assert info.name in out


def test_suggest_prints_the_spec_alone_on_stdout_and_the_reasons_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "suggest", "--data", "digits")
    assert code == 0, err
    assert "Why this spec" in err and "Template: small-cnn" in err and "Width" in err and "Depth" in err
    assert "Total params" in err
    spec = archlab.load(out)  # archlab suggest > s.yaml writes a spec that loads
    assert spec == archlab.design.suggest("digits").spec and archlab.dump(spec) == out
    assert spec.name == "small-cnn-digits" and spec.to_dict()["train"]["data"] == "digits"
    assert "Why" not in out and "Total params" not in out


@pytest.mark.parametrize(("name", "message"), [
    ("s.txt", "--out {path}: a spec file ends in .yaml, .yml or .json"),
    ("folder.yaml", "--out {path} is a folder; give the file to write"),
    ("file/s.yaml", "--out {path}: {tmp}/file is a file, not a folder"),
])
def test_suggest_refuses_an_out_it_cannot_write_before_loading_data(capsys, tmp_path, name, message):
    (tmp_path / "folder.yaml").mkdir()
    (tmp_path / "file").write_text("a file")
    path = tmp_path / name
    code, out, err = cli(capsys, "suggest", "--data", "npz:/does/not/exist.npz", "-o", path)
    assert code == 2 and message.format(path=path, tmp=tmp_path) in err and "Traceback" not in err


def test_suggest_writes_out_within_budget(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "s.yaml"
    code, out, err = cli(capsys, "suggest", "--data", "digits", "--budget-params", 20000, "--out", target)
    assert code == 0, err
    assert "parameter budget (20,000)" in out
    spec = archlab.load(target)
    assert archlab.analyze(spec).total_params <= 20000
    assert spec.to_dict()["train"]["data"] == "digits"


def test_impossible_budget_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "suggest", "--data", "digits", "--budget-params", 10)
    assert code == 2
    assert "no size of template small-cnn" in err and "Traceback" not in err + out


def test_suggest_on_categorical_fields_writes_a_spec_that_validates(capsys, tmp_path: Path) -> None:
    shared = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()
    if not (shared / "criteo_sample").is_dir():
        pytest.skip(f"no criteo_sample copy at {shared}")
    target = tmp_path / "deepfm.yaml"
    code, out, err = cli(capsys, "suggest", "--data", "criteo-sample", "--data-dir", shared, "-o", target)
    assert code == 0, err
    assert "Template: deepfm" in out and "Task: binary" in out
    code, out, err = cli(capsys, "validate", target)
    assert code == 0, err
    assert "valid (sequential form; input (39,) long; output (1,))" in out
