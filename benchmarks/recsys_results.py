"""Test AUC and log-loss of the recommendation examples on MovieLens 100K, several seeds.

Each spec in examples/recsys/ is trained with its own recipe (its train: section: Adam, batch
256, up to 30 epochs, early stopping on the validation loss with patience 6, the best epoch's
weights restored; the learning rate and the embedding width were chosen on the validation split,
docs/results.md says how), one fresh process after another:

    archlab train examples/recsys/SPEC.yaml --seed S --quiet --out OUT

All runs use the same fixed split of movielens-100k (80,000 training ratings, the last 10% of
them the validation set, and 20,000 test ratings). The test split never steers training: it is
scored once, after training, from the run's best weights. The probabilities come from
``archlab.predict_run`` on the test ids (saved as .npy); AUC and log-loss are scikit-learn's
``roc_auc_score`` and ``log_loss`` on them, so the numbers do not depend on archlab's own
metrics. Mean and sample standard deviation (n - 1) over the seeds.

    OMP_NUM_THREADS=2 ARCHLAB_DATA=/work/shared/data python benchmarks/recsys_results.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

import archlab
from archlab.data import load_dataset

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SPECS = ("logreg-movielens", "wide-deep-movielens", "deepfm-movielens")


def train(spec: str, seed: int, out: Path) -> Path:
    exe = str(BIN / "archlab") if (BIN / "archlab").exists() else "archlab"
    command = [exe, "train", f"examples/recsys/{spec}.yaml", "--seed", str(seed), "--quiet", "--out", str(out)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed:\n{proc.stdout}\n{proc.stderr}")
    line = next(line for line in proc.stdout.splitlines() if line.startswith("run: "))
    return Path(line.removeprefix("run: ").strip())


def score(run_dir: Path, ids: Path, y: np.ndarray) -> dict:
    probabilities = np.array([row["output"][0] for row in archlab.predict_run(run_dir, ids)])
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"auc": roc_auc_score(y, probabilities), "log_loss": log_loss(y, probabilities),
            "archlab_test_loss": summary["test"]["loss"], "epochs_run": summary["epochs_run"],
            "best_epoch": summary["best_epoch"], "train_s": summary["wall_seconds"], "params": summary["params"],
            "oov": summary.get("oov")}


def stat(rows: list[dict], key: str, digits: int = 4) -> str:
    """Mean ± sample standard deviation (n - 1) over the seeds."""
    values = [r[key] for r in rows]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--specs", nargs="+", default=list(SPECS))
    parser.add_argument("--out", default=None, help="folder for the runs (default: a temporary one)")
    args = parser.parse_args()
    dataset = load_dataset("movielens-100k")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        ids = Path(tmp) / "test-ids.npy"
        np.save(ids, dataset.x_test)
        results = {}
        for spec in args.specs:
            rows = []
            for seed in args.seeds:
                row = {"seed": seed, **score(train(spec, seed, out), ids, dataset.y_test)}
                print(json.dumps({"spec": spec, **row}), flush=True)
                rows.append(row)
            results[spec] = rows
    print("\n| spec | params | test AUC | test log-loss | epochs (best) | train s |")
    print("|---|---|---|---|---|---|")
    for spec, rows in results.items():
        epochs = ", ".join(f"{r['epochs_run']} ({r['best_epoch']})" for r in rows)
        print(f"| {spec} | {rows[0]['params']:,} | {stat(rows, 'auc')} | {stat(rows, 'log_loss')} | {epochs} | "
              f"{stat(rows, 'train_s', 1)} |")


if __name__ == "__main__":
    main()
