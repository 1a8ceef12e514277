"""Max-norm constraints and the train.weight_decay shortcut, checked by value on tiny models."""

from __future__ import annotations

import pytest
import torch

import archlab
from archlab.exceptions import SpecError
from archlab.training import Engine, resolve_recipe
from archlab.training._constraints import max_norm_weights

MLP = {"input": [4], "layers": [{"dense": {"units": 8, "activation": "relu"}}, {"dense": {"units": 3}}]}
CONV = {"input": [2, 6], "layers": [{"conv1d": {"filters": 3, "kernel_size": 3}}, "flatten", {"dense": {"units": 3}}]}
#: with only num_heads it is torch's nn.MultiheadAttention: one stacked (3E, E) in_proj_weight
ATTENTION = {"input": [3, 8],
             "layers": [{"multi_head_attention": {"num_heads": 2}}, "flatten", {"dense": {"units": 3}}]}


def toy(shape: tuple[int, ...], n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, *shape, generator=gen)
    return x, (x.flatten(1)[:, 0] > 0).long() + (x.flatten(1)[:, 1] > 1).long()


def trained(spec: dict, max_norm: float | None) -> Engine:
    torch.manual_seed(0)
    eng = Engine(archlab.build(spec), resolve_recipe({"device": "cpu", "epochs": 1, "batch_size": 32, "shuffle": False,
                                                      "validation_split": 0, "optimizer": {"name": "sgd", "lr": 5.0},
                                                      "max_norm": max_norm}),
                 "cross_entropy", verbose=0)
    eng.fit(*toy(tuple(spec["input"])))
    return eng


@pytest.mark.parametrize("spec", [MLP, CONV, ATTENTION], ids=["dense", "conv1d", "multi_head_attention"])
def test_max_norm_renorms_each_unit_after_the_step_as_computed_by_hand(spec):
    c = 0.5
    free, constrained = trained(spec, None), trained(spec, c)  # one full-batch step each, the same step
    for (name, w), (_, got) in zip(free.model.named_parameters(), constrained.model.named_parameters(), strict=True):
        if not name.endswith("weight"):
            torch.testing.assert_close(got, w)  # biases are not constrained
            continue
        rows = w.detach().flatten(1)  # one unit's incoming weights per row: (out, in * kernel)
        norms = rows.norm(dim=1, keepdim=True)
        expected = torch.where(norms > c, rows * c / norms, rows)  # w <- w * c / ||w|| where ||w|| > c
        torch.testing.assert_close(got.detach().flatten(1), expected, rtol=1e-5, atol=1e-6)
        assert (norms > c).any(), f"{name}: the step should leave a unit above the norm, or this checks nothing"
        assert (got.detach().flatten(1).norm(dim=1) <= c + 1e-5).all()


def test_max_norm_constrains_kernels_once_and_not_frozen_or_embedding_weights():
    spec = {"input": {"shape": [5], "dtype": "long"},
            "layers": [{"embedding": {"input_dim": 10, "output_dim": 4}}, "flatten",
                       {"dense": {"units": 6}, "trainable": False}, {"dense": {"units": 3}}]}
    model = archlab.build(spec)
    assert [tuple(w.shape) for w in max_norm_weights(model)] == [(3, 6)]


def test_max_norm_takes_attentions_query_key_value_projections_stacked_or_separate():
    model = archlab.build(ATTENTION)
    attn = next(m for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention))
    assert {id(w) for w in max_norm_weights(model)} >= {id(attn.in_proj_weight), id(attn.out_proj.weight)}
    separate = torch.nn.MultiheadAttention(4, 2, kdim=3, vdim=5)  # key/value widths differ: one weight each
    assert [tuple(w.shape) for w in max_norm_weights(separate)] == [(4, 4), (4, 3), (4, 5), (4, 4)]


def test_weight_decay_shortcut_sets_the_optimizer_and_trains_as_it():
    assert resolve_recipe({"weight_decay": 1e-3}).optimizer.weight_decay == 1e-3
    assert resolve_recipe({"optimizer": "adamw"}, weight_decay=0.01).optimizer.model_dump() == \
        resolve_recipe({"optimizer": {"name": "adamw", "weight_decay": 0.01}}).optimizer.model_dump()
    torch.manual_seed(0)
    eng = Engine(archlab.build(MLP), resolve_recipe({"device": "cpu", "optimizer": "adamw", "weight_decay": 0.05}),
                 "cross_entropy", verbose=0)
    assert isinstance(eng.optimizer, torch.optim.AdamW) and eng.optimizer.param_groups[0]["weight_decay"] == 0.05


def test_weight_decay_given_twice_differently_is_refused():
    with pytest.raises(SpecError, match=r"train.weight_decay: weight_decay \(0.001\) and optimizer.weight_decay "
                                        r"\(0.01\) are one setting given twice"):
        resolve_recipe({"weight_decay": 1e-3, "optimizer": {"name": "adamw", "weight_decay": 1e-2}})


@pytest.mark.parametrize("bad", [0, -1.0])
def test_max_norm_must_be_positive(bad):
    with pytest.raises(SpecError, match=r"train.max_norm: input should be greater than 0"):
        resolve_recipe({"max_norm": bad})
