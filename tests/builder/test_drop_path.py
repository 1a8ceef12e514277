"""Stochastic depth in residual blocks (``residual: {drop_path: p}``, Huang et al. 2016): per sample
the branch is dropped with probability p while training, the kept ones scaled by 1/(1-p); the
identity in eval; counted as the full block."""

from __future__ import annotations

import pytest
import torch

import archlab
from archlab.exceptions import SpecError
from archlab.layers import Residual


def spec(drop_path: float | None, shortcut: str = "identity", units: int = 6) -> dict:
    block: dict = {"layers": [{"dense": {"units": units, "activation": "tanh"}}], "shortcut": shortcut}
    if drop_path is not None:
        block["drop_path"] = drop_path
    return {"input": [6], "layers": [{"residual": block}, {"dense": {"units": 3}}]}


def test_eval_output_equals_the_model_without_drop_path():
    torch.manual_seed(0)
    plain = archlab.build(spec(None)).eval()
    dropped = archlab.build(spec(0.5))
    dropped.load_state_dict(plain.state_dict())  # drop_path adds no parameter or buffer
    dropped.eval()
    x = torch.randn(16, 6)
    torch.testing.assert_close(dropped(x), plain(x))


@pytest.mark.parametrize("shortcut,units", [("identity", 6), ("projection", 4)])
def test_p_one_in_training_is_the_shortcut_alone(shortcut, units):
    model = archlab.build({"input": [6], "layers": [{"residual": {
        "layers": [{"dense": {"units": units}}], "shortcut": shortcut, "drop_path": 1.0}}]}).train()
    block = model.net[0]
    x = torch.randn(8, 6)
    torch.testing.assert_close(model(x), block.shortcut(x))


def test_kept_fraction_and_scaling_per_sample():
    p, n = 0.25, 4000
    model = archlab.build(spec(p))
    block = model.net[0]
    x = torch.randn(n, 6)
    with torch.no_grad():
        branch = block.layers(x)
        torch.manual_seed(7)
        residual = block.train()(x) - x  # the branch of each sample, kept (and scaled) or dropped
        torch.manual_seed(7)
        expected_kept = torch.empty(n).bernoulli_(1 - p).bool()  # the same draw, one per sample
    kept = residual.abs().sum(1) > 0
    assert torch.equal(kept, expected_kept)
    assert abs(kept.float().mean().item() - (1 - p)) < 4 * (p * (1 - p) / n) ** 0.5  # 4 standard errors
    torch.testing.assert_close(residual[kept], branch[kept] / (1 - p))
    assert residual[~kept].abs().max() == 0


def test_counted_as_the_full_block():
    with_drop, without = archlab.analyze(spec(0.3)), archlab.analyze(spec(None))
    assert (with_drop.total_params, with_drop.macs, with_drop.flops) == (without.total_params, without.macs,
                                                                         without.flops)
    assert archlab.build(spec(0.3)).num_params() == with_drop.total_params


def test_round_trips_and_keras_style():
    loaded = archlab.load(spec(0.1))
    assert archlab.load(archlab.dump(loaded)) == loaded
    block = Residual([archlab.layers.Dense(6, activation="tanh")], shortcut="identity", drop_path=0.1)
    assert block.item == spec(0.1)["layers"][0]


@pytest.mark.parametrize("bad", [1.5, -0.1, True, "0.1"])
def test_bad_drop_path_names_the_key(bad):
    with pytest.raises(SpecError, match=r"drop_path is the probability") as info:
        archlab.parse(spec(bad))
    assert info.value.path == "layers[0].residual.drop_path"
