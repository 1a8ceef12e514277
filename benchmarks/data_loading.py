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

``--npy`` measures the other side, memory: a synthetic table larger than the training is allowed to
hold (``--rows`` x ``--features`` float32, written chunk by chunk as an ``npy:DIR`` folder) is trained
on for one epoch by ``archlab.training.train`` with ``data_loading: memory`` and then ``stream``,
each in a fresh process, on the same folder. Each process reports its peak anonymous memory
(``RssAnon`` of /proc/self/status, sampled every 5 ms: what it holds itself) and its peak RSS
(``VmHWM``, which also counts the file's pages mapped in: page cache the kernel takes back under
pressure), and the epoch's samples/s.

    python benchmarks/data_loading.py --npy [--rows 1200000] [--features 128] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
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


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def write_table(folder: Path, rows: int, features: int, chunk: int = 65_536) -> None:
    """An npy:DIR folder of ``rows`` float32 samples in two learnable classes, written chunk by
    chunk (``open_memmap``): the benchmark never holds the table either."""
    rng = np.random.default_rng(SEED)
    w = rng.normal(size=features).astype(np.float32)
    for split, n in (("train", rows), ("test", max(rows // 10, 1))):
        x = np.lib.format.open_memmap(folder / f"x_{split}.npy", mode="w+", dtype=np.float32, shape=(n, features))
        y = np.empty(n, np.int64)
        for start in range(0, n, chunk):
            part = rng.normal(size=(min(chunk, n - start), features)).astype(np.float32)
            x[start:start + len(part)], y[start:start + len(part)] = part, part @ w > 0
        x.flush()
        del x
        np.save(folder / f"y_{split}.npy", y)
    (folder / "meta.json").write_text(json.dumps({"task": "classification", "classes": ["0", "1"]}))


def child(mode: str, folder: str, threads: int) -> None:
    """One training in this process; prints its measurements as JSON."""
    from archlab.training import train

    torch.set_num_threads(threads)
    peak = {"anon": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak["anon"] = max(peak["anon"], _status_kib("RssAnon"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    before = _status_kib("RssAnon")
    features = int(np.load(Path(folder) / "x_train.npy", mmap_mode="r").shape[1])
    spec = {"name": "mlp", "input": [features], "task": {"kind": "classification", "classes": 2},
            "layers": [{"dense": {"units": 64, "activation": "relu"}},
                       {"dense": {"units": 2, "activation": "softmax"}}],
            "train": {"epochs": 1, "batch_size": 1024, "device": "cpu", "precision": "fp32", "seed": SEED,
                      "validation_split": 0.05, "data_loading": mode}}
    began = time.perf_counter()
    result = train(spec, data=f"npy:{folder}", out=None, verbose=0)
    wall = time.perf_counter() - began
    done.set()
    sampler.join()
    print(json.dumps({"mode": mode, "anon_before_mib": before / 1024, "peak_anon_mib": peak["anon"] / 1024,
                      "peak_rss_mib": _status_kib("VmHWM") / 1024, "wall_s": wall,
                      "samples_per_s": result.history.history["samples_per_s"][0],
                      "accuracy": result.test_metrics["accuracy"]}))


def npy_memory(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="archlab-bench-npy-"))
    try:
        began = time.perf_counter()
        write_table(folder, args.rows, args.features)
        size = (folder / "x_train.npy").stat().st_size
        print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPUs; npy:DIR of {args.rows:,} x "
              f"{args.features} float32: x_train.npy {size / 2**20:,.0f} MiB (written in "
              f"{time.perf_counter() - began:.1f} s); one epoch, batch 1024, an MLP 64-2")
        results = {}
        for mode in ("memory", "stream"):
            out = subprocess.run([sys.executable, __file__, "--child", mode, str(folder), "--threads",
                                  str(args.threads)], check=True, capture_output=True, text=True).stdout
            results[mode] = json.loads(out.strip().splitlines()[-1])
        print(f"{'data_loading':<13} {'peak anon MiB':>14} {'of which at start':>18} {'peak RSS MiB':>13} "
              f"{'samples/s':>10} {'test acc':>9}")
        for mode, r in results.items():
            print(f"{mode:<13} {r['peak_anon_mib']:>14,.0f} {r['anon_before_mib']:>18,.0f} {r['peak_rss_mib']:>13,.0f} "
                  f"{r['samples_per_s']:>10,.0f} {r['accuracy']:>9.4f}")
        m, st = results["memory"], results["stream"]
        print(f"stream / memory: peak anonymous memory {st['peak_anon_mib'] / m['peak_anon_mib']:.2f}, "
              f"throughput {st['samples_per_s'] / m['samples_per_s']:.2f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npy", action="store_true", help="peak memory of memory vs stream from an npy:DIR folder")
    parser.add_argument("--rows", type=int, default=1_200_000)
    parser.add_argument("--features", type=int, default=128)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per timed epoch-slice")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--workers", default="0,1,2", help="worker counts of the streamed contenders")
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], args.child[1], args.threads or 1)
    if args.npy:
        return npy_memory(argparse.Namespace(rows=args.rows, features=args.features, threads=args.threads or 1))
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
