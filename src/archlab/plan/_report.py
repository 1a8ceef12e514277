"""The text table of a Plan (what ``archlab plan`` prints): plain text, so the CLI and a notebook
print the same thing."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._training import Plan

__all__ = ["gib", "render_plan"]


def gib(n: float) -> str:
    return f"{n / 2**30:,.2f} GiB"


def _rows(rows: list[tuple[str, str]]) -> list[str]:
    width = max(len(k) for k, _ in rows)
    return [f"  {k:<{width}}  {v}" for k, v in rows]


def render_plan(plan: Plan) -> str:
    m, c, hw = plan.model, plan.config, plan.hardware
    params = f"{m.total_params:,}" + (f" ({m.active_params:,} active per token)"
                                      if m.active_params != m.total_params else "")
    lines = [f"plan: {m.name}: {params} parameters, {m.layers} blocks of width {m.hidden}, vocabulary {m.vocab:,}",
             f"layout: {c.gpus} x {hw.name}, tp {c.tp} x pp {c.pp} x dp {plan.dp}"
             f"{', sequence parallel' if c.sp else ''}, ZeRO-{c.zero}, recompute {c.recompute}, {c.precision}, "
             f"{c.optimizer}; micro-batch {c.micro_batch} x {c.seq_len} tokens, global batch {c.global_batch}",
             "", "compute"]
    lines += _rows([
        ("tokens", f"{c.tokens:.3g}"),
        ("FLOPs per token, 6N", f"{plan.flops_per_token:.4g}"),
        ("FLOPs per token, PaLM", f"{plan.flops_per_token_palm:.4g} (6N + 12·L·H·Q·T)"),
        ("FLOPs per token, hardware", f"{plan.hardware_flops_per_token:.4g} (with recompute {c.recompute})"),
        ("training FLOPs (6N)", f"{plan.total_flops:.3g}"),
        ("MFU / HFU", f"{plan.mfu:.1%} / {plan.hfu:.1%} of {hw.peak(c.precision) / 1e12:,.1f} TFLOP/s"),
        ("wall time", f"{plan.time_s / 86400:,.1f} days ({plan.time_s / 3600:,.1f} h)"),
        ("GPU-hours", f"{plan.gpu_hours:,.0f}"),
        ("pipeline bubble", f"{plan.bubble:.1%} ((p - 1)/m, micro-batches per step m = {plan.micro_batches})"),
    ])
    stage = "" if plan.stage == "all" else f" ({plan.stage} pipeline stage)"
    lines += ["", f"memory per GPU{stage}"]
    lines += _rows([(k, gib(v)) for k, v in plan.memory.items()]
                   + [("usable", f"{gib(plan.usable_bytes)} of {gib(hw.memory_bytes)} "
                       f"({c.headroom:.0%} kept for the allocator and workspace)")])
    verdict = "fits" if plan.fits else "does not fit"
    lines += ["", f"verdict: {verdict} ({gib(plan.memory['total'])} of {gib(plan.usable_bytes)} usable)"]
    if plan.fixes:
        lines.append("smallest changes that fit (fastest first; step time estimated without communication):")
        for fix in plan.fixes:
            lines.append(f"  - {fix.text}: {gib(fix.memory_bytes)}, step time x{fix.step_time_ratio:.2f}")
    if plan.inference is not None:
        lines += ["", *_inference(plan)]
    if plan.sizing is not None:
        lines += ["", *_sizing(plan)]
    for note in plan.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _inference(plan: Plan) -> list[str]:
    i = plan.inference
    s, memory = i.serving, i.memory
    lines = [f"inference (batch {s.batch} x context {s.context:,}, tp {s.tensor_parallel}, {s.weights} weights "
             "and cache)"]
    lines += _rows([
        ("KV cache per token", f"{i.kv_cache_bytes_per_token:,} bytes (all blocks, {s.kv})"),
        ("KV cache per GPU", f"{gib(memory.kv_cache)} (the batch at the full context)"),
        ("weights per GPU", gib(memory.weights)),
        ("activations per GPU", f"{gib(memory.activations)} (one block's workspace during prefill, the logits)"),
        ("serving memory", f"{gib(memory.total)}: {'fits' if i.fits else 'does not fit'} in {gib(plan.usable_bytes)}"),
        ("decode", f"<= {i.decode.tokens_per_s:,.1f} tokens/s ({i.decode.bound} bound)"),
        ("prefill", f">= {i.prefill.seconds * 1000:,.1f} ms for {s.prompt_tokens:,}-token prompts "
                    f"({i.prefill.bound} bound)"),
    ])
    return lines


def _sizing(plan: Plan) -> list[str]:
    o = plan.sizing
    lines = [f"compute-optimal size for {o.budget_flops:.3g} FLOPs ({o.method}: {o.source})"]
    rows = [("parameters", f"{o.params:.3g}"), ("tokens", f"{o.tokens:.3g} ({o.tokens_per_param:.1f} per parameter)")]
    if o.loss is not None:
        rows.append(("predicted loss", f"{o.loss:.3f} nats per token"))
    rows.append(("scaled spec", f"{plan.spec.name}: {plan.model.total_params:,} parameters, trained on "
                                f"{plan.config.tokens:.3g} tokens (the budget at its exact count)"))
    return lines + _rows(rows)
