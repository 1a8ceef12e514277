"""One honest end-to-end run on real MNIST: the seed spec, one epoch of the seed recipe, from the CLI.

Skipped when the repository's sibling shared/data/mnist is absent (see tests/data/conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from archlab.cli import run

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason=f"no real MNIST at {SHARED / 'mnist'}")
def test_seed_cnn_one_epoch_on_real_mnist(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ARCHLAB_DATA", str(SHARED))
    code = run(["train", str(ROOT / "examples" / "seed-mnist-cnn.yaml"), "--data", "mnist", "--epochs", "1",
                "--out", str(tmp_path), "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    run_dir = Path(next(line for line in out.splitlines() if line.startswith("run: "))[5:])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["train_samples"], summary["val_samples"], summary["test_samples"]) == (54_000, 6_000, 10_000)
    assert summary["params"] == 225_034
    # one epoch of Adam at 1e-3 on the seed CNN reaches about 98% (Keras: 97.9-98.3%)
    assert summary["test"]["accuracy"] > 0.97
    evaluation = json.loads((run_dir / "evaluation-test.json").read_text())
    matrix = evaluation["confusion_matrix"]
    assert sum(map(sum, matrix)) == 10_000
    assert sum(matrix[i][i] for i in range(10)) / 10_000 == pytest.approx(summary["test"]["accuracy"], abs=1e-6)
