"""The FLOP, MAC and parameter rules of every registered layer type and connection, each checked
against arithmetic written out here (not a call to the layer's ``cost``), and the memory model.

Conventions (docs/analysis.md): a multiply-accumulate is 1 MAC and 2 FLOPs, a bias is folded
into the accumulate; pointwise activations 1 FLOP per element, softmax 3, layernorm 5,
batchnorm 2 (inference); pooling = output elements x window; global pooling = input elements;
attention adds 4 FLOPs per score (scale + softmax).

A layer type registered on ``import archlab`` without a case here fails
``test_every_builtin_layer_has_a_case``: a new built-in needs its hand-derived formula.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import pytest

import archlab


@dataclass(frozen=True)
class Case:
    id: str
    spec: dict
    params: int
    macs: int
    flops: int
    path: str = ""  # the analysis row checked; default: the last top-level layer


def seq(input_shape, *layers) -> dict:
    return {"input": input_shape, "layers": list(layers)}


def tokens(length: int) -> dict:
    return {"shape": [length], "dtype": "long"}


# Each case: (spec, params, MACs, FLOPs), the numbers spelled out as the arithmetic that gives them.
CASES: dict[str, list[Case]] = {
    "dense": [
        # x (5,) -> 3 units, relu: W 5x3 + b 3; 5*3 MACs; relu on 3 outputs
        Case("vector-relu", seq([5], {"dense": {"units": 3, "activation": "relu"}}),
             params=5 * 3 + 3, macs=5 * 3, flops=2 * 5 * 3 + 3),
        # x (T=4, 5) -> (4, 3), no bias, softmax (3 per element) on 4*3 outputs
        Case("sequence-nobias-softmax",
             seq([4, 5], {"dense": {"units": 3, "use_bias": False, "activation": "softmax"}}),
             params=5 * 3, macs=4 * 5 * 3, flops=2 * 4 * 5 * 3 + 3 * 4 * 3),
    ],
    "conv1d": [
        # (3, 20), 4 filters of width 5, stride 2, same padding -> (4, ceil(20/2)=10); tanh
        Case("same-stride2-tanh", seq([3, 20], {"conv1d": {"filters": 4, "kernel_size": 5, "strides": 2,
                                                           "padding": "same", "activation": "tanh"}}),
             params=4 * 3 * 5 + 4, macs=(4 * 10) * 3 * 5, flops=2 * (4 * 10) * 3 * 5 + 4 * 10),
        # (4, 16), 8 filters width 3, groups 4 (1 input channel per filter), dilation 2 -> 16 - 2*2 = 12
        Case("groups-dilation", seq([4, 16], {"conv1d": {"filters": 8, "kernel_size": 3, "groups": 4,
                                                         "dilation_rate": 2}}),
             params=8 * (4 // 4) * 3 + 8, macs=(8 * 12) * (4 // 4) * 3, flops=2 * (8 * 12) * 1 * 3),
    ],
    "conv2d": [
        # (4, 9, 9), 6 filters 3x3, stride 2, pad 1, groups 2 -> (6, 5, 5); each filter sees 4/2 channels
        Case("groups-stride-pad", seq([4, 9, 9], {"conv2d": {"filters": 6, "kernel_size": 3, "strides": 2,
                                                             "padding": 1, "groups": 2, "activation": "relu"}}),
             params=6 * 2 * 3 * 3 + 6, macs=(6 * 5 * 5) * 2 * 3 * 3, flops=2 * (6 * 5 * 5) * 2 * 9 + 6 * 5 * 5),
        # (3, 8, 8), 5 filters 3x5, stride 2, same (asymmetric) padding -> (5, 4, 4), no bias
        Case("same-stride2-rect-nobias", seq([3, 8, 8], {"conv2d": {"filters": 5, "kernel_size": [3, 5],
                                                                    "strides": 2, "padding": "same",
                                                                    "use_bias": False}}),
             params=5 * 3 * 3 * 5, macs=(5 * 4 * 4) * 3 * 3 * 5, flops=2 * (5 * 4 * 4) * 3 * 15),
        # (2, 10, 10), 3 filters 3x3 dilated by 2 (reach 5) -> (3, 6, 6)
        Case("dilation", seq([2, 10, 10], {"conv2d": {"filters": 3, "kernel_size": 3, "dilation_rate": 2}}),
             params=3 * 2 * 9 + 3, macs=(3 * 6 * 6) * 2 * 9, flops=2 * (3 * 6 * 6) * 2 * 9),
    ],
    "maxpool1d": [Case("k2", seq([3, 10], {"maxpool1d": {"pool_size": 2}}),  # -> (3, 5), window 2
                       params=0, macs=0, flops=(3 * 5) * 2)],
    "maxpool2d": [Case("k3-s2-p1", seq([2, 7, 7], {"maxpool2d": {"pool_size": 3, "strides": 2, "padding": 1}}),
                       params=0, macs=0, flops=(2 * 4 * 4) * 3 * 3)],  # (7 + 2 - 3)//2 + 1 = 4
    "avgpool1d": [Case("k3-s2", seq([3, 11], {"avgpool1d": {"pool_size": 3, "strides": 2}}),
                       params=0, macs=0, flops=(3 * 5) * 3)],  # (11 - 3)//2 + 1 = 5
    "avgpool2d": [Case("k2", seq([2, 6, 6], {"avgpool2d": {"pool_size": 2}}),
                       params=0, macs=0, flops=(2 * 3 * 3) * 2 * 2)],
    "global_avgpool1d": [Case("c3", seq([3, 7], "global_avgpool1d"), params=0, macs=0, flops=3 * 7)],
    "global_maxpool1d": [Case("c3", seq([3, 7], "global_maxpool1d"), params=0, macs=0, flops=3 * 7)],
    "global_avgpool2d": [Case("c3", seq([3, 4, 5], "global_avgpool2d"), params=0, macs=0, flops=3 * 4 * 5)],
    "global_maxpool2d": [Case("c3", seq([3, 4, 5], "global_maxpool2d"), params=0, macs=0, flops=3 * 4 * 5)],
    "flatten": [Case("3d", seq([2, 3, 4], "flatten"), params=0, macs=0, flops=0)],
    "reshape": [Case("to-4x6", seq([2, 3, 4], {"reshape": {"shape": [4, -1]}}), params=0, macs=0, flops=0)],
    "transpose": [Case("3d", seq([2, 3, 4], {"transpose": {"axes": [0, 2]}}), params=0, macs=0, flops=0)],
    # (100,) samples, n_fft 16, hop 16 // 4 = 4, centred (8 reflected each side): 1 + (100 + 16 - 16) // 4 = 26
    # frames of 16 // 2 + 1 = 9 bins; per frame: the window 16, the FFT 5·16·log2 16 = 320, re² + im² 3 per bin
    "spectrogram": [Case("power-centred", seq([100], {"spectrogram": {"n_fft": 16}}), params=0, macs=0,
                         flops=26 * (16 + 5 * 16 * 4 + 9 * 3)),
                    # not centred, hop 8: 1 + (100 - 32) // 8 = 9 frames, 17 bins, + a square root per bin
                    Case("magnitude", seq([100], {"spectrogram": {"n_fft": 32, "hop_length": 8, "power": 1,
                                                                  "center": False}}),
                         params=0, macs=0, flops=9 * (32 + 5 * 32 * 5 + 17 * 4))],
    # the spectrogram above; the 4 x 9 filter bank per frame; clamp, log10, x10 per output; top_db: peak, floor
    "log_mel": [Case("top-db", seq([100], {"log_mel": {"n_fft": 16, "sample_rate": 8000, "n_mels": 4,
                                                       "top_db": 80.0}}),
                     params=0, macs=4 * 9 * 26,
                     flops=26 * (16 + 320 + 27) + 2 * 4 * 9 * 26 + 3 * 4 * 26 + 2 * 4 * 26 + 1)],
    # the log-mel of 6 mels, then the 3 x 6 DCT per frame
    "mfcc": [Case("dct", seq([100], {"mfcc": {"n_fft": 16, "sample_rate": 8000, "n_mels": 6, "n_mfcc": 3}}),
                  params=0, macs=6 * 9 * 26 + 3 * 6 * 26,
                  flops=26 * (16 + 320 + 27) + 2 * 6 * 9 * 26 + 3 * 6 * 26 + 2 * 3 * 6 * 26)],
    "dropout": [Case("rate", seq([10], {"dropout": {"rate": 0.5}}), params=0, macs=0, flops=0)],
    # whole channels zeroed while training: the identity at inference, as dropout
    "spatial_dropout": [Case("2d", seq([3, 4, 4], {"spatial_dropout": {"rate": 0.5}}), params=0, macs=0, flops=0),
                        Case("1d", seq([3, 8], {"spatial_dropout": {"rate": 0.1}}), params=0, macs=0, flops=0)],
    # training-time masks: the identity at inference, which the analysis counts
    "spec_augment": [Case("masks", seq([4, 26], {"spec_augment": {"time_mask_width": 5}}), params=0, macs=0,
                          flops=0)],
    "batchnorm": [
        # 2-D over channels: gamma, beta per channel; scale + shift per element at inference
        Case("2d", seq([3, 4, 4], "batchnorm"), params=2 * 3, macs=0, flops=2 * 3 * 4 * 4),
        Case("1d", seq([5], "batchnorm"), params=2 * 5, macs=0, flops=2 * 5),
    ],
    "layernorm": [Case("seq", seq([4, 6], "layernorm"), params=2 * 6, macs=0, flops=5 * 4 * 6)],
    # square, mean, scale by the reciprocal root, weight: 4 per element; one scale per feature
    "rmsnorm": [Case("seq", seq([4, 6], "rmsnorm"), params=6, macs=0, flops=4 * 4 * 6)],
    # gate and up (6 -> 10), down (10 -> 6) per position; + silu and the gate's product per hidden unit
    "gated_mlp": [Case("swiglu", seq([4, 6], {"gated_mlp": {"ff_dim": 10}}), params=3 * 6 * 10,
                       macs=4 * 3 * 6 * 10, flops=2 * 4 * 3 * 6 * 10 + 2 * 4 * 10),
                  Case("geglu-bias", seq([6], {"gated_mlp": {"ff_dim": 4, "activation": "gelu", "use_bias": True}}),
                       params=3 * 6 * 4 + 2 * 4 + 6, macs=3 * 6 * 4, flops=2 * 3 * 6 * 4 + 2 * 4)],
    # router 6 -> E per position; top_k + shared gated experts on every position (as gated_mlp above);
    # softmax over the E scores (3 each), top-k (1 compare per score), renormalise (k - 1 adds + k divides);
    # combine: k weight products and k + shared - 1 adds per output feature
    "moe": [Case("E4-top2", seq([4, 6], {"moe": {"num_experts": 4, "ff_dim": 5}}),
                 params=6 * 4 + 4 * (3 * 6 * 5), macs=4 * 6 * 4 + 2 * (4 * 3 * 6 * 5),
                 flops=2 * (4 * 6 * 4 + 2 * 4 * 3 * 6 * 5) + 2 * (2 * 4 * 5) + 3 * 4 * 4 + 4 * 4 + 4 * 3 + 4 * 6 * 3),
            Case("E3-top1-shared-geglu-bias",
                 seq([6], {"moe": {"num_experts": 3, "top_k": 1, "ff_dim": 4, "shared_experts": 1,
                                   "activation": "gelu", "use_bias": True}}),
                 params=6 * 3 + (3 + 1) * (3 * 6 * 4 + 2 * 4 + 6), macs=6 * 3 + 2 * (3 * 6 * 4),
                 flops=2 * (6 * 3 + 2 * 3 * 6 * 4) + 2 * (2 * 4) + 3 * 3 + 3 + 1 + 6 * 2)],
    "relu": [Case("e", seq([3, 5], "relu"), params=0, macs=0, flops=3 * 5)],
    "gelu": [Case("e", seq([3, 5], {"gelu": {"approximate": "tanh"}}), params=0, macs=0, flops=3 * 5)],
    "tanh": [Case("e", seq([3, 5], "tanh"), params=0, macs=0, flops=3 * 5)],
    "sigmoid": [Case("e", seq([3, 5], "sigmoid"), params=0, macs=0, flops=3 * 5)],
    "silu": [Case("e", seq([3, 5], "silu"), params=0, macs=0, flops=3 * 5)],
    "leaky_relu": [Case("e", seq([3, 5], {"leaky_relu": {"negative_slope": 0.2}}), params=0, macs=0, flops=3 * 5)],
    "softmax": [Case("e", seq([3, 5], "softmax"), params=0, macs=0, flops=3 * 3 * 5)],  # exp, sum, divide
    "embedding": [Case("lookup", seq(tokens(7), {"embedding": {"input_dim": 11, "output_dim": 3}}),
                       params=11 * 3, macs=0, flops=0)],
    # sum over fields (F-1)k, its square k, squares Fk, their sum (F-1)k, difference k, sum over k (k-1), halving 1
    "fm": [Case("f4-k3", seq([4, 3], "fm"), params=0, macs=0, flops=3 * 4 * 3 + 3)],
    "reduce": [Case("sum-fields", seq([4, 3], "reduce"), params=0, macs=0, flops=3 * (4 - 1)),
               Case("mean-last", seq([4, 3], {"reduce": {"op": "mean", "axis": -1}}), params=0, macs=0, flops=4 * 3)],
    "bias": [Case("2d", seq([4, 3], "bias"), params=3, macs=0, flops=4 * 3)],
    "positional_embedding": [
        # adds a (T, D) table: one FLOP per element; the learned table is max_len x D
        Case("learned", seq([7, 3], {"positional_embedding": {"max_len": 10}}), params=10 * 3, macs=0, flops=7 * 3),
        Case("sinusoidal", seq([7, 3], {"positional_embedding": {"max_len": 10, "kind": "sinusoidal"}}),
             params=0, macs=0, flops=7 * 3),
    ],
    # Recurrences, T steps, F inputs, H units. Per step and unit: the input and hidden projections
    # (F + H MACs per gate), then pointwise work as documented in layers/recurrent.py.
    "simple_rnn": [
        # h = tanh(W_xh x + W_hh h + b): add the projections (1) + tanh (1) per unit per step
        Case("T6-F3-H4", seq([6, 3], {"simple_rnn": {"units": 4}}),
             params=4 * (3 + 4) + 4, macs=6 * 4 * (3 + 4), flops=2 * 6 * 4 * (3 + 4) + 6 * 4 * (1 + 1)),
        # 2 layers x 2 directions: runs read 3, 3, then 2*4 = 8, 8 features
        Case("bidir-2layers-relu", seq([6, 3], {"simple_rnn": {"units": 4, "bidirectional": True, "num_layers": 2,
                                                               "activation": "relu", "return_sequences": True}}),
             params=2 * (4 * (3 + 4) + 4) + 2 * (4 * (8 + 4) + 4),
             macs=2 * 6 * 4 * (3 + 4) + 2 * 6 * 4 * (8 + 4),
             flops=2 * (2 * 6 * 4 * 7 + 2 * 6 * 4 * 12) + 4 * 6 * 4 * 2),
    ],
    "lstm": [
        # 4 gates; torch keeps two biases per gate. Pointwise per unit per step:
        # 4 adds + 3 sigmoid + 1 tanh (gates), c = f*c + i*g (3), tanh(c) (1), h = o*tanh(c) (1) = 13
        Case("T6-F3-H4", seq([6, 3], {"lstm": {"units": 4}}),
             params=4 * (4 * (3 + 4) + 2 * 4), macs=6 * 4 * 4 * (3 + 4), flops=2 * 6 * 4 * 4 * 7 + 6 * 4 * 13),
    ],
    "gru": [
        # 3 gates, two biases each. Pointwise per unit per step: r, z: 2 adds + 2 sigmoid;
        # n = tanh(. + r*(.)): 1 mul + 1 add + 1 tanh; h = (1 - z)*n + z*h: 4  -> 11
        Case("T6-F3-H4", seq([6, 3], {"gru": {"units": 4, "return_sequences": True}}),
             params=3 * (4 * (3 + 4) + 2 * 4), macs=6 * 3 * 4 * (3 + 4), flops=2 * 6 * 3 * 4 * 7 + 6 * 4 * 11),
    ],
    "additive_attention": [
        # T=5 states of D=4, U=3: W_s s_t (T*D*U) + W_h h (D*U) + v^T (T*U) + context sum alpha_t s_t (T*D);
        # then broadcast add (T*U) + tanh (T*U) + softmax over T scores (3*T)
        Case("last", seq([5, 4], {"additive_attention": {"units": 3}}),
             params=(3 * 4 + 3) + 3 * 4 + 3,
             macs=5 * 4 * 3 + 4 * 3 + 5 * 3 + 5 * 4,
             flops=2 * (5 * 4 * 3 + 4 * 3 + 5 * 3 + 5 * 4) + 5 * 3 + 5 * 3 + 3 * 5),
        Case("learned", seq([5, 4], {"additive_attention": {"units": 3, "query": "learned"}}),
             params=(3 * 4 + 3) + 3 * 4 + 3 + 4,
             macs=5 * 4 * 3 + 4 * 3 + 5 * 3 + 5 * 4,
             flops=2 * (5 * 4 * 3 + 4 * 3 + 5 * 3 + 5 * 4) + 5 * 3 + 5 * 3 + 3 * 5),
    ],
    # T=4 decoder states of D=6 over S=5 memory states of E=8, U=3: W_s s_j (S*E*U), W_h h_t (T*D*U),
    # v^T per pair (T*S*U), contexts (T*S*E); then the pairwise add (T*S*U), tanh (T*S*U), softmax (3*T*S)
    "additive_cross_attention": [
        Case("T4-S5", {"inputs": {"x": [4, 6], "memory": [5, 8]},
                       "graph": {"att": {"from": ["x", "memory"],
                                         "layers": [{"additive_cross_attention": {"units": 3}}]}},
                       "outputs": "att"},
             params=6 * 3 + (8 * 3 + 3) + 3,
             macs=5 * 8 * 3 + 4 * 6 * 3 + 4 * 5 * 3 + 4 * 5 * 8,
             flops=2 * (5 * 8 * 3 + 4 * 6 * 3 + 4 * 5 * 3 + 4 * 5 * 8) + 2 * 4 * 5 * 3 + 3 * 4 * 5,
             path="graph.att.layers[0]"),
    ],
    # Self-attention on T=4 steps of D=6, 2 heads: Q, K, V, output projections (4 * T*D*D),
    # QK^T (T*T*D over all heads) and AV (T*T*D); scale + softmax = 4 FLOPs per score, heads*T*T scores.
    "multi_head_attention": [
        Case("T4-D6-h2", seq([4, 6], {"multi_head_attention": {"num_heads": 2}}),
             params=4 * 6 * 6 + 4 * 6, macs=4 * 4 * 6 * 6 + 2 * 4 * 4 * 6,
             flops=2 * (4 * 4 * 6 * 6 + 2 * 4 * 4 * 6) + 4 * 2 * 4 * 4),
        Case("causal", seq([4, 6], {"multi_head_attention": {"num_heads": 2, "causal": True}}),  # masked, not skipped
             params=4 * 6 * 6 + 4 * 6, macs=4 * 4 * 6 * 6 + 2 * 4 * 4 * 6,
             flops=2 * (4 * 4 * 6 * 6 + 2 * 4 * 4 * 6) + 4 * 2 * 4 * 4),
        # Grouped-query attention, T=4, D=8, 4 query heads sharing 2 key/value heads of hd=2 (q: 8 features, k and
        # v: 4), no biases, rotary: projections T*D*8 + 2*T*D*4 + T*8*D, QK^T and AV 2*T*T*8 (queries' width);
        # rotary turns each of the T*8 query and T*4 key features at 3 FLOPs (two products, a sum).
        # Sliding window 2 over T=6: each query is counted with 2 keys, not 6.
        Case("gqa-rotary", seq([4, 8], {"multi_head_attention": {"num_heads": 4, "num_kv_heads": 2, "rotary": True,
                                                                  "use_bias": False, "causal": True}}),
             params=8 * 8 + 2 * 8 * 4 + 8 * 8, macs=4 * 8 * 8 + 2 * 4 * 8 * 4 + 2 * 4 * 4 * 8 + 4 * 8 * 8,
             flops=2 * 1024 + 4 * 4 * 4 * 4 + 3 * (4 * 8 + 4 * 4)),
        Case("window", seq([6, 4], {"multi_head_attention": {"num_heads": 2, "causal": True, "sliding_window": 2}}),
             params=4 * 4 * 4 + 4 * 4, macs=6 * 4 * 4 + 2 * 6 * 4 * 4 + 2 * 6 * 2 * 4 + 6 * 4 * 4,
             flops=2 * 480 + 4 * 2 * 6 * 2),
        Case("head_dim", seq([4, 6], {"multi_head_attention": {"num_heads": 2, "head_dim": 5}}),  # q 10 wide
             params=2 * 6 * 10 + 2 * 6 * 10 + (10 + 20 + 6),
             macs=4 * 6 * 10 * 4 + 2 * 4 * 4 * 10, flops=2 * (960 + 320) + 4 * 2 * 4 * 4),
    ],
    # LLaMA's block, T=4, D=8, 2 heads sharing 1 key/value head (hd 4), SwiGLU 12, rmsnorm: the attention
    # as above (2*1024 + 4*2*16 + 3*(32 + 16)), the MLP 3*T*D*12 MACs + silu and the gate's product (T*12
    # each), two rmsnorms (4 per element), two residual adds. GPT-2's (layernorm, gelu, biases, no rotary)
    # has transformer_encoder's counts, prenorm-causal-gelu below.
    "transformer_block": [
        Case("llama", seq([4, 8], {"transformer_block": {"num_heads": 2, "num_kv_heads": 1, "ff_dim": 12}}),
             params=(2 * 8 * 8 + 2 * 8 * 4) + 3 * 8 * 12 + 2 * 8, macs=1024 + 3 * 4 * 8 * 12,
             flops=(2 * 1024 + 4 * 2 * 4 * 4 + 3 * 48) + (2 * 1152 + 2 * 48) + 2 * 4 * 32 + 2 * 32),
        Case("gpt2", seq([4, 6], {"transformer_block": {"num_heads": 2, "ff_dim": 8, "mlp": "gelu", "norm": "layernorm",
                                                       "use_bias": True, "rotary": False}}),
             params=302, macs=768 + 384, flops=1664 + 768 + 32 + 240 + 48),
        # the llama block's attention with a mixture of 4 experts of 6 (top 2 + 1 shared): router 8 x 4 (T*4*8 MACs),
        # 3 experts per position (3 x 3*T*8*6 MACs; 2*MACs + silu + product per expert), softmax (3 per score),
        # top-k (1 per score), renormalise (2k - 1 per position), weigh and sum (T*D*(2k - 1 + shared))
        Case("moe", seq([4, 8], {"transformer_block": {"num_heads": 2, "num_kv_heads": 1, "ff_dim": 6,
                                                       "moe": {"num_experts": 4, "top_k": 2, "shared_experts": 1}}}),
             params=192 + (8 * 4 + 5 * 3 * 8 * 6) + 2 * 8, macs=1024 + 4 * 4 * 8 + 3 * 3 * 4 * 8 * 6,
             flops=2320 + (2 * 128 + 3 * (2 * 576 + 2 * 24) + 3 * 16 + 16 + 4 * 3 + 4 * 8 * 4) + 2 * 4 * 32 + 2 * 32),
    ],
    # + feed-forward D -> 8 -> D (2 * T*D*8 MACs), its activation (T*8), two layernorms (2 * 5*T*D)
    # and two residual adds (2 * T*D); params: attention + both linears + two layernorms
    "transformer_encoder": [
        Case("T4-D6-h2-ff8", seq([4, 6], {"transformer_encoder": {"num_heads": 2, "ff_dim": 8}}),
             params=(4 * 6 * 6 + 4 * 6) + (6 * 8 + 8) + (8 * 6 + 6) + 2 * (2 * 6),
             macs=(4 * 4 * 6 * 6 + 2 * 4 * 4 * 6) + 2 * 4 * 6 * 8,
             flops=(2 * 768 + 4 * 2 * 4 * 4) + 2 * (2 * 4 * 6 * 8) + 4 * 8 + 2 * 5 * 4 * 6 + 2 * 4 * 6),
        Case("prenorm-causal-gelu",
             seq([4, 6], {"transformer_encoder": {"num_heads": 2, "ff_dim": 8, "norm_first": True,
                                                  "causal": True, "activation": "gelu"}}),
             params=302, macs=768 + 384, flops=1664 + 768 + 32 + 240 + 48),
    ],
    # Decoder, x T=4 and memory S=3 of D=6: causal self-attention as above, cross-attention
    # (Q from x: T*D*D, K and V from memory: 2*S*D*D, QK^T and AV: 2*T*S*D, output: T*D*D;
    # 4 FLOPs per each of heads*T*S scores), feed-forward, three layernorms and three adds.
    "transformer_decoder": [
        Case("T4-S3-D6-h2-ff8",
             {"inputs": {"x": [4, 6], "memory": [3, 6]},
              "graph": {"dec": {"from": ["x", "memory"],
                                "layers": [{"transformer_decoder": {"num_heads": 2, "ff_dim": 8}}]}},
              "outputs": "dec"},
             params=2 * (4 * 6 * 6 + 4 * 6) + (6 * 8 + 8) + (8 * 6 + 6) + 3 * (2 * 6),
             macs=768 + (4 * 6 * 6 + 2 * 3 * 6 * 6 + 2 * 4 * 3 * 6 + 4 * 6 * 6) + 2 * 4 * 6 * 8,
             flops=1664 + (2 * 648 + 4 * 2 * 4 * 3) + 2 * 384 + 4 * 8 + 3 * 5 * 4 * 6 + 3 * 4 * 6,
             path="graph.dec.layers[0]"),
    ],
}

ALL_CASES = [pytest.param(kind, case, id=f"{kind}-{case.id}") for kind, cases in CASES.items() for case in cases]


def row(analysis: archlab.Analysis, path: str):
    for r in analysis.layers:
        if r.path == path:
            return r
    raise AssertionError(f"no row {path!r}; rows: {[r.path for r in analysis.layers]}")


def last_path(spec: dict) -> str:
    return f"layers[{len(spec['layers']) - 1}]"


def builtin_layer_types() -> list[str]:
    """The layer types a fresh ``import archlab`` registers: the built-ins, whatever other tests
    may have registered in this process."""
    out = subprocess.run([sys.executable, "-c", "import json, archlab; print(json.dumps(archlab.list_layers()))"],
                         capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout)


def test_every_builtin_layer_has_a_case():
    missing = sorted(set(builtin_layer_types()) - set(CASES))
    assert not missing, f"layer types without a hand-derived FLOP case in {__file__}: {missing}"


@pytest.mark.parametrize(("kind", "case"), ALL_CASES)
def test_layer_counts_match_hand_formula(kind, case):
    analysis = archlab.analyze(case.spec)
    r = row(analysis, case.path or last_path(case.spec))
    assert r.type == kind
    assert (r.params, r.macs, r.flops) == (case.params, case.macs, case.flops)
    assert r.trainable_params == case.params
    # the parameter rule agrees with the module that is built
    assert archlab.build(case.spec).num_params() == analysis.total_params == case.params


def test_batchnorm_buffers_are_running_stats_and_counter():
    # running mean + running var per channel, and num_batches_tracked
    assert archlab.analyze(seq([3, 4, 4], "batchnorm")).buffers == 2 * 3 + 1
    model = archlab.build(seq([3, 4, 4], "batchnorm"))
    assert sum(b.numel() for b in model.buffers()) == 2 * 3 + 1


# -- connections -------------------------------------------------------------------------------

def test_residual_identity_adds_one_flop_per_element():
    a = archlab.analyze(seq([8], {"residual": {"layers": [{"dense": {"units": 8, "activation": "relu"}}]}}))
    r = row(a, "layers[0]")
    assert r.type == "residual"
    assert (r.params, r.macs, r.flops) == (8 * 8 + 8, 8 * 8, (2 * 64 + 8) + 8)  # dense + relu, + the add
    assert not any(x.type == "shortcut" for x in a.layers)  # identity: no projection


def test_residual_vector_projection_is_a_dense_layer():
    a = archlab.analyze(seq([8], {"residual": {"layers": [{"dense": {"units": 4}}]}}))
    shortcut = row(a, "layers[0].residual.shortcut")
    assert (shortcut.params, shortcut.macs, shortcut.flops) == (8 * 4 + 4, 8 * 4, 2 * 8 * 4)
    r = row(a, "layers[0]")
    assert (r.params, r.macs, r.flops) == (2 * (8 * 4 + 4), 2 * 8 * 4, 2 * 2 * 8 * 4 + 4)


def test_residual_forced_projection_on_equal_shapes():
    a = archlab.analyze(seq([8], {"residual": {"shortcut": "projection", "layers": [{"dense": {"units": 8}}]}}))
    assert row(a, "layers[0]").params == 2 * (8 * 8 + 8)


def test_residual_image_projection_is_resnet_downsample_with_post():
    # (4, 8, 8) -> 3x3/2 conv (6 filters, no bias) + batchnorm -> (6, 4, 4);
    # shortcut: 1x1/2 conv (no bias) + batchnorm; post: relu
    spec = seq([4, 8, 8], {"residual": {
        "layers": [{"conv2d": {"filters": 6, "kernel_size": 3, "strides": 2, "padding": 1, "use_bias": False}},
                   "batchnorm"],
        "post": ["relu"]}})
    a = archlab.analyze(spec)
    out = 6 * 4 * 4
    body_macs, short_macs = out * 4 * 9, out * 4 * 1
    r = row(a, "layers[0]")
    assert r.params == 6 * 4 * 9 + 2 * 6 + 6 * 4 + 2 * 6
    assert r.macs == body_macs + short_macs
    assert r.flops == (2 * body_macs + 2 * out) + (2 * short_macs + 2 * out) + out + out  # + add + relu
    short = row(a, "layers[0].residual.shortcut")
    assert (short.params, short.macs) == (6 * 4 + 2 * 6, short_macs)
    assert a.buffers == 2 * (2 * 6 + 1)
    assert archlab.build(spec).num_params() == a.total_params


# Three dense branches (5,) -> (3,) each: 3 * (18 params, 15 MACs, 30 FLOPs), then the merge:
# add, max and mul take (branches - 1) ops per output element; mean one more (the divide); concat none.
@pytest.mark.parametrize(("merge", "merge_flops", "out_shape"), [
    ("add", 2 * 3, [3]), ("max", 2 * 3, [3]), ("mul", 2 * 3, [3]), ("mean", 2 * 3 + 3, [3]), ("concat", 0, [9]),
])
def test_parallel_merge_costs(merge, merge_flops, out_shape):
    spec = seq([5], {"parallel": {"merge": merge, "branches": [[{"dense": {"units": 3}}]] * 3}})
    a = archlab.analyze(spec)
    r = row(a, "layers[0]")
    assert r.output_shape == out_shape
    assert (r.params, r.macs, r.flops) == (3 * 18, 3 * 15, 3 * 30 + merge_flops)
    assert [x.path for x in a.layers if x.type == "branch"] == [f"layers[0].parallel.branches[{i}]" for i in range(3)]


def test_parallel_concat_on_channels_of_images():
    branches = [[{"conv2d": {"filters": 3, "kernel_size": 1}}],
                [{"conv2d": {"filters": 5, "kernel_size": 3, "padding": "same"}}]]
    spec = seq([2, 4, 4], {"parallel": {"branches": branches}})
    r = row(archlab.analyze(spec), "layers[0]")
    assert r.output_shape == [8, 4, 4]
    assert r.macs == (3 * 16) * 2 + (5 * 16) * 2 * 9


@pytest.mark.parametrize(("merge", "merge_flops"), [("add", 5), ("mean", 5 + 5), ("concat", 0)])
def test_graph_node_merge_cost(merge, merge_flops):
    spec = {"inputs": {"a": [5], "b": [5]},
            "graph": {"s": {"from": ["a", "b"], "merge": merge, "layers": [{"dense": {"units": 2}}]}},
            "outputs": "s"}
    width = 10 if merge == "concat" else 5
    r = row(archlab.analyze(spec), "graph.s")
    assert (r.params, r.macs, r.flops) == (width * 2 + 2, width * 2, 2 * width * 2 + merge_flops)


@pytest.mark.parametrize("share", [False, True])
def test_repeat_counts_flops_times_n_and_shared_params_once(share):
    spec = seq([6], {"repeat": {"times": 3, "share_weights": share,
                                "layers": [{"dense": {"units": 6, "activation": "relu"}}]}})
    a = archlab.analyze(spec)
    one = 6 * 6 + 6
    assert a.total_params == (one if share else 3 * one)
    assert (a.macs, a.flops) == (3 * 36, 3 * (2 * 36 + 6))
    assert archlab.build(spec).num_params() == a.total_params
    if share:
        notes = [(r.type, r.params, r.note) for r in a.layers if r.type.startswith("iteration")]
        assert notes == [("iteration", one, ""),
                         ("iterations", 0, "iterations 2-3: identical, x2; share iteration 0's weights")]


@pytest.mark.parametrize("use_bias", [False, True])
def test_tie_counts_the_shared_weight_once(use_bias):
    # a head tied to a 10 x 4 embedding over T=7 steps: its weight is the embedding's
    spec = seq(tokens(7), {"embedding": {"input_dim": 10, "output_dim": 4}, "name": "emb"},
               {"dense": {"units": 10, "use_bias": use_bias}, "tie": "emb"})
    a = archlab.analyze(spec)
    head = row(a, "layers[1]")
    assert head.params == (10 if use_bias else 0)
    assert head.note == "weight tied to emb"
    assert (head.macs, head.flops) == (7 * 4 * 10, 2 * 7 * 4 * 10)
    assert a.total_params == 10 * 4 + (10 if use_bias else 0)
    model = archlab.build(spec)
    assert model.num_params() == a.total_params
    assert model.net[1].weight is model.net.emb.weight


def test_frozen_layer_is_counted_but_not_trainable():
    spec = seq([5], {"dense": {"units": 3}, "trainable": False}, {"dense": {"units": 2}})
    a = archlab.analyze(spec)
    assert (a.total_params, a.trainable_params, a.non_trainable_params) == (18 + 8, 8, 18)
    assert archlab.build(spec).num_params(trainable_only=True) == 8


# -- memory --------------------------------------------------------------------------------------

def test_training_memory_components():
    # (2, 6, 6) -> conv 3x3 (3 filters) -> (3, 4, 4) -> batchnorm -> relu -> flatten -> frozen dense 5
    spec = seq([2, 6, 6], {"conv2d": {"filters": 3, "kernel_size": 3}}, "batchnorm", "relu", "flatten",
               {"dense": {"units": 5}, "trainable": False})
    batch = 4
    a = archlab.analyze(spec, batch_size=batch)
    params = (3 * 2 * 9 + 3) + 2 * 3 + (48 * 5 + 5)
    trainable = (3 * 2 * 9 + 3) + 2 * 3
    buffers = 2 * 3 + 1
    # kept for backward: conv, batchnorm and relu outputs (48 each), flatten is a view (0),
    # dense output 5; plus the input (2*6*6)
    saved = 3 * 48 + 0 + 5 + 2 * 6 * 6
    assert (a.total_params, a.trainable_params, a.buffers) == (params, trainable, buffers)
    mem = a.training_memory_bytes
    assert mem["weights"] == (params + buffers) * 4
    assert mem["gradients"] == trainable * 4
    assert mem["optimizer"] == 2 * trainable * 4
    assert mem["activations"] == batch * saved * 4
    assert mem["total"] == mem["weights"] + mem["gradients"] + mem["optimizer"] + mem["activations"]
    assert a.model_bytes == {"fp32": (params + buffers) * 4, "bf16": (params + buffers) * 2, "int8": params + buffers}
    assert row(a, "layers[0]").activation_bytes == batch * 48 * 4
    assert a.flops_per_batch == batch * a.flops


def test_activations_scale_with_batch_and_nothing_else():
    spec = seq([8], {"dense": {"units": 4}})
    one, many = archlab.analyze(spec, 1), archlab.analyze(spec, 32)
    activations = many.training_memory_bytes["activations"]
    assert activations == 32 * one.training_memory_bytes["activations"] == 32 * (4 + 8) * 4
    for key in ("weights", "gradients", "optimizer"):
        assert many.training_memory_bytes[key] == one.training_memory_bytes[key]
    assert (many.macs, many.flops) == (one.macs, one.flops)  # per sample


def test_to_dict_is_the_json_schema():
    d = archlab.analyze(seq([8], {"dense": {"units": 4}}), batch_size=2).to_dict()
    assert list(d) == ["schema_version", "name", "batch_size", "inputs", "outputs", "total_params",
                       "trainable_params", "non_trainable_params", "active_params", "buffers", "macs", "flops",
                       "model_bytes",
                       "training_memory_bytes", "layers", "per_target_token", "flops_per_batch"]
    assert d["schema_version"] == 1
    assert d["flops_per_batch"] == 2 * 64
    assert list(d["layers"][0]) == ["path", "type", "depth", "output_shape", "params", "trainable_params",
                                    "active_params", "macs", "flops", "activation_bytes", "note"]
    assert d["active_params"] == d["total_params"] == d["layers"][0]["active_params"] == 36  # dense: all active
    json.dumps(d)  # plain data


# -- FLOPs per target token -------------------------------------------------------------------------------
def _seq2seq(task: dict | None) -> dict:
    """S=5 source ids, T=3 target ids, both embedded to 4; additive cross-attention (U=3) then a dense head."""
    spec = {"inputs": {"source": {"shape": [5], "dtype": "long"}, "target": {"shape": [3], "dtype": "long"}},
            "graph": {"enc": {"from": "source", "layers": [{"embedding": {"input_dim": 7, "output_dim": 4}}]},
                      "dec": {"from": "target", "layers": [{"embedding": {"input_dim": 7, "output_dim": 4}}]},
                      "att": {"from": ["dec", "enc"], "layers": [{"additive_cross_attention": {"units": 3}},
                                                                 {"dense": {"units": 7}}]}},
            "outputs": "att"}
    return spec | ({"task": task} if task else {})


def test_seq2seq_flops_per_target_token_amortise_the_encoder_over_the_target() -> None:
    a = archlab.analyze(_seq2seq({"kind": "seq2seq"}))
    # cross-attention, T=3 D=4 over S=5 E=4, U=3: MACs 5*4*3 + 3*4*3 + 3*5*3 + 3*5*4 = 201, FLOPs
    # 2*201 + 2*3*5*3 + 3*3*5 = 537; the head: 3 positions of 4 -> 7, 2*3*4*7 = 168; embeddings 0
    assert a.flops == 537 + 168
    assert a.per_target_token == {"task": "seq2seq", "input": "target", "tokens": 3, "encoder_included": True,
                                  "flops": 705 / 3, "training_flops": 3 * 705 / 3}


def test_a_language_model_counts_per_position_of_its_one_input_whatever_its_name() -> None:
    spec = {"input": {"shape": [6], "dtype": "long"}, "task": {"kind": "language_model"},
            "layers": [{"embedding": {"input_dim": 10, "output_dim": 4}}, {"dense": {"units": 10}}]}
    a = archlab.analyze(spec)
    assert a.flops == 2 * 6 * 4 * 10
    assert a.per_target_token == {"task": "language_model", "input": "input", "tokens": 6,
                                  "encoder_included": False, "flops": 80.0, "training_flops": 240.0}
    assert "Forward FLOPs / target token (/ 6 'input' positions)" in a.summary()


@pytest.mark.parametrize("task", [None, {"kind": "classification"}], ids=["no-task", "classification"])
def test_no_flops_per_token_without_a_token_task(task) -> None:
    spec = _seq2seq(None) | {"task": task} if task else _seq2seq(None)
    if task:  # a classifier ends in one vector
        spec["graph"]["att"]["layers"].insert(1, {"flatten": {}})
    a = archlab.analyze(spec)
    assert a.per_target_token is None
    assert "target token" not in a.summary()
