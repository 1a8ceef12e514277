"""The accelerators the planner knows: memory, dense peak FLOP/s per precision and memory bandwidth,
from the vendors' datasheets (sources in docs/plan.md). Dense means without 2:4 sparsity: the
datasheets print the sparse figure first, twice the dense one, and no training run reaches it."""

from __future__ import annotations

from dataclasses import dataclass, field

from archlab.exceptions import suggest

from ._errors import PlanError

__all__ = ["GPUS", "Hardware", "get_gpu"]

GIB = 2**30
TERA = 1e12


@dataclass(frozen=True)
class Hardware:
    """One accelerator.

    Attributes:
        name: what the planner prints.
        memory_bytes: its memory. Datasheet "80GB" is read as 80 GiB, as nvidia-smi reports it
            (an A100 80GB shows 81,920 MiB).
        peak_flops: dense peak FLOP/s by precision ("bf16", "fp16": tensor cores with fp32
            accumulate; "fp32": without TF32, PyTorch's default for matmuls). A precision the
            accelerator lacks is absent.
        bandwidth_bytes_per_s: memory bandwidth (bytes per second).
    """

    name: str
    memory_bytes: int
    peak_flops: dict[str, float] = field(default_factory=dict)
    bandwidth_bytes_per_s: float = 0.0

    def peak(self, precision: str) -> float:
        """The dense peak FLOP/s at ``precision``; a ValueError naming the ones it has otherwise."""
        if precision not in self.peak_flops:
            raise PlanError(f"--precision {precision}: {self.name} has no {precision} peak in its datasheet; "
                            f"it has {', '.join(sorted(self.peak_flops))}")
        return self.peak_flops[precision]


def _gpu(name: str, gib: float, bf16: float | None, fp16: float, fp32: float, tb_per_s: float) -> Hardware:
    peaks = {"fp16": fp16 * TERA, "fp32": fp32 * TERA} | ({"bf16": bf16 * TERA} if bf16 is not None else {})
    return Hardware(name, int(gib * GIB), peaks, tb_per_s * TERA)


#: name -> Hardware; TFLOP/s dense (bf16, fp16, fp32) and TB/s as the datasheets give them.
GPUS: dict[str, Hardware] = {
    "v100-32gb": _gpu("V100 SXM2 32GB", 32, None, 125, 15.7, 0.9),  # Volta: no bf16
    "a100-40gb": _gpu("A100 SXM 40GB", 40, 312, 312, 19.5, 1.555),
    "a100-80gb": _gpu("A100 SXM 80GB", 80, 312, 312, 19.5, 2.039),
    "h100-sxm": _gpu("H100 SXM 80GB", 80, 989.5, 989.5, 67, 3.35),
    "h200": _gpu("H200 SXM 141GB", 141, 989.5, 989.5, 67, 4.8),
    "l4": _gpu("L4 24GB", 24, 121, 121, 30.3, 0.3),
    "a10": _gpu("A10 24GB", 24, 125, 125, 31.2, 0.6),
    "rtx-4090": _gpu("GeForce RTX 4090 24GB", 24, 165.2, 165.2, 82.6, 1.008),
    "mi300x": _gpu("Instinct MI300X 192GB", 192, 1307.4, 1307.4, 163.4, 5.3),
}


def get_gpu(name: str | Hardware) -> Hardware:
    """The accelerator called ``name`` in ``GPUS`` (a Hardware is returned as is).

    Example:
        >>> get_gpu("a100-80gb").peak("bf16")
        312000000000000.0
    """
    if isinstance(name, Hardware):
        return name
    if name not in GPUS:
        starting = [n for n in GPUS if n.startswith(name.lower())]  # "a100": both sizes
        hint = f"; did you mean {' or '.join(repr(n) for n in starting)}?" if starting else suggest(name, GPUS)
        raise PlanError(f"--gpu {name}: unknown GPU{hint}; known: {', '.join(GPUS)} "
                        "(archlab.plan.Hardware describes another)")
    return GPUS[name]
