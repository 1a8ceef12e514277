"""Serving a Transformer stack: its KV cache, its memory per GPU, and upper bounds on decode and
prefill speed, from the blocks' ``TransformerShape`` values and plain numbers (no torch, no weights).

The bounds are the roofline's: a decode step must read every weight it uses and the batch's KV cache
from memory once, and must do its FLOPs; it can go no faster than the slower of the two allows.
Formulas, sources and assumptions are in docs/plan.md (sections "Inference").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from archlab.exceptions import suggest
from archlab.layers import TransformerShape

from ._errors import PlanError, check_positive

__all__ = ["KV_BYTES", "WEIGHT_BITS", "DecodeBound", "InferencePlan", "PrefillBound", "Serving", "ServingMemory",
           "decode_bound", "kv_cache_bytes", "kv_cache_bytes_per_token", "kv_heads_per_gpu", "plan_inference",
           "prefill_bound", "serving_memory"]

#: (shape, how many blocks have it), as ``ModelShape.groups`` gives them.
Blocks = Sequence[tuple[TransformerShape, int]]

WeightPrecision = Literal["fp32", "fp16", "bf16", "fp8", "int8", "int4"]
KVPrecision = Literal["fp32", "fp16", "bf16", "fp8", "int8"]

#: Bits per stored weight. int8/int4 are weight-only quantization (GPTQ, AWQ, bitsandbytes): the
#: matmuls still run in 16 bits; the per-group scales (about 0.1-0.25 bit per weight) are not counted.
WEIGHT_BITS: dict[str, int] = {"fp32": 32, "fp16": 16, "bf16": 16, "fp8": 8, "int8": 8, "int4": 4}
#: Bytes per cached key or value element.
KV_BYTES: dict[str, int] = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "int8": 1}
#: Logits are computed in fp32 for sampling (as Hugging Face and vLLM do).
_LOGIT_BYTES = 4


def _choice(option: str, value: str, table: dict[str, int]) -> int:
    if value not in table:
        raise PlanError(f"{option} {value!r}: unknown precision{suggest(value, table)}; "
                        f"choose one of {', '.join(table)}")
    return table[value]


def _counts(params: int, active_params: int) -> None:
    check_positive("params", params)
    check_positive("active params", active_params)
    if active_params > params:
        raise PlanError(f"active params {active_params:,} exceed the model's {params:,}: a token passes through "
                        "at most every parameter")


def kv_heads_per_gpu(kv_heads: int, tensor_parallel: int) -> int:
    """Key/value heads one GPU holds under tensor parallelism ``tensor_parallel``.

    The heads are split over the GPUs; with fewer KV heads than GPUs each head is replicated on
    ``tensor_parallel / kv_heads`` GPUs (as vLLM's QKVParallelLinear does), so every GPU still holds one.

    Raises:
        ValueError: neither number divides the other, so the heads cannot be split evenly.

    Example:
        >>> kv_heads_per_gpu(8, 2), kv_heads_per_gpu(8, 16), kv_heads_per_gpu(1, 8)
        (4, 1, 1)
    """
    if kv_heads % tensor_parallel and tensor_parallel % kv_heads:
        fits = [t for t in range(1, 2 * kv_heads + 1) if kv_heads % t == 0 or t % kv_heads == 0]
        raise PlanError(f"--tp {tensor_parallel}: the blocks' {kv_heads} key/value heads cannot be "
                        f"split evenly over {tensor_parallel} GPUs; use a tensor-parallel size that divides "
                        f"{kv_heads} or that {kv_heads} divides ({', '.join(map(str, fits))}, ...)")
    return max(1, kv_heads // tensor_parallel)


def kv_cache_bytes_per_token(blocks: Blocks, bytes_per_element: int = 2) -> int:
    """Bytes the KV cache grows by per generated token: K and V of every causal block,
    2 · kv_heads · head_dim · bytes, summed over the blocks (grouped-query aware: KV heads, not
    query heads). Blocks that are not causal (encoders) keep no cache.

    Example (LLaMA-2 7B: 32 blocks of 32 KV heads of 128, fp16):
        >>> shape = TransformerShape(hidden=4096, seq_len=4096, heads=32, kv_heads=32, head_dim=128, ff_dim=11008)
        >>> kv_cache_bytes_per_token([(shape, 32)])
        524288
    """
    return sum(2 * s.kv_heads * s.head_dim * bytes_per_element * n for s, n in blocks if s.causal)


def _cached_positions(shape: TransformerShape, context: int) -> int:
    """Self-attention positions a block caches for one sequence of ``context`` tokens: a sliding
    window keeps only the last ``window`` (a rolling buffer, as Mistral's)."""
    return context if shape.window is None else min(context, shape.window)


def kv_cache_bytes(blocks: Blocks, context: int, bytes_per_element: int = 2, tensor_parallel: int = 1) -> int:
    """Bytes of the KV cache of ONE sequence of ``context`` tokens on one GPU.

    Per causal block: 2 · kv_heads/GPU · head_dim · bytes · positions, the positions capped at a
    sliding window's size; a block with cross-attention also caches the encoder memory's K and V
    once per sequence (``memory_len`` positions). Under tensor parallelism each GPU holds its share
    of the KV heads (``kv_heads_per_gpu``: replicated when fewer than the GPUs).

    Example (Mistral 7B: 32 blocks, 8 KV heads of 128, a 4,096-token window, at 32k tokens):
        >>> shape = TransformerShape(hidden=4096, seq_len=32768, heads=32, kv_heads=8, head_dim=128,
        ...                          ff_dim=14336, window=4096)
        >>> kv_cache_bytes([(shape, 32)], 32768) == 2 * 8 * 128 * 2 * 4096 * 32
        True
    """
    check_positive("--context", context)
    total = 0
    for s, n in blocks:
        per_position = 2 * kv_heads_per_gpu(s.kv_heads, tensor_parallel) * s.head_dim * bytes_per_element
        positions = (_cached_positions(s, context) if s.causal else 0) + (s.memory_len or 0)
        total += per_position * positions * n
    return total


@dataclass(frozen=True)
class Serving:
    """How a model is served: the settings every inference figure depends on.

    Attributes:
        context: tokens per sequence held in the KV cache (prompt plus generated tokens).
        batch: sequences decoded together.
        prompt: tokens of each prompt, processed at once by prefill; None: ``context``.
        weights: the precision the weights are stored in (``WEIGHT_BITS``).
        kv: the precision of the KV cache (``KV_BYTES``).
        tensor_parallel: GPUs each layer is split over (Megatron-LM's column/row split).
    """

    context: int
    batch: int = 1
    prompt: int | None = None
    weights: WeightPrecision = "bf16"
    kv: KVPrecision = "bf16"
    tensor_parallel: int = 1

    def __post_init__(self) -> None:
        for option, value in (("--context", self.context), ("--batch", self.batch),
                              ("--tp", self.tensor_parallel)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PlanError(f"{option} must be a positive integer, got {value!r}")
        if self.prompt is not None and (isinstance(self.prompt, bool) or not isinstance(self.prompt, int)
                                        or not 1 <= self.prompt <= self.context):
            raise PlanError(f"--prompt must be an integer from 1 to --context ({self.context}), got {self.prompt!r}")
        _choice("--weights", self.weights, WEIGHT_BITS)
        _choice("--kv-precision", self.kv, KV_BYTES)

    @property
    def prompt_tokens(self) -> int:
        return self.context if self.prompt is None else self.prompt

    @property
    def weight_bits(self) -> int:
        return WEIGHT_BITS[self.weights]

    @property
    def kv_bytes(self) -> int:
        return KV_BYTES[self.kv]

    @property
    def activation_bytes(self) -> int:
        """Bytes per activation: matmuls run in 16 bits unless the weights are fp32 (weight-only
        int8/int4 and fp8 storage still compute in 16 bits)."""
        return 4 if self.weights == "fp32" else 2

    def weight_bytes(self, params: int | float) -> int:
        """Bytes of ``params`` weights on ONE GPU: split evenly over the tensor-parallel GPUs (the
        norms' few weights, which every GPU keeps whole, are left out)."""
        return math.ceil(params * self.weight_bits / 8 / self.tensor_parallel)


@dataclass(frozen=True)
class ServingMemory:
    """Memory of one serving GPU, in bytes.

    Attributes:
        weights: the weights' share of one GPU.
        kv_cache: the KV cache of ``batch`` sequences of ``context`` tokens.
        activations: the workspace estimate: the largest intermediate of one block while prefill
            processes ``batch · prompt`` tokens, plus the batch's last-position logits (fp32).
    """

    weights: int
    kv_cache: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


def _workspace_per_token(s: TransformerShape, tensor_parallel: int) -> int:
    """Activation elements one token holds at once inside a block: the residual stream and its
    normed copy (kept whole on every GPU), and the larger of the attention's q, k, v and the MLP's
    hidden tensors (split by tensor parallelism). The attention scores are not materialized
    (FlashAttention, PyTorch's scaled_dot_product_attention)."""
    qkv = (s.heads + 2 * s.kv_heads) * s.head_dim
    mlp_tensors = 3 if s.gated else 2  # gate, up and their product; or the pre- and post-activation
    experts = s.top_k + s.shared_experts if s.experts > 1 else 1
    return 2 * s.hidden + max(qkv, mlp_tensors * s.ff_dim * experts) // tensor_parallel


def serving_memory(blocks: Blocks, params: int, serving: Serving, vocab: int = 0) -> ServingMemory:
    """Memory per GPU of serving ``params`` weights with the blocks' KV cache (``serving``'s batch
    and context) and an activation workspace (``ServingMemory.activations``).

    Example (LLaMA-2 7B in bf16, one sequence of 4,096 tokens):
        >>> shape = TransformerShape(hidden=4096, seq_len=4096, heads=32, kv_heads=32, head_dim=128,
        ...                          ff_dim=11008, gated=True)
        >>> m = serving_memory([(shape, 32)], 6_738_415_616, Serving(context=4096), vocab=32000)
        >>> m.weights, m.kv_cache
        (13476831232, 2147483648)
    """
    check_positive("params", params)
    tokens = serving.batch * serving.prompt_tokens
    workspace = max((_workspace_per_token(s, serving.tensor_parallel) for s, _ in blocks), default=0)
    logits = serving.batch * math.ceil(vocab / serving.tensor_parallel) * _LOGIT_BYTES
    return ServingMemory(
        weights=serving.weight_bytes(params),
        kv_cache=serving.batch * kv_cache_bytes(blocks, serving.context, serving.kv_bytes, serving.tensor_parallel),
        activations=tokens * workspace * serving.activation_bytes + logits)


def _attention_flops(s: TransformerShape, positions: int) -> int:
    """FLOPs of one query over ``positions`` keys in one block: q·k and the weighted sum of v,
    2 · 2 · heads · head_dim · positions (every query head does its own, grouped-query or not)."""
    return 4 * s.heads * s.head_dim * positions


def _weights_read(params: int, active_params: int, blocks: Blocks, tokens: int) -> float:
    """Weights a forward pass over ``tokens`` tokens at once must read. A dense model reads them all;
    a mixture of experts reads the experts its tokens are routed to: with routing uniform over E
    experts, top-k, the chance an expert is missed by all tokens is (1 - k/E)^tokens, so the
    routed experts beyond each token's own k that are read are a fraction
    f = (E · (1 - (1 - k/E)^tokens) - k) / (E - k) of the (E - k) · experts' weights that
    ``params - active_params`` holds (f = 0 for one token, 1 for many). Different (E, k) across the
    blocks take the largest f (an overestimate of the bytes, so the bound stays a bound)."""
    idle = params - active_params
    moe = {(s.experts, s.top_k) for s, _ in blocks if s.experts > s.top_k}
    if idle <= 0 or not moe:
        return params
    f = max((e * (1 - (1 - k / e) ** tokens) - k) / (e - k) for e, k in moe)
    return active_params + idle * f


@dataclass(frozen=True)
class DecodeBound:
    """Upper bounds on decode speed (tokens per second, the whole batch) at ``context`` tokens.

    Attributes:
        bytes_per_step: bytes one GPU reads per decode step: its share of the weights the step
            uses and of the batch's KV cache.
        flops_per_token: forward FLOPs of one token: 2 · active params (one multiply-add per weight)
            plus the attention over the cache, 4 · heads · head_dim · positions per block.
        memory_tokens_per_s: batch · bandwidth / bytes_per_step.
        compute_tokens_per_s: tensor_parallel · peak FLOP/s / flops_per_token.
    """

    bytes_per_step: int
    flops_per_token: int
    memory_tokens_per_s: float
    compute_tokens_per_s: float

    @property
    def tokens_per_s(self) -> float:
        """The binding bound: the smaller of the two."""
        return min(self.memory_tokens_per_s, self.compute_tokens_per_s)

    @property
    def bound(self) -> Literal["memory", "compute"]:
        return "memory" if self.memory_tokens_per_s <= self.compute_tokens_per_s else "compute"

    def to_dict(self) -> dict:
        return {**asdict(self), "tokens_per_s": self.tokens_per_s, "bound": self.bound}


def _token_flops(blocks: Blocks, active_params: int, positions: int) -> int:
    """Forward FLOPs of one token that attends ``positions`` earlier tokens (itself included)."""
    attention = sum(n * (_attention_flops(s, _cached_positions(s, positions) if s.causal else positions)
                         + (_attention_flops(s, s.memory_len) if s.memory_len else 0)) for s, n in blocks)
    return 2 * active_params + attention


def decode_bound(blocks: Blocks, params: int, active_params: int, serving: Serving, *, bandwidth: float,
                 peak_flops: float) -> DecodeBound:
    """The memory-bandwidth and compute bounds on decode tokens/s at ``serving.context`` tokens.

    Each step generates one token per sequence: it reads the weights its ``batch`` tokens use once
    (``_weights_read``) and every sequence's KV cache, and does ``batch · flops_per_token`` FLOPs.
    ``bandwidth`` (bytes/s) and ``peak_flops`` (FLOP/s) are one GPU's; tensor parallelism splits the
    bytes and the FLOPs over ``serving.tensor_parallel`` GPUs (its communication is not counted).

    Example (LLaMA-2 7B, fp16, batch 1, on an A100-80GB's 2.039e12 B/s):
        >>> shape = TransformerShape(hidden=4096, seq_len=4096, heads=32, kv_heads=32, head_dim=128,
        ...                          ff_dim=11008, gated=True)
        >>> d = decode_bound([(shape, 32)], 6_738_415_616, 6_738_415_616, Serving(context=1, weights="fp16"),
        ...                  bandwidth=2.039e12, peak_flops=312e12)
        >>> round(d.tokens_per_s, 1), d.bound
        (151.3, 'memory')
    """
    _counts(params, active_params)
    check_positive("bandwidth", bandwidth)
    check_positive("peak FLOP/s", peak_flops)
    weights = serving.weight_bytes(_weights_read(params, active_params, blocks, serving.batch))
    cache = serving.batch * kv_cache_bytes(blocks, serving.context, serving.kv_bytes, serving.tensor_parallel)
    flops = _token_flops(blocks, active_params, serving.context)
    return DecodeBound(bytes_per_step=weights + cache, flops_per_token=flops,
                       memory_tokens_per_s=serving.batch * bandwidth / (weights + cache),
                       compute_tokens_per_s=serving.tensor_parallel * peak_flops / flops)


@dataclass(frozen=True)
class PrefillBound:
    """A lower bound on the time to process ``batch`` prompts of ``prompt`` tokens at once.

    Attributes:
        flops: forward FLOPs of all the prompts' tokens, causal attention over 1 ... prompt positions.
        bytes: bytes one GPU moves: its share of the weights read once and of the KV cache written.
        compute_s: flops / (tensor_parallel · peak FLOP/s).
        memory_s: bytes / bandwidth.
    """

    flops: int
    bytes: int
    compute_s: float
    memory_s: float

    @property
    def seconds(self) -> float:
        return max(self.compute_s, self.memory_s)

    @property
    def bound(self) -> Literal["memory", "compute"]:
        return "compute" if self.compute_s >= self.memory_s else "memory"

    def to_dict(self) -> dict:
        return {**asdict(self), "seconds": self.seconds, "bound": self.bound}


def _prompt_attention_flops(s: TransformerShape, prompt: int) -> int:
    """Attention FLOPs of a whole prompt in one block. Causal: token i sees min(i, window) keys,
    summed over i = 1 ... prompt; otherwise every token sees all ``prompt``."""
    if not s.causal:
        seen = prompt * prompt
    elif s.window is None or prompt <= s.window:
        seen = prompt * (prompt + 1) // 2
    else:
        seen = s.window * (s.window + 1) // 2 + (prompt - s.window) * s.window
    return _attention_flops(s, seen) + (_attention_flops(s, prompt * s.memory_len) if s.memory_len else 0)


def prefill_bound(blocks: Blocks, params: int, active_params: int, serving: Serving, *, bandwidth: float,
                  peak_flops: float) -> PrefillBound:
    """How fast prefill can process ``serving.batch`` prompts of ``serving.prompt_tokens`` tokens:
    no faster than its FLOPs at peak, nor than reading the weights once and writing the KV cache.

    Example (LLaMA-2 7B, a 2,048-token prompt on an A100's 312e12 FLOP/s: compute bound, about 0.1 s):
        >>> shape = TransformerShape(hidden=4096, seq_len=4096, heads=32, kv_heads=32, head_dim=128,
        ...                          ff_dim=11008, gated=True)
        >>> p = prefill_bound([(shape, 32)], 6_738_415_616, 6_738_415_616, Serving(context=2048),
        ...                   bandwidth=2.039e12, peak_flops=312e12)
        >>> p.bound, round(p.seconds, 3)
        ('compute', 0.092)
    """
    _counts(params, active_params)
    check_positive("bandwidth", bandwidth)
    check_positive("peak FLOP/s", peak_flops)
    prompt, batch = serving.prompt_tokens, serving.batch
    flops = batch * (2 * active_params * prompt + sum(n * _prompt_attention_flops(s, prompt) for s, n in blocks))
    moved = (serving.weight_bytes(_weights_read(params, active_params, blocks, batch * prompt))
             + batch * kv_cache_bytes(blocks, prompt, serving.kv_bytes, serving.tensor_parallel))
    return PrefillBound(flops=flops, bytes=moved, compute_s=flops / (serving.tensor_parallel * peak_flops),
                        memory_s=moved / bandwidth)


@dataclass(frozen=True)
class InferencePlan:
    """What serving a model costs: the KV cache, memory per GPU and speed bounds.

    Attributes:
        serving: the settings.
        kv_cache_bytes_per_token: the whole model's KV cache per token (all GPUs, no window cap).
        memory: one GPU's memory.
        decode: bounds on decode tokens/s.
        prefill: a bound on the prefill time.
        memory_bytes: one GPU's memory, when given; ``fits`` compares with it.
    """

    serving: Serving
    kv_cache_bytes_per_token: int
    memory: ServingMemory
    decode: DecodeBound
    prefill: PrefillBound
    memory_bytes: int | None = field(default=None)

    @property
    def fits(self) -> bool | None:
        """Whether one GPU's weights, cache and workspace fit in its memory; None when not given."""
        return None if self.memory_bytes is None else self.memory.total <= self.memory_bytes

    def to_dict(self) -> dict:
        return {"serving": asdict(self.serving), "kv_cache_bytes_per_token": self.kv_cache_bytes_per_token,
                "memory": self.memory.to_dict(), "decode": self.decode.to_dict(),
                "prefill": self.prefill.to_dict(), "memory_bytes": self.memory_bytes, "fits": self.fits}


def plan_inference(blocks: Blocks, params: int, active_params: int | None, serving: Serving, *, bandwidth: float,
                   peak_flops: float, memory_bytes: int | None = None, vocab: int = 0) -> InferencePlan:
    """Serving memory and speed bounds of a model of ``params`` parameters (``active_params`` per
    token; None: all) whose Transformer blocks are ``blocks``, on GPUs of ``bandwidth`` bytes/s,
    ``peak_flops`` FLOP/s (at the compute precision) and ``memory_bytes`` each.

    Example (LLaMA-2 70B: 80 blocks, 8 KV heads of 128; bf16 on 4 A100-80GB, batch 8 at 4,096 tokens):
        >>> shape = TransformerShape(hidden=8192, seq_len=4096, heads=64, kv_heads=8, head_dim=128,
        ...                          ff_dim=28672, gated=True)
        >>> plan = plan_inference([(shape, 80)], 68_976_648_192, None, Serving(context=4096, batch=8,
        ...                       tensor_parallel=4), bandwidth=2.039e12, peak_flops=312e12,
        ...                       memory_bytes=80 * 2**30, vocab=32000)
        >>> plan.kv_cache_bytes_per_token, plan.fits, plan.decode.bound
        (327680, True, 'memory')
    """
    active = params if active_params is None else active_params
    return InferencePlan(
        serving=serving,
        kv_cache_bytes_per_token=kv_cache_bytes_per_token(blocks, serving.kv_bytes),
        memory=serving_memory(blocks, params, serving, vocab),
        decode=decode_bound(blocks, params, active, serving, bandwidth=bandwidth, peak_flops=peak_flops),
        prefill=prefill_bound(blocks, params, active, serving, bandwidth=bandwidth, peak_flops=peak_flops),
        memory_bytes=memory_bytes)
