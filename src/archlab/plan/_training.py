"""``plan_training``: FLOPs, time, memory per GPU and a verdict for training a Transformer spec under a
parallel layout, and when it does not fit, the smallest changes of layout that do. Arithmetic on the
spec's shapes: nothing is built. Formulas and sources: docs/plan.md."""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

from archlab.builder import ParsedSpec
from archlab.spec import Spec

from ._errors import PlanError
from ._hardware import Hardware, get_gpu
from ._inference import InferencePlan, Serving, plan_inference
from ._memory import (
    ELEMENT_BYTES,
    OPTIMIZERS,
    block_activation_bytes,
    embedding_activation_bytes,
    model_state_bytes,
    output_activation_bytes,
)
from ._report import render_plan
from ._scaling import FLOPS_PER_PARAM_TOKEN, METHODS, ComputeOptimal, budget_for, compute_optimal, scale_spec
from ._shape import ModelShape, model_shape

__all__ = ["Change", "Plan", "PlanConfig", "plan_training"]

RECOMPUTE = ("none", "selective", "full")
#: GPUs one tensor-parallel group may span: tensor parallelism's all-reduces need NVLink, within a node
NODE_SIZE = 8
#: fixes listed at most when a layout does not fit
MAX_FIXES = 5


@dataclass(frozen=True)
class PlanConfig:
    """Every input of a training plan.

    Attributes:
        tokens: tokens to train on; None: the compute-optimal tokens for the model's active
            parameters (Hoffmann et al. 2022 approach 1, about 20 a parameter: ``budget_for``), or
            those ``budget_flops`` buys.
        gpus: GPUs in all.
        gpu: a name in ``GPUS`` or a ``Hardware``.
        precision: "bf16", "fp16" (mixed precision, fp32 master weights) or "fp32".
        mfu: model FLOPs utilisation, 6N FLOPs per token over the peak; ignored when
            ``tokens_per_second`` is given (then it is derived).
        micro_batch: sequences per GPU per forward pass.
        seq_len: tokens per sequence; None: the spec's.
        global_batch: sequences per optimizer step; None: ``micro_batch · dp``, times ``4·pp``
            micro-batches per pipeline when pp > 1 (a bubble under 25%).
        zero: ZeRO stage 0-3 over the data-parallel ranks.
        tp, pp: tensor- and pipeline-parallel sizes; the data-parallel size is gpus / (tp·pp).
        sp: sequence parallelism (Korthikanti et al.) with the tensor parallelism.
        recompute: activation recomputation: "none", "selective" (the attention scores) or "full".
        optimizer: "adam", "adamw" or "sgd" (with momentum).
        tokens_per_second: a measured throughput per GPU; the time and MFU then follow from it.
        headroom: the fraction of each GPU's memory left for the allocator, workspace and CUDA context.
        batch: serving: sequences decoded together (the inference figures).
        context: serving: tokens per sequence in the KV cache; None: ``seq_len``.
        budget_flops: size the model for this training budget instead: the compute-optimal parameters
            by ``method`` (``compute_optimal``), the spec scaled to them (``scale_spec``), trained on the
            tokens the budget buys it (C / 6N of the scaled spec's exact count).
        method: "approach1", "hoffmann" or "besiroglu" (``archlab.plan.METHODS``).
    """

    tokens: float | None = None
    gpus: int = 8
    gpu: str | Hardware = "a100-80gb"
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    mfu: float = 0.4
    micro_batch: int = 1
    seq_len: int | None = None
    global_batch: int | None = None
    zero: int = 1
    tp: int = 1
    pp: int = 1
    sp: bool = False
    recompute: Literal["none", "selective", "full"] = "selective"
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    tokens_per_second: float | None = None
    headroom: float = 0.1
    batch: int = 1
    context: int | None = None
    budget_flops: float | None = None
    method: Literal["approach1", "hoffmann", "besiroglu"] = "approach1"


@dataclass(frozen=True)
class Change:
    """A layout that fits where the planned one does not.

    Attributes:
        text: what to change, as a person says it ("raise tp to 8, turn sequence parallelism on").
        config: the changed PlanConfig.
        memory_bytes: its peak memory per GPU.
        step_time_ratio: its estimated step time over the planned layout's (compute at the same
            hardware utilisation, recomputation and pipeline bubble; communication ignored).
    """

    text: str
    config: PlanConfig
    memory_bytes: int
    step_time_ratio: float

    def to_dict(self) -> dict:
        c = self.config
        return {"change": self.text, "memory_bytes": self.memory_bytes, "step_time_ratio": self.step_time_ratio,
                "layout": {"tp": c.tp, "pp": c.pp, "sp": c.sp, "zero": c.zero, "recompute": c.recompute,
                           "micro_batch": c.micro_batch}}


@dataclass(frozen=True)
class Plan:
    """A training plan. Memory is per GPU, for the pipeline stage that needs the most.

    Attributes:
        model: what the planner read from the spec.
        config: the inputs, defaults filled in (tokens, seq_len, global_batch).
        hardware: the GPU.
        dp: the data-parallel size.
        flops_per_token: 6N (Kaplan et al. 2020), N the active parameters.
        flops_per_token_palm: 6N + 12·L·H·Q·T (Chowdhery et al. 2022, appendix B).
        hardware_flops_per_token: what the GPUs do per token with the recomputation (full: 8N + 16·L·H·Q·T).
        total_flops: 6N times the tokens.
        mfu: model FLOPs utilisation (on 6N): given, or derived from ``tokens_per_second``.
        hfu: hardware FLOPs utilisation at that MFU.
        time_s, gpu_hours: wall time and GPU-hours of the run.
        memory: per-GPU bytes: weights, gradients, optimizer, activations, total.
        stage: the pipeline stage the memory is for ("first", "last", or "all" without a pipeline).
        usable_bytes: the GPU's memory less the headroom.
        fits: total <= usable.
        bubble: the pipeline-bubble fraction (p − 1)/m (Narayanan et al. 2021).
        micro_batches: m, micro-batches per pipeline per step.
        fixes: when it does not fit, the smallest changes that do, fastest first.
        inference: serving the model on the same GPUs at ``config.batch`` x ``config.context``
            (tensor parallelism ``tp``, weights and cache at ``precision``): KV cache, memory, bounds.
        sizing: with ``budget_flops``, the compute-optimal size; ``spec`` is then the scaled spec planned.
        spec: the spec planned when it was scaled (None: the one given).
        notes: what a reader should know about these figures.
    """

    model: ModelShape
    config: PlanConfig
    hardware: Hardware
    dp: int
    flops_per_token: int
    flops_per_token_palm: int
    hardware_flops_per_token: int
    total_flops: float
    mfu: float
    hfu: float
    time_s: float
    gpu_hours: float
    memory: dict[str, int]
    stage: str
    usable_bytes: int
    fits: bool
    bubble: float
    micro_batches: int
    fixes: list[Change] = field(default_factory=list)
    inference: InferencePlan | None = None
    sizing: ComputeOptimal | None = None
    spec: Spec | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def kv_cache_bytes_per_token(self) -> int:
        """The whole model's KV cache per token at ``precision`` (grouped-query aware)."""
        return self.inference.kv_cache_bytes_per_token if self.inference is not None else 0

    def to_dict(self) -> dict:
        """The stable JSON of ``archlab plan --json`` (``schema_version`` raised on an incompatible change)."""
        c = self.config
        return {
            "schema_version": 1,
            "model": {"name": self.model.name, "total_params": self.model.total_params,
                      "active_params": self.model.active_params, "embedding_params": self.model.embedding_params,
                      "layers": self.model.layers, "hidden": self.model.hidden, "vocab": self.model.vocab},
            "config": {"tokens": c.tokens, "gpus": c.gpus, "gpu": self.hardware.name, "precision": c.precision,
                       "micro_batch": c.micro_batch, "seq_len": c.seq_len, "global_batch": c.global_batch,
                       "zero": c.zero, "tp": c.tp, "pp": c.pp, "dp": self.dp, "sp": c.sp, "recompute": c.recompute,
                       "optimizer": c.optimizer, "tokens_per_second": c.tokens_per_second, "headroom": c.headroom,
                       "batch": c.batch, "context": c.context, "budget_flops": c.budget_flops, "method": c.method},
            "hardware": {"name": self.hardware.name, "memory_bytes": self.hardware.memory_bytes,
                         "peak_flops": dict(self.hardware.peak_flops),
                         "bandwidth_bytes_per_s": self.hardware.bandwidth_bytes_per_s},
            "flops": {"per_token_6n": self.flops_per_token, "per_token_palm": self.flops_per_token_palm,
                      "per_token_hardware": self.hardware_flops_per_token, "total": self.total_flops},
            "time": {"mfu": self.mfu, "hfu": self.hfu, "seconds": self.time_s, "days": self.time_s / 86400,
                     "gpu_hours": self.gpu_hours},
            "memory": {"per_gpu": self.memory, "stage": self.stage, "usable_bytes": self.usable_bytes,
                       "gpu_bytes": self.hardware.memory_bytes},
            "pipeline": {"bubble": self.bubble, "micro_batches": self.micro_batches},
            "fits": self.fits,
            "fixes": [f.to_dict() for f in self.fixes],
            "inference": None if self.inference is None else self.inference.to_dict(),
            "sizing": None if self.sizing is None else {**self.sizing.to_dict(), "spec": self.spec.name,
                                                        "spec_params": self.model.total_params},
            "notes": self.notes,
        }

    def table(self) -> str:
        """The plan as a text table (what ``archlab plan`` prints)."""
        return render_plan(self)


def plan_training(spec: Spec | dict | str | ParsedSpec | ModelShape, config: PlanConfig | None = None) -> Plan:
    """Plan training ``spec`` under ``config``: FLOPs, time, memory per GPU, a verdict and fixes.

    Raises:
        SpecError: the spec has no Transformer block.
        ValueError: a layout that does not divide the model, or an input out of range (the message
            names the option and the values that would do).

    Example:
        >>> p = plan_training("examples/gpt3-175b.yaml", PlanConfig(tokens=300e9, gpus=1024, tp=8, pp=8))
        >>> f"{p.total_flops:.3g}", p.dp
        ('3.14e+23', 16)
    """
    config = config or PlanConfig()
    _check_ranges(config)
    hardware = get_gpu(config.gpu)
    sizing = scaled = None
    if config.budget_flops is not None:
        sizing, scaled = _size_for_budget(spec, config)
        spec = scaled
    model = spec if isinstance(spec, ModelShape) else model_shape(spec)
    if sizing is not None:  # the budget, spent on the scaled spec's exact count
        config = dataclasses.replace(config, tokens=config.budget_flops / (FLOPS_PER_PARAM_TOKEN * model.active_params))
    config = _complete(model, config)
    _check(model, config, hardware)
    plan = _plan(model, config, hardware)
    serving = Serving(context=config.context, batch=config.batch, weights=config.precision, kv=config.precision,
                      tensor_parallel=config.tp)
    inference = plan_inference(model.groups, model.total_params, model.active_params, serving,
                               bandwidth=hardware.bandwidth_bytes_per_s, peak_flops=hardware.peak(config.precision),
                               memory_bytes=plan.usable_bytes, vocab=model.vocab)
    return dataclasses.replace(plan, inference=inference, sizing=sizing, spec=scaled)


def _size_for_budget(spec: Spec | dict | str | ParsedSpec | ModelShape, c: PlanConfig) -> tuple[ComputeOptimal, Spec]:
    """The compute-optimal size for the budget, and the spec scaled to it from ``spec``."""
    if c.tokens is not None:
        raise PlanError("--tokens and --budget-flops: give one; the budget decides the tokens (C = 6·N·D)")
    if c.method not in METHODS:
        raise PlanError(f"--method {c.method}: choose {', '.join(METHODS)}")
    if isinstance(spec, ModelShape):
        raise PlanError("budget_flops scales a spec: pass the spec, not its ModelShape")
    optimum = compute_optimal(c.budget_flops, c.method)
    scaled, _ = scale_spec(spec.spec if isinstance(spec, ParsedSpec) else spec, optimum.params)
    return optimum, scaled


def _complete(model: ModelShape, c: PlanConfig) -> PlanConfig:
    """Fill the defaults that depend on the model: tokens, seq_len, global_batch, context."""
    tokens = c.tokens if c.tokens is not None else _optimal_tokens(model)
    seq_len = c.seq_len if c.seq_len is not None else model.seq_len
    global_batch = c.global_batch
    if global_batch is None and c.gpus % (c.tp * c.pp) == 0:
        global_batch = c.micro_batch * (c.gpus // (c.tp * c.pp)) * (4 * c.pp if c.pp > 1 else 1)
    return dataclasses.replace(c, tokens=tokens, seq_len=seq_len, global_batch=global_batch,
                               context=c.context if c.context is not None else seq_len)


def _optimal_tokens(model: ModelShape) -> float:
    try:
        return budget_for(model.active_params).tokens
    except ValueError as exc:  # a model below what the scaling law describes
        raise PlanError(f"--tokens: give the tokens to train on; the default, the compute-optimal tokens for "
                        f"{model.active_params:,} parameters, does not apply: {exc}") from None


def _check_ranges(c: PlanConfig) -> None:
    """Inputs out of range, before anything reads them."""
    positive = {"--gpus": c.gpus, "--micro-batch": c.micro_batch, "--tp": c.tp, "--pp": c.pp, "--batch": c.batch}
    for option, value in positive.items():
        if not isinstance(value, int) or value < 1:
            raise PlanError(f"{option} {value}: must be a positive integer")
    for option, value in {"--seq-len": c.seq_len, "--global-batch": c.global_batch, "--context": c.context}.items():
        if value is not None and (not isinstance(value, int) or value < 1):
            raise PlanError(f"{option} {value}: must be a positive integer")
    if not 0 < c.mfu <= 1:
        raise PlanError(f"--mfu {c.mfu}: model FLOPs utilisation is a fraction in (0, 1]; 0.3-0.5 is typical "
                        "of large runs")
    if c.tokens is not None and not c.tokens > 0:
        raise PlanError(f"--tokens {c.tokens}: must be positive")
    if c.tokens_per_second is not None and not c.tokens_per_second > 0:
        raise PlanError(f"--tokens-per-second {c.tokens_per_second}: must be positive (tokens per second per GPU)")
    if c.zero not in (0, 1, 2, 3):
        raise PlanError(f"--zero {c.zero}: ZeRO stages are 0, 1, 2 and 3")
    if c.recompute not in RECOMPUTE:
        raise PlanError(f"--recompute {c.recompute}: choose {', '.join(RECOMPUTE)}")
    if c.optimizer not in OPTIMIZERS:
        raise PlanError(f"--optimizer {c.optimizer}: choose {', '.join(OPTIMIZERS)}")
    if c.precision not in ELEMENT_BYTES:
        raise PlanError(f"--precision {c.precision}: choose {', '.join(ELEMENT_BYTES)}")
    if not 0 <= c.headroom < 1:
        raise PlanError(f"headroom {c.headroom}: a fraction of the GPU's memory in [0, 1)")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _layout_error(model: ModelShape, c: PlanConfig) -> str | None:
    """Why the layout cannot run this model, or None."""
    heads = math.gcd(*(g.shape.heads for g in model.blocks))
    if heads % c.tp:
        return (f"--tp {c.tp}: tensor parallelism splits the attention heads, and {heads} heads do not divide by "
                f"{c.tp}; tp can be {', '.join(map(str, _divisors(heads)))}")
    if model.layers % c.pp:
        return (f"--pp {c.pp}: each pipeline stage holds the same number of blocks, and {model.layers} blocks do "
                f"not divide by {c.pp}; pp can be {', '.join(map(str, _divisors(model.layers)))}")
    if c.gpus % (c.tp * c.pp):
        return (f"--gpus {c.gpus}: the GPUs are tp x pp x dp, and {c.gpus} is not a multiple of tp x pp = "
                f"{c.tp * c.pp}; use a multiple of {c.tp * c.pp} GPUs, or other --tp/--pp")
    dp = c.gpus // (c.tp * c.pp)
    if c.global_batch % (c.micro_batch * dp):
        return (f"--global-batch {c.global_batch}: each step runs whole micro-batches on every data-parallel "
                f"rank, so it must be a multiple of micro-batch x dp = {c.micro_batch} x {dp} = "
                f"{c.micro_batch * dp}")
    return None


def _check(model: ModelShape, c: PlanConfig, hardware: Hardware) -> None:
    hardware.peak(c.precision)
    error = _layout_error(model, c)
    if error is not None:
        raise PlanError(error)


def _flops(model: ModelShape, seq_len: int, recompute: str) -> tuple[int, int, int]:
    """(6N, PaLM's 6N + 12·L·H·Q·T, the hardware's) FLOPs per token. T is what each query attends over
    (capped by a sliding window; a decoder's cross-attention adds its memory's positions)."""
    six_n = FLOPS_PER_PARAM_TOKEN * model.active_params
    attention = 0  # 4·H·Q·T per token per block in the forward pass: Q·Kᵀ and the product with V
    for g in model.blocks:
        sh = dataclasses.replace(g.shape, seq_len=seq_len)
        attention += 4 * g.count * sh.heads * sh.head_dim * (sh.keys + (sh.memory_len or 0))
    palm = six_n + 3 * attention
    extra = {"none": 0, "selective": attention, "full": six_n // 3 + attention}[recompute]  # another forward
    return six_n, palm, palm + extra


def _stage_blocks(model: ModelShape, start: int, n: int) -> list[tuple[object, int]]:
    """The block groups among blocks ``start`` .. ``start + n - 1`` (run order), with how many of each."""
    out, position = [], 0
    for g in model.blocks:
        lo, hi = max(start, position), min(start + n, position + g.count)
        if hi > lo:
            out.append((g, hi - lo))
        position += g.count
    return out


def _memory(model: ModelShape, c: PlanConfig) -> tuple[dict[str, int], str]:
    """Per-GPU bytes of the stage that needs the most, and which stage that is."""
    dp = c.gpus // (c.tp * c.pp)
    e = ELEMENT_BYTES[c.precision]
    m = c.global_batch // (c.micro_batch * dp)
    per_stage = model.layers // c.pp
    dropout = any(g.shape.dropout for g in model.blocks)
    stages = {"first": 0, "last": model.layers - per_stage} if c.pp > 1 else {"all": 0}
    found: list[tuple[dict[str, int], str]] = []
    for name, start in stages.items():
        groups = _stage_blocks(model, start, per_stage)
        if name == "all":
            params = Fraction(model.total_params)
        else:  # the stage's share of the blocks, and the embeddings (first) or the head (last)
            params = sum(Fraction(g.params * k, g.count) for g, k in groups)
            params += model.before_params if name == "first" else model.after_params
        states = model_state_bytes(math.ceil(params / c.tp), dp, c.zero, c.optimizer, c.precision)
        # 1F1B: stage i holds p - i micro-batches in flight (at most m); the last holds one
        in_flight = min(c.pp, m) if name != "last" else 1
        acts = Fraction(0)
        for g, k in groups:
            shape = dataclasses.replace(g.shape, seq_len=c.seq_len)
            acts += k * in_flight * block_activation_bytes(shape, c.micro_batch, c.tp, c.sp, c.recompute, e)
        if name in ("first", "all"):
            acts += embedding_activation_bytes(c.seq_len, model.hidden, c.micro_batch, in_flight, c.tp, c.sp, dropout)
        if name in ("last", "all"):
            acts += output_activation_bytes(c.seq_len, model.hidden, model.vocab, c.micro_batch, c.tp, c.sp, e)
        memory = {**states, "activations": math.ceil(acts)}
        memory["total"] = sum(memory.values())
        found.append((memory, name))
    return max(found, key=lambda item: item[0]["total"])


def _bubble(c: PlanConfig) -> tuple[float, int]:
    m = c.global_batch // (c.micro_batch * (c.gpus // (c.tp * c.pp)))
    return (c.pp - 1) / m, m


def _plan(model: ModelShape, c: PlanConfig, hardware: Hardware, *, more_gpus: bool = True) -> Plan:
    dp = c.gpus // (c.tp * c.pp)
    six_n, palm, hw = _flops(model, c.seq_len, c.recompute)
    peak = hardware.peak(c.precision)
    notes = []
    if c.tokens_per_second is not None:
        mfu = c.tokens_per_second * six_n / peak
        time_s = c.tokens / (c.tokens_per_second * c.gpus)
        notes.append(f"MFU derived from the measured {c.tokens_per_second:,.0f} tokens/s per GPU")
    else:
        mfu = c.mfu
        time_s = six_n * c.tokens / (c.gpus * peak * mfu)
    if c.recompute == "full":
        notes.append("full recomputation: the GPUs do another forward pass (8N + 16·L·H·Q·T per token); "
                     "MFU stays defined on 6N, HFU counts the recomputation")
    memory, stage = _memory(model, c)
    usable = int(hardware.memory_bytes * (1 - c.headroom))
    bubble, m = _bubble(c)
    plan = Plan(model, c, hardware, dp, six_n, palm, hw, float(six_n) * c.tokens, mfu, mfu * hw / six_n, time_s,
                time_s * c.gpus / 3600, memory, stage, usable, memory["total"] <= usable, bubble, m, notes=notes)
    if not plan.fits:
        fixes, least = _fixes(model, c, plan)
        plan.fixes.extend(fixes)
        if not fixes and least is not None:
            fewest = _fewest_gpus(model, c, hardware) if more_gpus else None
            more = ("use GPUs with more memory" if fewest is None else
                    f"{fewest[0]:,} GPUs would fit (global batch {fewest[1]:,}{', ' + fewest[2] if fewest[2] else ''})")
            notes.append(f"no layout of {c.gpus} GPUs fits at global batch {c.global_batch}: the least memory is "
                         f"{least.memory_bytes / 2**30:,.1f} GiB per GPU ({least.text}); {more}")
    return plan


#: how many doublings of the GPU count the verdict tries when no layout of the given GPUs fits
MAX_DOUBLINGS = 12


def _fewest_gpus(model: ModelShape, c: PlanConfig, hardware: Hardware) -> tuple[int, int, str] | None:
    """The fewest GPUs, doubling the count given, on which the planned layout or one of its fixes fits,
    the global batch growing with the data parallelism (the same sequences per replica): the count, the
    global batch and the change of layout ("" for none); None when 2**MAX_DOUBLINGS times as many do not."""
    for k in range(1, MAX_DOUBLINGS + 1):
        more = dataclasses.replace(c, gpus=c.gpus << k, global_batch=c.global_batch << k)
        plan = _plan(model, more, hardware, more_gpus=False)
        if plan.fits or plan.fixes:
            return more.gpus, more.global_batch, plan.fixes[0].text if not plan.fits else ""
    return None


_KNOBS = ("tp", "sp", "pp", "zero", "recompute", "micro_batch")


def _describe(old: PlanConfig, new: PlanConfig) -> str:
    parts = []
    for knob in _KNOBS:
        a, b = getattr(old, knob), getattr(new, knob)
        if a == b:
            continue
        if knob == "sp":
            parts.append("turn sequence parallelism on" if b else "turn sequence parallelism off")
        elif knob == "recompute":
            parts.append(f"recompute {b}" if b != "none" else "recompute nothing")
        elif knob == "zero":
            parts.append(f"ZeRO stage {b}")
        else:
            name = {"micro_batch": "micro-batch"}.get(knob, knob)
            parts.append(f"{'raise' if b > a else 'lower'} {name} to {b}")
    return ", ".join(parts)


def _size(old: PlanConfig, new: PlanConfig) -> float:
    """How big a change is, to order equally fast ones: doublings, stages, recompute levels."""
    return (abs(math.log2(new.tp / old.tp)) + abs(math.log2(new.pp / old.pp))
            + abs(math.log2(new.micro_batch / old.micro_batch)) + abs(new.zero - old.zero) + (new.sp != old.sp)
            + abs(RECOMPUTE.index(new.recompute) - RECOMPUTE.index(old.recompute)))


def _fixes(model: ModelShape, c: PlanConfig, plan: Plan) -> tuple[list[Change], Change | None]:
    """Search the layouts of the same GPUs and global batch (tp among the divisors of the heads up to a
    node, pp among the divisors of the layers, ZeRO 0-3, recompute, sequence parallelism, a smaller
    micro-batch); keep those that fit whose set of changed options no fitting layout undercuts, and
    rank them by estimated step time (then by the size of the change). Also the layout that needs the
    least memory, for the message when none fits."""
    heads = math.gcd(*(g.shape.heads for g in model.blocks))
    tps = sorted({t for t in _divisors(heads) if t <= NODE_SIZE} | {c.tp})
    micro = sorted({c.micro_batch} | {2**i for i in range(c.micro_batch.bit_length()) if 2**i < c.micro_batch})
    base_time = (plan.hardware_flops_per_token) * (1 + plan.bubble)
    fitting: list[tuple[frozenset[str], float, float, PlanConfig, int]] = []
    least: tuple[int, float, PlanConfig] | None = None
    for tp, sp, pp, zero, recompute, mb in itertools.product(tps, (False, True), _divisors(model.layers), range(4),
                                                             RECOMPUTE, micro):
        if sp and tp == 1:
            continue
        new = dataclasses.replace(c, tp=tp, sp=sp, pp=pp, zero=zero, recompute=recompute, micro_batch=mb)
        if new == c or _layout_error(model, new) is not None:
            continue
        memory, _ = _memory(model, new)
        if least is None or (memory["total"], _size(c, new)) < least[:2]:
            least = (memory["total"], _size(c, new), new)
        if memory["total"] > plan.usable_bytes:
            continue
        changed = frozenset(k for k in _KNOBS if getattr(new, k) != getattr(c, k))
        bubble, _ = _bubble(new)
        ratio = _flops(model, c.seq_len, recompute)[2] * (1 + bubble) / base_time
        fitting.append((changed, ratio, _size(c, new), new, memory["total"]))
    sets = {f[0] for f in fitting}
    minimal = [f for f in fitting if not any(other < f[0] for other in sets)]
    minimal.sort(key=lambda f: (f[1], len(f[0]), f[2]))
    fixes = [Change(_describe(c, new), new, total, ratio) for _, ratio, _, new, total in minimal[:MAX_FIXES]]
    return fixes, (None if least is None else Change(_describe(c, least[2]), least[2], least[0], float("nan")))
