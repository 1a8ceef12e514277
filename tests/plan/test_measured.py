"""The oracle behind the planner's FLOP formula: torch's FlopCounterMode on a GPT that archlab
builds counts exactly the matmul FLOPs written out from the shape (2 per multiply-add of each
weight matrix and of the attention products, x3 with the backward pass); the model states the
analysis plans are the bytes AdamW training holds; and what autograd saves is Korthikanti et al.'s
count plus the CPU's named differences. benchmarks/plan_vs_measured.py measures the same at a
larger size; docs/results.md ("Planner: planned vs measured") records it."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import archlab
from archlab.training import Engine, resolve_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

V, D, L, HEADS, S, B = 64, 32, 2, 2, 16, 3


def gpt(dropout: float) -> dict:
    """GPT-2's layout: embeddings, pre-norm causal blocks, final norm, head tied to the embedding."""
    block = {"num_heads": HEADS, "ff_dim": 4 * D, "activation": "gelu", "norm_first": True, "causal": True,
             "dropout": dropout}
    return {"input": {"shape": [S], "dtype": "long"}, "task": {"kind": "language_model"},
            "layers": [{"embedding": {"input_dim": V, "output_dim": D}, "name": "wte"},
                       {"positional_embedding": {"max_len": S, "kind": "learned"}},
                       {"dropout": {"rate": dropout}},
                       {"repeat": {"times": L, "layers": [{"transformer_encoder": block}]}},
                       {"layernorm": None}, {"dense": {"units": V, "use_bias": False}, "tie": "wte"}]}


#: weights that enter a matmul: per block Q, K, V and output projections (4·D²) and the MLP
#: (2·D·4D), and the tied head (V·D); not the position embedding, biases or norms
MATMUL_PARAMS = L * 12 * D * D + V * D
#: QKᵀ and the probabilities times V, forward, per token: 2 products of 2·S·D FLOPs per block
#: (the masked half of the causal scores is computed too)
ATTENTION_FWD = L * 2 * 2 * S * D


def counted(spec: dict) -> tuple[int, int, dict[str, int], torch.nn.Module]:
    """FlopCounterMode's (forward, forward + backward) FLOPs of one training batch, by operator."""
    torch.manual_seed(0)
    model = archlab.build(spec).train()  # grad on, training mode: eval under no_grad takes an uncounted fast path
    x = torch.randint(1, V, (B, S))
    with FlopCounterMode(display=False) as counter:
        logits = model(x)  # (B, S, V)
        forward = counter.get_total_flops()
        torch.nn.functional.cross_entropy(logits.reshape(-1, V), x.reshape(-1)).backward()
    ops = {str(op).removeprefix("aten."): n for op, n in counter.get_flop_counts()["Global"].items()}
    return forward, counter.get_total_flops(), ops, model


def test_flop_counter_equals_the_matmul_flops_of_the_shape():
    forward, total, ops, model = counted(gpt(dropout=0.1))
    tokens = B * S
    assert forward == tokens * (2 * MATMUL_PARAMS + ATTENTION_FWD)
    assert total == 3 * forward  # the backward pass: 2 matmuls per forward one (input and weight gradients)
    assert ops["bmm"] == 3 * tokens * ATTENTION_FWD  # attention, on the math path dropout takes
    # PaLM's 6N + 12·L·h·s per token, N every parameter: too high by 6 per parameter outside a matmul
    n = sum(p.numel() for p in model.parameters())
    palm = 6 * n + 12 * L * D * S
    assert palm * tokens - total == 6 * tokens * (n - MATMUL_PARAMS)
    assert n - MATMUL_PARAMS == S * D + L * 13 * D + 2 * D  # positions; per block biases 9·D, norms 4·D; ln_f


def test_analysis_forward_flops_are_the_counted_matmuls_plus_the_elementwise_work():
    forward, _, _, _ = counted(gpt(dropout=0.1))
    per_token = archlab.analyze(gpt(dropout=0.1)).per_target_token["flops"]
    # docs/analysis.md: per block 4·h·T² (scale and softmax of each score) + T·f (GELU) + 12·T·D
    # (two layernorms at 5, two residual adds); the position embedding's add T·D, ln_f 5·T·D
    elementwise = L * (4 * HEADS * S + 4 * D + 12 * D) + D + 5 * D
    assert per_token == forward / (B * S) + elementwise


def test_fused_attention_is_not_counted():
    """Without dropout, training attention on the CPU runs _scaled_dot_product_flash_attention_for_cpu,
    which FlopCounterMode (torch 2.13) has no formula for: it sees the weight matmuls only, and a
    measurement of a model without dropout must add the attention term itself."""
    forward, total, ops, _ = counted(gpt(dropout=0.0))
    assert "bmm" not in ops
    assert total == 3 * forward == 3 * B * S * 2 * MATMUL_PARAMS


def test_model_states_of_adamw_training_are_the_planned_bytes():
    spec = gpt(dropout=0.1)
    planned = archlab.analyze(spec, batch_size=B).training_memory_bytes
    recipe = resolve_recipe({"epochs": 1, "batch_size": B, "validation_split": 0.0, "optimizer": "adamw"},
                            device="cpu", precision="fp32")
    torch.manual_seed(0)
    engine = Engine(archlab.build(spec), recipe, "language_model", run_dir=None, verbose=0)
    ids = torch.randint(1, V, (2 * B, S))
    engine.fit(ids, ids)
    params = list(engine.model.parameters())
    assert sum(p.numel() * p.element_size() for p in params) == planned["weights"]
    assert sum(p.grad.numel() * p.grad.element_size() for p in params) == planned["gradients"]
    moments = [t for state in engine.optimizer.state.values() for k, t in state.items() if k != "step"]
    assert sum(t.numel() * t.element_size() for t in moments) == planned["optimizer"]  # exp_avg, exp_avg_sq


def test_saved_activations_are_korthikantis_count_plus_the_documented_cpu_differences():
    """What autograd keeps for the backward pass of the tiny GPT, in fp32 on the CPU, against
    Korthikanti et al.'s tensor-by-tensor count at 4 bytes per element and 1 per dropout mask,
    plus each difference docs/results.md ("Planner: planned vs measured") names."""
    torch.manual_seed(0)
    model = archlab.build(gpt(dropout=0.1)).train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, tuple[torch.dtype, int]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved.setdefault(storage.data_ptr(), (t.dtype, storage.nbytes()))
        return t

    x = torch.randint(1, V, (B, S))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        torch.nn.functional.cross_entropy(model(x).reshape(-1, V), x.reshape(-1))
    measured = sum(size for dtype, size in saved.values() if dtype == torch.float32)
    sh, as2 = S * D, HEADS * S * S
    # per sample: blocks 66·s·h + 9·a·s² (fp32, 1-byte masks); the embedding's dropout mask s·h;
    # ln_f's and the head's inputs 2·4·s·h; the fp32 log-probabilities the loss keeps, 4·s·V
    korthikanti = L * (66 * sh + 9 * as2) + sh + 8 * sh + 4 * S * V
    cpu_masks = L * (2 * 3 * sh + 3 * as2) + 3 * sh  # CPU dropout keeps fp32 masks: 3 more bytes each
    third_dropout = L * 4 * 4 * sh  # nn.TransformerEncoderLayer's dropout inside the MLP: its fp32 mask
    qk_copies = L * 2 * 4 * sh  # the math attention path's q·√scale and k·√scale
    norm_stats = (2 * L + 1) * 2 * 4 * S  # each layernorm's mean and 1/σ
    total_weight = 4  # nll_loss keeps the sum of its weights, one 0-d fp32 tensor per batch
    assert measured == B * (korthikanti + cpu_masks + third_dropout + qk_copies + norm_stats) + total_weight
    assert {dtype for dtype, _ in saved.values()} == {torch.float32, torch.int64}  # no bool masks on the CPU
