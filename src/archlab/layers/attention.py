"""Attention over (time, features): the seed's additive attention, multi-head self-attention
and Transformer encoder/decoder blocks (torch.nn's implementations)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from archlab._lazy import lazy_attributes
from archlab.exceptions import ShapeError, SpecError

from ._params import PosInt, Rate
from ._registry import (
    SEQUENCE_STATIC,
    Cost,
    InputRule,
    KerasStyle,
    LayerParams,
    LayerType,
    Quantization,
    TensorInfo,
    TransformerShape,
    fmt_shape,
    register_layer,
)

# ONNX Runtime's dynamic quantizer makes the projections' MatMuls int8; static has no rule for them.
_QUANTIZATION = Quantization(static=SEQUENCE_STATIC, dynamic=True)

if TYPE_CHECKING:
    from torch import nn

    from ._attention_modules import AdditiveAttention, AdditiveCrossAttention, SelfAttention, TransformerBlock

# torch is heavy and validate/schema never build: the modules live in _attention_modules, which each
# module() imports when called; archlab.layers.attention.TransformerBlock still reaches them.
__getattr__, __dir__ = lazy_attributes(__name__, dict.fromkeys(
    ("AdditiveAttention", "AdditiveCrossAttention", "SelfAttention", "TransformerBlock"),
    "archlab.layers._attention_modules"))

__all__ = ["AdditiveAttention", "AdditiveCrossAttention", "SelfAttention", "TransformerBlock"]

_SEQ = InputRule(ranks={2: "(time, features)"},
                 hints={1: "add 'embedding' (token ids) or 'reshape: {shape: [T, F]}' before it",
                        3: "add 'reshape' to (time, features) before it"})


class AdditiveAttentionParams(LayerParams):
    units: PosInt
    query: Literal["last", "learned"] = "last"


@register_layer("additive_attention")
class AdditiveAttentionLayer(LayerType):
    Params = AdditiveAttentionParams
    accepts = _SEQ
    reads_mask = True
    summary = "e = v^T tanh(W_h h + W_s s + b), c = sum softmax(e) s: (time, D) -> (D,)"
    quantization = _QUANTIZATION
    keras = KerasStyle("AdditiveAttention", ("units",))

    def output(self, p, x: TensorInfo) -> TensorInfo:
        return TensorInfo((x.shape[1],))

    def cost(self, p: AdditiveAttentionParams, x: TensorInfo, y: TensorInfo) -> Cost:
        t, d, u = x.shape[0], x.shape[1], p.units
        macs = t * d * u + d * u + t * u + t * d  # W_s s, W_h h, v^T, context
        return Cost(macs, 2 * macs + 2 * t * u + 3 * t)  # + broadcast add, tanh, softmax

    def count_params(self, p: AdditiveAttentionParams, x: TensorInfo) -> int:
        d = x.shape[1]
        return 2 * p.units * d + 2 * p.units + (d if p.query == "learned" else 0)

    def saved_elements(self, p: AdditiveAttentionParams, x: TensorInfo, y: TensorInfo) -> int:
        return 2 * x.shape[0] * p.units + 2 * x.shape[0] + y.numel  # tanh in/out, scores, alpha

    def module(self, p: AdditiveAttentionParams, x: TensorInfo) -> nn.Module:
        from ._attention_modules import AdditiveAttention

        return AdditiveAttention(x.shape[1], p.units, p.query)


@dataclass(frozen=True)
class _Heads:
    """How attention splits its width: query heads, key/value heads (fewer for grouped- and
    multi-query attention, Ainslie et al. 2023, Shazeer 2019) and the features of one head."""

    heads: int
    kv_heads: int
    head_dim: int

    @classmethod
    def plain(cls, heads: int, d: int) -> _Heads:
        """Multi-head attention as torch's: every head has keys and values, d / heads features each."""
        return cls(heads, heads, d // heads)

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim


def _attention_cost(t: int, s: int, d: int, g: _Heads, keys: int | None = None, rotary: bool = False) -> Cost:
    """Projections of queries (t), keys and values (s positions), scores and the weighted sum over
    ``keys`` keys per query (all s unless a window caps them), the output projection; rotary
    rotates every query and key feature (q·cos + rotate_half(q)·sin: 3 FLOPs each)."""
    keys = s if keys is None else keys
    macs = t * d * g.q_dim + 2 * s * d * g.kv_dim + 2 * t * keys * g.q_dim + t * g.q_dim * d
    rope = 3 * (t * g.q_dim + s * g.kv_dim) if rotary else 0
    return Cost(macs, 2 * macs + 4 * g.heads * t * keys + rope)  # + scaling and softmax (3) per score


def _attention_params(d: int, g: _Heads, bias: bool = True) -> int:
    """Query and output projections (d x heads·head_dim), key and value (d x kv_heads·head_dim)."""
    return 2 * d * g.q_dim + 2 * d * g.kv_dim + ((g.q_dim + 2 * g.kv_dim + d) if bias else 0)


def _attention_saved(t: int, s: int, d: int, g: _Heads, keys: int | None = None) -> int:
    """Input, queries, keys and values, the probabilities and the context (before the output projection)."""
    keys = s if keys is None else keys
    return t * d + 2 * t * g.q_dim + 2 * s * g.kv_dim + g.heads * t * keys


def _check_heads(p, x: TensorInfo) -> None:
    if x.shape[-1] % p.num_heads:
        raise ShapeError(f"receives width {x.shape[-1]}, which num_heads={p.num_heads} does not divide: "
                         f"make the width a multiple of {p.num_heads}")


class MultiHeadAttentionParams(LayerParams):
    num_heads: PosInt
    dropout: Rate = 0.0
    causal: bool = False
    #: key/value heads, shared by num_heads / num_kv_heads query heads each; None: num_heads, 1: multi-query
    num_kv_heads: PosInt | None = None
    #: features per head; None: width / num_heads
    head_dim: PosInt | None = None
    #: rotary position embeddings on queries and keys (Su et al. 2021), in LLaMA's rotate-half layout
    rotary: bool = False
    rope_theta: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 10000.0
    use_bias: bool = True
    #: each query sees itself and the sliding_window - 1 keys before it (Mistral); causal only
    sliding_window: PosInt | None = None


def _heads(p: MultiHeadAttentionParams, d: int) -> _Heads:
    """The head geometry of ``p`` over width d, or the error naming the parameter to change."""
    kv = p.num_kv_heads or p.num_heads
    if p.num_heads % kv:
        divisors = [k for k in range(1, p.num_heads + 1) if p.num_heads % k == 0]
        raise SpecError(f"num_kv_heads={kv} does not divide num_heads={p.num_heads}: each key/value head serves "
                        f"a whole group of query heads; use one of {', '.join(map(str, divisors))}", "num_kv_heads")
    if p.head_dim is None and d % p.num_heads:
        raise ShapeError(f"receives width {d}, which num_heads={p.num_heads} does not divide: make the width a "
                         f"multiple of {p.num_heads}, or set head_dim")
    g = _Heads(p.num_heads, kv, p.head_dim or d // p.num_heads)
    if p.rotary and g.head_dim % 2:
        raise SpecError(f"rotary turns pairs of features, so it needs an even head_dim; got {g.head_dim}: "
                        "change head_dim (or the width / num_heads) or set rotary: false", "head_dim")
    if p.sliding_window is not None and not p.causal:
        raise SpecError("sliding_window lets each query see itself and the window - 1 keys before it, which "
                        "needs causal: true; add it, or drop sliding_window", "sliding_window")
    return g


def _is_plain(p: MultiHeadAttentionParams, d: int) -> bool:
    """Whether torch's nn.MultiheadAttention computes ``p`` (saved runs, the KV cache and ONNX
    export rely on it): no option beyond heads, dropout and causal changes it."""
    return (d % p.num_heads == 0 and _heads(p, d) == _Heads.plain(p.num_heads, d) and not p.rotary and p.use_bias
            and p.sliding_window is None)


def _keys(p: MultiHeadAttentionParams, t: int) -> int:
    """Keys each query is counted with: all t (causal masks are still computed, docs/analysis.md);
    a sliding window computes only its band, so at most sliding_window."""
    return t if p.sliding_window is None else min(t, p.sliding_window)


@register_layer("multi_head_attention")
class MultiHeadAttentionLayer(LayerType):
    """Multi-head self-attention; with num_kv_heads, head_dim, rotary, use_bias: false or
    sliding_window, LLaMA's / Mistral's attention (``Attention``: q, k, v, o projections)."""

    Params = MultiHeadAttentionParams
    accepts = _SEQ
    time_wise = True
    reads_mask = True
    summary = "multi-head self-attention, (time, D) -> (time, D); grouped-query, rotary, sliding window"
    quantization = _QUANTIZATION
    keras = KerasStyle("MultiHeadAttention", ("num_heads",))
    regularization = "dropout"

    def output(self, p: MultiHeadAttentionParams, x: TensorInfo) -> TensorInfo:
        _heads(p, x.shape[-1])
        return x

    def cost(self, p: MultiHeadAttentionParams, x: TensorInfo, y: TensorInfo) -> Cost:
        t, d = x.shape
        return _attention_cost(t, t, d, _heads(p, d), _keys(p, t), p.rotary)

    def count_params(self, p: MultiHeadAttentionParams, x: TensorInfo) -> int:
        d = x.shape[1]
        return _attention_params(d, _heads(p, d), p.use_bias)

    def saved_elements(self, p: MultiHeadAttentionParams, x: TensorInfo, y: TensorInfo) -> int:
        t, d = x.shape
        return _attention_saved(t, t, d, _heads(p, d), _keys(p, t)) + y.numel

    def module(self, p: MultiHeadAttentionParams, x: TensorInfo) -> nn.Module:
        d = x.shape[1]
        if _is_plain(p, d):
            from ._attention_modules import SelfAttention

            return SelfAttention(d, p.num_heads, p.dropout, p.causal)
        from ._llm_modules import Attention

        g = _heads(p, d)
        return Attention(d, g.heads, g.kv_heads, g.head_dim, bias=p.use_bias, dropout=p.dropout, causal=p.causal,
                         window=p.sliding_window, rope_theta=p.rope_theta if p.rotary else None)


class TransformerParams(LayerParams):
    num_heads: PosInt
    ff_dim: PosInt
    dropout: Rate = Field(default=0.1)
    activation: Literal["relu", "gelu"] = "relu"
    norm_first: bool = False
    causal: bool = False


@register_layer("transformer_encoder")
class TransformerEncoderLayerType(LayerType):
    Params = TransformerParams
    accepts = _SEQ
    time_wise = True
    reads_mask = True
    summary = "one Transformer encoder block (torch.nn.TransformerEncoderLayer)"
    quantization = _QUANTIZATION
    keras = KerasStyle("TransformerEncoder", ("num_heads", "ff_dim"))
    regularization = "dropout"

    def output(self, p, x: TensorInfo) -> TensorInfo:
        _check_heads(p, x)
        return x

    def cost(self, p: TransformerParams, x: TensorInfo, y: TensorInfo) -> Cost:
        t, d = x.shape
        ff_macs = 2 * t * d * p.ff_dim
        # + activation of the hidden layer, two layer norms (5 per element), two residual adds
        attention = _attention_cost(t, t, d, _Heads.plain(p.num_heads, d))
        return attention + Cost(ff_macs, 2 * ff_macs + t * p.ff_dim + 12 * t * d)

    def count_params(self, p: TransformerParams, x: TensorInfo) -> int:
        d = x.shape[1]
        return _attention_params(d, _Heads.plain(p.num_heads, d)) + (2 * d * p.ff_dim + p.ff_dim + d) + 4 * d

    def saved_elements(self, p: TransformerParams, x: TensorInfo, y: TensorInfo) -> int:
        t, d = x.shape
        return _attention_saved(t, t, d, _Heads.plain(p.num_heads, d)) + 6 * t * d + 2 * t * p.ff_dim

    def transformer(self, p: TransformerParams, x: TensorInfo) -> TransformerShape:
        t, d = x.shape
        return TransformerShape(hidden=d, seq_len=t, heads=p.num_heads, kv_heads=p.num_heads, head_dim=d // p.num_heads,
                                ff_dim=p.ff_dim, causal=p.causal, dropout=p.dropout > 0)

    def module(self, p: TransformerParams, x: TensorInfo) -> nn.Module:
        from ._attention_modules import TransformerBlock

        return TransformerBlock("encoder", x.shape[1], p.num_heads, p.ff_dim, p.dropout, p.activation,
                                p.norm_first, p.causal)


@register_layer("transformer_decoder")
class TransformerDecoderLayerType(LayerType):
    Params = TransformerParams
    accepts = _SEQ
    time_wise = True
    reads_mask = True
    num_inputs = 2
    summary = "one Transformer decoder block; graph form only: from: [x, memory]"
    quantization = _QUANTIZATION
    keras = KerasStyle("TransformerDecoder", ("num_heads", "ff_dim"))
    regularization = "dropout"

    def output(self, p, xs: tuple[TensorInfo, TensorInfo]) -> TensorInfo:
        x, memory = xs
        _check_heads(p, x)
        if memory.shape[-1] != x.shape[-1]:
            raise ShapeError(f"reads x {fmt_shape(x.shape)} and memory {fmt_shape(memory.shape)} of different "
                             f"widths: add 'dense: {{units: {x.shape[-1]}}}' to the memory's branch")
        return x

    def cost(self, p: TransformerParams, xs, y: TensorInfo) -> Cost:
        (t, d), (s, _) = xs[0].shape, xs[1].shape
        ff_macs = 2 * t * d * p.ff_dim
        g = _Heads.plain(p.num_heads, d)
        return (_attention_cost(t, t, d, g) + _attention_cost(t, s, d, g)
                + Cost(ff_macs, 2 * ff_macs + t * p.ff_dim + 18 * t * d))  # three norms, three adds

    def count_params(self, p: TransformerParams, xs) -> int:
        d = xs[0].shape[1]
        return 2 * _attention_params(d, _Heads.plain(p.num_heads, d)) + (2 * d * p.ff_dim + p.ff_dim + d) + 6 * d

    def saved_elements(self, p: TransformerParams, xs, y: TensorInfo) -> int:
        (t, d), (s, _) = xs[0].shape, xs[1].shape
        g = _Heads.plain(p.num_heads, d)
        return (_attention_saved(t, t, d, g) + _attention_saved(t, s, d, g)
                + 8 * t * d + 2 * t * p.ff_dim)

    def transformer(self, p: TransformerParams, xs) -> TransformerShape:
        (t, d), (s, _) = xs[0].shape, xs[1].shape
        return TransformerShape(hidden=d, seq_len=t, heads=p.num_heads, kv_heads=p.num_heads, head_dim=d // p.num_heads,
                                ff_dim=p.ff_dim, causal=p.causal, memory_len=s, dropout=p.dropout > 0)

    def module(self, p: TransformerParams, xs) -> nn.Module:
        from ._attention_modules import TransformerBlock

        return TransformerBlock("decoder", xs[0].shape[1], p.num_heads, p.ff_dim, p.dropout, p.activation,
                                p.norm_first, p.causal)


@register_layer("additive_cross_attention")
class AdditiveCrossAttentionLayer(LayerType):
    """The seed's additive attention (§3.4.4) as an RNN decoder uses it (Bahdanau et al. 2015): every
    decoder state h_t scores every encoder state s_j, e_tj = v^T tanh(W_h h_t + W_s s_j + b), and reads
    the context c_t = sum_j softmax_j(e_tj) s_j. Graph form: ``from: [decoder states, memory]``."""

    Params = AdditiveAttentionParams
    accepts = _SEQ
    time_wise = True  # one context per decoder step: the decoder states' padding carries over
    reads_mask = True  # the memory's (the source's) padding
    num_inputs = 2
    summary = "c_t = sum_j softmax_j(v^T tanh(W_h h_t + W_s s_j + b)) s_j: [(T, D), memory (S, E)] -> (T, E)"
    quantization = _QUANTIZATION

    def output(self, p, xs: tuple[TensorInfo, TensorInfo]) -> TensorInfo:
        x, memory = xs
        if p.query != "last":
            raise ShapeError("reads its queries from the decoder states (its first input); drop query")
        return TensorInfo((x.shape[0], memory.shape[1]))

    def cost(self, p: AdditiveAttentionParams, xs, y: TensorInfo) -> Cost:
        (t, d), (s, e) = xs[0].shape, xs[1].shape
        u = p.units
        macs = s * e * u + t * d * u + t * s * u + t * s * e  # W_s s, W_h h, v^T per pair, contexts
        return Cost(macs, 2 * macs + 2 * t * s * u + 3 * t * s)  # + the pairwise add, tanh, softmax

    def count_params(self, p: AdditiveAttentionParams, xs) -> int:
        (_, d), (_, e) = xs[0].shape, xs[1].shape
        return p.units * (d + e + 2)  # W_h, W_s with its bias b, v

    def saved_elements(self, p: AdditiveAttentionParams, xs, y: TensorInfo) -> int:
        (t, _), (s, _) = xs[0].shape, xs[1].shape
        return 2 * t * s * p.units + 2 * t * s + y.numel  # tanh in/out, scores, alpha, contexts

    def module(self, p: AdditiveAttentionParams, xs) -> nn.Module:
        from ._attention_modules import AdditiveCrossAttention

        return AdditiveCrossAttention(xs[0].shape[1], xs[1].shape[1], p.units)
