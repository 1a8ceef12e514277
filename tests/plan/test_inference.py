"""archlab.plan serving costs: the KV cache against published figures, memory per GPU, and the
decode/prefill roofline bounds with their arithmetic written out."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from archlab.layers import TransformerShape
from archlab.plan import (
    Serving,
    decode_bound,
    kv_cache_bytes,
    kv_cache_bytes_per_token,
    kv_heads_per_gpu,
    plan_inference,
    prefill_bound,
    serving_memory,
)

A100_80GB_BANDWIDTH = 2.039e12  # bytes/s, NVIDIA A100 datasheet (SXM 80GB)
A100_BF16 = 312e12  # dense FLOP/s
LLAMA2_7B_PARAMS = 6_738_415_616  # Hugging Face meta-llama/Llama-2-7b-hf
LLAMA2_70B_PARAMS = 68_976_648_192

#: LLaMA-2 7B (Touvron et al. 2023, table 1 and the released config): 32 blocks, width 4096,
#: 32 heads of 128, all of them key/value heads, SwiGLU of 11008.
LLAMA2_7B = [(TransformerShape(hidden=4096, seq_len=4096, heads=32, kv_heads=32, head_dim=128, ff_dim=11008,
                               gated=True), 32)]
#: LLaMA-2 70B: 80 blocks, width 8192, 64 query heads of 128 sharing 8 key/value heads (GQA).
LLAMA2_70B = [(TransformerShape(hidden=8192, seq_len=4096, heads=64, kv_heads=8, head_dim=128, ff_dim=28672,
                                gated=True), 80)]


def test_kv_cache_per_token_matches_published_llama2_figures():
    # 2 (K and V) * 32 KV heads * 128 * 2 bytes * 32 blocks; 2 * 8 * 128 * 2 * 80
    assert kv_cache_bytes_per_token(LLAMA2_7B) == 2 * 32 * 128 * 2 * 32 == 524_288
    assert kv_cache_bytes_per_token(LLAMA2_70B) == 2 * 8 * 128 * 2 * 80 == 327_680
    # at 4,096 tokens the 7B cache is 524,288 * 4,096 bytes = 2 GiB per sequence
    assert kv_cache_bytes(LLAMA2_7B, 4096) == 2 * 2**30


def test_multi_query_attention_caches_one_head():
    # Falcon-7B: 32 blocks, 71 query heads of 64, one key/value head
    mqa = TransformerShape(hidden=4544, seq_len=2048, heads=71, kv_heads=1, head_dim=64, ff_dim=18176)
    mha = TransformerShape(hidden=4544, seq_len=2048, heads=71, kv_heads=71, head_dim=64, ff_dim=18176)
    assert kv_cache_bytes_per_token([(mqa, 32)]) == 2 * 1 * 64 * 2 * 32 == 8192
    assert kv_cache_bytes_per_token([(mha, 32)]) == 71 * 8192


def test_fp32_and_int8_caches_scale_with_the_element_size():
    assert kv_cache_bytes_per_token(LLAMA2_7B, 4) == 2 * 524_288
    assert kv_cache_bytes_per_token(LLAMA2_7B, 1) == 524_288 // 2


def test_sliding_window_caps_the_cache_and_encoders_keep_none():
    window = TransformerShape(hidden=4096, seq_len=32768, heads=32, kv_heads=8, head_dim=128, ff_dim=14336,
                              window=4096)
    per_position = 2 * 8 * 128 * 2 * 32
    assert kv_cache_bytes([(window, 32)], 1000) == per_position * 1000  # below the window: all tokens
    assert kv_cache_bytes([(window, 32)], 32768) == per_position * 4096  # above: the window's
    encoder = TransformerShape(hidden=768, seq_len=512, heads=12, kv_heads=12, head_dim=64, ff_dim=3072, causal=False)
    assert kv_cache_bytes_per_token([(encoder, 12)]) == 0
    assert kv_cache_bytes([(encoder, 12)], 512) == 0


def test_cross_attention_caches_the_memory_once_per_sequence():
    # a T5-style decoder block: self-attention cache grows with the context, the encoder's K/V do not
    dec = TransformerShape(hidden=512, seq_len=64, heads=8, kv_heads=8, head_dim=64, ff_dim=2048, memory_len=100)
    per_position = 2 * 8 * 64 * 2
    assert kv_cache_bytes([(dec, 6)], 10) == 6 * per_position * (10 + 100)
    assert kv_cache_bytes([(dec, 6)], 20) - kv_cache_bytes([(dec, 6)], 10) == 6 * per_position * 10


@pytest.mark.parametrize(("kv_heads", "tp", "per_gpu"), [(8, 1, 8), (8, 2, 4), (8, 8, 1), (8, 16, 1), (1, 4, 1),
                                                         (32, 4, 8)])
def test_tensor_parallel_splits_kv_heads_and_replicates_the_few(kv_heads, tp, per_gpu):
    assert kv_heads_per_gpu(kv_heads, tp) == per_gpu


def test_tensor_parallel_cache_on_one_gpu():
    # 70B on 4 GPUs: 2 KV heads each; on 16 GPUs each of the 8 heads sits on 2 GPUs, one per GPU
    assert kv_cache_bytes(LLAMA2_70B, 100, tensor_parallel=4) == 2 * 2 * 128 * 2 * 80 * 100
    assert kv_cache_bytes(LLAMA2_70B, 100, tensor_parallel=16) == 2 * 1 * 128 * 2 * 80 * 100


def test_kv_heads_that_cannot_be_split_say_which_sizes_do():
    with pytest.raises(ValueError, match=r"--tp 3: the blocks' 8 key/value heads .* \(1, 2, 4, 8, 16"):
        kv_heads_per_gpu(8, 3)


def test_serving_memory_llama2_7b_bf16():
    m = serving_memory(LLAMA2_7B, LLAMA2_7B_PARAMS, Serving(context=4096, batch=2), vocab=32000)
    assert m.weights == 2 * LLAMA2_7B_PARAMS
    assert m.kv_cache == 2 * 4096 * 524_288  # batch * context * bytes per token
    # workspace: 2 * 4096 tokens * (2 * 4096 residual + normed, 3 * 11008 SwiGLU tensors) * 2 bytes
    # + 2 sequences' fp32 logits over 32,000 tokens
    assert m.activations == 2 * 4096 * (2 * 4096 + 3 * 11008) * 2 + 2 * 32000 * 4
    assert m.total == m.weights + m.kv_cache + m.activations
    assert m.to_dict()["total"] == m.total


@pytest.mark.parametrize(("weights", "bytes_per_param"), [("fp32", 4), ("bf16", 2), ("int8", 1), ("int4", 0.5)])
def test_weight_only_quantization_shrinks_the_weights(weights, bytes_per_param):
    m = serving_memory(LLAMA2_7B, LLAMA2_7B_PARAMS, Serving(context=1, weights=weights))
    assert m.weights == math.ceil(LLAMA2_7B_PARAMS * bytes_per_param)


def test_tensor_parallel_splits_weights_and_cache():
    one = serving_memory(LLAMA2_70B, LLAMA2_70B_PARAMS, Serving(context=4096, batch=4))
    four = serving_memory(LLAMA2_70B, LLAMA2_70B_PARAMS, Serving(context=4096, batch=4, tensor_parallel=4))
    assert four.weights == one.weights // 4
    assert four.kv_cache == one.kv_cache // 4


def test_decode_bound_llama2_7b_on_an_a100():
    """Batch 1 fp16: every step reads 6,738,415,616 * 2 = 13,476,831,232 weight bytes, plus the cache."""
    serving = Serving(context=1, weights="fp16", kv="fp16")
    d = decode_bound(LLAMA2_7B, LLAMA2_7B_PARAMS, LLAMA2_7B_PARAMS, serving, bandwidth=A100_80GB_BANDWIDTH,
                     peak_flops=A100_BF16)
    assert d.bytes_per_step == 13_476_831_232 + 524_288
    assert d.memory_tokens_per_s == pytest.approx(2.039e12 / 13_477_355_520)  # 151.29...
    assert round(d.tokens_per_s, 1) == 151.3 and d.bound == "memory"
    # compute: 2 * N + 4 * 32 heads * 128 * 1 position * 32 blocks FLOPs per token at 312e12 FLOP/s
    assert d.flops_per_token == 2 * LLAMA2_7B_PARAMS + 4 * 32 * 128 * 1 * 32
    assert d.compute_tokens_per_s == pytest.approx(312e12 / d.flops_per_token)  # about 23,000

    # at 4,096 tokens the 2 GiB cache is read too: 2.039e12 / (13,476,831,232 + 2,147,483,648) = 130.50
    long = decode_bound(LLAMA2_7B, LLAMA2_7B_PARAMS, LLAMA2_7B_PARAMS, Serving(context=4096, weights="fp16"),
                        bandwidth=A100_80GB_BANDWIDTH, peak_flops=A100_BF16)
    assert round(long.tokens_per_s, 2) == round(2.039e12 / 15_624_314_880, 2) == 130.5


def test_a_large_batch_becomes_compute_bound():
    serving = Serving(context=1, batch=1024)
    d = decode_bound(LLAMA2_7B, LLAMA2_7B_PARAMS, LLAMA2_7B_PARAMS, serving, bandwidth=A100_80GB_BANDWIDTH,
                     peak_flops=A100_BF16)
    assert d.bound == "compute"
    assert d.tokens_per_s == pytest.approx(312e12 / d.flops_per_token)
    assert d.memory_tokens_per_s == pytest.approx(1024 * 2.039e12 / (2 * LLAMA2_7B_PARAMS + 1024 * 524_288))


def _expected_distinct_experts(experts: int, top_k: int, tokens: int) -> float:
    """By enumeration: every token picks one of the C(E, k) expert sets with equal chance."""
    choices = list(itertools.combinations(range(experts), top_k))
    total = sum(len(set().union(*picks)) for picks in itertools.product(choices, repeat=tokens))
    return total / len(choices) ** tokens


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_moe_decode_reads_the_experts_its_tokens_are_routed_to(batch):
    # Mixtral-like: 8 experts, top-2; experts hold 8 units of weight, 2 of them active per token, 1 other
    moe = TransformerShape(hidden=64, seq_len=16, heads=4, kv_heads=4, head_dim=16, ff_dim=128, gated=True,
                           experts=8, top_k=2)
    per_expert, other = 1_000_000, 500_000
    total, active = 8 * per_expert + other, 2 * per_expert + other
    d = decode_bound([(moe, 1)], total, active, Serving(context=1, batch=batch, weights="fp32", kv="fp32"),
                     bandwidth=1e12, peak_flops=1e15)
    distinct = _expected_distinct_experts(8, 2, batch)
    expected_weights = (other + distinct * per_expert) * 4
    cache = batch * 2 * 4 * 16 * 4
    assert d.bytes_per_step == pytest.approx(expected_weights + cache, abs=4)
    assert d.flops_per_token == 2 * active + 4 * 4 * 16  # active weights only


def test_prefill_bound_counts_causal_and_windowed_attention():
    window = TransformerShape(hidden=64, seq_len=100, heads=4, kv_heads=2, head_dim=16, ff_dim=256, window=10)
    p = prefill_bound([(window, 3)], 50_000, 50_000, Serving(context=100, batch=2), bandwidth=1e9, peak_flops=1e12)
    seen = sum(min(i, 10) for i in range(1, 101))  # token i attends min(i, window) keys
    assert p.flops == 2 * (2 * 50_000 * 100 + 3 * 4 * 4 * 16 * seen)
    assert p.compute_s == pytest.approx(p.flops / 1e12)
    assert p.bytes == 50_000 * 2 + 2 * 3 * (2 * 2 * 16 * 2 * 10)  # weights, plus the windowed cache written
    assert p.seconds == max(p.compute_s, p.memory_s)


def test_plan_inference_llama2_70b_on_four_a100s():
    plan = plan_inference(LLAMA2_70B, LLAMA2_70B_PARAMS, None, Serving(context=4096, batch=8, tensor_parallel=4),
                          bandwidth=A100_80GB_BANDWIDTH, peak_flops=A100_BF16, memory_bytes=80 * 2**30,
                          vocab=32000)
    assert plan.kv_cache_bytes_per_token == 327_680
    assert plan.memory.weights == math.ceil(LLAMA2_70B_PARAMS * 2 / 4)
    assert plan.memory.kv_cache == 8 * 4096 * 327_680 // 4
    assert plan.fits
    assert not plan_inference(LLAMA2_70B, LLAMA2_70B_PARAMS, None, Serving(context=4096), bandwidth=2e12,
                              peak_flops=3e14, memory_bytes=80 * 2**30).fits  # 138 GB of weights on one GPU
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["decode"]["bound"] == "memory" and data["memory"]["total"] == plan.memory.total


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"context": 0}, "--context must be a positive integer, got 0"),
    ({"context": 8, "batch": 0}, "--batch must be a positive integer"),
    ({"context": 8, "prompt": 9}, r"--prompt must be an integer from 1 to --context \(8\), got 9"),
    ({"context": 8, "weights": "int3"}, "--weights 'int3': unknown precision; did you mean 'int8'?"),
    ({"context": 8, "kv": "fp64"}, "--kv-precision 'fp64': unknown precision.*choose one of fp32"),
    ({"context": 8, "tensor_parallel": 0}, "--tp must be a positive integer"),
])
def test_bad_serving_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Serving(**kwargs)


def test_bad_hardware_numbers_are_refused():
    with pytest.raises(ValueError, match="bandwidth must be a positive number, got 0"):
        decode_bound(LLAMA2_7B, 1, 1, Serving(context=1), bandwidth=0, peak_flops=1e12)
    with pytest.raises(ValueError, match="active params 20 exceed the model's 10"):
        prefill_bound(LLAMA2_7B, 10, 20, Serving(context=1), bandwidth=1e12, peak_flops=1e12)
