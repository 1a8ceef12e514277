"""Layer traits: a plugin layer that declares them takes part in structured pruning, magnitude
pruning, low rank, int8 quantization and the Keras-style constructors exactly as the built-in it
imitates; no package outside layers/ keeps a table of type names; check_layer_traits catches
traits that do not fit the layer."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import archlab
from archlab import layers
from archlab.compress import lowrank, prunable_layers, prune_channels, prune_unstructured
from archlab.deploy import check_quantizable, export_model, load_runner, quantize_onnx
from archlab.exceptions import SpecError
from archlab.layers import (
    SEQUENCE_STATIC,
    Cost,
    InputRule,
    KeepsChannels,
    KerasStyle,
    LayerParams,
    LayerType,
    Quantization,
    StructuredPruning,
    TensorInfo,
    register_layer,
    registry,
)
from archlab.layers.core import Dense, DenseParams
from archlab.testing import check_layer, check_layer_traits

SRC = Path(archlab.__file__).parent


class PluginDense(LayerType):
    """dense written as a plugin would: its own class, the traits set by hand."""

    Params = DenseParams
    accepts = InputRule(ranks={1: "(features,)"})
    structured = StructuredPruning(width="units", input_axis=-1)
    lowrank = True
    quantization = Quantization(static=True, dynamic=True)
    keras = KerasStyle("PluginDense", ("units",), aliases=("PlugDense",))

    def output(self, p, x):
        return TensorInfo((p.units,))

    def cost(self, p, x, y):
        return Cost(x.numel * p.units, 2 * x.numel * p.units)

    def count_params(self, p, x):
        return x.numel * p.units + (p.units if p.use_bias else 0)

    def module(self, p, x):
        return Dense(x.shape[-1], p.units, p.activation, p.use_bias)


class PluginRelu(LayerType):
    """relu as a plugin: channels pass through it."""

    accepts = InputRule(dtype="float")
    keeps_channels = KeepsChannels()
    quantization = Quantization(static=True)

    def output(self, p, x):
        return x

    def cost(self, p, x, y):
        return Cost(flops=x.numel)

    def module(self, p, x):
        return torch.nn.ReLU()


class TableModule(torch.nn.Module):
    def __init__(self, rows: int, width: int) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(rows, width))

    def forward(self, ids):
        return self.table[ids]


class TableParams(LayerParams):
    rows: int
    width: int


class PluginTable(LayerType):
    """A lookup table that is not a torch.nn.Embedding: kept whole by magnitude pruning, refused by
    static int8 with its reason, int8 by dynamic."""

    Params = TableParams
    accepts = InputRule(dtype="long")
    unstructured = False
    quantization = Quantization(static=SEQUENCE_STATIC, dynamic=True)

    def output(self, p, x):
        return TensorInfo((*x.shape, p.width))

    def cost(self, p, x, y):
        return Cost()

    def module(self, p, x):
        return TableModule(p.rows, p.width)


PLUGINS = {"plugin_dense": PluginDense, "plugin_relu": PluginRelu, "plugin_table": PluginTable}


@pytest.fixture(autouse=True)
def plugins():
    for name, cls in PLUGINS.items():
        register_layer(name, override=True)(cls)
    yield
    for name in PLUGINS:
        registry.unregister(name)


def _mlp(dense: str, relu: str) -> dict:
    return {"name": "mlp", "input": [6], "layers": [
        {dense: {"units": 8}}, relu, {dense: {"units": 6, "activation": "relu"}}, {dense: {"units": 3}}]}


def _built(spec: dict) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return archlab.build(spec).state_dict()


def _rename(data, old: str, new: str):
    """The spec dict with every item of type ``old`` written as ``new``."""
    if isinstance(data, dict):
        return {(new if k == old else k): _rename(v, old, new) for k, v in data.items()}
    if isinstance(data, list):
        return [_rename(v, old, new) for v in data]
    return new if data == old else data


BUILTIN, PLUGIN = _mlp("dense", "relu"), _mlp("plugin_dense", "plugin_relu")


def test_structured_pruning_takes_a_plugin_as_the_builtin():
    assert prunable_layers(PLUGIN) == prunable_layers(BUILTIN) == {"layers[0]": 8, "layers[2]": 6}
    sd_builtin, sd_plugin = _built(BUILTIN), _built(PLUGIN)
    small_builtin, pruned_builtin = prune_channels(BUILTIN, sd_builtin, ratio=0.5)
    small_plugin, pruned_plugin = prune_channels(PLUGIN, sd_plugin, ratio=0.5)
    plugin_as_builtin = _rename(_rename(small_plugin.to_dict(), "plugin_dense", "dense"), "plugin_relu", "relu")
    assert plugin_as_builtin == small_builtin.to_dict()
    assert small_plugin.to_dict()["layers"][0] == {"plugin_dense": {"units": 4}}
    assert sorted(pruned_plugin) == sorted(pruned_builtin)
    for key, tensor in pruned_builtin.items():
        torch.testing.assert_close(pruned_plugin[key], tensor, rtol=0, atol=0)
    archlab.build(small_plugin).load_state_dict(pruned_plugin)  # the smaller spec takes its weights


def test_lowrank_factors_a_plugin_into_a_pair_of_its_type():
    wide = {"input": [32], "layers": [{"plugin_dense": {"units": 32, "activation": "relu"}},
                                      {"plugin_dense": {"units": 4}}]}
    small, sd, report = lowrank(wide, _built(wide), 4)
    assert small.to_dict()["layers"][0] == {"sequential": {"layers": [
        {"plugin_dense": {"units": 4, "use_bias": False}}, {"plugin_dense": {"units": 32, "activation": "relu"}}]}}
    builtin_small, builtin_sd, builtin_report = lowrank(_rename(wide, "plugin_dense", "dense"),
                                                        _built(_rename(wide, "plugin_dense", "dense")), 4)
    assert [(f.path, f.params_after) for f in report.layers] == [(f.path, f.params_after)
                                                                for f in builtin_report.layers] == [("layers[0]", 288)]
    for key, tensor in builtin_sd.items():
        torch.testing.assert_close(sd[key], tensor)


def test_magnitude_pruning_keeps_a_plugin_table_whole():
    spec = {"input": {"shape": [5], "dtype": "long"}, "layers": [
        {"plugin_table": {"rows": 10, "width": 4}}, "flatten", {"dense": {"units": 3}}]}
    model = archlab.build(spec)
    report = prune_unstructured(model, 0.5)
    assert list(report.by_key()) == ["net.2.weight"]  # the table is left as it was
    assert int((model.net[0].table == 0).sum()) == 0


def test_quantization_reads_a_plugins_trait():
    assert check_quantizable(archlab.load(PLUGIN), "static") == []
    assert check_quantizable(archlab.load(PLUGIN), "dynamic") == []
    table = archlab.load({"input": {"shape": [5], "dtype": "long"}, "layers": [
        {"plugin_table": {"rows": 10, "width": 4}}, "flatten", {"dense": {"units": 3}}]})
    with pytest.raises(SpecError, match=r"^layers\[0\] \(plugin_table\): static int8 quantization covers "
                                        r"convolutional and dense layers; use --quantize dynamic"):
        check_quantizable(table, "static")


def test_dynamic_int8_of_a_plugin_model_equals_the_builtins(tmp_path):
    results = {}
    for name, spec in (("builtin", BUILTIN), ("plugin", PLUGIN)):
        torch.manual_seed(0)
        x = torch.randn(8, 6)
        export_model(archlab.build(spec), tmp_path / f"{name}.onnx", example=x[:2], check_inputs=x,
                     metadata={"archlab.spec": archlab.dump(archlab.load(spec))})
        results[name] = quantize_onnx(tmp_path / f"{name}.onnx", tmp_path / f"{name}-int8.onnx", mode="dynamic")
    assert results["plugin"].ops_quantized == results["builtin"].ops_quantized == {"MatMul": 3}
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    np.testing.assert_array_equal(load_runner(results["plugin"].path)(x), load_runner(results["builtin"].path)(x))


def test_keras_style_constructor_of_a_plugin():
    assert layers.PluginDense(8, activation="relu").item == {"plugin_dense": {"units": 8, "activation": "relu"}}
    assert layers.PlugDense is layers.PluginDense
    assert isinstance(layers.PluginDense(2), layers.KerasLayer)
    with pytest.raises(TypeError, match=r"PluginDense takes at most 1 positional arguments \(units\), got 2"):
        layers.PluginDense(8, "relu")
    model = archlab.Sequential([layers.Input((6,)), layers.PluginDense(4), layers.Dense(2)])
    assert model.spec["layers"] == [{"plugin_dense": {"units": 4}}, {"dense": {"units": 2}}]
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchLayer'"):
        layers.NoSuchLayer  # noqa: B018


def test_check_layer_passes_the_plugins():
    check_layer({"plugin_dense": {"units": 3}}, input_shape=[5])
    check_layer("plugin_relu", input_shape=[4, 3])
    check_layer({"plugin_table": {"rows": 7, "width": 2}}, input_shape=[3], dtype="long")


@pytest.mark.parametrize(("traits", "message"), [
    ({"structured": StructuredPruning(width="filters")},
     r"structured.width names 'filters', which is not a parameter of DenseParams \(its parameters: activation, "
     r"units, use_bias\)"),
    ({"structured": StructuredPruning(width="units", weight="kernel")},
     r"structured.weight names 'kernel', which is not a tensor of the module it builds \(its tensors: weight, bias\)"),
    ({"structured": StructuredPruning(width="units", input_axis=2)},
     r"structured.input_axis 2 is not an axis of 'weight' \(3, 5\)"),
    ({"keeps_channels": KeepsChannels()}, "sets both structured and keeps_channels"),
    ({"keras": KerasStyle("Dense", ("units",))}, r"the Keras name 'Dense' writes 'dense': another type took it"),
    ({"keras": KerasStyle("BadDense", ("size",))}, r"keras names 'size', which is not a parameter"),
    ({"quantization": {"static": True}}, r"quantization is a Quantization\(static=..., dynamic=...\)"),
])
def test_check_layer_traits_names_what_disagrees(traits, message):
    register_layer("plugin_dense", override=True)(type("BadDense", (PluginDense,), traits))
    with pytest.raises(AssertionError, match=r"layer type 'plugin_dense': " + message):
        check_layer_traits({"plugin_dense": {"units": 3}}, input_shape=[5])


def test_check_layer_traits_catches_channel_state_that_is_not_there():
    register_layer("plugin_relu", override=True)(type("BadRelu", (PluginRelu,), {
        "keeps_channels": KeepsChannels(state=("weight",), score="weight")}))
    with pytest.raises(AssertionError, match=r"keeps_channels.state names 'weight', which is not a tensor"):
        check_layer_traits("plugin_relu", input_shape=[4])


def _strings_outside_docstrings(path: Path) -> list[tuple[int, str]]:
    """Every string constant of a module (f-string parts too) except docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


@pytest.mark.parametrize("package", ["compress", "deploy"])
def test_no_table_of_layer_type_names_outside_layers(package):
    names = {name for name in archlab.list_layers() if name not in PLUGINS}
    found = [f"{path.relative_to(SRC)}:{line}: {value!r}" for path in sorted((SRC / package).glob("*.py"))
             for line, value in _strings_outside_docstrings(path) if value in names]
    assert not found, ("layer type names in code (read the layer type's traits instead): " + ", ".join(found))
