"""Planned versus measured: the training memory and FLOPs per token of a small GPT on this CPU.

Issue 13, section 4. A GPT-2-layout model (token and learned position embeddings, pre-norm causal
``transformer_encoder`` blocks with GELU and dropout 0.1, a final layernorm, the head tied to the
token embedding; vocabulary 2048, width 256, 4 blocks of 4 heads, 128 positions: 3,716,608
parameters) is built with ``archlab.build`` and trained in fp32 on the CPU with AdamW, through
``archlab.training.Engine.fit`` (the path of ``archlab train``: forward, token cross-entropy,
zero_grad, backward, grad clipping, optimizer step), on random token ids.

Each micro-batch size runs in a fresh Python process (so that one size's freed memory, which
glibc keeps, does not flatter the next one's RSS), which measures:

- **RSS growth**: the process's peak resident memory (``VmHWM``, reset through
  ``/proc/self/clear_refs``) over ``--steps`` unprofiled steps minus its resident memory before
  them (model built, optimizer made): what the C allocator took from the system.
- **live tensor bytes**: the same steps again under ``torch.profiler`` (``profile_memory=True``),
  whose memory timeline (``export_memory_timeline``, raw events) gives every allocation of
  c10's CPU allocator with the profiler's category (parameter, gradient, optimizer state,
  activation, temporary, input, autograd detail); the peak of their sum over the steps, its
  composition, and the sizes of the largest live tensors at that moment. Weights, gradients and
  optimizer state are also summed from the tensors themselves (``numel() * element_size()``)
  as a check on the profiler's categories.
- **saved for backward**: over one forward and backward of a batch, every tensor autograd keeps
  (``torch.autograd.graph.saved_tensors_hooks``, each storage once, parameters left out), by who
  keeps it (the model or the loss), dtype and size: what Korthikanti et al.'s activation count
  counts.
- **FLOPs**: ``torch.utils.flop_counter.FlopCounterMode`` over that forward and backward (the
  loss included), per token, by operator.

The planned side: ``archlab.plan.plan_training`` (fp32, AdamW, one device, no ZeRO, no
recomputation): its memory, its 6N and its PaLM count 6N + 12·L·h·s (Chowdhery et al. 2022,
appendix B); ``archlab.analyze(spec, batch_size)``'s ``training_memory_bytes`` and
``per_target_token['training_flops']``; and the matmul FLOPs written out from the shape (what
FlopCounterMode should see). docs/results.md ("Planner: planned vs measured") records a run and
explains each difference.

    python benchmarks/plan_vs_measured.py [--batch-sizes 4 16] [--steps 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

import archlab
from archlab import plan
from archlab.training import Engine, resolve_recipe

VOCAB, WIDTH, BLOCKS, HEADS, SEQ, DROPOUT = 2048, 256, 4, 4, 128, 0.1
SEED = 0
MIB = 2 ** 20
# The profiler's categories, in the order of the indices its raw timeline writes
# (torch.profiler._memory_profiler._CATEGORY_TO_INDEX in torch 2.13); None: an allocation it
# could not tie to a tensor.
CATEGORIES = ("parameter", "optimizer", "input", "temporary", "activation", "gradient", "autograd_detail",
              "unknown")


def gpt_spec() -> dict[str, Any]:
    """The measured model: GPT-2's layout at a size that steps in about a second on two cores."""
    block = {"num_heads": HEADS, "ff_dim": 4 * WIDTH, "activation": "gelu", "norm_first": True, "causal": True,
             "dropout": DROPOUT}
    return {
        "name": "gpt-tiny",
        "input": {"shape": [SEQ], "dtype": "long"},
        "task": {"kind": "language_model"},
        "layers": [
            {"embedding": {"input_dim": VOCAB, "output_dim": WIDTH}, "name": "wte"},
            {"positional_embedding": {"max_len": SEQ, "kind": "learned"}},
            {"dropout": {"rate": DROPOUT}},
            {"repeat": {"times": BLOCKS, "layers": [{"transformer_encoder": block}]}},
            {"layernorm": None},
            {"dense": {"units": VOCAB, "use_bias": False}, "tie": "wte"},
        ],
    }


def engine(spec: dict[str, Any], batch: int) -> Engine:
    """archlab's trainer for ``spec``: AdamW as examples/lm/gpt-multi30k.yaml trains, fp32, CPU."""
    recipe = resolve_recipe({"epochs": 1, "batch_size": batch, "seed": SEED, "validation_split": 0.0,
                             "optimizer": {"name": "adamw", "lr": 5e-4, "weight_decay": 0.01}, "grad_clip": 1.0},
                            device="cpu", precision="fp32")
    torch.manual_seed(SEED)
    return Engine(archlab.build(spec), recipe, "language_model", run_dir=None, verbose=0)


def tensor_bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


def resident() -> tuple[int, int]:
    """(current, peak) resident set size of this process in bytes, from /proc/self/status."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux's clear_refs 5); False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def live_bytes_peak(prof: profile) -> dict[str, Any]:
    """The peak of live tensor bytes in a profiled run, by category, and the largest tensors then.

    Replays the profiler's raw memory timeline: (time, action, signed bytes, category) events,
    time-ordered; tensors that existed before profiling began come first as PREEXISTING."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "memory.raw.json.gz")
        with warnings.catch_warnings():
            # deprecated in favour of torch.cuda.memory's snapshots, which have no CPU counterpart
            warnings.simplefilter("ignore", FutureWarning)
            prof.export_memory_timeline(path, device="cpu")
        with gzip.open(path, "rt") as f:
            events = json.load(f)
    by_category = [0] * len(CATEGORIES)
    live: Counter[tuple[int, int]] = Counter()  # (category, bytes) -> tensors of that size alive
    peak, at_peak, live_at_peak = 0, list(by_category), Counter()
    for _, _, size, category in events:
        by_category[category] += size
        live[category, abs(size)] += 1 if size > 0 else -1
        total = sum(by_category)
        if total > peak:
            peak, at_peak, live_at_peak = total, list(by_category), +live
    largest = sorted(((size, CATEGORIES[c], n) for (c, size), n in live_at_peak.items()), reverse=True)[:8]
    return {"peak": peak, "by_category": dict(zip(CATEGORIES, at_peak, strict=True)),
            "largest": [{"bytes": size, "category": c, "count": n} for size, c, n in largest]}


def one_step(run: Engine, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """One training forward and backward (loss included) of a batch, counted twice over:
    FlopCounterMode's FLOPs by operator, and the bytes autograd saves for the backward pass, by
    who saves them (the model or the loss) and dtype (CUDA's dropout keeps bool masks, the CPU's
    fp32 ones), each storage once and the parameters left out (the tied head saves the embedding's
    weight).

    Grad mode on and the module in training mode, as in Engine.fit: in eval mode under no_grad,
    nn.MultiheadAttention takes a fused fast path that FlopCounterMode does not count."""
    params = {p.untyped_storage().data_ptr() for p in run.model.parameters()}
    saved: dict[int, tuple[str, str, int]] = {}  # storage -> (saved by, dtype, bytes)

    def keeper(owner: str) -> torch.autograd.graph.saved_tensors_hooks:
        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage.data_ptr() not in params:
                saved.setdefault(storage.data_ptr(), (owner, str(t.dtype).removeprefix("torch."), storage.nbytes()))
            return t

        return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)

    run.model.train()
    with FlopCounterMode(display=False) as counter:
        with keeper("model"):
            out = run.model(x)
        with keeper("loss"):
            loss = run.loss_fn(out, y)
        loss.backward()
    run.model.zero_grad(set_to_none=True)
    by_owner: Counter[str] = Counter()
    for owner, dtype, size in saved.values():
        by_owner[f"{owner} {dtype}"] += size
    sizes = Counter(saved.values())  # the tensors' sizes tell which they are: s·b·h, s·b·4h, the scores, logits
    return {"flops": {str(op).removeprefix("aten."): n for op, n in counter.get_flop_counts()["Global"].items()},
            "saved": dict(by_owner),
            "saved_sizes": [{"owner": o, "dtype": d, "bytes": size, "count": n}
                            for (o, d, size), n in sorted(sizes.items(), key=lambda kv: -kv[0][2])]}


def measure(batch: int, steps: int) -> dict[str, Any]:
    """One micro-batch size, in this process: RSS, live tensor bytes and FLOPs of training steps."""
    spec = gpt_spec()
    run = engine(spec, batch)
    generator = torch.Generator().manual_seed(SEED)
    x = torch.randint(1, VOCAB, (steps * batch, SEQ), generator=generator)  # ids >= 1: 0 is the pad id
    y = torch.randint(1, VOCAB, (steps * batch, SEQ), generator=generator)

    print(f"[b={batch}] {steps} steps, RSS", file=sys.stderr, flush=True)
    before, _ = resident()
    hwm_reset = reset_peak_rss()
    began = time.perf_counter()
    run.fit(x, y)
    seconds = (time.perf_counter() - began) / steps
    _, peak_rss = resident()
    if not hwm_reset:  # the process's lifetime peak: still this fit's, the first heavy work in it
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    print(f"[b={batch}] {steps} steps under torch.profiler(profile_memory=True)", file=sys.stderr, flush=True)
    # a fresh model and optimizer, so that the profiler sees the optimizer state created and tells
    # it apart (after a first fit it labels much of what is live "unknown"); the first one freed,
    # else its tensors would count as live
    del run
    gc.collect()
    run = engine(spec, batch)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        run.fit(x, y)
    print(f"[b={batch}] reading the profiler's memory timeline", file=sys.stderr, flush=True)
    tensors = live_bytes_peak(prof)
    params = list(run.model.parameters())
    tensors["own"] = {
        "weights": tensor_bytes(params) + tensor_bytes(run.model.buffers()),
        "gradients": tensor_bytes(p.grad for p in params),
        "optimizer": tensor_bytes(t for state in run.optimizer.state.values() for t in state.values()),
        "data": tensor_bytes((x, y)),
    }

    print(f"[b={batch}] FlopCounterMode and saved tensors over one forward and backward", file=sys.stderr,
          flush=True)
    counted = one_step(run, x[:batch].clone(), y[:batch].clone())  # own storages: a view's would be all of x
    return {"batch": batch, "steps": steps, "seconds_per_step": seconds, "tensors": tensors,
            "rss": {"before": before, "peak": peak_rss, "growth": peak_rss - before, "reset": hwm_reset},
            "saved": counted["saved"], "saved_sizes": counted["saved_sizes"], "flops": counted["flops"],
            "flops_per_token": sum(counted["flops"].values()) / (batch * SEQ)}


def planned(batch: int) -> dict[str, Any]:
    """What is predicted from the spec alone, for one micro-batch: the planner's fp32 AdamW training
    on one device without ZeRO or recomputation (the GPU it is told only sets the time and the
    verdict, which are not compared here), and archlab.analyze's estimate."""
    spec = gpt_spec()
    training = plan.plan_training(spec, plan.PlanConfig(gpus=1, precision="fp32", optimizer="adamw",
                                                        micro_batch=batch, zero=0, recompute="none", tokens=1e6))
    analysis = archlab.analyze(spec, batch_size=batch)
    # what FlopCounterMode sees: the weights that enter a matmul (per block Q, K, V and output
    # projections 4·d², the MLP 8·d²; the tied head V·d; not the position embedding, biases or
    # norms), 6 FLOPs per weight and token, and QKᵀ and AV: 2·2·s·d per token and block, x3
    matmuls = 6 * (BLOCKS * 12 * WIDTH * WIDTH + VOCAB * WIDTH) + 3 * BLOCKS * 4 * SEQ * WIDTH
    return {
        "params": training.model.total_params,
        "memory": {"planner": dict(training.memory), "archlab.analyze": dict(analysis.training_memory_bytes)},
        "flops_per_token": {
            "planner: 6N": training.flops_per_token,
            "planner: PaLM 6N + 12·L·h·s": training.flops_per_token_palm,
            "archlab.analyze (3 x forward)": analysis.per_target_token["training_flops"],
            "matmuls of the shape": matmuls,
        },
    }


def error(planned_value: float, measured_value: float) -> str:
    """(planned − measured) / measured, signed: negative = the plan is too low."""
    return f"{100 * (planned_value - measured_value) / measured_value:+.1f}%" if measured_value else "n/a"


def measured_parts(measured: dict[str, Any]) -> dict[str, int]:
    """The measured peak split as the plan splits it, by the profiler's categories at the peak:
    weights, gradients (none at a peak in the backward pass, after zero_grad freed the previous
    step's and before the new ones are made), optimizer state, and the activations: everything else
    but the token ids (autograd's intermediate gradients, temporaries, what it could not label)."""
    peak, cat = measured["tensors"]["peak"], measured["tensors"]["by_category"]
    parts = {"weights": cat["parameter"], "gradients": cat["gradient"], "optimizer": cat["optimizer"]}
    parts["activations"] = peak - sum(parts.values()) - cat["input"]
    parts["total"] = peak
    return parts


def report(results: list[dict[str, Any]]) -> None:
    """The tables docs/results.md records."""
    print("\nMemory, MiB: planned (the planner; archlab.analyze) / measured (peak of live tensor bytes) / error")
    print("| b | part | planner | archlab.analyze | measured | error, planner | error, analyze |\n"
          "|---:|---|---:|---:|---:|---:|---:|")
    for r in results:
        plans, measured = r["planned"]["memory"], measured_parts(r["measured"])
        planner, analysis = plans["planner"], plans["archlab.analyze"]
        for part in ("weights", "gradients", "optimizer", "activations", "total"):
            print(f"| {r['batch']} | {part} | {planner[part] / MIB:.2f} | {analysis[part] / MIB:.2f} | "
                  f"{measured[part] / MIB:.2f} | {error(planner[part], measured[part])} | "
                  f"{error(analysis[part], measured[part])} |")
        rss = r["measured"]["rss"]["growth"] + r["measured"]["tensors"]["own"]["weights"]  # resident before
        print(f"| {r['batch']} | total, as RSS: weights + RSS growth over the steps | {planner['total'] / MIB:.2f} | "
              f"{analysis['total'] / MIB:.2f} | {rss / MIB:.2f} | {error(planner['total'], rss)} | "
              f"{error(analysis['total'], rss)} |")
    for r in results:
        m = r["measured"]
        live, activations = m["tensors"], measured_parts(m)["activations"]
        saved = sum(m["saved"].values())
        print(f"\nb={r['batch']}: activations {activations / MIB:.2f} MiB = saved for backward "
              + ", ".join(f"{k} {v / MIB:.2f}" for k, v in sorted(m["saved"].items()))
              + f", and {(activations - saved) / MIB:.2f} not saved (temporaries live at the peak)")
        print("  saved tensors by size: " + ", ".join(f"{t['count']} x {t['bytes']:,} B ({t['owner']} {t['dtype']})"
                                                    for t in m["saved_sizes"]))
        phase = ("in the backward pass (the gradients not yet made)" if live["by_category"]["gradient"] <
                 live["own"]["gradients"] else "at the end of a forward pass (last step's gradients still held)")
        print(f"  the peak falls {phase}; by the profiler's category (MiB): "
              + ", ".join(f"{k} {v / MIB:.2f}" for k, v in live["by_category"].items() if v)
              + "; from the tensors themselves: " + ", ".join(f"{k} {v / MIB:.2f}" for k, v in live["own"].items()))
        print("  largest live tensors at the peak: "
              + ", ".join(f"{t['count']} x {t['bytes']:,} B ({t['category']})" for t in live["largest"]))
        print(f"  RSS {m['rss']['before'] / MIB:.0f} MiB before the steps, {m['rss']['peak'] / MIB:.0f} MiB at most; "
              f"{m['seconds_per_step']:.2f} s per step")
    print("\nTraining FLOPs per token: planned / FlopCounterMode / error")
    print("| formula | planned | measured | error |\n|---|---:|---:|---:|")
    measured_flops = results[0]["measured"]["flops_per_token"]
    for name, value in results[0]["planned"]["flops_per_token"].items():
        print(f"| {name} | {value:,.0f} | {measured_flops:,.0f} | {error(value, measured_flops)} |")
    for r in results:
        print(f"b={r['batch']}: FlopCounterMode by operator, per token: "
              + ", ".join(f"{op} {n / (r['batch'] * SEQ):,.0f}" for op, n in sorted(r["measured"]["flops"].items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 16], help="micro-batch sizes (default 4 16)")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per measurement (default 3; >= 2, "
                        "so that the peak includes the optimizer state that the first step creates)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a worker: one batch size
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2: the optimizer state appears in the first step")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one is not None:
        json.dump(measure(args.one, args.steps), sys.stdout)
        return

    print(f"{platform.machine()}, python {sys.version.split()[0]}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; gpt-tiny: vocabulary {VOCAB}, width {WIDTH}, {BLOCKS} blocks of "
          f"{HEADS} heads, {SEQ} positions, {planned(1)['params']:,} parameters; AdamW, fp32, CPU", flush=True)
    results = []
    for batch in args.batch_sizes:
        worker = [sys.executable, __file__, "--one", str(batch), "--steps", str(args.steps),
                  *(["--threads", str(args.threads)] if args.threads else [])]
        done = subprocess.run(worker, stdout=subprocess.PIPE, text=True, check=True)
        results.append({"batch": batch, "planned": planned(batch), "measured": json.loads(done.stdout)})
    report(results)
    if args.json is not None:
        args.json.write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                                         "results": results}, indent=1))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
