"""The compression targets on the seed CNN trained on MNIST, measured with archlab.compress.

1. int8: ``--quantize static`` (ONNX Runtime, calibrated on 512 training images) must give a file
   at most 0.3x the fp32 ONNX file and lose at most 0.3 points of test accuracy.
2. ``--prune-structured R --finetune-epochs 2`` must halve the FLOPs, lose at most 0.5 points and
   be measurably faster at batch 1 (both models timed in the same process, interleaved); with the
   exact ratio and with ``--channel-multiple 16`` (the channel blocks of ONNX Runtime's kernels).
3. Distillation into ``examples/compress/mnist-student.yaml`` (30,762 parameters, under a quarter
   of the teacher's 225,034) and ``mnist-student-tiny.yaml`` (7,834) must beat the same student
   trained on the labels alone with the same recipe, epochs and initial weights; three seeds, mean
   and sample standard deviation.

Also measured for the record: dynamic int8, unstructured pruning (no faster: dense kernels), and
low-rank factoring of the big dense layer. Each compression runs from the same trained teacher.

    ARCHLAB_DATA=/work/shared/data python benchmarks/compression_results.py --out /tmp/compression

One thread by default (``--threads``): the machine's two cores are shared, and one thread keeps
latency comparisons steady.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import torch
import yaml

import archlab
from archlab.compress import CompressStep, compress
from archlab.training import train

ROOT = Path(__file__).resolve().parent.parent
STUDENTS = [ROOT / "examples" / "compress" / "mnist-student.yaml",
            ROOT / "examples" / "compress" / "mnist-student-tiny.yaml"]


def teacher_run(out: Path, given: str | None) -> Path:
    if given:
        return Path(given)
    began = time.perf_counter()
    result = train(ROOT / "examples" / "seed-mnist-cnn.yaml", data="mnist", epochs=10, batch_size=128, lr=0.001,
                   seed=0, out=out / "runs", verbose=0)
    print(f"teacher trained in {time.perf_counter() - began:.0f} s: test accuracy "
          f"{result.test_metrics['accuracy']:.4f} ({result.run_dir})", flush=True)
    return result.run_dir


def student_spec(path: Path, seed: int) -> dict:
    spec = archlab.load(path).to_dict()
    spec["train"]["seed"] = seed
    return spec


def distillation(teacher: Path, path: Path, args: argparse.Namespace, out: Path) -> dict:
    """The student trained on labels alone and distilled from the teacher: same recipe, epochs and
    initial weights (the seed), several seeds."""
    labels, distilled = [], []
    for seed in args.seeds:
        spec = student_spec(path, seed)
        plain = train(spec, data="mnist", out=None, verbose=0).test_metrics["accuracy"]
        target = out / f"distill-{path.stem}-{seed}"
        shutil.rmtree(target, ignore_errors=True)
        result = compress(teacher, [CompressStep("distill", str(teacher))], student=spec, out=target,
                          temperature=args.temperature, alpha=args.alpha)
        kd = result.rows[-1]["test_accuracy"]
        labels.append(plain)
        distilled.append(kd)
        print(f"{path.stem} seed {seed}: labels only {plain:.4f}, distilled {kd:.4f}", flush=True)
    record = {"student": str(path.relative_to(ROOT)), "student_params": archlab.analyze(path).total_params,
              "seeds": args.seeds, "temperature": args.temperature, "alpha": args.alpha, "labels_only": labels,
              "distilled": distilled, "labels_mean": statistics.mean(labels),
              "labels_std": statistics.stdev(labels) if len(labels) > 1 else 0.0,
              "distilled_mean": statistics.mean(distilled),
              "distilled_std": statistics.stdev(distilled) if len(distilled) > 1 else 0.0}
    print(f"{path.stem} ({record['student_params']:,} parameters): labels only {record['labels_mean']:.4f} ± "
          f"{record['labels_std']:.4f}, distilled {record['distilled_mean']:.4f} ± {record['distilled_std']:.4f}",
          flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/tmp/compression")
    parser.add_argument("--teacher", help="a trained seed-CNN run (default: train one, 10 epochs, seed 0)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--prune-ratio", type=float, default=0.31, help="0.31 is the smallest ratio (in hundredths) "
                        "that halves the seed CNN's FLOPs: 0.30 leaves 50.15%%")
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--skip-distill", action="store_true")
    parser.add_argument("--skip-compress", action="store_true", help="only the distillation comparison")
    parser.add_argument("--students", nargs="+", type=Path, default=STUDENTS, help="student specs to distill into")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    teacher = teacher_run(out, args.teacher)

    prune = CompressStep("prune-structured", args.prune_ratio)
    experiments = {  # name: (steps, channel multiple)
        "int8-static": ([CompressStep("quantize", "static")], 1),
        "int8-dynamic": ([CompressStep("quantize", "dynamic")], 1),
        "prune-structured": ([prune], 1),
        "prune-structured-x16": ([prune], 16),
        "prune-unstructured": ([CompressStep("prune-unstructured", 0.5)], 1),
        "lowrank": ([CompressStep("lowrank", 32)], 1),
        "prune-x16-then-int8": ([prune, CompressStep("quantize", "static")], 16),
    }
    results: dict = {"teacher": str(teacher), "threads": args.threads, "experiments": {}}
    for name, (steps, multiple) in ({} if args.skip_compress else experiments).items():
        target = out / name
        shutil.rmtree(target, ignore_errors=True)
        began = time.perf_counter()
        result = compress(teacher, steps, out=target, finetune_epochs=2, channel_multiple=multiple)
        rows = result.rows
        results["experiments"][name] = rows
        base, last = rows[0], rows[-1]
        print(f"{name}: accuracy {base['test_accuracy']:.4f} -> {last['test_accuracy']:.4f}, FLOPs "
              f"{last['flops'] / base['flops']:.3f}x, ONNX file {last['onnx_bytes'] / base['onnx_bytes']:.3f}x, "
              f"ORT b1 {base['onnxrt_b1_ms']:.3f} -> {last['onnxrt_b1_ms']:.3f} ms, torch b1 "
              f"{base.get('torch_b1_ms', 0):.3f} -> {last.get('torch_b1_ms', float('nan')):.3f} ms "
              f"({time.perf_counter() - began:.0f} s)", flush=True)
    if not args.skip_compress:
        shutil.copy(out / "prune-x16-then-int8" / "tradeoff.png", ROOT / "docs" / "img" / "compression_tradeoff.png")

    if not args.skip_distill:
        results["distillation"] = [distillation(teacher, path.resolve(), args, out) for path in args.students]
    (out / "compression_results.json").write_text(json.dumps(results, indent=2, default=str))
    print(yaml.safe_dump({"written": str(out / "compression_results.json")}), end="")


if __name__ == "__main__":
    main()
