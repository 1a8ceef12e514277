"""Training memory per GPU: the model states under ZeRO (Rajbhandari et al. 2020) and the activations
per Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models",
generalised from the paper's own tensor-by-tensor count (its section 4.1) so that gated MLPs,
grouped KV heads, sliding windows, cross-attention, experts and blocks without dropout get their
own figure, and a GPT block gets exactly the paper's. Sources and derivations: docs/plan.md."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from archlab.layers import TransformerShape

__all__ = ["ELEMENT_BYTES", "OPTIMIZERS", "ActivationParts", "Optimizer", "block_activation_bytes",
           "block_activation_parts", "embedding_activation_bytes", "model_state_bytes", "output_activation_bytes"]

Precision = Literal["bf16", "fp16", "fp32"]
Recompute = Literal["none", "selective", "full"]

#: bytes of one stored element (weights, gradients and activations) at each training precision
ELEMENT_BYTES: dict[str, int] = {"bf16": 2, "fp16": 2, "fp32": 4}
#: a dropout mask keeps one byte per element (torch's bool mask), whatever the precision
MASK_BYTES = 1
#: cross-entropy reads fp32 logits (Korthikanti et al. section 4.3: 4·s·b·v bytes)
LOGIT_BYTES = 4


@dataclass(frozen=True)
class Optimizer:
    """Bytes per parameter an optimizer's training keeps.

    Attributes:
        name: as the planner's ``optimizer`` option spells it.
        mixed_state: optimizer-state bytes per parameter in 16-bit mixed precision: the fp32 master
            weights (4) and the optimizer's own fp32 moments (Adam 4 + 4, SGD's momentum 4).
        fp32_state: the same for fp32 training, which keeps no master copy (the weights are fp32).
    """

    name: str
    mixed_state: int
    fp32_state: int

    def bytes_per_param(self, precision: str) -> tuple[int, int, int]:
        """(weights, gradients, optimizer state) bytes per parameter: mixed-precision Adam's 2 + 2 + 12
        = 16 (ZeRO paper, section 3.1: K = 12)."""
        e = ELEMENT_BYTES[precision]
        return e, e, self.fp32_state if precision == "fp32" else self.mixed_state


OPTIMIZERS: dict[str, Optimizer] = {
    "adam": Optimizer("adam", 12, 8),
    "adamw": Optimizer("adamw", 12, 8),  # AdamW's decoupled weight decay keeps no extra state
    "sgd": Optimizer("sgd", 8, 4),  # with momentum
}


def _ceil(x: Fraction | int) -> int:
    return math.ceil(x)


def model_state_bytes(params: int, dp: int, zero: int, optimizer: str, precision: str) -> dict[str, int]:
    """Weights, gradients and optimizer state of ``params`` parameters on one GPU, ZeRO stage ``zero``
    partitioning them over the ``dp`` data-parallel ranks (Rajbhandari et al. 2020, section 5 and
    figure 1): stage 1 the optimizer state (4Ψ + 12Ψ/N for mixed-precision Adam), stage 2 also the
    gradients (2Ψ + 14Ψ/N), stage 3 also the weights (16Ψ/N). Bytes rounded up.

    Example:
        >>> model_state_bytes(7_500_000_000, 64, 1, "adam", "bf16")  # the paper's figure 1: 31.4 GB
        {'weights': 15000000000, 'gradients': 15000000000, 'optimizer': 1406250000}
    """
    w, g, o = OPTIMIZERS[optimizer].bytes_per_param(precision)
    return {"weights": _ceil(Fraction(w * params, dp if zero >= 3 else 1)),
            "gradients": _ceil(Fraction(g * params, dp if zero >= 2 else 1)),
            "optimizer": _ceil(Fraction(o * params, dp if zero >= 1 else 1))}


@dataclass(frozen=True)
class ActivationParts:
    """What one block keeps for the backward pass of one sample, in bytes, in the three parts that
    tensor and sequence parallelism treat differently (Korthikanti et al. section 4.2).

    Attributes:
        replicated: tensors every tensor-parallel rank holds whole (the norms' inputs, the attention's
            and the MLP's inputs, the dropout masks after them): 10·s·h of a GPT block; sequence
            parallelism splits them by t.
        split: tensors tensor parallelism splits by t (Q, K, V, the output projection's input, the
            MLP's hidden tensors): 24·s·h of a GPT block.
        scores: the attention scores' tensors (softmax output, its dropout mask and output):
            5·a·s²; split by t, and what selective recomputation recomputes instead of keeping.
    """

    replicated: int
    split: int
    scores: int


def _attention(s: int, keys: int, kv_len: int, shape: TransformerShape, e: int, mask: int) -> tuple[int, int, int]:
    """(replicated, split, scores) of one attention sub-block: ``s`` queries over ``keys`` keys each,
    K and V over ``kv_len`` positions. The paper's 11·s·h + 5·a·s² for a GPT block, in 16 bits."""
    h, a, kv, dh = shape.hidden, shape.heads, shape.kv_heads, shape.head_dim
    replicated = e * s * h + mask * s * h  # the Q/K/V projections' shared input; the dropout mask after attention
    split = (e * s * a * dh  # Q, for Q·Kᵀ
             + 2 * e * kv_len * kv * dh  # K (for Q·Kᵀ) and V (for the product with the probabilities): KV heads only
             + e * s * a * dh)  # the output projection's input
    # softmax output; without dropout it is the probabilities V is multiplied by, so nothing more
    scores = a * s * keys * (e + mask * (MASK_BYTES + e))  # + the dropout mask and dropout output
    return replicated, split, scores


def block_activation_parts(shape: TransformerShape, element_bytes: int = 2) -> ActivationParts:
    """The activations one block keeps per sample, tensor by tensor as Korthikanti et al. section 4.1
    counts them, with the block's own widths: 34·s·h + 5·a·s² bytes for a GPT block (16-bit, ff 4h,
    dropout, multi-head attention); see docs/plan.md for each term.

    Example:
        >>> gpt = TransformerShape(hidden=4, seq_len=8, heads=2, kv_heads=2, head_dim=2, ff_dim=16)
        >>> p = block_activation_parts(gpt)
        >>> p.replicated + p.split + p.scores == 8 * 4 * (34 + 5 * 2 * 8 / 4)
        True
    """
    s, h, f, e = shape.seq_len, shape.hidden, shape.ff_dim, element_bytes
    mask = MASK_BYTES if shape.dropout else 0
    replicated, split, scores = _attention(s, shape.keys, s, shape, e, mask)
    if shape.memory_len is not None:  # cross-attention over the encoder's memory, with its own norm
        m = shape.memory_len
        r, p, sc = _attention(s, m, m, shape, e, mask)
        replicated, split, scores = replicated + r + e * m * h + e * s * h, split + p, scores + sc
    # MLP: its input and the dropout mask after it; per expert a token passes, the hidden tensors:
    # plain: the activation's input and output (2·s·f); gated: gate and up outputs, the activation's
    # output and the product (4·s·f), as autograd keeps them without a fused kernel
    routed = shape.top_k + shape.shared_experts if shape.experts > 1 else 1
    replicated += e * s * h + mask * s * h + (e * s * shape.experts if shape.experts > 1 else 0)  # router probabilities
    split += routed * (4 if shape.gated else 2) * e * s * f
    replicated += 2 * e * s * h  # the two norms' inputs
    return ActivationParts(replicated, split, scores)


def block_activation_bytes(shape: TransformerShape, micro_batch: int = 1, tp: int = 1, sp: bool = False,
                           recompute: Recompute = "none", element_bytes: int = 2) -> Fraction:
    """Bytes one block keeps for backward, for a micro-batch on one tensor-parallel rank
    (Korthikanti et al. table 2, generalised):

    - none: ``replicated + (split + scores)/t``, with sequence parallelism all of it ``/t``;
    - selective (recompute the attention scores): ``replicated + split/t``, with SP ``/t``;
    - full (keep only the block's input, recompute the rest): ``e·s·h``, with SP ``/t``.

    For a GPT block in 16 bits: s·b·h(34 + 5·a·s/h); TP: s·b·h(10 + 24/t + 5·a·s/(h·t)); TP+SP:
    (s·b·h/t)(34 + 5·a·s/h); selective with SP: 34·s·b·h/t; full: 2·s·b·h. Exact (a Fraction).
    """
    if recompute == "full":
        kept = Fraction(element_bytes * shape.seq_len * shape.hidden)
        return micro_batch * (kept / tp if sp else kept)
    parts = block_activation_parts(shape, element_bytes)
    scores = 0 if recompute == "selective" else parts.scores
    if sp:
        kept = Fraction(parts.replicated + parts.split + scores, tp)
    else:
        kept = parts.replicated + Fraction(parts.split + scores, tp)
    return micro_batch * kept


def output_activation_bytes(seq_len: int, hidden: int, vocab: int, micro_batch: int, tp: int, sp: bool,
                            element_bytes: int = 2) -> Fraction:
    """What the final norm, the output projection and the loss keep (Korthikanti et al. section 4.3):
    the norm's and the projection's inputs and the fp32 logits, 4·s·b·h(1 + v/h)/t with TP+SP in
    16 bits; the logits are split by t (a vocabulary-parallel head), the two inputs only by SP."""
    inputs = Fraction(2 * element_bytes * seq_len * hidden, tp if sp else 1)
    return micro_batch * (inputs + Fraction(LOGIT_BYTES * seq_len * vocab, tp))


def embedding_activation_bytes(seq_len: int, hidden: int, micro_batch: int, in_flight: int, tp: int, sp: bool,
                               dropout: bool) -> Fraction:
    """The dropout mask after the embeddings (Korthikanti et al. section 4.3: s·b·h·p/t with SP), for
    the ``in_flight`` micro-batches the first pipeline stage holds; nothing without dropout."""
    if not dropout:
        return Fraction(0)
    return Fraction(in_flight * micro_batch * MASK_BYTES * seq_len * hidden, tp if sp else 1)
