"""archlab plan: FLOPs, time and memory per GPU of training a Transformer spec, before renting GPUs."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Annotated

import typer

import archlab
from archlab._paths import check_out_file
from archlab.plan import GPUS, METHODS, Hardware, PlanConfig, get_gpu, plan_training

from ._app import SpecArg, _out, app

#: 300B, 1.4T, 2k: the suffixes a person writes token counts with (short scale)
_SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmbgt]?)\s*$", re.IGNORECASE)


def parse_number(text: str, option: str) -> float:
    """``300e9``, ``300B``, ``1.4T``, ``2k`` as a number; a ValueError naming ``option`` otherwise.

    Example:
        >>> parse_number("1.4T", "--tokens"), parse_number("300e9", "--tokens")
        (1400000000000.0, 300000000000.0)
    """
    match = _NUMBER.match(text)
    if match is None:
        raise ValueError(f"{option} {text}: not a number; write it as 300e9, 300B or 1.4T (k, M, B, T suffixes)")
    return float(match.group(1)) * _SUFFIXES.get(match.group(2).lower(), 1)


def _int(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    value = parse_number(text, option)
    if value != int(value):
        raise ValueError(f"{option} {text}: must be a whole number")
    return int(value)


@app.command()
def plan(
    spec: SpecArg,
    tokens: Annotated[str | None, typer.Option(help="Tokens to train on: 300e9, 300B, 1.4T (default: the "
                                               "compute-optimal tokens for the spec's size, about 20 a parameter).",
                                               show_default=False, metavar="N")] = None,
    gpus: Annotated[str, typer.Option(help="GPUs in all.", metavar="N")] = "8",
    gpu: Annotated[str, typer.Option(help=f"The GPU: {', '.join(GPUS)}.")] = "a100-80gb",
    gpu_memory: Annotated[float | None, typer.Option(help="Memory per GPU in GiB, for a GPU not in the table "
                                                     "(replaces --gpu's).", show_default=False,
                                                     metavar="GIB")] = None,
    peak_tflops: Annotated[float | None, typer.Option(help="Dense peak TFLOP/s at --precision (replaces --gpu's).",
                                                      show_default=False, metavar="X")] = None,
    bandwidth: Annotated[float | None, typer.Option(help="Memory bandwidth in GB/s (replaces --gpu's).",
                                                    show_default=False, metavar="GB/S")] = None,
    precision: Annotated[str, typer.Option(help="bf16, fp16 (mixed precision) or fp32.")] = "bf16",
    mfu: Annotated[float, typer.Option(help="Model FLOPs utilisation (of 6N) for the time.")] = 0.4,
    micro_batch: Annotated[str, typer.Option(help="Sequences per GPU per forward pass.", metavar="N")] = "1",
    seq_len: Annotated[str | None, typer.Option(help="Tokens per sequence (default: the spec's).",
                                                show_default=False, metavar="N")] = None,
    global_batch: Annotated[str | None, typer.Option(help="Sequences per optimizer step (default: micro-batch x "
                                                     "dp, x 4·pp with a pipeline).", show_default=False,
                                                     metavar="N")] = None,
    zero: Annotated[int, typer.Option(help="ZeRO stage 0-3.")] = 1,
    tp: Annotated[str, typer.Option(help="Tensor-parallel size.", metavar="N")] = "1",
    pp: Annotated[str, typer.Option(help="Pipeline-parallel size.", metavar="N")] = "1",
    sp: Annotated[bool, typer.Option("--sp", help="Sequence parallelism with the tensor parallelism.")] = False,
    recompute: Annotated[str, typer.Option(help="Activation recomputation: none, selective or full.")] = "selective",
    optimizer: Annotated[str, typer.Option(help="adam, adamw or sgd (with momentum).")] = "adam",
    tokens_per_second: Annotated[str | None, typer.Option(help="A measured throughput per GPU: the time and MFU "
                                                          "follow from it.", show_default=False,
                                                          metavar="X")] = None,
    batch: Annotated[str, typer.Option(help="Serving: sequences decoded together.", metavar="N")] = "1",
    context: Annotated[str | None, typer.Option(help="Serving: tokens per sequence in the KV cache (default: the "
                                                "sequence length).", show_default=False,
                                                metavar="N")] = None,
    budget_flops: Annotated[str | None, typer.Option(help="Size the model for this training budget (1e23): the "
                                                     "compute-optimal parameters and tokens, and SPEC scaled to "
                                                     "them is planned.", show_default=False,
                                                     metavar="C")] = None,
    method: Annotated[str, typer.Option(help=f"Compute-optimal method: {', '.join(METHODS)}.")] = "approach1",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="With --budget-flops: write the scaled spec to "
                                             "this file (.yaml, .yml or .json).", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON (stable schema).")] = False,
) -> None:
    """Training FLOPs, time, memory per GPU and a verdict for SPEC under a parallel layout; when it does
    not fit, the smallest changes that do; serving costs; with --budget-flops, the compute-optimal
    size (docs/plan.md)."""
    if out is not None:
        if budget_flops is None:
            raise ValueError(f"--out {out}: writes the spec scaled to --budget-flops; give --budget-flops too")
        if out.suffix not in (".yaml", ".yml", ".json"):
            raise ValueError(f"--out {out}: a spec file ends in .yaml, .yml or .json")
        check_out_file(out)
    config = PlanConfig(
        tokens=None if tokens is None else parse_number(tokens, "--tokens"),
        gpus=_int(gpus, "--gpus"), gpu=_hardware(gpu, gpu_memory, peak_tflops, bandwidth, precision),
        precision=precision, mfu=mfu,  # type: ignore[arg-type]
        micro_batch=_int(micro_batch, "--micro-batch"), seq_len=_int(seq_len, "--seq-len"),  # type: ignore[arg-type]
        global_batch=_int(global_batch, "--global-batch"), zero=zero, tp=_int(tp, "--tp"),  # type: ignore[arg-type]
        pp=_int(pp, "--pp"), sp=sp, recompute=recompute, optimizer=optimizer,  # type: ignore[arg-type]
        tokens_per_second=None if tokens_per_second is None else parse_number(tokens_per_second,
                                                                              "--tokens-per-second"),
        batch=_int(batch, "--batch"), context=_int(context, "--context"),  # type: ignore[arg-type]
        budget_flops=None if budget_flops is None else parse_number(budget_flops, "--budget-flops"),
        method=method)  # type: ignore[arg-type]
    result = plan_training(spec, config)
    if out is not None and result.spec is not None:
        archlab.dump(result.spec, out)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        _out.print(result.table(), markup=False, soft_wrap=True)
    if out is not None and not as_json:
        _out.print(f"wrote {out}: {result.spec.name}; train it with: archlab train {out}", markup=False,
                   soft_wrap=True)


def _hardware(name: str, memory_gib: float | None, peak_tflops: float | None, bandwidth_gbs: float | None,
              precision: str) -> str | Hardware:
    """--gpu's table entry with the figures given on the command line in place of its own: a GPU the
    table lacks is described as the nearest one it has, changed."""
    given = {"--gpu-memory": memory_gib, "--peak-tflops": peak_tflops, "--bandwidth": bandwidth_gbs}
    if all(v is None for v in given.values()):
        return name
    for option, value in given.items():
        if value is not None and not value > 0:
            raise ValueError(f"{option} {value}: must be a positive number")
    base = get_gpu(name)
    changes = {}
    if memory_gib is not None:
        changes["memory_bytes"] = int(memory_gib * 2**30)
    if peak_tflops is not None:
        changes["peak_flops"] = {**base.peak_flops, precision: peak_tflops * 1e12}
    if bandwidth_gbs is not None:
        changes["bandwidth_bytes_per_s"] = bandwidth_gbs * 1e9
    units = {"--gpu-memory": "{:g} GiB", "--peak-tflops": "{:g} TFLOP/s " + precision, "--bandwidth": "{:g} GB/s"}
    said = ", ".join(units[option].format(value) for option, value in given.items() if value is not None)
    return dataclasses.replace(base, name=f"GPU of {said} (else {base.name})", **changes)
