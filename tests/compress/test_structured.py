"""remove_blocks and prune_channels: smaller specs that build, state dicts that fit them, and the
same function when nothing (or only zero weight) is removed."""

from __future__ import annotations

import pytest
import torch

import archlab
from archlab.compress import block_candidates, prunable_layers, prune_channels, remove_blocks
from archlab.exceptions import SpecError
from archlab.spec import Spec

pytestmark = pytest.mark.usefixtures("one_thread")


def _block(width: int, post: bool = True) -> dict:
    body = [{"conv2d": {"filters": width, "kernel_size": 3, "padding": "same", "use_bias": False}}, "batchnorm",
            "relu", {"conv2d": {"filters": width, "kernel_size": 3, "padding": "same", "use_bias": False}},
            "batchnorm"]
    return {"residual": {"layers": body, **({"post": ["relu"]} if post else {})}}


RESNET = {
    "input": [1, 8, 8],
    "layers": [
        {"conv2d": {"filters": 8, "kernel_size": 3, "padding": "same", "use_bias": False}}, "batchnorm", "relu",
        _block(8),
        {"repeat": {"name": "stage", "times": 3, "layers": [_block(8)]}},
        "global_avgpool2d",
        {"dense": {"units": 10}},
    ],
}

CNN = {
    "input": [1, 8, 8],
    "layers": [
        {"conv2d": {"filters": 6, "kernel_size": 3, "padding": "same", "activation": "relu"}},
        {"maxpool2d": {"pool_size": 2}}, "flatten",
        {"dense": {"units": 8, "activation": "relu"}},
        {"dense": {"units": 3}},
    ],
}


def _model(spec: dict | Spec, seed: int = 0, state: dict | None = None):
    torch.manual_seed(seed)
    model = archlab.build(spec)
    if state is not None:
        model.load_state_dict(state)
    model.eval()
    for m in model.modules():  # non-trivial batchnorm statistics
        if isinstance(m, torch.nn.BatchNorm2d) and state is None:
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    return model


def _fits(spec: Spec, state: dict) -> None:
    """The state dict has exactly the new model's tensors, and analysis counts its parameters."""
    model = archlab.build(spec)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in state.items()} == want
    params = sum(v.numel() for k, v in state.items() if k in dict(model.named_parameters()))
    assert archlab.analyze(spec).total_params == params


X = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("spec", [RESNET, CNN], ids=["resnet", "cnn"])
def test_pruning_nothing_is_the_same_function(spec):
    model = _model(spec)
    new_spec, state = prune_channels(spec, model.state_dict(), ratio=0.0)
    assert new_spec.to_dict()["layers"] == Spec.from_dict(spec).to_dict()["layers"]
    assert torch.equal(_model(new_spec, state=state)(X), model(X))


def test_prune_ratio_builds_and_counts():
    model = _model(RESNET)
    new_spec, state = prune_channels(RESNET, model.state_dict(), ratio=0.5)
    _fits(new_spec, state)
    assert archlab.analyze(new_spec).total_params < archlab.analyze(Spec.from_dict(RESNET)).total_params
    layers = new_spec.to_dict()["layers"]
    assert layers[0]["conv2d"]["filters"] == 4  # the stream source, and with it every block output
    assert layers[3]["residual"]["layers"][3]["conv2d"]["filters"] == 4


def test_residual_add_group_pruned_together():
    model = _model(RESNET)
    sd = model.state_dict()
    layers = prunable_layers(RESNET)
    assert "layers[0]" in layers and "layers[3].residual.layers[0]" in layers
    assert "layers[3].residual.layers[3]" not in layers  # feeds the add: follows the stream
    new_spec, state = prune_channels(RESNET, sd, keep={"layers[0]": 5})
    kept = torch.topk(sd["net.1.weight"].abs(), 5).indices.sort().values  # stem's batchnorm |gamma|
    assert torch.equal(state["net.0.weight"], sd["net.0.weight"][kept])
    for block in ("net.3", "net.stage.blocks.0.0", "net.stage.blocks.2.0"):
        assert torch.equal(state[f"{block}.layers.3.weight"], sd[f"{block}.layers.3.weight"][kept])  # output
        assert torch.equal(state[f"{block}.layers.0.weight"], sd[f"{block}.layers.0.weight"][:, kept])  # input
        assert torch.equal(state[f"{block}.layers.4.running_mean"], sd[f"{block}.layers.4.running_mean"][kept])
    assert torch.equal(state["net.6.weight"], sd["net.6.weight"][:, kept])
    _fits(new_spec, state)


def test_l1_keeps_largest_filters_and_zeroed_filters_change_nothing():
    model = _model(CNN)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    for i in (0, 2, 5):  # conv filters (relu after: zero output) and dense units
        sd["net.0.weight"][i] = 0
        sd["net.0.bias"][i] = 0
    for i in (1, 6):
        sd["net.3.weight"][i] = 0
        sd["net.3.bias"][i] = 0
    model.load_state_dict(sd)
    new_spec, state = prune_channels(CNN, sd, keep={"layers[0]": 3, "layers[3]": 6})
    assert torch.equal(state["net.0.weight"], sd["net.0.weight"][[1, 3, 4]])
    assert state["net.3.weight"].shape == (6, 3 * 4 * 4)  # flatten: the input columns of kept channels
    _fits(new_spec, state)
    torch.testing.assert_close(_model(new_spec, state=state)(X), model(X), rtol=0, atol=1e-6)


def test_prunable_layers_excludes_output_and_bad_keep_raises():
    assert set(prunable_layers(CNN)) == {"layers[0]", "layers[3]"}
    model = _model(CNN)
    with pytest.raises(SpecError, match="layers\\[4\\]: not a prunable layer"):
        prune_channels(CNN, model.state_dict(), keep={"layers[4]": 2})
    with pytest.raises(ValueError, match="exactly one"):
        prune_channels(CNN, model.state_dict())


def test_parallel_branches_keep_their_outputs():
    spec = {"input": [6], "layers": [{"dense": {"units": 8, "activation": "relu"}},
                                     {"parallel": {"merge": "add", "branches": [[{"dense": {"units": 4}}],
                                                                                 [{"dense": {"units": 4}}]]}},
                                     {"dense": {"units": 2}}]}
    model = _model(spec)
    assert set(prunable_layers(spec)) == {"layers[0]"}
    new_spec, state = prune_channels(spec, model.state_dict(), ratio=0.5)
    _fits(new_spec, state)


def test_block_candidates_and_remove_zeroed_block_is_exact():
    model = _model(RESNET)
    blocks = block_candidates(RESNET)
    assert [str(b) for b in blocks] == ["layers[3]"] + [f"layers[4] (iteration {i})" for i in range(3)]
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    for block in ("net.3", "net.stage.blocks.1.0"):  # last batchnorm zero: the body adds nothing
        sd[f"{block}.layers.4.weight"].zero_()
        sd[f"{block}.layers.4.bias"].zero_()
    model.load_state_dict(sd)
    new_spec, state = remove_blocks(RESNET, sd, [blocks[0], blocks[2]])
    layers = new_spec.to_dict()["layers"]
    assert len(layers) == 6 and layers[3]["repeat"]["times"] == 2
    _fits(new_spec, state)
    assert torch.equal(state["net.stage.blocks.1.0.layers.0.weight"], sd["net.stage.blocks.2.0.layers.0.weight"])
    torch.testing.assert_close(_model(new_spec, state=state)(X), model(X), rtol=0, atol=1e-6)


def test_remove_blocks_then_prune_compose():
    model = _model(RESNET)
    spec, state = remove_blocks(RESNET, model.state_dict(), block_candidates(RESNET)[:2])
    spec, state = prune_channels(spec, state, ratio=0.25)
    _fits(spec, state)


@pytest.mark.parametrize("after", [["flatten"], ["batchnorm", "flatten"], ["global_avgpool1d"]])
def test_dense_over_time_steps_keeps_its_units(after):
    # dense over (time, features) puts its units on the last axis; the layers after it look for
    # channels on axis 0, so its units stay, and the dense layer on (features,) after them prunes
    spec = {"input": [4, 5], "layers": [{"dense": {"units": 8}}, *after, {"dense": {"units": 6}}, "relu",
                                        {"dense": {"units": 3}}]}
    head = f"layers[{1 + len(after)}]"
    assert prunable_layers(spec) == {head: 6}
    small, sd = prune_channels(spec, archlab.build(spec).state_dict(), ratio=0.5)
    assert small.to_dict()["layers"][0] == {"dense": {"units": 8}}
    assert small.to_dict()["layers"][1 + len(after)] == {"dense": {"units": 3}}
    archlab.build(small).load_state_dict(sd)
