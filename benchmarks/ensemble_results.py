"""Ensembles against their members: test accuracy of ``archlab ensemble`` runs, as docs/results.md reports them.

Each (data set, method, repeat) is one fresh ``archlab ensemble`` process, one after another:

    archlab ensemble SPEC --data D --method M --members K --seed S --jobs J --quiet --out OUT

with S = 100 x repeat (member i trains with seed S + i). The command scores the combination on the
test split beside each member (ENSEMBLE_DIR/evaluation-test-best.json); this script reads that file
and prints one markdown row per ensemble, then the mean ± std (n - 1) of each (data, method) over
the repeats. Examples (docs/results.md, "Ensembles"):

    OMP_NUM_THREADS=1 ARCHLAB_DATA=../shared/data python benchmarks/ensemble_results.py \\
        examples/seed-mnist-cnn.yaml --data mnist --method seeds --members 5 --jobs 2
    OMP_NUM_THREADS=1 ARCHLAB_DATA=../shared/data python benchmarks/ensemble_results.py \\
        examples/ensemble/mnist-mlp-weak.yaml --method bagging boosting --members 5 --repeats 3 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def run_ensemble(spec: str, data: str | None, method: str, members: int, seed: int, jobs: int, out: str,
                 extra: list[str]) -> dict:
    exe = str(BIN / "archlab") if (BIN / "archlab").exists() else "archlab"
    command = [exe, "ensemble", spec, *(["--data", data] if data else []), "--method", method, "--members",
               str(members), "--seed", str(seed), "--jobs", str(jobs), "--quiet", "--out", out, *extra]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    root = Path(done.stdout.strip().splitlines()[-1].removeprefix("ensemble: "))
    scored = json.loads((root / "evaluation-test-best.json").read_text())
    key = scored["headline"]
    accuracies = [m["metrics"][key] for m in scored["members"]]
    return {"data": data or "(spec's)", "method": method, "seed": seed, "members": accuracies,
            "ensemble": scored["metrics"][key], "best": max(accuracies), "mean": statistics.mean(accuracies),
            "seconds": time.perf_counter() - began, "dir": str(root)}


def _spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 \
        else f"{values[0]:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec")
    parser.add_argument("--data", nargs="+", default=[None], help="one or more data sets (default: the spec's)")
    parser.add_argument("--method", nargs="+", default=["seeds"])
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", default="/tmp/ensemble-results")
    args, extra = parser.parse_known_args()  # any other option goes to archlab ensemble (--epochs 3)
    rows = []
    print("| data | method | seed | members' test accuracy | best member | ensemble | gain over best | s |")
    print("|---|---|---:|---|---:|---:|---:|---:|")
    for data in args.data:
        for repeat in range(args.repeats):
            for method in args.method:
                row = run_ensemble(args.spec, data, method, args.members, 100 * repeat, args.jobs, args.out, extra)
                rows.append(row)
                print(f"| {row['data']} | {method} | {row['seed']} | {' / '.join(f'{a:.4f}' for a in row['members'])}"
                      f" | {row['best']:.4f} | **{row['ensemble']:.4f}** | {row['ensemble'] - row['best']:+.4f} | "
                      f"{row['seconds']:.0f} |", flush=True)
    print("\n| data | method | mean member | best member | ensemble | gain over best |")
    print("|---|---|---:|---:|---:|---:|")
    for data in args.data:
        for method in args.method:
            mine = [r for r in rows if r["data"] == (data or "(spec's)") and r["method"] == method]
            print(f"| {mine[0]['data']} | {method} | {_spread([r['mean'] for r in mine])} | "
                  f"{_spread([r['best'] for r in mine])} | **{_spread([r['ensemble'] for r in mine])}** | "
                  f"{_spread([r['ensemble'] - r['best'] for r in mine])} |")


if __name__ == "__main__":
    main()
