"""Training adds the auxiliary losses layers leave (moe's load balancing), scaled by aux_loss_weight."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import archlab

SPEC = {"input": [4, 6], "layers": [{"moe": {"num_experts": 4, "top_k": 1, "ff_dim": 8}}, "flatten",
                                    {"dense": {"units": 3}}]}


def _router_change(weight: float) -> float:
    model = archlab.Model(SPEC)
    # plain SGD: Adam would blow the rounding residue of a zero gradient up to a step of its own size
    model.compile(optimizer={"name": "sgd", "lr": 0.1}, loss="sparse_categorical_crossentropy", device="cpu")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4, 6)).astype("float32"), rng.integers(0, 3, 32)
    router = model.model_.net[0].router.weight
    before = router.detach().clone()
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, out=None, aux_loss_weight=weight)
    return (router.detach() - before).abs().max().item()


def test_a_top_1_router_learns_only_from_the_aux_loss():
    # top_k 1 renormalises the one chosen weight to 1: the task's loss reaches no router weight (but
    # for rounding), the load-balancing loss (the router's softmax) does
    torch.manual_seed(0)
    without = _router_change(0.0)
    torch.manual_seed(0)
    with_aux = _router_change(0.5)
    assert without < 1e-7 < 1e-4 < with_aux, (without, with_aux)


def test_the_aux_loss_weight_is_a_checked_recipe_field():
    from archlab.training import Recipe

    assert Recipe().aux_loss_weight == 0.01
    with pytest.raises(ValueError, match="aux_loss_weight"):
        Recipe(aux_loss_weight=-1)
