"""lowrank: the factored spec builds and loads its state dict, is smaller, computes the same
function when the rank loses nothing, and a trained digits MLP survives a low rank."""

from __future__ import annotations

import pytest
import torch

import archlab
from archlab.builder import build_parsed, parse
from archlab.compress import lowrank
from archlab.data import load_dataset
from archlab.exceptions import SpecError
from archlab.spec import Spec
from archlab.training import Engine, prepare_model, resolve_recipe, to_tensors

pytestmark = pytest.mark.usefixtures("one_thread")

#: Dense layers in every place a spec can put them: named, frozen, in a residual (with a generated
#: projection shortcut), a repeat, a shared repeat, a named sequential group and a parallel
#: branch written as a single item; the output layer ends with softmax.
NESTED = {
    "input": [16],
    "layers": [
        {"dense": {"units": 32, "activation": "relu"}, "name": "fc1"},
        {"residual": {"layers": [{"dense": {"units": 32, "activation": "relu"}}, {"dense": {"units": 32}}],
                      "post": ["relu"]}},
        {"residual": {"layers": [{"dense": {"units": 24, "activation": "tanh"}}]}},  # projection shortcut
        {"repeat": {"times": 2, "layers": [{"dense": {"units": 24, "activation": "tanh"}}]}},
        {"repeat": {"times": 2, "share_weights": True, "layers": [{"dense": {"units": 24, "activation": "relu"}}]}},
        {"sequential": {"name": "group", "layers": [{"dense": {"units": 20, "use_bias": False}, "trainable": False},
                                                    "layernorm"]}},
        {"parallel": {"branches": [{"dense": {"units": 12}}, [{"dense": {"units": 12, "activation": "relu"}}]]}},
        {"dense": {"units": 10, "activation": "softmax"}},
    ],
}

X = torch.randn(7, 16, generator=torch.Generator().manual_seed(3))


def _low_rank_weights(spec: dict, rank: int, seed: int = 0) -> archlab.builder.ArchlabModel:
    """A model of ``spec`` whose dense weights have rank ``rank`` exactly (so factoring is lossless)."""
    torch.manual_seed(seed)
    model = build_parsed(parse(spec)).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            out, n_in = module.weight.shape
            with torch.no_grad():
                module.weight.copy_(torch.randn(out, rank) @ torch.randn(rank, n_in) / n_in)
    return model


def _loads(spec: Spec, state: dict) -> archlab.builder.ArchlabModel:
    model = build_parsed(parse(spec)).eval()
    model.load_state_dict(state, strict=True)
    return model


def test_exact_rank_reproduces_the_model_and_is_smaller():
    model = _low_rank_weights(NESTED, 3)
    old = model.state_dict()
    new_spec, state, report = lowrank(NESTED, old, 3)
    small = _loads(new_spec, state)
    assert torch.allclose(small(X), model(X), atol=1e-5, rtol=0)
    assert max(f.error for f in report.layers) < 1e-6
    params = archlab.analyze(new_spec).total_params
    assert params == sum(p.numel() for p in small.parameters()) == report.params_after
    assert report.params_before == archlab.analyze(NESTED).total_params > params
    factored = {f.module for f in report.layers}
    assert factored == {"net.fc1", "net.1.layers.0", "net.1.layers.1", "net.2.layers.0", "net.3.blocks.0.0",
                        "net.3.blocks.1.0", "net.4.blocks.0.0", "net.group.0", "net.6.branches.0.0",
                        "net.6.branches.1.0", "net.7"}
    for key, value in old.items():  # untouched layers keep their keys and tensors
        if key.rpartition(".")[0] not in factored:
            assert torch.equal(state[key], value), key
    assert "net.2.shortcut.0.weight" in state  # the generated projection is not in the spec: left alone


def test_the_pair_in_the_spec():
    new_spec, state, report = lowrank(NESTED, _low_rank_weights(NESTED, 3).state_dict(), 3)
    layers = new_spec.to_dict()["layers"]
    assert layers[0] == {"name": "fc1", "sequential": {"layers": [
        {"dense": {"units": 3, "use_bias": False}}, {"dense": {"units": 32, "activation": "relu"}}]}}
    group = layers[5]["sequential"]["layers"][0]["sequential"]["layers"]
    assert [item.get("trainable") for item in group] == [False, False]  # frozen stays frozen
    assert layers[6]["parallel"]["branches"][0] == {"sequential": {"layers": [
        {"dense": {"units": 3, "use_bias": False}}, {"dense": {"units": 12}}]}}
    assert sorted(k for k in state if k.startswith("net.fc1")) == ["net.fc1.0.weight", "net.fc1.1.bias",
                                                                   "net.fc1.1.weight"]
    first = next(f for f in report.layers if f.module == "net.fc1")
    assert (first.path, first.in_features, first.out_features, first.rank) == ("layers[0]", 16, 32, 3)
    assert (first.params_before, first.params_after) == (16 * 32 + 32, 3 * (16 + 32) + 32)
    shared = [f for f in report.layers if f.path == "layers[4].repeat.layers[0]"]
    assert len(shared) == 1  # one block, applied twice
    # the factored output layer still ends with softmax, which training splits off as before
    recipe = resolve_recipe(None)
    model, head = prepare_model(new_spec, recipe, "cross_entropy")
    assert head == "softmax"
    model.load_state_dict(state)
    assert torch.allclose(model(X).softmax(dim=1), _loads(new_spec, state)(X), atol=1e-6)


def test_error_is_the_truncation_error():
    torch.manual_seed(1)
    spec = {"input": [40], "layers": [{"dense": {"units": 30}}]}
    model = build_parsed(parse(spec))
    new_spec, state, report = lowrank(spec, model.state_dict(), 5)
    weight = model.state_dict()["net.0.weight"]
    approx = state["net.0.1.weight"] @ state["net.0.0.weight"]  # B (30, 5) @ A (5, 40)
    assert tuple(state["net.0.0.weight"].shape) == (5, 40) and tuple(state["net.0.1.weight"].shape) == (30, 5)
    assert torch.linalg.matrix_rank(approx) == 5
    [layer] = report.layers
    assert layer.error == pytest.approx(float((weight - approx).norm() / weight.norm()), rel=1e-5)
    # Eckart-Young: no rank-5 matrix is closer, e.g. not the projection on a random 5-D subspace
    q, _ = torch.linalg.qr(torch.randn(40, 5))
    assert layer.error < float((weight - weight @ q @ q.T).norm() / weight.norm())
    assert torch.equal(state["net.0.1.bias"], model.state_dict()["net.0.bias"])


def test_layers_that_would_not_shrink_are_left_alone():
    spec = {"input": [8], "layers": [{"dense": {"units": 64}}, {"dense": {"units": 64}}, {"dense": {"units": 3}}]}
    state = build_parsed(parse(spec)).state_dict()
    new_spec, new_state, report = lowrank(spec, state, 8)  # 8 = min(in, out) of the first and the last
    assert [f.path for f in report.layers] == ["layers[1]"]
    assert set(report.skipped) == {"layers[0]", "layers[2]"} and "would not shrink" in report.skipped["layers[0]"]
    _, _, report = lowrank(spec, state, 8, min_saving=0.8)  # 64x64 at rank 8: 1,088 of 4,160 (74% saved)
    assert report.layers == [] and "under min_saving 80%" in report.skipped["layers[1]"]
    same_spec, same_state, report = lowrank(spec, state, 64)
    assert same_spec.to_dict() == Spec.from_dict(spec).to_dict() and report.layers == []
    assert all(torch.equal(same_state[k], v) for k, v in state.items()) and list(same_state) == list(state)


def test_a_repeat_is_factored_only_where_every_iteration_shrinks():
    spec = {"input": [8], "layers": [{"repeat": {"times": 2, "layers": [{"dense": {"units": 32}}]}}]}
    state = build_parsed(parse(spec)).state_dict()
    _, _, report = lowrank(spec, state, 7)  # iteration 1 is 8 -> 32: 7 * 40 > 8 * 32
    assert report.layers == [] and report.skipped == {
        "layers[0].repeat.layers[0]": "rank 7 would not shrink it (32 x 8 with 288 parameters)"}
    new_spec, new_state, report = lowrank(spec, state, 4)
    assert [(f.module, f.in_features) for f in report.layers] == [("net.0.blocks.0.0", 8), ("net.0.blocks.1.0", 32)]
    _loads(new_spec, new_state)


def test_choose_layers_by_spec_path():
    state = _low_rank_weights(NESTED, 3).state_dict()
    new_spec, _, report = lowrank(NESTED, state, 3, layers=["layers[7]", "layers[3].repeat.layers[0]"])
    assert sorted({f.path for f in report.layers}) == ["layers[3].repeat.layers[0]", "layers[7]"]
    assert report.skipped["layers[0]"] == "not in layers"
    with pytest.raises(SpecError, match=r"layers\[9\]: not a dense layer of this spec; dense layers: layers\[0\]"):
        lowrank(NESTED, state, 3, layers=["layers[9]"])


def test_refusals_name_the_spec_path():
    tied = {"input": {"shape": [5], "dtype": "long"},
            "layers": [{"embedding": {"input_dim": 50, "output_dim": 40}, "name": "emb"},
                       {"dense": {"units": 40}}, {"dense": {"units": 50}, "tie": "emb"}]}
    state = archlab.build(tied).state_dict()
    with pytest.raises(SpecError, match=r"layers\[2\] \(dense\) shares its weight with layers\[0\] \(tie\).*"
                                        r"layers=\[\.\.\.\] \(the other dense layers: layers\[1\]\)"):
        lowrank(tied, state, 4)
    _, _, report = lowrank(tied, state, 4, layers=["layers[1]"])  # the way out the message gives
    assert [f.path for f in report.layers] == ["layers[1]"]
    with pytest.raises(SpecError, match="does not belong to this spec"):
        lowrank(NESTED, state, 3)


@pytest.mark.parametrize(("kwargs", "match"), [({"rank": 0}, "rank is"), ({"rank": 2.5}, "rank is"),
                                               ({"rank": True}, "rank is"), ({"rank": 2, "min_saving": 1.0},
                                                                              "min_saving"),
                                               ({"rank": 2, "min_saving": -0.1}, "min_saving")])
def test_bad_arguments(kwargs, match):
    spec = {"input": [8], "layers": [{"dense": {"units": 8}}]}
    with pytest.raises(ValueError, match=match):
        lowrank(spec, archlab.build(spec).state_dict(), **kwargs)


MLP = {"input": [1, 8, 8], "layers": ["flatten", {"dense": {"units": 128, "activation": "relu"}},
                                      {"dense": {"units": 64, "activation": "relu"}},
                                      {"dense": {"units": 10, "activation": "softmax"}}]}


def test_digits_mlp_at_rank_8_recovers_with_fine_tuning():
    data = load_dataset("digits")
    xt, yt = to_tensors(data.x_train, data.y_train, "cross_entropy")
    xv, yv = to_tensors(data.x_test, data.y_test, "cross_entropy")
    recipe = resolve_recipe({"epochs": 15, "batch_size": 64, "optimizer": {"lr": 3e-3}})
    model, head = prepare_model(Spec.from_dict(MLP), recipe, "cross_entropy")
    Engine(model, recipe, "cross_entropy", verbose=0, output_activation=head).fit(xt, yt)
    trained = Engine(model, recipe, "cross_entropy", verbose=0).evaluate(xv, yv)[0]["accuracy"]

    # min_saving keeps the 64 -> 10 output layer (rank 8 would save 7% of it and cut its logits to rank 8)
    new_spec, state, report = lowrank(MLP, model.state_dict(), 8, min_saving=0.2)
    assert [f.path for f in report.layers] == ["layers[1]", "layers[2]"] and list(report.skipped) == ["layers[3]"]
    assert (report.params_before, report.params_after) == (17226, 3914)  # 4.4x fewer

    tune = resolve_recipe({"epochs": 2, "batch_size": 64, "optimizer": {"lr": 1e-3}})
    small, small_head = prepare_model(new_spec, tune, "cross_entropy")
    small.load_state_dict(state, strict=True)
    engine = Engine(small, tune, "cross_entropy", verbose=0, output_activation=small_head)
    factored = engine.evaluate(xv, yv)[0]["accuracy"]
    engine.fit(xt, yt)
    tuned = engine.evaluate(xv, yv)[0]["accuracy"]
    assert trained > 0.93
    assert factored > trained - 0.06  # measured: 96.7% -> 95.3%
    assert tuned > trained - 0.02  # measured: 96.4% after 2 epochs
