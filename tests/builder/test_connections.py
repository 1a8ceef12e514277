"""Connections in the sequential form: residual, parallel, repeat, sequential groups, and the
item options tie / trainable / data_format. Values are checked against a manual computation
from the built sub-modules, and parameter counts against the analysis."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import archlab
from archlab.builder._modules import Permute
from archlab.layers.core import Dense
from archlab.spec import get_at


def build(spec: dict) -> archlab.ArchlabModel:
    torch.manual_seed(0)
    model = archlab.build(spec).eval()
    assert model.num_params() == archlab.analyze(spec).total_params
    return model


def rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


def out_shape(spec: dict) -> tuple[int, ...]:
    (info,) = archlab.parse(spec).output_infos
    return info.shape


# -- residual ------------------------------------------------------------------------------

def test_residual_auto_is_identity_when_shapes_match():
    spec = {"input": [4, 6, 6], "layers": [{"residual": {"layers": [
        {"conv2d": {"filters": 4, "kernel_size": 3, "padding": "same"}}, "relu"]}}]}
    model = build(spec)
    block = model.net[0]
    assert isinstance(block.shortcut, nn.Identity)
    assert archlab.parse(spec).root.items[0].shortcut is None
    x = rand(2, 4, 6, 6)
    torch.testing.assert_close(model(x), block.layers(x) + x)
    assert out_shape(spec) == (4, 6, 6)


def test_residual_auto_projects_with_a_strided_1x1_conv_and_batchnorm_when_channels_and_size_change():
    spec = {"input": [4, 8, 8], "layers": [{"residual": {"layers": [
        {"conv2d": {"filters": 8, "kernel_size": 3, "strides": 2, "padding": "same"}}]}}]}
    model = build(spec)
    block = model.net[0]
    conv, norm = list(block.shortcut)
    assert isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
    assert conv.kernel_size == (1, 1) and conv.stride == (2, 2) and conv.bias is None
    assert (conv.in_channels, conv.out_channels, norm.num_features) == (4, 8, 8)
    x = rand(2, 4, 8, 8)
    torch.testing.assert_close(model(x), block.layers(x) + norm(conv(x)))
    assert out_shape(spec) == (8, 4, 4)
    # body 8*4*9 + 8, projection 8*4 (no bias), batchnorm 2*8
    assert archlab.analyze(spec).total_params == 296 + 32 + 16


def test_residual_auto_projection_stride_comes_from_the_spatial_ratio():
    spec = {"input": [2, 9, 9], "layers": [{"residual": {"layers": [
        {"conv2d": {"filters": 2, "kernel_size": 3, "strides": 3}}]}}]}  # 9 -> 3: stride 3
    model = build(spec)
    conv = model.net[0].shortcut[0]
    assert conv.stride == (3, 3)
    assert model(rand(1, 2, 9, 9)).shape == (1, 2, 3, 3)


def test_residual_auto_projection_for_channels_only_uses_stride_1():
    spec = {"input": [3, 5, 5], "layers": [{"residual": {"layers": [{"conv2d": {"filters": 6, "kernel_size": 1}}]}}]}
    conv = build(spec).net[0].shortcut[0]
    assert conv.stride == (1, 1) and conv.out_channels == 6


@pytest.mark.parametrize("input_shape,units", [([4], 6), ([3, 4], 2)])
def test_residual_auto_projects_vectors_and_sequences_with_dense(input_shape, units):
    spec = {"input": input_shape, "layers": [{"residual": {"layers": [{"dense": {"units": units}}]}}]}
    model = build(spec)
    block = model.net[0]
    (projection,) = list(block.shortcut)
    assert isinstance(projection, Dense)
    assert (projection.in_features, projection.out_features) == (4, units)
    x = rand(2, *input_shape)
    torch.testing.assert_close(model(x), block.layers(x) + projection(x))
    assert out_shape(spec) == (*input_shape[:-1], units)


def test_residual_shortcut_identity_forced_keeps_the_input():
    spec = {"input": [4], "layers": [{"residual": {"shortcut": "identity", "layers": [{"dense": {"units": 4}}]}}]}
    model = build(spec)
    x = rand(3, 4)
    torch.testing.assert_close(model(x), model.net[0].layers(x) + x)


def test_residual_shortcut_identity_forced_with_a_shape_change_is_an_error():
    spec = {"input": [4], "layers": [{"residual": {"shortcut": "identity", "layers": [{"dense": {"units": 6}}]}}]}
    with pytest.raises(archlab.ShapeError) as info:
        archlab.parse(spec)
    assert info.value.path == "layers[0].residual"
    assert "identity needs the layers to keep the shape, but they map (4,) to (6,)" in str(info.value)
    assert "use shortcut: auto" in str(info.value)


def test_residual_shortcut_projection_forced_projects_even_when_shapes_match():
    spec = {"input": [2, 4, 4], "layers": [{"residual": {"shortcut": "projection", "layers": [
        {"conv2d": {"filters": 2, "kernel_size": 3, "padding": 1}}]}}]}
    model = build(spec)
    conv, norm = list(model.net[0].shortcut)
    assert conv.stride == (1, 1) and conv.out_channels == 2
    x = rand(2, 2, 4, 4)
    torch.testing.assert_close(model(x), model.net[0].layers(x) + norm(conv(x)))


def test_residual_post_layers_follow_the_addition():
    spec = {"input": [4], "layers": [{"residual": {"layers": [{"dense": {"units": 4}}],
                                                   "post": ["relu", {"dense": {"units": 2}}]}}]}
    model = build(spec)
    block = model.net[0]
    x = rand(5, 4)
    torch.testing.assert_close(model(x), block.post[1](torch.relu(block.layers(x) + x)))
    assert out_shape(spec) == (2,)
    assert archlab.analyze(spec).total_params == 20 + 10


def test_residual_that_no_projection_can_join_is_an_error():
    spec = {"input": [2, 4, 4], "layers": [{"residual": {"layers": ["flatten"]}}]}
    with pytest.raises(archlab.ShapeError) as info:
        archlab.parse(spec)
    assert info.value.path == "layers[0].residual.shortcut"
    assert "map (2, 4, 4) to (32,), which no projection shortcut joins" in str(info.value)


def test_residual_whose_spatial_size_grows_has_no_1x1_projection():
    spec = {"input": [2, 3, 3], "layers": [{"residual": {"layers": [{"conv2d": {"filters": 2, "kernel_size": 1,
                                                                                 "padding": 1}}]}}]}
    with pytest.raises(archlab.ShapeError, match="no 1x1 projection takes") as info:
        archlab.parse(spec)
    assert info.value.path == "layers[0].residual.shortcut"


@pytest.mark.parametrize("value,path,fragment", [
    ({"layers": ["relu"], "shortcut": "dense"}, "layers[0].residual.shortcut",
     "shortcut is auto, identity or projection"),
    ({"layer": ["relu"]}, "layers[0].residual.layer", "unknown key 'layer' in residual; did you mean 'layers'?"),
    ({"shortcut": "auto"}, "layers[0].residual", "residual needs 'layers'"),
    ({"layers": "relu"}, "layers[0].residual.layers", "expected a list of layer items"),
])
def test_residual_malformed(value, path, fragment):
    with pytest.raises(archlab.SpecError) as info:
        archlab.parse({"input": [4], "layers": [{"residual": value}]})
    assert info.value.path == path
    assert fragment in str(info.value)


# -- parallel ------------------------------------------------------------------------------

IMAGE_BRANCHES = [[{"conv2d": {"filters": 2, "kernel_size": 1}}],
                  [{"conv2d": {"filters": 2, "kernel_size": 3, "padding": "same"}}, "relu"],
                  [{"conv2d": {"filters": 2, "kernel_size": 3, "padding": 1, "activation": "tanh"}}]]


def _parallel(merge: str | None, axis: int | None = None, input_shape=(3, 5, 5), branches=None) -> dict:
    value: dict = {"branches": branches or IMAGE_BRANCHES}
    if merge is not None:
        value["merge"] = merge
    if axis is not None:
        value["axis"] = axis
    return {"input": list(input_shape), "layers": [{"parallel": value}]}


@pytest.mark.parametrize("merge,combine,shape", [
    (None, lambda outs: torch.cat(outs, dim=1), (6, 5, 5)),  # concat along the channel axis by default
    ("concat", lambda outs: torch.cat(outs, dim=1), (6, 5, 5)),
    ("add", lambda outs: outs[0] + outs[1] + outs[2], (2, 5, 5)),
    ("mean", lambda outs: (outs[0] + outs[1] + outs[2]) / 3, (2, 5, 5)),
    ("max", lambda outs: torch.maximum(torch.maximum(outs[0], outs[1]), outs[2]), (2, 5, 5)),
    ("mul", lambda outs: outs[0] * outs[1] * outs[2], (2, 5, 5)),
])
def test_parallel_merges_compute_the_right_values(merge, combine, shape):
    spec = _parallel(merge)
    model = build(spec)
    block = model.net[0]
    assert len(block.branches) == 3
    x = rand(2, 3, 5, 5)
    outs = [branch(x) for branch in block.branches]
    expected = combine(outs)
    assert expected.shape == (2, *shape)
    torch.testing.assert_close(model(x), expected)
    assert out_shape(spec) == shape
    # three independent branches: 2*3 + 2, 2*3*9 + 2, 2*3*9 + 2
    assert model.num_params() == 8 + 56 + 56


def test_parallel_concat_along_the_last_axis():
    branches = [[{"dense": {"units": 3}}], [{"dense": {"units": 5}}], []]  # an empty branch passes x through
    spec = _parallel("concat", axis=-1, input_shape=(4, 2), branches=branches)
    model = build(spec)
    block = model.net[0]
    x = rand(2, 4, 2)
    expected = torch.cat([block.branches[0](x), block.branches[1](x), x], dim=-1)
    torch.testing.assert_close(model(x), expected)
    assert out_shape(spec) == (4, 10)
    # axis 0 (the time axis here) stacks steps instead
    spec0 = _parallel("concat", axis=0, input_shape=(4, 2), branches=[[{"dense": {"units": 2}}], []])
    model0 = build(spec0)
    torch.testing.assert_close(model0(x), torch.cat([model0.net[0].branches[0](x), x], dim=1))
    assert out_shape(spec0) == (8, 2)


def test_parallel_concat_with_mismatched_shapes_lists_every_branch():
    branches = [[{"conv2d": {"filters": 2, "kernel_size": 1}}], [{"conv2d": {"filters": 2, "kernel_size": 3}}]]
    with pytest.raises(archlab.ShapeError) as info:
        archlab.parse(_parallel("concat", branches=branches))
    assert info.value.path == "layers[0].parallel"
    message = str(info.value)
    assert "along axis 0 needs the other axes equal" in message
    assert "layers[0].parallel.branches[0] (2, 5, 5), layers[0].parallel.branches[1] (2, 3, 3)" in message
    assert "padding: same" in message


@pytest.mark.parametrize("merge", ["add", "mean", "max", "mul"])
def test_parallel_elementwise_merge_needs_equal_shapes(merge):
    branches = [[{"dense": {"units": 3}}], [{"dense": {"units": 4}}]]
    with pytest.raises(archlab.ShapeError, match=f"merge {merge}. needs equal shapes") as info:
        archlab.parse(_parallel(merge, input_shape=(4,), branches=branches))
    assert info.value.path == "layers[0].parallel"


@pytest.mark.parametrize("value,path,fragment", [
    ({"branches": [["relu"]], "merge": "ad"}, "layers[0].parallel.merge", "unknown merge 'ad'; did you mean 'add'?"),
    ({"branches": [["relu"]], "merge": "add", "axis": 0}, "layers[0].parallel.axis", "axis applies to merge: concat"),
    ({"branches": [["relu"]], "axis": "last"}, "layers[0].parallel.axis", "axis is an integer"),
    ({"branches": [["relu"]], "axis": 1}, "layers[0].parallel", "along axis 1 needs inputs of one rank"),
    ({"branches": []}, "layers[0].parallel", "parallel needs 'branches'"),
    ({"branch": [["relu"]]}, "layers[0].parallel.branch", "did you mean 'branches'?"),
])
def test_parallel_malformed(value, path, fragment):
    with pytest.raises(archlab.SpecError) as info:
        archlab.parse({"input": [4], "layers": [{"parallel": value}]})
    assert info.value.path == path
    assert fragment in str(info.value)


# -- repeat --------------------------------------------------------------------------------

def _calls(module: nn.Module) -> list[int]:
    calls: list[int] = []
    module.register_forward_hook(lambda m, i, o: calls.append(1))
    return calls


def test_repeat_without_sharing_builds_independent_blocks():
    spec = {"input": [4], "layers": [{"repeat": {"times": 3, "layers": [{"dense": {"units": 4}}, "tanh"]}}]}
    model = build(spec)
    repeat = model.net[0]
    assert len(repeat.blocks) == 3
    assert len({id(b) for b in repeat.blocks}) == 3
    weights = [b[0].weight for b in repeat.blocks]
    assert not torch.equal(weights[0], weights[1])  # independently initialised
    assert model.num_params() == 3 * 20 == archlab.analyze(spec).total_params
    x = rand(2, 4)
    torch.testing.assert_close(model(x), repeat.blocks[2](repeat.blocks[1](repeat.blocks[0](x))))


def test_repeat_with_shared_weights_applies_one_block_n_times():
    spec = {"input": [4], "layers": [{"repeat": {"times": 3, "share_weights": True,
                                                 "layers": [{"dense": {"units": 4}}, "tanh"]}}]}
    model = build(spec)
    repeat = model.net[0]
    assert len(repeat.blocks) == 1
    block = repeat.blocks[0]
    calls = _calls(block)
    x = rand(2, 4)
    out = model(x)
    assert len(calls) == 3
    torch.testing.assert_close(out, block(block(block(x))))
    analysis = archlab.analyze(spec)
    assert model.num_params() == 20 == analysis.total_params  # counted once
    assert analysis.flops == 3 * archlab.analyze({"input": [4], "layers": [{"dense": {"units": 4}}, "tanh"]}).flops
    # gradients of all three uses accumulate in the one weight
    out.sum().backward()
    assert block[0].weight.grad is not None


def test_repeat_shared_body_that_changes_shape_is_a_shape_error():
    spec = {"input": [4], "layers": [{"repeat": {"times": 2, "share_weights": True,
                                                 "layers": [{"dense": {"units": 6}}]}}]}
    with pytest.raises(archlab.ShapeError) as info:
        archlab.parse(spec)
    assert info.value.path == "layers[0].repeat"
    assert "share_weights: true runs one block 2 times, so the block must keep its shape" in str(info.value)
    assert "maps (4,) to (6,)" in str(info.value)


def test_repeat_unshared_body_may_change_shape_each_time():
    spec = {"input": [1, 16, 16], "layers": [{"repeat": {"times": 3, "layers": [
        {"conv2d": {"filters": 4, "kernel_size": 3, "strides": 2, "padding": "same"}}]}}]}
    model = build(spec)
    assert out_shape(spec) == (4, 2, 2)
    assert model(rand(2, 1, 16, 16)).shape == (2, 4, 2, 2)
    # the first block reads 1 channel, the later ones 4
    assert [b[0].in_channels for b in model.net[0].blocks] == [1, 4, 4]
    assert model.num_params() == (36 + 4) + 2 * (144 + 4)


def test_repeat_error_in_a_later_iteration_says_which():
    spec = {"input": [1, 5, 5], "layers": [{"repeat": {"times": 3, "layers": [{"conv2d": {"filters": 1,
                                                                                         "kernel_size": 2}}]}}]}
    spec["layers"][0]["repeat"]["layers"][0]["conv2d"]["kernel_size"] = 3  # 5 -> 3 -> 1 -> too small
    with pytest.raises(archlab.ShapeError) as info:
        archlab.parse(spec)
    assert info.value.path == "layers[0].repeat.layers[0]"
    assert "(in iteration 3 of 3, whose input is (1, 1, 1))" in str(info.value)


@pytest.mark.parametrize("value,path,fragment", [
    ({"times": 0, "layers": ["relu"]}, "layers[0].repeat.times", "times must be an integer >= 1, got 0"),
    ({"times": 2.5, "layers": ["relu"]}, "layers[0].repeat.times", "got 2.5"),
    ({"times": True, "layers": ["relu"]}, "layers[0].repeat.times", "got True"),
    ({"times": 2, "layers": ["relu"], "share_weights": "yes"}, "layers[0].repeat.share_weights", "true or false"),
    ({"times": 2}, "layers[0].repeat", "repeat needs 'layers'"),
    ({"time": 2, "layers": ["relu"]}, "layers[0].repeat.time", "did you mean 'times'?"),
])
def test_repeat_malformed(value, path, fragment):
    with pytest.raises(archlab.SpecError) as info:
        archlab.parse({"input": [4], "layers": [{"repeat": value}]})
    assert info.value.path == path
    assert fragment in str(info.value)


# -- sequential groups and names -------------------------------------------------------------

def test_sequential_groups_are_named_modules_and_paths():
    spec = {"input": [4], "layers": [
        {"sequential": {"name": "stem", "layers": [{"dense": {"units": 6}, "name": "proj"}, "relu"]}},
        {"sequential": {"layers": [{"dense": {"units": 2}}]}, "name": "head"},
    ]}
    model = build(spec)
    names = [name for name, _ in model.net.named_children()]
    assert names == ["stem", "head"]
    assert isinstance(model.net.stem.proj, Dense)
    x = rand(3, 4)
    torch.testing.assert_close(model(x), model.net.head(torch.relu(model.net.stem.proj(x))))
    parsed = archlab.parse(spec)
    assert [n.name for n in parsed.root.items] == ["stem", "head"]
    assert get_at(spec, "stem.layers[0]") == {"dense": {"units": 6}, "name": "proj"}
    assert get_at(spec, "proj.units") == 6
    rows = {row.path: row for row in archlab.analyze(spec).layers}
    assert rows["layers[0]"].type == "sequential" and rows["layers[0]"].params == 30
    assert rows["layers[1]"].params == 14


def test_duplicate_names_are_an_error():
    spec = {"input": [4], "layers": [{"dense": {"units": 4}, "name": "a"}, {"sequential": {"name": "a", "layers": []}}]}
    with pytest.raises(archlab.SpecError) as info:
        archlab.parse(spec)
    assert info.value.path == "layers[1].name"
    assert "name 'a' is already used at layers[0]" in str(info.value)


def test_names_inside_an_unshared_repeat_are_not_duplicates():
    spec = {"input": [4], "layers": [{"repeat": {"times": 2, "layers": [{"dense": {"units": 4}, "name": "blk"}]}}]}
    assert archlab.build(spec)(rand(1, 4)).shape == (1, 4)


@pytest.mark.parametrize("name", ["", "a.b", 3])
def test_bad_item_names(name):
    with pytest.raises(archlab.SpecError, match="a name is a non-empty string without '.'") as info:
        archlab.parse({"input": [4], "layers": [{"dense": {"units": 4}, "name": name}]})
    assert info.value.path == "layers[0].name"


# -- tie -----------------------------------------------------------------------------------

GPT_HEAD = {"input": {"shape": [5], "dtype": "long"}, "layers": [
    {"embedding": {"input_dim": 10, "output_dim": 4}, "name": "wte"},
    {"dense": {"units": 4, "activation": "relu"}},
    {"dense": {"units": 10}, "tie": "wte"},
]}


def test_dense_tied_to_an_embedding_shares_the_same_parameter():
    model = build(GPT_HEAD)
    embedding, hidden, head = model.net[0], model.net[1], model.net[2]
    assert head.weight is embedding.weight  # the same Parameter object
    ids = torch.tensor([[1, 2, 3, 4, 5], [0, 9, 8, 7, 6]])
    h = hidden(embedding(ids))
    torch.testing.assert_close(model(ids), h @ embedding.weight.T + head.bias)
    # counted once: embedding 40, hidden 20, the head only its bias 10
    analysis = archlab.analyze(GPT_HEAD)
    assert model.num_params() == 70 == analysis.total_params
    assert "weight tied to wte" in analysis.layers[2].note
    # training the head trains the embedding
    model(ids).sum().backward()
    assert embedding.weight.grad is not None and embedding.weight.grad.abs().sum() > 0


def test_dense_tied_to_dense_of_the_same_shape():
    spec = {"input": [4], "layers": [{"dense": {"units": 4}, "name": "a"}, "relu", {"dense": {"units": 4}, "tie": "a"}]}
    model = build(spec)
    assert model.net[2].weight is model.net[0].weight
    assert model.num_params() == 16 + 4 + 4


@pytest.mark.parametrize("layers,fragment", [
    ([{"embedding": {"input_dim": 10, "output_dim": 4}, "name": "wte"}, {"dense": {"units": 9}, "tie": "wte"}],
     "cannot tie to 'wte': its weight is (10, 4) but this layer's is (9, 4)"),
    ([{"embedding": {"input_dim": 10, "output_dim": 4}, "name": "wte"}, {"dense": {"units": 10}, "tie": "wtf"}],
     "tie names an unknown layer 'wtf'; did you mean 'wte'?"),
    ([{"embedding": {"input_dim": 10, "output_dim": 4}}, {"dense": {"units": 10}, "tie": "head"},
      {"dense": {"units": 10}, "name": "head"}], "tie names an unknown layer 'head'"),
    ([{"embedding": {"input_dim": 10, "output_dim": 4}, "name": "wte"}, {"dense": {"units": 10}, "tie": 3}],
     "tie names an unknown layer 3"),
    ([{"sequential": {"name": "grp", "layers": [{"embedding": {"input_dim": 10, "output_dim": 4}}]}},
      {"dense": {"units": 10}, "tie": "grp"}], "tie names 'grp', a sequential connection; it must name a layer"),
    ([{"embedding": {"input_dim": 10, "output_dim": 4}, "name": "wte"}, {"relu": None, "tie": "wte"}],
     "layers[1] (relu) has no trainable weight to tie"),
    ([{"embedding": {"input_dim": 10, "output_dim": 4}}, {"dense": {"units": 10}, "tie": "me", "name": "me"}],
     "tie names an unknown layer 'me'"),
])
def test_bad_ties_are_spec_errors_at_the_tie(layers, fragment):
    spec = {"input": {"shape": [5], "dtype": "long"}, "layers": layers}
    tie_index = next(i for i, item in enumerate(layers) if "tie" in item)
    with pytest.raises(archlab.SpecError) as info:
        archlab.parse(spec)
    assert info.value.path == f"layers[{tie_index}].tie"
    assert fragment in str(info.value)


def test_tie_on_a_connection_is_refused():
    with pytest.raises(archlab.SpecError, match="'tie' applies to a layer, not to a 'residual'") as info:
        archlab.parse({"input": [4], "layers": [{"dense": {"units": 4}, "name": "a"},
                                                {"residual": {"layers": ["relu"]}, "tie": "a"}]})
    assert info.value.path == "layers[1].tie"


def test_sinusoidal_table_is_no_weight_to_tie():
    spec = {"input": [3, 8], "layers": [{"positional_embedding": {"max_len": 4}, "name": "pos"},
                                        {"positional_embedding": {"max_len": 4, "kind": "sinusoidal"}, "tie": "pos"}]}
    with pytest.raises(archlab.SpecError, match=r"layers\[1\] \(positional_embedding\) has no trainable weight"):
        archlab.parse(spec)


# -- trainable -----------------------------------------------------------------------------

def test_trainable_false_freezes_a_layer():
    spec = {"input": [4], "layers": [{"dense": {"units": 4}, "trainable": False}, "relu", {"dense": {"units": 2}}]}
    model = build(spec)
    frozen, head = model.net[0], model.net[2]
    assert not any(p.requires_grad for p in frozen.parameters())
    assert all(p.requires_grad for p in head.parameters())
    analysis = archlab.analyze(spec)
    assert (analysis.total_params, analysis.trainable_params, analysis.non_trainable_params) == (30, 10, 20)
    assert model.num_params(trainable_only=True) == 10
    model.train()
    model(rand(3, 4)).sum().backward()
    assert frozen.weight.grad is None and head.weight.grad is not None
    assert "frozen" in analysis.layers[0].note


def test_trainable_false_on_a_tied_layer_freezes_its_own_bias_not_the_shared_weight():
    spec = {"input": [4], "layers": [{"dense": {"units": 4}, "name": "a"},
                                     {"dense": {"units": 4}, "tie": "a", "trainable": False}]}
    model = build(spec)
    assert model.net[0].weight.requires_grad  # the weight belongs to 'a', which is trainable
    assert not model.net[1].bias.requires_grad
    assert model.num_params(trainable_only=True) == 20 == archlab.analyze(spec).trainable_params


def test_trainable_must_be_a_boolean():
    with pytest.raises(archlab.SpecError, match="trainable is true or false, got 'no'") as info:
        archlab.parse({"input": [4], "layers": [{"dense": {"units": 4}, "trainable": "no"}]})
    assert info.value.path == "layers[0].trainable"


# -- data_format ---------------------------------------------------------------------------

def test_channels_last_moves_the_channel_axis_once_at_the_entry():
    layers = [{"conv2d": {"filters": 3, "kernel_size": 3}}, "relu",
              {"conv2d": {"filters": 2, "kernel_size": 1}}, "global_avgpool2d", {"dense": {"units": 2}}]
    last = build({"input": [6, 5, 2], "data_format": "channels_last", "layers": layers})
    first = build({"input": [2, 6, 5], "layers": layers})
    first.load_state_dict(last.state_dict())
    x = rand(3, 6, 5, 2)  # (B, H, W, C) as Keras delivers it
    torch.testing.assert_close(last(x), first(x.permute(0, 3, 1, 2)))
    permutes = [m for m in last.modules() if isinstance(m, Permute)]
    assert len(permutes) == 1 and not any(isinstance(m, Permute) for m in last.net.modules())
    parsed = archlab.parse({"input": [6, 5, 2], "data_format": "channels_last", "layers": layers})
    assert parsed.raw_inputs["input"].shape == (6, 5, 2)
    assert parsed.inputs["input"].shape == (2, 6, 5)
    assert parsed.root.items[0].output.shape == (3, 4, 3)
    assert archlab.analyze(parsed).inputs["input"]["shape"] == [6, 5, 2]


def test_channels_last_leaves_vectors_alone():
    spec = {"input": [4], "data_format": "channels_last", "layers": [{"dense": {"units": 2}}]}
    assert build(spec)(rand(3, 4)).shape == (3, 2)


def test_bad_data_format():
    with pytest.raises(archlab.SpecError, match="data_format is channels_first or channels_last") as info:
        archlab.parse({"input": [4], "data_format": "NHWC", "layers": ["relu"]})
    assert info.value.path == "data_format"
