"""How long does it take to see a model's capacity? archlab vs torchinfo, fvcore and ptflops.

archlab analyses the spec by shape arithmetic; the others need the model built with real
weights and run (or trace) a forward pass. Each tool is timed on the same specs, interleaved
round by round in one process so that the shared machine's noise hits all of them alike;
the median of the rounds is reported, with the ratio to archlab.

    python benchmarks/analysis_speed.py [--rounds 5]

Needs the benchmark extra: pip install -c constraints.txt -e ".[dev,bench]"
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import torch

import archlab

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SPECS = ["seed-mnist-cnn.yaml", "resnet18.yaml", "gpt2-small.yaml"]


def _inputs(parsed: archlab.builder.ParsedSpec) -> tuple[torch.Tensor, ...]:
    return tuple(torch.zeros((1, *i.shape), dtype=torch.long if i.dtype == "long" else torch.float32)
                 for i in parsed.inputs.values())


def run_archlab(spec: archlab.Spec) -> int:
    return archlab.analyze(spec).total_params


def run_torchinfo(spec: archlab.Spec) -> int:
    import torchinfo

    model = archlab.build(spec).eval()
    stats = torchinfo.summary(model, input_data=list(_inputs(archlab.parse(spec))), verbose=0)
    return stats.total_params


def run_fvcore(spec: archlab.Spec) -> int:
    from fvcore.nn import FlopCountAnalysis

    model = archlab.build(spec).eval()
    counter = FlopCountAnalysis(model, _inputs(archlab.parse(spec)))
    counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return counter.total()


def run_ptflops(spec: archlab.Spec) -> int:
    from ptflops import get_model_complexity_info

    model = archlab.build(spec).eval()
    parsed = archlab.parse(spec)
    inputs = _inputs(parsed)
    macs, _ = get_model_complexity_info(model, tuple(parsed.inputs["input"].shape), as_strings=False,
                                        print_per_layer_stat=False, verbose=False,
                                        input_constructor=lambda _: inputs[0])
    return macs


TOOLS = {"archlab (spec only)": run_archlab, "torchinfo": run_torchinfo, "fvcore": run_fvcore,
         "ptflops": run_ptflops}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {args.rounds} interleaved rounds, median milliseconds\n")
    print("| spec | " + " | ".join(TOOLS) + " |")
    print("|---|" + "---|" * len(TOOLS))
    for name in SPECS:
        spec = archlab.load(EXAMPLES / name)
        times: dict[str, list[float]] = {tool: [] for tool in TOOLS}
        for _ in range(args.rounds):
            for tool, fn in TOOLS.items():
                start = time.perf_counter()
                fn(spec)
                times[tool].append(time.perf_counter() - start)
        base = statistics.median(times["archlab (spec only)"])
        cells = []
        for tool in TOOLS:
            median = statistics.median(times[tool])
            cells.append(f"{median * 1e3:.1f} ms" + ("" if tool.startswith("archlab") else f" ({median / base:.0f}x)"))
        print(f"| {name} | " + " | ".join(cells) + " |")
    # The others need the weights in memory (about 700 GB for GPT-3); archlab needs only the spec.
    start = time.perf_counter()
    total = run_archlab(archlab.load(EXAMPLES / "gpt3-175b.yaml"))
    print(f"| gpt3-175b.yaml | {(time.perf_counter() - start) * 1e3:.1f} ms ({total:,} params) "
          "| needs ~700 GB of weights | same | same |")


if __name__ == "__main__":
    main()
