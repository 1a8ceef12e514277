"""rmsnorm: LLaMA's norm, counted exactly and built as torch's nn.RMSNorm."""

from __future__ import annotations

import pytest
import torch

import archlab


def test_rmsnorm_scales_each_feature_by_the_root_mean_square_and_counts_one_weight_per_feature():
    spec = {"input": [5, 8], "layers": [{"rmsnorm": {"epsilon": 1e-6}}]}
    model = archlab.build(spec).eval()
    analysis = archlab.analyze(spec)
    assert analysis.total_params == model.num_params() == 8  # a scale per feature, no bias (LayerNorm has 16)
    assert analysis.flops == 4 * 5 * 8
    x = torch.randn(3, 5, 8)
    with torch.no_grad():
        model.net[0].weight.copy_(torch.linspace(0.5, 2.0, 8))
        expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * torch.linspace(0.5, 2.0, 8)
        assert torch.allclose(model(x), expected, atol=1e-6)


def test_rmsnorm_refuses_a_scalar_and_ids():
    with pytest.raises(archlab.ShapeError, match="needs at least one axis"):
        archlab.analyze({"input": [1], "layers": [{"reshape": {"shape": []}}, "rmsnorm"]})
    with pytest.raises(archlab.SpecError):
        archlab.analyze({"input": {"shape": [4], "dtype": "long"}, "layers": ["rmsnorm"]})


def test_a_language_model_with_rmsnorm_decodes_with_the_cache_as_without():
    from archlab.generation import generate

    torch.manual_seed(0)
    model = archlab.build({
        "inputs": {"tokens": {"shape": [10], "dtype": "long"}},
        "graph": {"lm": {"from": "tokens", "layers": [
            {"embedding": {"input_dim": 11, "output_dim": 16}}, {"positional_embedding": {"max_len": 10}},
            {"transformer_encoder": {"num_heads": 2, "ff_dim": 32, "causal": True, "norm_first": True}},
            "rmsnorm", {"dense": {"units": 11}}]}},
        "outputs": "lm",
    }).eval()
    cached = generate(model, [[4, 5, 6]], max_new_tokens=5, greedy=True, use_cache=True)
    assert cached == generate(model, [[4, 5, 6]], max_new_tokens=5, greedy=True, use_cache=False)
