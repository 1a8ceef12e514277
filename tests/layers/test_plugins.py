"""Layer types from other packages (entry points) and the shipped conformance check."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap

import pytest

import archlab
from archlab.exceptions import RegistryError
from archlab.layers import _registry
from archlab.testing import check_layer, check_spec_roundtrip

PLUGIN = textwrap.dedent('''
    import torch
    from archlab.layers import Cost, InputRule, LayerType, register_layer

    class Double(torch.nn.Module):
        def forward(self, x):
            return 2 * x

    @register_layer("plugin_double")
    class PluginDouble(LayerType):
        accepts = InputRule(dtype="float")
        def output(self, p, x): return x
        def cost(self, p, x, y): return Cost(flops=x.numel)
        def module(self, p, x): return Double()
''')


@pytest.fixture
def fresh_registry(monkeypatch):
    """A registry that has not looked for plugins yet; restored afterwards."""
    monkeypatch.setattr(_registry.registry, "_plugins_loaded", False)
    yield _registry.registry
    _registry.registry.unregister("plugin_double")
    sys.modules.pop("archlab_test_plugin", None)


def _entry_points(value: str):
    point = importlib.metadata.EntryPoint(name="double", value=value, group=_registry.ENTRY_POINT_GROUP)
    return lambda group: [point] if group == _registry.ENTRY_POINT_GROUP else []


def test_entry_point_plugin_registers_on_first_miss(fresh_registry, tmp_path, monkeypatch):
    (tmp_path / "archlab_test_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(importlib.metadata, "entry_points", _entry_points("archlab_test_plugin"))
    analysis = archlab.analyze({"input": [3, 4], "layers": ["plugin_double"]})
    assert analysis.flops == 12
    assert "plugin_double" in archlab.list_layers()
    check_layer("plugin_double", input_shape=[3, 4])


def test_broken_plugin_is_a_registry_error_naming_it(fresh_registry, monkeypatch):
    monkeypatch.setattr(importlib.metadata, "entry_points", _entry_points("no_such_module_for_archlab"))
    with pytest.raises(RegistryError, match="layer plugin 'double'.*failed to load"):
        archlab.get_layer("plugin_double")


@pytest.mark.parametrize(("item", "shape", "dtype"), [
    ({"dense": {"units": 3, "activation": "gelu"}}, [4], "float"),
    ({"conv2d": {"filters": 2, "kernel_size": 3, "padding": "same", "strides": 2}}, [1, 7, 7], "float"),
    ({"embedding": {"input_dim": 5, "output_dim": 3}}, [6], "long"),
    ({"lstm": {"units": 3, "bidirectional": True, "return_sequences": True}}, [5, 2], "float"),
])
def test_check_layer_passes_builtins(item, shape, dtype):
    check_layer(item, input_shape=shape, dtype=dtype)


def test_check_layer_catches_a_wrong_shape_rule():
    import torch

    from archlab.layers import Cost, InputRule, LayerType, register_layer

    @register_layer("liar_layer", override=True)
    class Liar(LayerType):
        accepts = InputRule(dtype="float")

        def output(self, p, x):
            return x  # but the module halves the last axis

        def cost(self, p, x, y):
            return Cost()

        def module(self, p, x):
            return torch.nn.AvgPool1d(2)

    try:
        with pytest.raises(AssertionError, match="forward gives"):
            check_layer("liar_layer", input_shape=[3, 4])
    finally:
        _registry.registry.unregister("liar_layer")


def test_check_spec_roundtrip_on_a_nested_spec():
    check_spec_roundtrip({"name": "n", "input": [2, 8, 8], "layers": [
        {"residual": {"layers": [{"conv2d": {"filters": 2, "kernel_size": 3, "padding": "same"}}], "post": ["relu"]}},
        {"dropout": {"rate": 1e-5}}]})
