"""Training throughput of the seed MNIST CNN: archlab's engine vs a hand-written PyTorch loop vs Keras 3.

All of them train the same architecture (examples/seed-mnist-cnn.yaml: conv 32, pool, conv 64,
pool, flatten, dense 128, dense 10) on the same real MNIST samples with Adam (lr 1e-3) and
batch 128, in one process. Each round times one epoch-slice of ``--steps`` optimizer steps for
every contender, one after another, after an untimed warm-up slice each; the order of the
contenders rotates from round to round, so the shared machine's noise hits all of them alike.
Noise on a shared machine only ever slows a contender down, so besides the median of the
rounds the best round of each is reported; the ratios are the median of the per-round ratios
(each round's contenders ran back to back) and the ratio of the best rounds.

- archlab, auto: ``archlab.training.Engine.fit`` (the path ``archlab train`` and ``Sequential.fit``
  take) with the default ``precision: auto``, verbose=0, no run directory, on the slice's tensors;
  it also accumulates the epoch's loss and accuracy and checks the loss is finite every step, as it
  does in every run. The first line printed says what auto chose on this machine and why.
- archlab, fp32: the same with ``precision: fp32``.
- hand, fp32: the usual plain PyTorch loop on the model ``archlab.build`` makes (same seed, same
  initial weights; final softmax removed so ``F.cross_entropy`` takes logits):
  ``torch.randperm`` indices into in-memory tensors, forward, loss, zero_grad, backward, step.
  The baseline of the "this / hand" columns.
- hand, bf16 autocast: the same loop with the forward under ``torch.autocast("cpu", bfloat16)``,
  the model left in PyTorch's default (NCHW) layout.
- keras: Keras 3 with the torch backend, the same layers (channels-last input, as Keras
  expects), ``model.fit(x, y, batch_size=128, epochs=1, verbose=0)`` on the same samples.

Each round also measures the machine's matmul peak (``torch.matmul`` of 2048 x 2048 matrices) in
float32 and in bfloat16, and the table reports the fraction of the float32 peak each contender
achieves, counting training FLOPs per sample as 3 x the forward FLOPs of
``archlab.analyze(spec).flops`` (forward 1x, backward 2x: the gradients of the inputs and of the
weights).

    ARCHLAB_DATA=/work/shared/data python benchmarks/train_throughput.py [--rounds 15] [--steps 60]

Needs keras (the ``bench`` extra) and MNIST (``archlab.data.load_dataset("mnist")``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import archlab
from archlab.data import load_dataset
from archlab.training import Engine, resolve_recipe, split_output_activation

SPEC = Path(__file__).resolve().parent.parent / "examples" / "seed-mnist-cnn.yaml"
BATCH = 128
LR = 1e-3
SEED = 0


def matmul_peak(size: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """Best observed matmul rate (FLOP/s) in ``dtype`` over a few timed trials."""
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        torch.matmul(a, b)
    best = 0.0
    for _ in range(repeats):
        began = time.perf_counter()
        torch.matmul(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - began))
    return best


class ArchlabContender:
    def __init__(self, spec: archlab.Spec, x: torch.Tensor, y: torch.Tensor, precision: str = "fp32") -> None:
        recipe = resolve_recipe({"epochs": 1, "batch_size": BATCH, "seed": SEED, "validation_split": 0.0},
                                lr=LR, device="cpu", precision=precision)
        torch.manual_seed(SEED)
        model = archlab.build(spec)
        head = split_output_activation(model, "cross_entropy")
        self.engine = Engine(model, recipe, "cross_entropy", run_dir=None, verbose=0, output_activation=head)
        chosen = self.engine.precision
        self.name = (f"archlab Engine.fit, auto: {chosen.precision}" if precision == "auto"
                     else f"archlab Engine.fit, {precision}")
        self.x, self.y = x, y

    def run(self) -> None:
        self.engine.fit(self.x, self.y)


class HandContender:
    def __init__(self, spec: archlab.Spec, x: torch.Tensor, y: torch.Tensor, bf16: bool = False) -> None:
        torch.manual_seed(SEED)
        self.model = archlab.build(spec)
        self.model.net[-1].activation = nn.Identity()  # logits for F.cross_entropy
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.bf16 = bf16
        self.name = "hand-written PyTorch loop, bf16 autocast" if bf16 else "hand-written PyTorch loop, fp32"
        self.x, self.y = x, y

    def run(self) -> None:
        model, optimizer, x, y = self.model, self.optimizer, self.x, self.y
        model.train()
        order = torch.randperm(len(x))
        for start in range(0, len(x), BATCH):
            index = order[start:start + BATCH]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                logits = model(x[index])
            loss = F.cross_entropy(logits.float(), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


class KerasContender:
    name = "Keras 3 (torch backend)"

    def __init__(self, spec: archlab.Spec, x: torch.Tensor, y: torch.Tensor) -> None:
        import keras
        from _keras_seed import keras_seed_cnn

        self.model = keras_seed_cnn(SEED, LR)
        self.x = np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1))  # (N, 28, 28, 1), channels last
        self.y = y.numpy()
        self.version = keras.__version__

    def run(self) -> None:
        self.model.fit(self.x, self.y, batch_size=BATCH, epochs=1, verbose=0, shuffle=True)


def eval_batches(spec: archlab.Spec, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
                 rounds: int) -> None:
    """Time Engine.evaluate on the validation images with evaluation batches of 256 and 1024, each
    after an epoch-slice of training (the allocation pattern of a real fit), interleaved."""
    import archlab.training._engine as engine_module

    contender = ArchlabContender(spec, x, y)
    times: dict[int, list[float]] = {256: [], 1024: []}
    for r in range(rounds):
        for size in (256, 1024) if r % 2 == 0 else (1024, 256):
            contender.run()
            engine_module.EVAL_BATCH_CPU = size
            began = time.perf_counter()
            contender.engine.evaluate(x_val, y_val)
            times[size].append(time.perf_counter() - began)
    for size, values in times.items():
        print(f"evaluate {len(x_val)} images in CPU batches of {size}: median {statistics.median(values):.3f} s, "
              f"best {min(values):.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per timed epoch-slice")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--skip-keras", action="store_true")
    parser.add_argument("--eval-batches", action="store_true",
                        help="instead: time validation (6,000 images) in CPU evaluation batches of 256 vs 1024")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    spec = archlab.load(SPEC)
    forward_flops = archlab.analyze(spec).flops  # per sample
    train_flops = 3 * forward_flops
    mnist = load_dataset("mnist")
    n = args.steps * BATCH
    x = torch.from_numpy(np.ascontiguousarray(mnist.x_train[:n]))
    y = torch.from_numpy(np.ascontiguousarray(mnist.y_train[:n])).long()
    if args.eval_batches:
        x_val = torch.from_numpy(np.ascontiguousarray(mnist.x_train[54_000:]))
        y_val = torch.from_numpy(np.ascontiguousarray(mnist.y_train[54_000:])).long()
        eval_batches(spec, x, y, x_val, y_val, args.rounds)
        return

    contenders = [ArchlabContender(spec, x, y, "auto"), ArchlabContender(spec, x, y, "fp32"),
                  HandContender(spec, x, y), HandContender(spec, x, y, bf16=True)]
    if not args.skip_keras:
        contenders.append(KerasContender(spec, x, y))
    print(f"{platform.processor() or platform.machine()}, python {sys.version.split()[0]}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads" + (f", keras {contenders[-1].version}" if not args.skip_keras else ""))
    print(f"precision auto: {contenders[0].engine.precision.precision} ({contenders[0].engine.precision.reason})")
    print(f"{args.rounds} interleaved rounds of {args.steps} steps x batch {BATCH} = {n} samples per contender; "
          f"forward {forward_flops / 1e6:.2f} MFLOP/sample, "
          f"training 3 x forward = {train_flops / 1e6:.2f} MFLOP/sample")

    for contender in contenders:  # warm-up: first-call costs (allocator, Keras' train function) untimed
        contender.run()
    rates: dict[str, list[float]] = {c.name: [] for c in contenders}
    peaks: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for r in range(args.rounds):
        order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
        peaks["fp32"].append(matmul_peak())
        peaks["bf16"].append(matmul_peak(dtype=torch.bfloat16))
        for contender in order:
            began = time.perf_counter()
            contender.run()
            rates[contender.name].append(n / (time.perf_counter() - began))
        print(f"round {r + 1}: " + ", ".join(f"{c.name} {rates[c.name][-1]:,.0f}" for c in contenders)
              + f" samples/s; matmul fp32 {peaks['fp32'][-1] / 1e9:.1f}, bf16 {peaks['bf16'][-1] / 1e9:.1f} GFLOP/s",
              flush=True)

    peak = {name: max(values) for name, values in peaks.items()}
    median = {name: statistics.median(values) for name, values in rates.items()}
    best = {name: max(values) for name, values in rates.items()}
    ours, hand = contenders[0].name, contenders[2].name
    print(f"\nmatmul peak (2048 x 2048, best of all trials): fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s, "
          f"bf16 {peak['bf16'] / 1e9:.1f} GFLOP/s ({peak['bf16'] / peak['fp32']:.2f}x; median of rounds' ratios "
          f"{statistics.median(b / a for a, b in zip(peaks['fp32'], peaks['bf16'], strict=True)):.2f}x)\n")
    print(f"| contender | samples/s, median | samples/s, best round | this / {hand}, median of rounds "
          f"| this / {hand}, best rounds | {ours} / this, median of rounds | {ours} / this, best rounds "
          "| training GFLOP/s, best | fraction of fp32 matmul peak, best |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in rates:
        over_hand = statistics.median(a / b for a, b in zip(rates[name], rates[hand], strict=True))
        ratio = statistics.median(a / b for a, b in zip(rates[ours], rates[name], strict=True))
        achieved = best[name] * train_flops
        print(f"| {name} | {median[name]:,.0f} | {best[name]:,.0f} | {over_hand:.3f} | {best[name] / best[hand]:.3f} "
              f"| {ratio:.3f} | {best[ours] / best[name]:.3f} | {achieved / 1e9:.1f} | {achieved / peak['fp32']:.1%} |")


if __name__ == "__main__":
    main()
