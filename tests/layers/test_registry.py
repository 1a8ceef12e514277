"""A user's own layer type, registered with @register_layer, takes part in everything a
built-in one does: parsing and validation (with paths), building, forward, analysis,
connections and the JSON schema. The registry itself: unknown names, re-registration."""

from __future__ import annotations

import json
import warnings
from typing import Literal

import pytest
import torch
from pydantic import Field
from torch import nn

import archlab
from archlab.cli import run
from archlab.layers import Cost, InputRule, LayerParams, LayerType, TensorInfo, registry
from archlab.schema import spec_schema

NAME = "channel_scale"


class ChannelScale(nn.Module):
    """y = x * gain (+ shift) over the last axis, and a running count buffer."""

    created_on: list[str] = []  # the device of every instance's weights, to see the meta-device fallback

    def __init__(self, width: int, init: float, shift: bool) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.full((width,), init))
        ChannelScale.created_on.append(self.gain.device.type)
        self.shift = nn.Parameter(torch.zeros(width)) if shift else None
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.gain
        return y + self.shift if self.shift is not None else y


class ChannelScaleParams(LayerParams):
    init: float = 1.0
    shift: bool = True
    repeat_last: int = Field(default=1, ge=1, le=4)
    mode: Literal["scale", "scale_and_pad"] = "scale"


class ChannelScaleType(LayerType):
    """The layer type; registered by the fixture, so nothing leaks into other tests."""

    Params = ChannelScaleParams
    accepts = InputRule(ranks={1: "(features,)", 2: "(time, features)"}, hints={3: "add 'flatten' before it"})
    summary = "multiplies each feature by a learned gain"

    def output(self, p: ChannelScaleParams, x: TensorInfo) -> TensorInfo:
        return TensorInfo(x.shape)

    def cost(self, p: ChannelScaleParams, x: TensorInfo, y: TensorInfo) -> Cost:
        return Cost(macs=0, flops=x.numel * (2 if p.shift else 1) + 7)  # +7: easy to recognise in totals

    def module(self, p: ChannelScaleParams, x: TensorInfo) -> nn.Module:
        return ChannelScale(x.shape[-1], p.init, p.shift)


@pytest.fixture
def user_layer():
    assert NAME not in archlab.list_layers()
    archlab.register_layer(NAME)(ChannelScaleType)
    yield archlab.get_layer(NAME)
    registry.unregister(NAME)
    assert NAME not in archlab.list_layers()


def test_registered_type_is_listed_and_found(user_layer):
    assert NAME in archlab.list_layers()
    assert isinstance(user_layer, ChannelScaleType)
    assert user_layer.name == NAME


def test_user_layer_builds_and_runs_forward(user_layer):
    spec = {"input": [4], "layers": [{"dense": {"units": 3}}, {NAME: {"init": 2.0, "shift": False}}, "relu"]}
    model = archlab.build(spec)
    scale = model.net[1]
    assert isinstance(scale, ChannelScale)
    torch.testing.assert_close(scale.gain.detach(), torch.full((3,), 2.0))
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model(x), torch.relu(2.0 * model.net[0](x)))
    model(x).sum().backward()
    assert scale.gain.grad is not None and torch.isfinite(scale.gain.grad).all()


def test_user_layer_bare_item_uses_defaults(user_layer):
    parsed = archlab.parse({"input": [2, 6], "layers": [NAME]})
    (node,) = parsed.root.items
    assert node.params == ChannelScaleParams()
    assert parsed.root.output.shape == (2, 6)


def test_analysis_counts_a_user_layer_on_the_meta_device(user_layer):
    assert user_layer.count_params(ChannelScaleParams(), TensorInfo((6,))) is None  # no formula given
    spec = {"input": [6], "layers": [{NAME: {"shift": True}}, {NAME: {"shift": False}}]}
    ChannelScale.created_on.clear()
    analysis = archlab.analyze(spec)
    assert ChannelScale.created_on == ["meta", "meta"]  # counted without allocating weights
    assert analysis.total_params == 6 + 6 + 6 == archlab.build(spec).num_params()
    assert [row.params for row in analysis.layers] == [12, 6]
    assert analysis.buffers == 2  # one scalar buffer per layer, also counted on the meta device
    assert analysis.flops == (12 + 7) + (6 + 7)  # its own FLOP rule
    assert analysis.macs == 0
    assert [row.type for row in analysis.layers] == [NAME, NAME]


def test_user_layer_inside_connections(user_layer):
    spec = {"input": [4], "layers": [
        {"residual": {"layers": [{NAME: {"init": 0.5}}]}},
        {"repeat": {"times": 3, "share_weights": True, "layers": [NAME]}},
        {"parallel": {"merge": "add", "branches": [[NAME], [{"dense": {"units": 4}}]]}},
    ]}
    model = archlab.build(spec)
    analysis = archlab.analyze(spec)
    assert model.num_params() == analysis.total_params == 8 + 8 + (8 + 20)
    x = torch.randn(2, 4)
    assert model(x).shape == (2, 4)
    # residual: y = 0.5 * x + x
    torch.testing.assert_close(model.net[0](x), 1.5 * x)


def test_user_layer_shape_rule_errors_carry_the_path(user_layer):
    with pytest.raises(archlab.ShapeError) as info:
        archlab.parse({"input": [1, 4, 4], "layers": [{"conv2d": {"filters": 2, "kernel_size": 1}}, NAME]})
    assert info.value.path == "layers[1]"
    assert f"({NAME}) needs (features,) or (time, features) but receives (2, 4, 4)" in str(info.value)
    assert "add 'flatten' before it" in str(info.value)


@pytest.mark.parametrize("params,path,fragment", [
    ({"init": "a"}, f"layers[0].{NAME}.init", "'init' should be a valid number"),
    ({"shift": 1}, f"layers[0].{NAME}.shift", "'shift' should be a valid boolean"),
    ({"repeat_last": 0}, f"layers[0].{NAME}.repeat_last", "greater than or equal to 1"),
    ({"repeat_last": 9}, f"layers[0].{NAME}.repeat_last", "less than or equal to 4"),
    ({"mode": "pad"}, f"layers[0].{NAME}.mode", "'scale' or 'scale_and_pad'"),
    ({"shfit": True}, f"layers[0].{NAME}.shfit", "unknown parameter 'shfit'; did you mean 'shift'?"),
])
def test_user_layer_params_are_validated_with_paths(user_layer, params, path, fragment):
    with pytest.raises(archlab.SpecError) as info:
        archlab.parse({"input": [4], "layers": [{NAME: params}]})
    assert info.value.path == path
    assert fragment in str(info.value)
    assert f"({NAME} takes: init, shift, repeat_last, mode)" in str(info.value)


def test_user_layer_appears_in_the_json_schema(user_layer, capsys):
    schema = spec_schema()
    entries = [e for e in schema["$defs"]["item"]["anyOf"] if e.get("required") == [NAME]]
    assert len(entries) == 1
    value = entries[0]["properties"][NAME]
    params = value["anyOf"][0]  # no required parameter: a null (bare item) is allowed too
    assert set(params["properties"]) == {"init", "shift", "repeat_last", "mode"}
    assert params["additionalProperties"] is False
    assert params["description"] == ChannelScaleType.summary
    assert NAME in schema["$defs"]["item"]["anyOf"][0]["enum"]  # usable as a bare item
    # and through the command line
    assert run(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert any(e.get("required") == [NAME] for e in printed["$defs"]["item"]["anyOf"])


def test_schema_forgets_an_unregistered_type():
    schema = spec_schema()
    assert not any(e.get("required") == [NAME] for e in schema["$defs"]["item"]["anyOf"])
    with pytest.raises(archlab.SpecError, match=f"unknown layer type '{NAME}'"):
        archlab.parse({"input": [4], "layers": [NAME]})


def test_user_layer_spec_round_trips(user_layer):
    spec = archlab.load({"input": [4], "layers": [{NAME: {"init": 0.5, "mode": "scale_and_pad"}, "name": "gain"}]})
    assert archlab.load(archlab.dump(spec)) == spec
    assert archlab.Spec.from_dict(spec.to_dict()) == spec
    assert archlab.analyze(archlab.load(archlab.dump(spec))).total_params == 8


# -- the registry itself -------------------------------------------------------------------

def test_unknown_type_is_a_registry_error_with_a_suggestion():
    with pytest.raises(archlab.RegistryError) as info:
        archlab.get_layer("conv2")
    assert isinstance(info.value, LookupError)
    assert "unknown layer type 'conv2'; did you mean 'conv2d'?" in str(info.value)
    assert "(known: additive_attention, additive_cross_attention, avgpool1d" in str(info.value)


def test_unknown_type_in_a_spec_is_a_spec_error_with_a_path():
    with pytest.raises(archlab.SpecError) as info:
        archlab.parse({"input": [4], "layers": ["relu", {"dens": {"units": 2}}]})
    assert info.value.path == "layers[1]"
    assert "unknown layer type 'dens'; did you mean 'dense'?" in str(info.value)


def test_re_registering_warns_and_replaces():
    class First(ChannelScaleType):
        summary = "first"

    class Second(ChannelScaleType):
        summary = "second"

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            archlab.register_layer(NAME)(First)  # the first time: silent
        with pytest.warns(UserWarning, match=f"layer type '{NAME}' was registered before"):
            archlab.register_layer(NAME)(Second)
        assert archlab.get_layer(NAME).summary == "second"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            archlab.register_layer(NAME, override=True)(First)  # override=True: silent
        assert archlab.get_layer(NAME).summary == "first"
    finally:
        registry.unregister(NAME)
    assert NAME not in archlab.list_layers()


def test_re_registering_a_builtin_warns():
    original = type(archlab.get_layer("relu"))

    class Impostor(ChannelScaleType):
        pass

    try:
        with pytest.warns(UserWarning, match="'relu' was registered before"):
            archlab.register_layer("relu")(Impostor)
        assert isinstance(archlab.get_layer("relu"), Impostor)
    finally:
        registry.register("relu", original, override=True)
    assert type(archlab.get_layer("relu")) is original
    assert archlab.get_layer("relu").name == "relu"


@pytest.mark.parametrize("bad", ["Channel", "two words", "3d", "with-dash", ""])
def test_bad_type_names_are_refused(bad):
    with pytest.raises(archlab.RegistryError, match="lower_snake_case"):
        archlab.register_layer(bad)(ChannelScaleType)
    assert bad not in archlab.list_layers()


def test_unregister_of_an_unknown_name_is_harmless():
    before = archlab.list_layers()
    registry.unregister("never_registered")
    assert archlab.list_layers() == before
