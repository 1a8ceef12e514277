"""Data loading: the seed MNIST CNN trained from memory vs streamed from a memory-mapped .npy.

Every contender is ``archlab.training.Engine.fit`` (the path ``archlab train`` takes) with
``precision: fp32`` on the same real MNIST samples (Adam, lr 1e-3, batch 128): the in-memory fast
path (one tensor, indexed per step) and the streaming path (``train.data_loading: stream``: the
split written once as .npy, opened with ``np.load(mmap_mode="r")`` and read batch by batch by a
DataLoader) with 0, 1 and 2 worker processes. Each round times one epoch-slice of ``--steps``
optimizer steps for every contender, after an untimed warm-up slice each; the order rotates from
round to round so the shared machine's noise hits all alike. Reported: the median and best round
(samples/s) and the median of the per-round ratios to the in-memory path.

The .npy sits in the page cache after the first read, so this measures the loader's own cost (the
per-batch read and copy, the worker hand-off), not a disk. Workers are processes competing with
torch's training threads for the same cores.

    ARCHLAB_DATA=/work/shared/data python benchmarks/data_loading.py [--rounds 7] [--steps 60] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import time
from pathlib import Path

import torch

import archlab
from archlab.data import load_dataset
from archlab.training import Engine, resolve_recipe, split_output_activation
from archlab.training._stream import spill

SPEC = Path(__file__).resolve().parent.parent / "examples" / "seed-mnist-cnn.yaml"
BATCH = 128
SEED = 0


class Contender:
    def __init__(self, spec: archlab.Spec, x, y: torch.Tensor, name: str, workers: int = 0) -> None:
        recipe = resolve_recipe({"epochs": 1, "batch_size": BATCH, "seed": SEED, "validation_split": 0.0,
                                 "workers": workers}, lr=1e-3, device="cpu", precision="fp32")
        torch.manual_seed(SEED)
        model = archlab.build(spec)
        head = split_output_activation(model, "cross_entropy")
        self.engine = Engine(model, recipe, "cross_entropy", verbose=0, output_activation=head)
        self.name, self.x, self.y = name, x, y

    def run(self) -> None:
        self.engine.fit(self.x, self.y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per timed epoch-slice")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--workers", default="0,1,2", help="worker counts of the streamed contenders")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = archlab.load(SPEC)
    data = load_dataset("mnist")
    n = args.steps * BATCH
    x = torch.from_numpy(data.x_train[:n].copy())
    y = torch.from_numpy(data.y_train[:n].astype("int64"))
    mapped, folder = spill(x, y, None)
    try:
        contenders = [Contender(spec, x, y, "in memory")]
        contenders += [Contender(spec, mapped, y, f"streamed, {w} worker(s)", w)
                       for w in map(int, args.workers.split(","))]
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
              f"{platform.processor() or platform.machine()}; {n} MNIST samples, batch {BATCH}, "
              f"{args.rounds} rounds")
        for c in contenders:
            c.run()  # warm-up: workers started, file pages cached
        times: dict[str, list[float]] = {c.name: [] for c in contenders}
        for r in range(args.rounds):
            for c in contenders[r % len(contenders):] + contenders[:r % len(contenders)]:
                began = time.perf_counter()
                c.run()
                times[c.name].append(time.perf_counter() - began)
        base = times["in memory"]
        print(f"{'contender':<26} {'median samples/s':>17} {'best samples/s':>15} {'median ratio':>13}")
        for name, ts in times.items():
            ratio = statistics.median(b / t for b, t in zip(base, ts, strict=True))
            print(f"{name:<26} {n / statistics.median(ts):>17.0f} {n / min(ts):>15.0f} {ratio:>13.2f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
