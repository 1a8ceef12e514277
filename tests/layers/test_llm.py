"""The large-model blocks against independent references: Hugging Face LLaMA's MLP written out."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import archlab


@pytest.mark.parametrize(("activation", "act"), [("silu", F.silu), ("gelu", F.gelu)])
def test_gated_mlp_computes_down_of_the_gated_product_as_llama_does(activation, act):
    torch.manual_seed(0)
    spec = {"input": [5, 8], "layers": [{"gated_mlp": {"ff_dim": 12, "activation": activation}}]}
    model = archlab.build(spec).eval()
    mlp = model.net[0]
    x = torch.randn(3, 5, 8)
    expected = (act(x @ mlp.gate.weight.T) * (x @ mlp.up.weight.T)) @ mlp.down.weight.T  # (3, 5, 8)
    assert torch.allclose(model(x), expected, atol=1e-6)
    assert archlab.analyze(spec).total_params == model.num_params() == 3 * 8 * 12  # no biases, as LLaMA


def test_gated_mlp_refuses_ids_and_a_scalar():
    with pytest.raises(archlab.SpecError, match="add 'embedding'"):
        archlab.analyze({"input": {"shape": [4], "dtype": "long"}, "layers": [{"gated_mlp": {"ff_dim": 4}}]})
    with pytest.raises(archlab.ShapeError, match="needs at least one axis"):
        archlab.analyze({"input": [1], "layers": [{"reshape": {"shape": []}}, {"gated_mlp": {"ff_dim": 4}}]})
