"""The recommendation layers (fm, reduce, bias) and embedding's init_std: values by hand, the
FM identity against the pairwise sum it replaces, and FLOP and parameter counts by formula."""

from __future__ import annotations

import itertools

import pytest
import torch

import archlab
from archlab.exceptions import SpecError


def seq(input_shape, *items, dtype: str = "float") -> dict:
    shape = input_shape if dtype == "float" else {"shape": input_shape, "dtype": dtype}
    return {"name": "recsys", "input": shape, "layers": list(items)}


def test_fm_by_hand():
    model = archlab.build(seq([3, 2], "fm"))
    v = torch.tensor([[[1.0, 2.0], [3.0, -1.0], [0.5, 0.0]]])  # (1, F=3, k=2)
    # pairs: <v0,v1> = 3 - 2 = 1 ; <v0,v2> = 0.5 ; <v1,v2> = 1.5  ->  3
    torch.testing.assert_close(model(v), torch.tensor([[3.0]]))


def test_fm_equals_the_sum_over_field_pairs_of_dot_products():
    torch.manual_seed(0)
    fields, k = 6, 4
    v = torch.randn(5, fields, k, dtype=torch.float64)
    pairwise = sum((v[:, f] * v[:, g]).sum(dim=1) for f, g in itertools.combinations(range(fields), 2))
    model = archlab.build(seq([fields, k], "fm")).double()
    torch.testing.assert_close(model(v), pairwise.unsqueeze(1))


@pytest.mark.parametrize("fields,k", [(2, 1), (3, 2), (25, 8)])
def test_fm_flops_are_3fk_plus_k_and_it_has_no_parameters(fields, k):
    analysis = archlab.analyze(seq([fields, k], "fm"))
    assert analysis.flops == 3 * fields * k + k
    assert analysis.macs == 0 and analysis.total_params == 0
    assert analysis.layers[-1].output_shape == [1]


def test_reduce_ops_by_hand_and_their_flops():
    x = torch.tensor([[[1.0, 5.0, -2.0], [4.0, 0.0, 2.0]]])  # (1, 2, 3)
    cases = {("sum", 0): [[5.0, 5.0, 0.0]], ("mean", 1): [[4 / 3, 2.0]], ("max", -1): [[5.0, 4.0]],
             ("max", 0): [[4.0, 5.0, 2.0]]}
    for (op, axis), expected in cases.items():
        spec = seq([2, 3], {"reduce": {"op": op, "axis": axis}})
        torch.testing.assert_close(archlab.build(spec)(x), torch.tensor(expected))
        n = 2 if axis == 0 else 3
        outputs = 6 // n
        assert archlab.analyze(spec).flops == outputs * (n if op == "mean" else n - 1), (op, axis)


def test_reduce_of_a_vector_is_one_number_per_sample():
    spec = seq([4], "reduce")
    assert archlab.parse(spec).output_infos[0].shape == (1,)
    torch.testing.assert_close(archlab.build(spec)(torch.tensor([[1.0, 2.0, 3.0, 4.5]])), torch.tensor([[10.5]]))
    assert archlab.analyze(spec).flops == 3


def test_reduce_axis_out_of_range_names_the_layer_and_the_range():
    with pytest.raises(SpecError, match=r"layers\[0\].*axis 2 is out of range.*-2\.\.1"):
        archlab.parse(seq([2, 3], {"reduce": {"axis": 2}}))


def test_bias_adds_a_learned_offset_per_feature_starting_at_zero():
    model = archlab.build(seq([2, 3], "bias"))
    (bias,) = model.parameters()
    assert bias.shape == (3,) and not bias.any()
    with torch.no_grad():
        bias.copy_(torch.tensor([1.0, -1.0, 0.5]))
    x = torch.ones(1, 2, 3)
    torch.testing.assert_close(model(x), torch.tensor([[[2.0, 0.0, 1.5], [2.0, 0.0, 1.5]]]))
    analysis = archlab.analyze(seq([2, 3], "bias"))
    assert analysis.total_params == 3 and analysis.flops == 6


def test_embedding_init_std_sets_the_spread_of_the_vectors():
    torch.manual_seed(0)
    small = archlab.build(seq([1], {"embedding": {"input_dim": 4000, "output_dim": 8, "init_std": 0.01}},
                              dtype="long"))
    default = archlab.build(seq([1], {"embedding": {"input_dim": 4000, "output_dim": 8}}, dtype="long"))
    assert next(small.parameters()).std().item() == pytest.approx(0.01, rel=0.05)
    assert next(default.parameters()).std().item() == pytest.approx(1.0, rel=0.05)
    with pytest.raises(SpecError, match="init_std"):
        archlab.parse(seq([1], {"embedding": {"input_dim": 4, "output_dim": 2, "init_std": 0}}, dtype="long"))


def test_logistic_regression_over_field_ids_counts_one_weight_per_id_and_a_bias():
    # embedding of width 1 over V ids, summed over the F fields, plus the intercept
    vocab, fields = 50, 7
    spec = seq([fields], {"embedding": {"input_dim": vocab, "output_dim": 1}}, "reduce", "bias", dtype="long")
    model = archlab.build(spec)
    analysis = archlab.analyze(spec)
    assert analysis.total_params == model.num_params() == vocab + 1
    assert analysis.flops == (fields - 1) + 1  # the sum over fields and the bias
    ids = torch.tensor([[0, 3, 3, 9, 10, 20, 49]])
    weights = next(model.parameters()).detach()[:, 0]
    torch.testing.assert_close(model(ids), weights[ids].sum(dim=1, keepdim=True))
