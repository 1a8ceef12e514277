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


def test_suggest_prints_reasons_table_and_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "suggest", "--data", "digits")
    assert code == 0, err
    assert "Why this spec" in out and "Template: small-cnn" in out and "Width" in out and "Depth" in out
    assert "Total params" in out
    assert "name: small-cnn-digits" in out and "train:" in out


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
