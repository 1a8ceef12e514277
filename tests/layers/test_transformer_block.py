"""multi_head_attention's large-model options and transformer_block: the counts are those of the
same block written as residual sub-layers, the Transformer shape the planner reads, the module
kept for the plain case, and the errors on bad options."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import archlab
from archlab.layers import TransformerShape


def seq(shape, *layers) -> dict:
    return {"input": shape, "layers": list(layers)}


def block(**params) -> dict:
    return {"transformer_block": {"num_heads": 4, "ff_dim": 24, **params}}


def attention(**params) -> dict:
    return {"multi_head_attention": {"num_heads": 4, **params}}


def as_residuals(norm: dict, attn: dict, mlp: list) -> list:
    """The block written out: x + attn(norm(x)), then h + mlp(norm(h))."""
    return [{"residual": {"layers": [norm, attn]}}, {"residual": {"layers": [norm, *mlp]}}]


@pytest.mark.parametrize(("params", "norm", "attn", "mlp"), [
    ({"num_kv_heads": 2}, {"rmsnorm": {"epsilon": 1e-5}},
     attention(num_kv_heads=2, rotary=True, causal=True, use_bias=False), [{"gated_mlp": {"ff_dim": 24}}]),
    ({"mlp": "gelu", "norm": "layernorm", "use_bias": True, "rotary": False, "sliding_window": 3},
     {"layernorm": {"epsilon": 1e-5}}, attention(causal=True, sliding_window=3),
     [{"dense": {"units": 24, "activation": "gelu"}}, {"dense": {"units": 16}}]),
    ({"mlp": "geglu", "head_dim": 6, "causal": False}, "rmsnorm",
     attention(head_dim=6, rotary=True, use_bias=False), [{"gated_mlp": {"ff_dim": 24, "activation": "gelu"}}]),
    ({"moe": {"num_experts": 4, "top_k": 1, "shared_experts": 1}, "use_bias": True}, "rmsnorm",
     attention(rotary=True, causal=True),
     [{"moe": {"num_experts": 4, "top_k": 1, "shared_experts": 1, "ff_dim": 24, "use_bias": True}}]),
])
def test_a_block_counts_as_its_sub_layers_in_residuals(params, norm, attn, mlp):
    one = archlab.analyze(seq([8, 16], block(**params)))
    written_out = archlab.analyze(seq([8, 16], *as_residuals(norm, attn, mlp)))
    assert ((one.total_params, one.active_params, one.macs, one.flops)
            == (written_out.total_params, written_out.active_params, written_out.macs, written_out.flops))
    assert one.training_memory_bytes == written_out.training_memory_bytes
    model = archlab.build(seq([8, 16], block(**params)))
    assert sum(p.numel() for p in model.parameters()) == one.total_params


def test_the_block_computes_the_pre_norm_residuals_of_its_modules():
    torch.manual_seed(0)
    model = archlab.build(seq([6, 16], block(num_kv_heads=1, dropout=0.1))).eval()
    b = model.net[0]
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        h = x + b.attn(b.attn_norm(x))
        assert torch.allclose(model(x), h + b.mlp(b.mlp_norm(h)), atol=1e-6)


def test_the_transformer_shape_is_what_the_planner_reads():
    parsed = archlab.parse(seq([32, 16], block(num_kv_heads=2, sliding_window=8, head_dim=8)))
    node = parsed.top_nodes()[0]
    assert node.layer_type.transformer(node.params, node.input) == TransformerShape(
        hidden=16, seq_len=32, heads=4, kv_heads=2, head_dim=8, ff_dim=24, gated=True, causal=True, window=8,
        dropout=False)
    gpt2 = archlab.parse(seq([32, 16], block(mlp="gelu", dropout=0.1, causal=False))).top_nodes()[0]
    shape = gpt2.layer_type.transformer(gpt2.params, gpt2.input)
    assert (shape.gated, shape.causal, shape.dropout, shape.kv_heads, shape.head_dim) == (False, False, True, 4, 4)
    moe = archlab.parse(seq([32, 16], block(moe={"num_experts": 8, "shared_experts": 2}))).top_nodes()[0]
    shape = moe.layer_type.transformer(moe.params, moe.input)
    assert (shape.experts, shape.top_k, shape.shared_experts, shape.gated, shape.ff_dim) == (8, 2, 2, True, 24)


def test_plain_attention_keeps_torchs_module_and_the_options_build_q_k_v_o():
    plain = archlab.build(seq([5, 8], attention(causal=True, num_kv_heads=4, head_dim=2))).net[0]
    assert isinstance(plain.attn, nn.MultiheadAttention)  # saved runs, the KV cache, ONNX export
    grouped = archlab.build(seq([5, 8], attention(num_kv_heads=2))).net[0]
    assert (grouped.q.out_features, grouped.k.out_features, grouped.v.out_features) == (8, 4, 4)


def test_the_sliding_window_lets_each_query_see_itself_and_the_window_minus_one_before_it():
    torch.manual_seed(0)
    model = archlab.build(seq([6, 8], attention(causal=True, sliding_window=2, use_bias=False))).eval()
    x = torch.randn(1, 6, 8)
    with torch.no_grad():
        base = model(x)
        changed = x.clone()
        changed[0, 1] += 1.0  # position 1 is read by queries 1 and 2 only
        diff = (model(changed) - base).abs().amax(-1)[0]
    assert diff[:1].max() == 0 and diff[1:3].min() > 0 and diff[3:].max() == 0


@pytest.mark.parametrize(("item", "path", "fragments"), [
    (attention(num_kv_heads=3), "layers[0].multi_head_attention.num_kv_heads",
     ["num_kv_heads=3 does not divide num_heads=4", "use one of 1, 2, 4"]),
    (block(num_kv_heads=3), "layers[0].transformer_block.num_kv_heads", ["use one of 1, 2, 4"]),
    (attention(rotary=True, head_dim=3), "layers[0].multi_head_attention.head_dim", ["even head_dim; got 3"]),
    (block(num_heads=2, ff_dim=8, head_dim=5), "layers[0].transformer_block.head_dim", ["even head_dim"]),
    (attention(sliding_window=4), "layers[0].multi_head_attention.sliding_window", ["needs causal: true"]),
    (block(sliding_window=4, causal=False), "layers[0].transformer_block.sliding_window", ["needs causal: true"]),
    (block(num_heads=3), "layers[0]", ["num_heads=3 does not divide", "or set head_dim"]),
    (block(mlp="relu", moe={"num_experts": 4}), "layers[0].transformer_block.mlp", ["swiglu or geglu"]),
    (block(rope_theta=0.0), "layers[0].transformer_block.rope_theta", ["greater than 0"]),
    (block(moe={"num_experts": 2, "top_k": 3}), "layers[0].transformer_block.moe", ["lower top_k to at most 2"]),
])
def test_bad_options_name_the_parameter_and_the_fix(item, path, fragments):
    with pytest.raises(archlab.SpecError) as info:
        archlab.analyze(seq([8, 16], item))
    assert info.value.path == path
    for fragment in fragments:
        assert fragment in str(info.value)


def test_the_cli_refuses_a_bad_block_with_one_message_and_exit_2(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("input: [8, 16]\nlayers:\n  - transformer_block: {num_heads: 4, ff_dim: 8, num_kv_heads: 3}\n")
    out = subprocess.run([sys.executable, "-m", "archlab", "summary", str(spec)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2
    assert "num_kv_heads=3 does not divide num_heads=4" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("options", [{"num_kv_heads": 2, "use_bias": False}, {"num_kv_heads": 1, "head_dim": 6},
                                     {"head_dim": 2, "causal": True, "sliding_window": 3, "rotary": True}])
def test_torchs_flop_counter_sees_the_projections_we_count(options):
    """FlopCounterMode counts the four projections' matmuls (2 per MAC); torch's CPU attention kernel
    has no FLOP formula, so QKᵀ and AV (2·T·keys·heads·head_dim MACs) are ours alone."""
    from torch.utils.flop_counter import FlopCounterMode

    spec = seq([8, 16], attention(**options))
    model, analysis = archlab.build(spec), archlab.analyze(spec)
    heads, head_dim = 4, options.get("head_dim", 4)
    keys = min(8, options.get("sliding_window", 8))
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 8, 16))
    assert counter.get_total_flops() == 2 * (analysis.macs - 2 * 8 * keys * heads * head_dim)


def test_a_llama_style_model_exports_to_onnx_with_parity(tmp_path):
    """Grouped-query, rotary, windowed attention and a mixture of experts trace to ONNX, and ONNX
    Runtime computes what torch computes (export_model checks it, or keeps no file)."""
    from archlab.deploy import export_model

    torch.manual_seed(0)
    model = archlab.build({"input": {"shape": [8], "dtype": "long"}, "layers": [
        {"embedding": {"input_dim": 11, "output_dim": 16}},
        block(num_kv_heads=2, sliding_window=3, moe={"num_experts": 3}), {"dense": {"units": 11}}]}).eval()
    result = export_model(model, tmp_path / "llama.onnx", example=torch.randint(0, 11, (2, 8)),
                          check_inputs=torch.randint(0, 11, (9, 8)))
    assert result.path.exists() and result.max_abs_diff <= 1e-5
