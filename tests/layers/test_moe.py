"""moe: a mixture of gated-MLP experts (Mixtral) against a naive reference written here (every
expert on every token, masked by the routing), Hugging Face's MixtralSparseMoeBlock when it is
installed, and its counts (total and active) against hand arithmetic and the built module."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import archlab


def moe_spec(shape=(5, 8), **params) -> dict:
    return {"name": "moe", "input": list(shape), "layers": [{"moe": {"num_experts": 4, "ff_dim": 6, **params}}]}


def expert_out(mlp, x: torch.Tensor) -> torch.Tensor:
    """One gated expert written out: down(silu(gate x) * up x), biases included."""
    return F.linear(F.silu(F.linear(x, mlp.gate.weight, mlp.gate.bias)) * F.linear(x, mlp.up.weight, mlp.up.bias),
                    mlp.down.weight, mlp.down.bias)


def naive(moe, x: torch.Tensor, top_k: int) -> torch.Tensor:
    """Every expert on every token, each output weighted by the token's renormalised top-k
    probability of that expert (0 for the experts it is not routed to); shared experts unweighted."""
    tokens = x.reshape(-1, x.shape[-1])  # (N, D)
    probs = torch.softmax(tokens @ moe.router.weight.T, dim=-1)  # (N, E)
    top, chosen = probs.topk(top_k, dim=-1)
    gates = torch.zeros_like(probs).scatter(1, chosen, top / top.sum(-1, keepdim=True))  # (N, E), k non-zero a row
    out = sum(gates[:, e:e + 1] * expert_out(mlp, tokens) for e, mlp in enumerate(moe.experts))
    out = out + sum((expert_out(mlp, tokens) for mlp in moe.shared), torch.zeros_like(tokens))
    return out.reshape(x.shape)


@pytest.mark.parametrize(("top_k", "shared", "bias"), [(1, 0, False), (2, 0, False), (2, 2, False), (3, 1, True)])
def test_moe_output_is_the_routed_weighted_sum_of_its_experts(top_k, shared, bias):
    torch.manual_seed(0)
    spec = moe_spec(top_k=top_k, shared_experts=shared, use_bias=bias)
    model = archlab.build(spec).eval()
    moe = model.net[0]
    x = torch.randn(3, 5, 8)
    torch.testing.assert_close(model(x), naive(moe, x, top_k), atol=1e-6, rtol=1e-5)
    assert (len(moe.experts), len(moe.shared)) == (4, shared)


def test_gradients_reach_the_router_and_only_the_chosen_experts():
    torch.manual_seed(0)
    model = archlab.build(moe_spec(top_k=2))
    moe = model.net[0]
    with torch.no_grad():  # positive tokens score experts 0 and 1 above 2 and 3: every token picks 0 and 1
        moe.router.weight.copy_(torch.tensor([1.0, 0.5, -0.5, -1.0])[:, None] * torch.rand(4, 8))
    x = torch.rand(2, 5, 8) + 0.1
    (model(x) * torch.randn(2, 5, 8)).sum().backward()
    assert moe.router.weight.grad.abs().sum() > 0
    for e, expert in enumerate(moe.experts):
        grad = sum(p.grad.abs().sum() for p in expert.parameters())
        assert (grad > 0) == (e < 2), (e, grad)  # the unchosen experts get a zero gradient, not None


def test_with_top_1_the_router_learns_from_the_aux_loss_only():
    # renormalised over one expert, a token's weight is 1: the output carries no gradient to the router
    torch.manual_seed(0)
    model = archlab.build(moe_spec(top_k=1))
    moe = model.net[0]
    model(torch.randn(2, 5, 8)).sum().backward(retain_graph=True)
    assert moe.router.weight.grad.abs().max() < 1e-6  # p / p: zero up to rounding
    moe.aux_loss.backward()
    assert moe.router.weight.grad.abs().max() > 1e-3


# Router logits = the tokens themselves (D = E = 4, identity router): the routing is read off the rows.
LOGITS = torch.tensor([[2.0, 1.0, 0.0, 0.0], [2.0, 0.0, 1.0, 0.0], [0.0, 0.5, 0.0, 3.0], [0.0, 2.0, 1.0, 0.0]])


@pytest.mark.parametrize(("top_k", "counts"), [(1, [2, 1, 0, 1]), (2, [2, 3, 2, 1])])
def test_aux_loss_is_e_times_the_sum_of_routed_fractions_times_mean_probabilities(top_k, counts):
    model = archlab.build({"input": [4], "layers": [{"moe": {"num_experts": 4, "top_k": top_k, "ff_dim": 3}}]})
    moe = model.net[0]
    with torch.no_grad():
        moe.router.weight.copy_(torch.eye(4))
    model(LOGITS)
    f = torch.tensor(counts) / 4  # top-1: argmax 0, 0, 3, 1; top-2: {0,1}, {0,2}, {3,1}, {1,2}
    mean_probs = torch.softmax(LOGITS, dim=-1).mean(0)
    torch.testing.assert_close(moe.aux_loss, 4 * (f * mean_probs).sum())


def test_moe_counts_total_and_active_parameters_and_active_flops():
    # D = 8, E = 4, top 2, 1 shared, ff 6: router 8*4; each expert 3*8*6; 5 positions
    spec = moe_spec(top_k=2, shared_experts=1)
    a = archlab.analyze(spec)
    expert = 3 * 8 * 6
    assert a.total_params == 8 * 4 + (4 + 1) * expert == archlab.build(spec).num_params() == 752
    assert a.active_params == a.layers[0].active_params == 8 * 4 + (2 + 1) * expert == 464
    assert a.macs == 5 * 8 * 4 + (2 + 1) * 5 * expert  # router + three experts per position, not five
    # a dense model: every parameter is active, the same figure
    dense = archlab.analyze({"input": [5, 8], "layers": [{"gated_mlp": {"ff_dim": 6}}]})
    assert dense.active_params == dense.total_params == expert


def test_active_parameters_multiply_over_a_repeat_and_count_a_shared_block_once():
    block = {"moe": {"num_experts": 4, "ff_dim": 6}}
    one = archlab.analyze(moe_spec())
    active, total = one.active_params, one.total_params
    assert active == 8 * 4 + 2 * 3 * 8 * 6 and total == 8 * 4 + 4 * 3 * 8 * 6
    repeated = archlab.analyze({"input": [5, 8], "layers": [{"repeat": {"times": 3, "layers": [block]}}]})
    assert (repeated.active_params, repeated.total_params) == (3 * active, 3 * total)
    shared = archlab.analyze({"input": [5, 8], "layers": [{"repeat": {"times": 3, "share_weights": True,
                                                                      "layers": [block]}}]})
    assert (shared.active_params, shared.total_params) == (active, total)
    # iteration 0 holds the weights; the row of iterations 2-3 shows none, as for total parameters
    assert [(r.type, r.active_params) for r in shared.layers[1:]] == [("iteration", active), ("moe", active),
                                                                       ("iterations", 0)]


def test_summary_prints_active_parameters_only_for_a_sparse_model():
    sparse = archlab.analyze(moe_spec()).summary()
    assert "Active parameters per token" in sparse and "Active" in sparse.splitlines()[2]
    dense = archlab.analyze({"input": [5, 8], "layers": [{"gated_mlp": {"ff_dim": 6}}]}).summary()
    assert "Active" not in dense


def test_top_k_above_num_experts_is_refused_with_the_spec_path():
    with pytest.raises(archlab.SpecError, match=r"^layers\[0\]\.moe: top_k 3 is more than num_experts 2: .*lower "
                                                r"top_k to at most 2 or add experts"):
        archlab.analyze(moe_spec(num_experts=2, top_k=3))


def test_moe_matches_hugging_face_mixtral_with_copied_weights():
    mixtral = pytest.importorskip("transformers.models.mixtral.modeling_mixtral")
    from transformers import MixtralConfig

    torch.manual_seed(0)
    config = MixtralConfig(hidden_size=8, intermediate_size=6, num_local_experts=4, num_experts_per_tok=2)
    reference = mixtral.MixtralSparseMoeBlock(config).eval()
    model = archlab.build(moe_spec(top_k=2)).eval()
    moe = model.net[0]
    experts = moe.experts
    with torch.no_grad():
        moe.router.weight.normal_()
        reference.gate.weight.copy_(moe.router.weight)
        # (E, 2 * ff, D): each expert's gate rows, then its up rows; (E, D, ff): down
        reference.experts.gate_up_proj.copy_(torch.stack([torch.cat([m.gate.weight, m.up.weight]) for m in experts]))
        reference.experts.down_proj.copy_(torch.stack([m.down.weight for m in experts]))
    x = torch.randn(3, 5, 8)
    torch.testing.assert_close(model(x), reference(x), atol=1e-6, rtol=1e-5)
    logits = x.reshape(-1, 8) @ moe.router.weight.T
    torch.testing.assert_close(moe.aux_loss, mixtral.load_balancing_loss_func((logits,), 4, 2))


def test_summary_command_prints_and_json_carries_the_active_parameters(tmp_path, capsys):
    from archlab.cli import run

    path = tmp_path / "moe.json"
    path.write_text(json.dumps(moe_spec()))
    assert run(["summary", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["total_params"], data["active_params"]) == (8 * 4 + 4 * 144, 8 * 4 + 2 * 144)
    assert run(["summary", str(path)]) == 0
    assert "Active parameters per token" in capsys.readouterr().out


@pytest.mark.parametrize(("top_k", "shared"), [(1, 0), (2, 1)])
def test_flop_counter_mode_counts_twice_our_macs_on_the_routed_experts_only(top_k, shared):
    from torch.utils.flop_counter import FlopCounterMode

    spec = moe_spec(top_k=top_k, shared_experts=shared)
    model = archlab.build(spec)
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.randn(3, 5, 8))
    # torch counts the matmuls that ran: the router and, per token, its k routed and the shared experts
    assert counter.get_total_flops() == 3 * 2 * archlab.analyze(spec).macs


def test_moe_exports_to_onnx_and_dynamic_int8_quantizes_its_router_and_experts(tmp_path):
    from archlab.deploy import export_model, quantize_onnx

    torch.manual_seed(0)
    spec = moe_spec(shared_experts=1)
    x = torch.randn(9, 5, 8)
    exported = export_model(archlab.build(spec), tmp_path / "moe.onnx", example=x[:2], check_inputs=x)
    assert exported.max_abs_diff < 1e-5  # the routing (NonZero, index_add) exports and runs as in torch
    result = quantize_onnx(exported.path, tmp_path / "moe-int8.onnx", mode="dynamic", spec=spec)
    assert result.ops_quantized == {"MatMul": 3 * (4 + 1) + 1}  # gate, up, down of 4 + 1 experts; the router
    with pytest.raises(archlab.SpecError, match=r"layers\[0\] \(moe\): .*use --quantize dynamic"):
        quantize_onnx(exported.path, tmp_path / "static.onnx", mode="static", spec=spec,
                      calibration=x.numpy())
