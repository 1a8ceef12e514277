"""MNIST test accuracy and wall time of the seed CNN: archlab's CLI vs Keras 3, several seeds.

Every run is a fresh process, one after another (never two at once), on real MNIST: 60,000
training images (the last 10% held out for validation, Keras' validation_split) and the
10,000-image test split.

- ``--framework archlab --recipe seed`` runs exactly

      archlab train examples/seed-mnist-cnn.yaml --data mnist --epochs 10 --batch-size 128
          --lr 0.001 --seed S --quiet --out OUT

  and reads the test accuracy and the training wall time from the run's summary.json.
- ``--framework archlab --recipe recommended`` runs
  ``archlab train examples/seed-mnist-cnn-recommended.yaml --seed S --quiet --out OUT``
  (the recipe is the spec's train: section).
- ``--framework keras`` trains the same layers in Keras 3 with the torch backend, with the same
  recipe as the seed (Adam 1e-3, sparse_categorical_crossentropy, 10 epochs, batch 128,
  validation_split 0.1, Keras' default initialisation), then ``model.evaluate`` on the test split.

"train s" is the time of the fit (training plus the per-epoch validation pass); "process s" is
the whole command, Python start-up and data loading included. Mean and std over the seeds
(std: the sample standard deviation, n - 1).

    ARCHLAB_DATA=/work/shared/data python benchmarks/mnist_results.py --framework archlab --seeds 0 1 2
    ARCHLAB_DATA=/work/shared/data python benchmarks/mnist_results.py --framework keras --seeds 0 1 2
    ARCHLAB_DATA=/work/shared/data python benchmarks/mnist_results.py --framework archlab --recipe recommended
    ARCHLAB_DATA=/work/shared/data python benchmarks/mnist_results.py --framework archlab --precision bf16

``--precision`` passes ``--precision P`` to ``archlab train``; the rows record the precision the
run trained in (summary.json's ``precision``) and why.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def archlab_command(recipe: str, seed: int, out: str, precision: str | None = None) -> list[str]:
    exe = str(BIN / "archlab") if (BIN / "archlab").exists() else "archlab"
    extra = ["--precision", precision] if precision else []
    if recipe == "seed":
        return [exe, "train", "examples/seed-mnist-cnn.yaml", "--data", "mnist", "--epochs", "10", "--batch-size",
                "128", "--lr", "0.001", "--seed", str(seed), *extra, "--quiet", "--out", out]
    return [exe, "train", f"examples/seed-mnist-cnn-{recipe}.yaml", "--seed", str(seed), *extra, "--quiet",
            "--out", out]


def run_archlab(recipe: str, seed: int, out: str, precision: str | None = None) -> dict:
    command = archlab_command(recipe, seed, out, precision)
    began = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    process_s = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed:\n{proc.stdout}\n{proc.stderr}")
    run_line = next(line for line in proc.stdout.splitlines() if line.startswith("run: "))
    run_dir = ROOT / run_line.removeprefix("run: ").strip()
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"seed": seed, "command": shlex.join(command), "test_accuracy": summary["test"]["accuracy"],
            "test_loss": summary["test"]["loss"], "train_s": summary["wall_seconds"], "process_s": round(process_s, 1),
            "epochs_run": summary["epochs_run"], "best_epoch": summary["best_epoch"],
            "precision": summary["precision"], "precision_reason": summary.get("precision_reason"),
            "train_samples_per_s": summary["train_samples_per_s"], "run_dir": str(run_dir)}


def keras_worker(seed: int, epochs: int) -> None:
    """One Keras run in this process; prints one JSON line."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    import numpy as np
    from _keras_seed import keras_seed_cnn

    from archlab.data import load_dataset

    mnist = load_dataset("mnist")
    x_train = np.ascontiguousarray(mnist.x_train.transpose(0, 2, 3, 1))  # channels last, as Keras expects
    x_test = np.ascontiguousarray(mnist.x_test.transpose(0, 2, 3, 1))
    model = keras_seed_cnn(seed)
    began = time.perf_counter()
    history = model.fit(x_train, mnist.y_train, epochs=epochs, batch_size=128, validation_split=0.1, verbose=2)
    train_s = time.perf_counter() - began
    test_loss, test_accuracy = model.evaluate(x_test, mnist.y_test, batch_size=1024, verbose=0)
    print(json.dumps({"test_accuracy": float(test_accuracy), "test_loss": float(test_loss),
                      "train_s": round(train_s, 2), "epochs_run": len(history.history["loss"]),
                      "keras": keras.__version__}))


def run_keras(seed: int, epochs: int) -> dict:
    command = [sys.executable, str(Path(__file__).resolve().relative_to(ROOT)), "--worker", "--seed", str(seed),
               "--epochs", str(epochs)]
    began = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False,
                          env={**os.environ, "KERAS_BACKEND": "torch"})
    process_s = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed:\n{proc.stdout}\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"seed": seed, "command": f"KERAS_BACKEND=torch {shlex.join(command)}", **result,
            "process_s": round(process_s, 1)}


def _mean_std(values: list[float], fmt: str = ".4f") -> str:
    if len(values) < 2:
        return f"{values[0]:{fmt}}"
    return f"{statistics.mean(values):{fmt}} ± {statistics.stdev(values):{fmt}}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=["archlab", "keras"], default="archlab")
    parser.add_argument("--recipe", default="seed", help="seed, or X for examples/seed-mnist-cnn-X.yaml (archlab)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10, help="Keras epochs (archlab: the recipe's)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                        help="archlab's --precision (default: the recipe's, auto)")
    parser.add_argument("--out", default="/tmp/results-runs", help="archlab's folder of run directories")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        keras_worker(args.seed, args.epochs)
        return

    rows = []
    for seed in args.seeds:
        row = (run_archlab(args.recipe, seed, args.out, args.precision) if args.framework == "archlab"
               else run_keras(seed, args.epochs))
        rows.append(row)
        print(json.dumps(row), flush=True)
    label = (f"archlab ({args.recipe}, {rows[0]['precision']})" if args.framework == "archlab"
             else "keras 3, torch backend (seed recipe)")
    print(f"\n| {label} | seed | test accuracy | train s | process s |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| | {row['seed']} | {row['test_accuracy']:.4f} | {row['train_s']:.1f} | {row['process_s']:.1f} |")
    acc = [r["test_accuracy"] for r in rows]
    print(f"| **mean ± std** | | **{_mean_std(acc)}** | {_mean_std([r['train_s'] for r in rows], '.1f')} "
          f"| {_mean_std([r['process_s'] for r in rows], '.1f')} |")
    if args.json:
        args.json.write_text(json.dumps({"framework": args.framework, "recipe": args.recipe, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
