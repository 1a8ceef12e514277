"""What ``precision: auto`` trains in: bf16 autocast where it is faster than fp32, fp32 elsewhere.

On a CUDA device, bf16 wherever the device supports it. On a CPU, bf16 needs units for it (AMX-BF16
or AVX512-BF16), and even then pays off only when the model has enough arithmetic for the casts
autocast adds to be small beside it. The rule, in that order, each step cheap:

1. a model under ``MIN_BF16_PARAMS`` parameters keeps fp32 (a 2,410-parameter MLP steps 0.62x as
   fast in bf16, a 101,770-parameter one 1.39x: docs/training.md, "Precision");
2. a CPU without ``amx_bf16`` / ``avx512_bf16`` (``/proc/cpuinfo``) keeps fp32, without measuring;
3. otherwise a one-time probe (about 20 ms) times a 512 x 512 matmul in both precisions, and bf16
   is taken when it is at least ``MIN_MATMUL_SPEEDUP`` times faster. The probe's result is cached
   per machine (CPU model, bf16 flags, torch version) in the user cache folder, so every later run
   decides the same way without measuring.

The choice and its reason go to the training log and to the run's summary.json.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import platformdirs
import torch
from torch import nn

__all__ = ["MIN_BF16_PARAMS", "MIN_MATMUL_SPEEDUP", "PrecisionChoice", "choose_cpu_precision", "cpu_bf16_flags",
           "matmul_speedup", "resolve_precision"]

log = logging.getLogger("archlab")

#: CPU flags of bf16 arithmetic units (x86: Intel AMX, AVX512-BF16 on Intel and AMD Zen 4 and later).
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
#: Smallest model trained in bf16 on a CPU. One training step of an MLP at batch 128, bf16 autocast
#: against fp32 (AMD EPYC with avx512_bf16, 1 thread): 2,410 parameters 0.62x, 25,450 0.90x,
#: 50,890 1.08x, 101,770 1.39x, 669,706 2.51x. Below about 50,000 the casts cost more than bf16 saves.
MIN_BF16_PARAMS = 100_000
#: A bf16 matmul must be this many times faster than fp32 for training to gain: a training step
#: also runs element-wise work that bf16 speeds up less (the seed CNN: 4.0-4.4x matmul, 2.0x training).
MIN_MATMUL_SPEEDUP = 1.5
PROBE_SIZE = 512
CACHE_FILE = "precision-probe.json"


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run trains in, and why (recorded in summary.json)."""

    precision: Literal["fp32", "bf16"]
    reason: str

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"


def _cpuinfo() -> str:
    """/proc/cpuinfo; empty where there is none (macOS, Windows), so those keep fp32."""
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _field(cpuinfo: str, name: str) -> str | None:
    """The first core's ``name`` line (every core lists the same model and flags)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def cpu_bf16_flags(cpuinfo: str | None = None) -> tuple[str, ...]:
    """The bf16 flags (``BF16_FLAGS``) in /proc/cpuinfo (or in the given text of it).

    Example:
        >>> cpu_bf16_flags("flags\t\t: fpu avx512f avx512_bf16 avx512_vnni")
        ('avx512_bf16',)
    """
    flags = set((_field(_cpuinfo() if cpuinfo is None else cpuinfo, "flags") or "").split())
    return tuple(f for f in BF16_FLAGS if f in flags)


def choose_cpu_precision(flags: tuple[str, ...], params: int, speedup: float | None) -> PrecisionChoice:
    """The rule of ``precision: auto`` on a CPU, as a pure function of what was found.

    Args:
        flags: the CPU's bf16 flags (``cpu_bf16_flags``).
        params: the model's parameter count.
        speedup: how many times faster a bf16 matmul is than fp32 (``matmul_speedup``); only needed
            when ``flags`` and ``params`` leave the question open.

    Example:
        >>> choose_cpu_precision(("avx512_bf16",), 225_034, 4.4)
        PrecisionChoice(precision='bf16', reason='avx512_bf16, 4.4x faster matmul')
        >>> choose_cpu_precision((), 225_034, None).precision
        'fp32'
    """
    if params < MIN_BF16_PARAMS:
        return PrecisionChoice("fp32", f"{params:,} parameters, under the {MIN_BF16_PARAMS:,} where bf16 pays off")
    if not flags:
        return PrecisionChoice("fp32", f"this CPU has no bf16 units ({' or '.join(BF16_FLAGS)})")
    if speedup is None:
        raise ValueError("choose_cpu_precision needs the measured bf16 matmul speedup when the CPU has bf16 units")
    units = "+".join(flags)
    if speedup < MIN_MATMUL_SPEEDUP:
        return PrecisionChoice("fp32", f"{units}, but bf16 matmul only {speedup:.1f}x fp32 "
                                       f"(bf16 needs {MIN_MATMUL_SPEEDUP}x)")
    return PrecisionChoice("bf16", f"{units}, {speedup:.1f}x faster matmul")


def _probe(size: int = PROBE_SIZE, repeats: int = 5) -> float:
    """bf16 / fp32 matmul speed: the best of ``repeats`` interleaved trials each, after two warm-up
    calls (the first calls also start torch's thread pool); the best, because other processes only
    ever slow a trial down."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    pairs = {"fp32": (a, b), "bf16": (a.bfloat16(), b.bfloat16())}
    best = dict.fromkeys(pairs, float("inf"))
    for _ in range(2):
        for p, q in pairs.values():
            torch.matmul(p, q)
    for _ in range(repeats):
        for name, (p, q) in pairs.items():
            began = time.perf_counter()
            torch.matmul(p, q)
            best[name] = min(best[name], time.perf_counter() - began)
    return best["fp32"] / best["bf16"]


def _machine_key(flags: tuple[str, ...]) -> str:
    """What the probe's result depends on: the CPU model, its bf16 units and torch's kernels."""
    model = _field(_cpuinfo(), "model name") or platform.processor() or platform.machine()
    return f"{model} | {'+'.join(flags)} | torch {torch.__version__}"


def matmul_speedup(flags: tuple[str, ...]) -> float:
    """How many times faster bf16 matmul is than fp32 on this machine: measured once
    (``_probe``), then read from the user cache folder."""
    path = Path(platformdirs.user_cache_dir("archlab")) / CACHE_FILE
    key = _machine_key(flags)
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = {}
    if not isinstance(cached, dict):
        cached = {}
    entry = cached.get(key)
    if isinstance(entry, dict) and isinstance(entry.get("speedup"), (int, float)):
        return float(entry["speedup"])
    speedup = round(_probe(), 2)  # as the cache holds it, so the first run decides as the later ones
    cached[key] = {"speedup": speedup, "size": PROBE_SIZE, "threads": torch.get_num_threads(),
                   "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # parallel workers (cv --jobs) probe at once
        tmp.write_text(json.dumps(cached, indent=2), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:  # a read-only cache costs a probe per process, not the run
        log.debug("could not cache the precision probe in %s: %s", path, exc)
    return speedup


@functools.lru_cache(maxsize=1)
def _cpu_speedup(flags: tuple[str, ...]) -> float:
    """``matmul_speedup`` once per process: search and cross-validation build many engines."""
    return matmul_speedup(flags)


def resolve_precision(requested: str, device: torch.device, model: nn.Module) -> PrecisionChoice:
    """The recipe's ``precision`` for ``model`` on ``device``: fp32 and bf16 as given; auto by the
    rule in this module's docstring."""
    if requested in ("fp32", "bf16"):
        return PrecisionChoice(requested, "given (train.precision or --precision)")  # type: ignore[arg-type]
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice("bf16", f"{torch.cuda.get_device_name(device)} supports bf16")
        return PrecisionChoice("fp32", f"{torch.cuda.get_device_name(device)} has no bf16 support")
    if device.type != "cpu":
        return PrecisionChoice("fp32", f"auto keeps fp32 on {device.type}")
    flags = cpu_bf16_flags()
    params = sum(p.numel() for p in model.parameters())
    speedup = _cpu_speedup(flags) if flags and params >= MIN_BF16_PARAMS else None
    return choose_cpu_precision(flags, params, speedup)
