"""A final softmax (or sigmoid) is split off for training and applied again by predict."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archlab
from archlab.training import Engine, resolve_recipe, split_output_activation

DENSE_SOFTMAX = [{"dense": {"units": 16, "activation": "relu"}}, {"dense": {"units": 5, "activation": "softmax"}}]
LAYER_SOFTMAX = [{"dense": {"units": 16, "activation": "relu"}}, {"dense": {"units": 5}}, "softmax"]
DENSE_SIGMOID = [{"dense": {"units": 16, "activation": "relu"}}, {"dense": {"units": 1, "activation": "sigmoid"}}]
LAYER_SIGMOID = [{"dense": {"units": 16, "activation": "relu"}}, {"dense": {"units": 1}}, "sigmoid"]


def twins(layers: list, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """The same spec built twice with the same initial weights."""
    spec = {"name": "head", "input": [6], "layers": layers}
    torch.manual_seed(seed)
    a = archlab.build(spec)
    torch.manual_seed(seed)
    b = archlab.build(spec)
    return a, b


def data(n: int = 40, classes: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 6, generator=gen), torch.randint(0, classes, (n,), generator=gen)


@pytest.mark.parametrize("layers", [DENSE_SOFTMAX, LAYER_SOFTMAX], ids=["dense-activation", "softmax-layer"])
def test_softmax_is_split_off_and_predict_applies_it(layers: list) -> None:
    spec_model, model = twins(layers)
    assert split_output_activation(model, "cross_entropy") == "softmax"
    assert not any(isinstance(m, nn.Softmax) for m in model.modules())
    assert any(isinstance(m, nn.Softmax) for m in spec_model.modules())
    x, y = data()
    model.eval(), spec_model.eval()
    logits = model(x)
    assert not torch.allclose(logits.sum(1), torch.ones(len(x)))  # raw logits now
    torch.testing.assert_close(logits.softmax(1), spec_model(x))

    engine = Engine(model, resolve_recipe({"device": "cpu"}), "cross_entropy", verbose=0, output_activation="softmax")
    metrics, out = engine.evaluate(x, y)
    torch.testing.assert_close(out, logits)
    assert metrics["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    probs = engine.predict(x)
    torch.testing.assert_close(probs, spec_model(x))  # what the spec describes
    torch.testing.assert_close(probs, logits.softmax(1))
    torch.testing.assert_close(probs.sum(1), torch.ones(len(x)))


@pytest.mark.parametrize("layers", [DENSE_SIGMOID, LAYER_SIGMOID], ids=["dense-activation", "sigmoid-layer"])
def test_sigmoid_with_binary_cross_entropy(layers: list) -> None:
    spec_model, model = twins(layers)
    assert split_output_activation(model, "binary_cross_entropy") == "sigmoid"
    x, _ = data()
    y = (x[:, 0] > 0).float()
    model.eval(), spec_model.eval()
    logits = model(x)
    assert (logits < 0).any()  # not squashed into (0, 1)
    engine = Engine(model, resolve_recipe({"device": "cpu"}), "binary_cross_entropy", verbose=0,
                    output_activation="sigmoid")
    metrics, _ = engine.evaluate(x, y)
    assert metrics["loss"] == pytest.approx(F.binary_cross_entropy_with_logits(logits[:, 0], y).item(), rel=1e-6)
    assert metrics["accuracy"] == pytest.approx(((logits[:, 0] > 0).float() == y).float().mean().item())
    torch.testing.assert_close(engine.predict(x), spec_model(x))


@pytest.mark.parametrize(("layers", "loss"), [
    (DENSE_SOFTMAX, "mse"),                    # no stable pairing: left alone
    (DENSE_SOFTMAX, "binary_cross_entropy"),   # a softmax is not the sigmoid that BCE pairs with
    (DENSE_SIGMOID, "cross_entropy"),
    ([{"dense": {"units": 5, "activation": "relu"}}], "cross_entropy"),
    ([{"dense": {"units": 5}}, "relu"], "cross_entropy"),
])
def test_other_endings_are_left_alone(layers: list, loss: str) -> None:
    spec_model, model = twins(layers)
    assert split_output_activation(model, loss) is None
    x, _ = data()
    torch.testing.assert_close(model.eval()(x), spec_model.eval()(x))


def test_loss_stays_finite_where_log_of_softmax_is_infinite() -> None:
    """Confident wrong predictions: log(softmax) underflows to -inf, the loss on logits does not."""
    spec_model, model = twins(DENSE_SOFTMAX)
    split_output_activation(model, "cross_entropy")
    x, y = data()
    with torch.no_grad():
        for m in (model, spec_model):  # huge logits
            last = [mod for mod in m.modules() if isinstance(mod, nn.Linear)][-1]
            last.weight.mul_(1e4)
    model.eval(), spec_model.eval()
    naive = F.nll_loss(torch.log(spec_model(x)), y)  # the log of the spec's probabilities
    assert math.isinf(naive.item())
    engine = Engine(model, resolve_recipe({"device": "cpu"}), "cross_entropy", verbose=0, output_activation="softmax")
    metrics, logits = engine.evaluate(x, y)
    assert math.isfinite(metrics["loss"]) and metrics["loss"] > 100
    assert metrics["loss"] == pytest.approx(F.cross_entropy(logits.double(), y).item(), rel=1e-5)


def test_training_a_softmax_spec_with_a_huge_learning_rate_keeps_finite_losses(monkeypatch) -> None:
    """The same pairing during fit: SGD with a large step makes the logits huge, the loss stays finite."""
    import archlab.training._callbacks as callbacks_module

    # the divergence rule would stop this run at 1000x the first loss; the point here is what the loss does after
    monkeypatch.setattr(callbacks_module, "DIVERGED", math.inf)
    _, model = twins(DENSE_SOFTMAX)
    head = split_output_activation(model, "cross_entropy")
    x, y = data(64)
    recipe = resolve_recipe({"optimizer": {"name": "sgd", "lr": 50.0}, "epochs": 3, "batch_size": 16,
                             "device": "cpu"})
    history = Engine(model, recipe, "cross_entropy", verbose=0, output_activation=head).fit(x, y)
    assert all(math.isfinite(v) for v in history.history["loss"])
    assert max(history.history["loss"]) > 10  # the logits did blow up


def test_graph_form_output_is_split() -> None:
    spec = {"name": "g", "inputs": {"a": [6]}, "graph": {
        "h": {"from": "a", "layers": [{"dense": {"units": 8, "activation": "relu"}}]},
        "out": {"from": "h", "layers": [{"dense": {"units": 3, "activation": "softmax"}}]}}, "outputs": ["out"]}
    model = archlab.build(spec)
    assert split_output_activation(model, "cross_entropy") == "softmax"
    assert not any(isinstance(m, nn.Softmax) for m in model.modules())
