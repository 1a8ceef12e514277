"""Human-readable rendering of an Analysis with Rich: the per-node table and the totals."""

from __future__ import annotations

import io

from rich.console import Console, Group
from rich.table import Table

from ._analyze import Analysis

__all__ = ["human_bytes", "human_count", "render", "render_text"]


def human_count(n: float, unit: str = "") -> str:
    """1234567 -> '1.23 M'. Exact counts are in the JSON output."""
    for scale, prefix in ((1e21, "Z"), (1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {prefix}{unit}"
    return f"{n:g} {unit}".rstrip()


def human_bytes(n: float) -> str:
    for scale, prefix in ((2**70, "ZiB"), (2**60, "EiB"), (2**50, "PiB"), (2**40, "TiB"), (2**30, "GiB"),
                          (2**20, "MiB"), (2**10, "KiB")):
        if n >= scale:
            return f"{n / scale:.2f} {prefix}"
    return f"{int(n)} B"


def render(analysis: Analysis, depth: int | None = 3) -> Group:
    table = Table(title=f"{analysis.name}: per-node capacity (per sample; activations for batch {analysis.batch_size})",
                  title_justify="left")
    # a column of active parameters only for a sparse model: for a dense one it repeats Params
    sparse = analysis.active_params != analysis.total_params
    for column, justify in (("Layer", "left"), ("Type", "left"), ("Output shape", "left"), ("Params", "right"),
                            *((("Active", "right"),) if sparse else ()), ("MACs", "right"), ("FLOPs", "right"),
                            ("Activations", "right"), ("Note", "left")):
        table.add_column(column, justify=justify, no_wrap=column != "Note")
    hidden = 0
    for row in analysis.layers:
        if depth is not None and row.depth > depth:
            hidden += 1
            continue
        indent = "  " * (row.depth - 1)
        active = (f"{row.active_params:,}",) if sparse else ()
        table.add_row(indent + row.path, row.type, str(tuple(row.output_shape)), f"{row.params:,}", *active,
                      human_count(row.macs), human_count(row.flops), human_bytes(row.activation_bytes), row.note)
    mem = analysis.training_memory_bytes
    totals = Table.grid(padding=(0, 2))
    totals.add_column(justify="left")
    totals.add_column(justify="right")
    lines = [
        ("Total params", f"{analysis.total_params:,}"),
        *((("Active parameters per token", f"{analysis.active_params:,} ({human_count(analysis.active_params)})"),)
          if sparse else ()),
        ("Trainable params", f"{analysis.trainable_params:,}"),
        ("Non-trainable params", f"{analysis.non_trainable_params:,}"),
        ("Buffers (e.g. BatchNorm statistics)", f"{analysis.buffers:,}"),
        ("Forward MACs / sample", f"{analysis.macs:,} ({human_count(analysis.macs)})"),
        ("Forward FLOPs / sample", f"{analysis.flops:,} ({human_count(analysis.flops, 'FLOPs')})"),
        *_token_lines(analysis),
        ("Model size fp32 / bf16 / int8",
         " / ".join(human_bytes(analysis.model_bytes[k]) for k in ("fp32", "bf16", "int8"))),
        (f"Training memory, batch {analysis.batch_size} (fp32, Adam)", human_bytes(mem["total"])),
        ("  weights", human_bytes(mem["weights"])),
        ("  gradients", human_bytes(mem["gradients"])),
        ("  optimizer state (Adam m, v)", human_bytes(mem["optimizer"])),
        ("  activations kept for backward", human_bytes(mem["activations"])),
    ]
    padded = [f"{n} pad_id {i['pad_id']}" for n, i in analysis.inputs.items() if "pad_id" in i]
    if padded:  # the layers that mix time steps ignore these inputs' padding
        lines.append(("Padding masked", ", ".join(padded)))
    for name, value in lines:
        totals.add_row(name, value)
    parts = [table]
    if hidden:
        parts.append(f"({hidden} deeper rows hidden; --depth {max(r.depth for r in analysis.layers)} shows all)")
    parts.append(totals)
    return Group(*parts)


def _token_lines(analysis: Analysis) -> list[tuple[str, str]]:
    """FLOPs per target token of a seq2seq or language-model spec (``Analysis.per_target_token``)."""
    per = analysis.per_target_token
    if per is None:
        return []
    where = f"/ {per['tokens']} '{per['input']}' positions" + (", encoder included" if per["encoder_included"] else "")
    return [(f"Forward FLOPs / target token ({where})", f"{per['flops']:,.0f} ({human_count(per['flops'], 'FLOPs')})"),
            ("Training FLOPs / target token (~3x forward)",
             f"{per['training_flops']:,.0f} ({human_count(per['training_flops'], 'FLOPs')})")]


def render_text(analysis: Analysis, depth: int | None = 3, width: int = 160) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, record=True)
    console.print(render(analysis, depth))
    return console.export_text()
