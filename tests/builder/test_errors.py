"""Bad input, parametrized: every problem is a SpecError (a ValueError) that names the spec
path of what is wrong and says what was expected, what was received, and how to fix it.
Nothing else (KeyError, TypeError, a pydantic ValidationError) may leak out."""

from __future__ import annotations

import pydantic
import pytest
import torch

import archlab

IMAGE = [1, 28, 28]


def seq(*layers, input=None) -> dict:  # noqa: A002 - the spec's own word
    return {"input": [8] if input is None else input, "layers": list(layers)}


def raises(spec, path: str, *fragments: str, kind: type = archlab.SpecError) -> archlab.SpecError:
    """parse() and build() both refuse ``spec`` with a ``kind`` at ``path`` whose message holds ``fragments``."""
    for stage in (archlab.parse, archlab.build):
        with pytest.raises(kind) as info:
            stage(spec)
        error = info.value
        assert isinstance(error, archlab.SpecError) and isinstance(error, ValueError)
        assert not isinstance(error, (KeyError, TypeError, pydantic.ValidationError))
        assert error.path == path, f"path {error.path!r} != {path!r}: {error}"
        message = str(error)
        if path:
            assert message.startswith(path), message
        for fragment in fragments:
            assert fragment in message, f"{fragment!r} not in {message!r}"
    return error


# -- layer types and parameters ----------------------------------------------------------------

@pytest.mark.parametrize("type_name,suggestion", [
    ("conv2", "conv2d"), ("Dense", "dense"), ("maxpool", "maxpool2d"), ("lstn", "lstm"),
    ("batch_norm", "batchnorm"), ("transformer", "transformer_block"), ("transformer_encodr", "transformer_encoder"),
])
def test_unknown_type_suggests_the_closest(type_name, suggestion):
    error = raises(seq({type_name: {"filters": 2, "kernel_size": 3}}, input=IMAGE), "layers[0]",
                   f"unknown layer type '{type_name}'", f"did you mean '{suggestion}'?", "(known: additive_attention")
    assert "conv2d" in str(error)


def test_unknown_bare_type_without_anything_close():
    error = raises(seq("relu", "zzzzzz"), "layers[1]", "unknown layer type 'zzzzzz'")
    assert "did you mean" not in str(error)


@pytest.mark.parametrize("item,path,fragments", [
    ({"conv2d": {"filter": 32, "kernel_size": 3}}, "layers[0].conv2d.filter",
     ["unknown parameter 'filter'; did you mean 'filters'?",
      "(conv2d takes: filters, kernel_size, strides, padding, dilation_rate, groups, activation, use_bias)"]),
    ({"conv2d": {"filters": 32, "kernal_size": 3}}, "layers[0].conv2d.kernal_size",
     ["unknown parameter 'kernal_size'; did you mean 'kernel_size'?"]),
    ({"dense": {"units": 4, "activaton": "relu"}}, "layers[0].dense.activaton",
     ["unknown parameter 'activaton'; did you mean 'activation'?"]),
    ({"dense": {"units": 4, "kernel_size": 3}}, "layers[0].dense.kernel_size",
     ["unknown parameter 'kernel_size'", "(dense takes: units, activation, use_bias)"]),
    ({"relu": {"alpha": 0.1}}, "layers[0].relu.alpha", ["unknown parameter 'alpha'", "(relu takes no parameters)"]),
])
def test_unknown_parameter(item, path, fragments):
    error = raises(seq(item, input=IMAGE if "conv2d" in item else [8]), path, *fragments)
    if "filter" in item.get("conv2d", {}):
        assert "missing" not in str(error)  # the misspelt key already explains the missing 'filters'


@pytest.mark.parametrize("params,path_param,fragment", [
    ({"units": "a"}, "units", "'units' should be a valid integer; got 'a'"),
    ({"units": 2.5}, "units", "'units' should be a valid integer; got 2.5"),
    ({"units": True}, "units", "'units' should be a valid integer; got True"),
    ({"units": None}, "units", "'units' should be a valid integer; got None"),
    ({"units": [4]}, "units", "'units' should be a valid integer; got [4]"),
    ({"units": 0}, "units", "'units' should be greater than 0; got 0"),
    ({"units": -3}, "units", "'units' should be greater than 0; got -3"),
    ({"units": 4, "activation": "relu6"}, "activation",
     "'activation' should be 'relu', 'gelu', 'tanh', 'sigmoid', 'softmax', 'silu', 'leaky_relu' or 'linear'; "
     "got 'relu6'"),
    ({"units": 4, "use_bias": "yes"}, "use_bias", "'use_bias' should be a valid boolean; got 'yes'"),
])
def test_wrong_dense_param_types_and_values(params, path_param, fragment):
    raises(seq({"dense": params}), f"layers[0].dense.{path_param}", fragment,
           "(dense takes: units, activation, use_bias)")


@pytest.mark.parametrize("item,path,fragment", [
    ({"dropout": {"rate": 1.5}}, "layers[0].dropout.rate", "'rate' should be less than 1; got 1.5"),
    ({"dropout": {"rate": 1.0}}, "layers[0].dropout.rate", "'rate' should be less than 1; got 1.0"),
    ({"dropout": {"rate": -0.1}}, "layers[0].dropout.rate", "'rate' should be greater than or equal to 0; got -0.1"),
    ({"dropout": {"rate": "half"}}, "layers[0].dropout.rate", "'rate' should be a valid number; got 'half'"),
    ({"batchnorm": {"momentum": "fast"}}, "layers[0].batchnorm.momentum", "'momentum' should be a valid number"),
    ({"batchnorm": {"momentum": 2}}, "layers[0].batchnorm.momentum", "'momentum' should be less than or equal to 1; "
                                                                     "got 2"),
    ({"batchnorm": {"momentum": -0.5}}, "layers[0].batchnorm.momentum", "'momentum' should be greater than or equal "
                                                                        "to 0; got -0.5"),
    ({"batchnorm": {"epsilon": -1}}, "layers[0].batchnorm.epsilon", "'epsilon' should be greater than 0; got -1"),
    ({"batchnorm": {"epsilon": 0}}, "layers[0].batchnorm.epsilon", "'epsilon' should be greater than 0; got 0"),
    ({"batchnorm": {"epsilon": float("inf")}}, "layers[0].batchnorm.epsilon", "'epsilon' should be a finite number"),
    ({"layernorm": {"epsilon": float("nan")}}, "layers[0].layernorm.epsilon", "'epsilon' should be a finite number"),
    ({"layernorm": {"epsilon": -1e-5}}, "layers[0].layernorm.epsilon", "'epsilon' should be greater than 0"),
    ({"leaky_relu": {"negative_slope": float("-inf")}}, "layers[0].leaky_relu.negative_slope",
     "'negative_slope' should be a finite number"),
    ({"dropout": {"rate": float("nan")}}, "layers[0].dropout.rate", "'rate' should be less than 1; got nan"),
    ({"lstm": {"units": 4, "activation": "relu"}}, "layers[0].lstm.activation", "'activation' should be 'tanh'"),
    ({"additive_attention": {"units": 2, "query": "first"}}, "layers[0].additive_attention.query",
     "'query' should be 'last' or 'learned'; got 'first'"),
    ({"positional_embedding": {"max_len": 8, "kind": "rotary"}}, "layers[0].positional_embedding.kind",
     "'kind' should be 'learned' or 'sinusoidal'"),
    ({"conv1d": {"filters": 4, "kernel_size": 3, "padding": "full"}}, "layers[0].conv1d.padding",
     "'padding' should be 'valid' or 'same'"),
    ({"conv1d": {"filters": 4, "kernel_size": 0}}, "layers[0].conv1d.kernel_size", "'kernel_size' should be"),
    ({"conv1d": {"filters": 3, "kernel_size": 1, "groups": 2}}, "layers[0].conv1d",
     "filters (3) must be a multiple of groups (2)"),
    ({"conv1d": {"filters": 4, "kernel_size": 2, "strides": [1, 2]}}, "layers[0].conv1d.strides",
     "'strides' needs an integer for a 1-D layer, got [1, 2]"),
    ({"maxpool1d": {"pool_size": 2, "padding": 2}}, "layers[0].maxpool1d.padding",
     "padding [2] must be at most half of pool_size [2]"),
    ({"multi_head_attention": {"num_heads": 2, "dropout": 2}}, "layers[0].multi_head_attention.dropout",
     "'dropout' should be less than 1"),
])
def test_wrong_param_values_of_other_layers(item, path, fragment):
    raises(seq(item, input=[4, 8]), path, fragment)


def test_conv2d_kernel_with_three_values():
    raises(seq({"conv2d": {"filters": 2, "kernel_size": [3, 3, 3]}}, input=IMAGE), "layers[0].conv2d.kernel_size",
           "'kernel_size' needs an integer or a list of 2 for a 2-D layer, got [3, 3, 3]")


@pytest.mark.parametrize("item,path,missing", [
    ({"dense": {}}, "layers[0].dense.units", "units"),
    ("dense", "layers[0].dense.units", "units"),
    ({"dense": None}, "layers[0].dense.units", "units"),
    ({"conv1d": {"filters": 2}}, "layers[0].conv1d.kernel_size", "kernel_size"),
    ({"embedding": {"input_dim": 10}}, "layers[0].embedding.output_dim", "output_dim"),
    ({"transformer_encoder": {"ff_dim": 16}}, "layers[0].transformer_encoder.num_heads", "num_heads"),
])
def test_missing_required_param(item, path, missing):
    raises(seq(item, input=[4, 8]), path, f"missing required parameter '{missing}'")


def test_params_that_are_not_a_mapping():
    raises(seq({"dense": 3}), "layers[0]", "dense takes a mapping of parameters, e.g. dense: {units: ...}; got 3")
    raises(seq({"relu": [1]}), "layers[0]", "relu takes a mapping of parameters, e.g. relu; got [1]")


@pytest.mark.parametrize("item,fragment", [
    ({"dense": {"units": 2}, "relu": None}, "found dense, relu: put each layer in its own list item"),
    ({"name": "x"}, "found name: add the layer type"),
    (5, "a layer item is TYPE or TYPE: {params}, got int 5"),
    (["relu"], "got list ['relu']"),
    (None, "got NoneType None"),
])
def test_malformed_layer_items(item, fragment):
    raises(seq("relu", item), "layers[1]", fragment)


# -- shapes and dtypes -----------------------------------------------------------------------

def test_dense_after_an_image_suggests_flatten():
    spec = {"input": IMAGE, "layers": [{"conv2d": {"filters": 32, "kernel_size": 3}}, {"maxpool2d": {"pool_size": 2}},
                                       {"dense": {"units": 10}}]}
    error = raises(spec, "layers[2]", kind=archlab.ShapeError)
    assert str(error) == ("layers[2] (dense) needs (features,) or (time, features) but receives (32, 13, 13) "
                          "from layers[1] (maxpool2d): add 'flatten' before it")


def test_dense_on_the_raw_image_input_says_it_comes_from_the_input():
    raises(seq({"dense": {"units": 10}}, input=IMAGE), "layers[0]",
           "(dense) needs (features,) or (time, features) but receives (1, 28, 28) from input: add 'flatten'",
           kind=archlab.ShapeError)


@pytest.mark.parametrize("spec,path,fragments", [
    (seq({"conv2d": {"filters": 3, "kernel_size": 5}}, input=[1, 4, 4]), "layers[0]",
     ["(conv2d) receives (1, 4, 4), smaller than its kernel (5, 5)", "use padding: same"]),
    (seq({"conv2d": {"filters": 3, "kernel_size": 3, "dilation_rate": 2}}, input=[1, 4, 4]), "layers[0]",
     ["smaller than its kernel (3, 3) (dilation (2, 2))"]),
    (seq({"conv2d": {"filters": 2, "kernel_size": 3}}, {"conv2d": {"filters": 2, "kernel_size": 3}}, input=[1, 4, 4]),
     "layers[1]", ["(conv2d) receives (2, 2, 2), smaller than its kernel"]),
    (seq({"maxpool2d": {"pool_size": 5}}, input=[1, 4, 4]), "layers[0]",
     ["(maxpool2d) receives (1, 4, 4), smaller than pool_size [5, 5]"]),
    (seq({"conv1d": {"filters": 2, "kernel_size": 9}}, input=[2, 8]), "layers[0]",
     ["(conv1d) receives (2, 8), smaller than its kernel (9,)"]),
])
def test_kernel_larger_than_its_input(spec, path, fragments):
    raises(spec, path, *fragments, kind=archlab.ShapeError)


@pytest.mark.parametrize("item", [{"multi_head_attention": {"num_heads": 4}},
                                  {"transformer_encoder": {"num_heads": 4, "ff_dim": 8}}])
def test_num_heads_must_divide_the_width(item):
    raises(seq(item, input=[5, 6]), "layers[0]", "receives width 6, which num_heads=4 does not divide",
           "make the width a multiple of 4", kind=archlab.ShapeError)


def test_embedding_on_float_input():
    raises(seq({"embedding": {"input_dim": 10, "output_dim": 4}}, input=[5]), "layers[0]",
           "(embedding) needs integer ids (dtype long) but receives float (5,) from input",
           "declare the input as {shape: [...], dtype: long}", kind=archlab.ShapeError)


@pytest.mark.parametrize("item", [{"dense": {"units": 4}}, {"conv1d": {"filters": 2, "kernel_size": 1}}, "relu",
                                  {"dropout": {"rate": 0.1}}, "layernorm", {"lstm": {"units": 2}}])
def test_real_valued_layers_on_long_ids(item):
    raises(seq(item, input={"shape": [5, 3], "dtype": "long"}), "layers[0]",
           "needs real-valued input but receives integer ids (5, 3) from input: add 'embedding' before it",
           kind=archlab.ShapeError)


def test_positional_embedding_max_len_too_small():
    spec = seq({"embedding": {"input_dim": 10, "output_dim": 4}}, {"positional_embedding": {"max_len": 3}},
               input={"shape": [5], "dtype": "long"})
    raises(spec, "layers[1]", "(positional_embedding) receives 5 time steps but max_len is 3",
           "raise max_len to at least 5", kind=archlab.ShapeError)


def test_concat_with_mismatched_shapes():
    spec = seq({"parallel": {"branches": [[{"conv2d": {"filters": 2, "kernel_size": 3}}],
                                          [{"conv2d": {"filters": 2, "kernel_size": 1}}]]}}, input=[1, 8, 8])
    raises(spec, "layers[0].parallel", "(merge concat) along axis 0 needs the other axes equal",
           "layers[0].parallel.branches[0] (2, 6, 6), layers[0].parallel.branches[1] (2, 8, 8)",
           kind=archlab.ShapeError)


@pytest.mark.parametrize("spec,path,fragment", [
    (seq({"lstm": {"units": 4}}, input=[12]), "layers[0]",
     "(lstm) needs (time, features) but receives (12,) from input: add 'reshape: {shape: [-1, 1]}' before it"),
    (seq("global_avgpool2d", input=[3, 12]), "layers[0]",
     "(global_avgpool2d) needs (channels, height, width) but receives (3, 12)"),
    (seq({"reshape": {"shape": [5, -1]}}, input=[12]), "layers[0]", "12 is not a multiple of 5"),
    (seq({"reshape": {"shape": [5, 2]}}, input=[12]), "layers[0]",
     "cannot reshape (12,) (12 elements) to (5, 2) (10 elements)"),
    (seq({"reshape": {"shape": [-1, -1]}}, input=[12]), "layers[0]", "at most one -1"),
    (seq({"conv2d": {"filters": 4, "kernel_size": 3, "groups": 2}}, input=[3, 8, 8]), "layers[0]",
     "receives 3 channels, which groups=2 does not divide"),
])
def test_other_shape_errors(spec, path, fragment):
    raises(spec, path, fragment, kind=archlab.ShapeError)


def test_softmax_of_a_scalar_per_sample_would_mix_the_batch():
    spec = {"input": [1], "layers": [{"reshape": {"shape": []}}, "softmax"]}
    raises(spec, "layers[1]", "(softmax) needs at least one axis but receives a scalar ()", kind=archlab.ShapeError)
    # with one axis kept it is fine, and each sample sums to 1
    model = archlab.build({"input": [1], "layers": [{"reshape": {"shape": [1]}}, "softmax"]})
    assert model(torch.randn(3, 1)).tolist() == [[1.0], [1.0], [1.0]]


def test_flatten_of_a_scalar_per_sample():
    spec = {"input": [1], "layers": [{"reshape": {"shape": []}}, "flatten"]}  # input: [] is refused (no axis)
    assert archlab.parse(spec).root.output.shape == (1,)
    assert archlab.build(spec)(torch.zeros(3, *spec["input"])).shape == (3, 1)


def test_errors_deep_in_connections_carry_the_full_path():
    spec = seq({"sequential": {"name": "stem", "layers": [
        {"residual": {"layers": [{"parallel": {"branches": [["relu"], [{"dense": {"units": "x"}}]]}}]}}]}})
    raises(spec, "layers[0].sequential.layers[0].residual.layers[0].parallel.branches[1][0].dense.units",
           "'units' should be a valid integer; got 'x'")


# -- search markers ------------------------------------------------------------------------

@pytest.mark.parametrize("spec,path,fragment", [
    (seq({"dense": {"units": {"choice": [16, 32]}}}), "layers[0].dense.units",
     "holds a search marker {choice: [16, 32]}: this spec is a search space"),
    (seq({"dense": {"units": 4, "activation": {"choice": ["relu", "tanh"]}}},
         {"dropout": {"rate": {"float": [0.0, 0.5]}}}),
     "layers[0].dense.activation", "(and 1 more)"),
    (seq({"choice": ["relu", {"dense": {"units": 4}}]}), "layers[0]", "holds a search marker {choice: ['relu'"),
    (seq({"repeat": {"times": {"int": [1, 4]}, "layers": ["relu"]}}), "layers[0].repeat.times",
     "holds a search marker {int: [1, 4]}"),
    ({"input": [{"choice": [4, 8]}], "layers": ["relu"]}, "input", "an input shape is a list of positive integers"),
])
def test_search_markers_are_refused_by_build_with_their_path(spec, path, fragment):
    error = raises(spec, path, fragment)
    if path.startswith("layers"):
        assert "'archlab search'" in str(error)


@pytest.mark.parametrize("marker,fragment", [
    ({"int": [5, 1]}, "{int: [5, 1]} has low > high: write [1, 5]"),
    ({"choice": []}, "{choice: ...} needs a non-empty list of options, got []"),
    ({"choice": 3}, "needs a non-empty list of options, got 3"),
    ({"int": [1.5, 4]}, "{int: [low, high]} needs two int bounds"),
    ({"int": [1, 2, 3]}, "needs two int bounds"),
    ({"float": [0.0, 1.0], "log": True}, "a log-scaled float marker needs low > 0"),
    ({"float": [0.1, 1.0], "log": "yes"}, "'log' in a float marker must be true or false"),
    ({"int": [1, 8], "step": 0}, "'step' in an int marker must be a positive int"),
    ({"choice": [1, 2], "step": 1}, "unknown key 'step' in a choice marker"),
    ({"int": [1, 5], "steps": 1}, "unknown key 'steps' in an int marker; did you mean 'step'?"),
    ({"int": [1, 5], "choice": [1]}, "a search marker has one of choice/int/float"),
])
def test_malformed_markers_are_rejected_with_their_path(marker, fragment):
    raises(seq({"dense": {"units": marker}}), "layers[0].dense.units", fragment)


# -- the top level ---------------------------------------------------------------------------

@pytest.mark.parametrize("data,path,fragments", [
    ({"input": [8], "layer": ["relu"]}, "layer", ["unknown top-level key 'layer'; did you mean 'layers'?",
                                                  "(known: archlab, name"]),
    ({"input": [8], "layers": ["relu"], "optimiser": {}}, "optimiser", ["unknown top-level key 'optimiser'"]),
    ({"input": [8], "layers": ["relu"], "graph": {"x": {"from": "input"}}, "outputs": "x"}, "",
     ["either 'layers' (the sequential form) or 'graph' (the graph form), not both"]),
    ({"input": [8]}, "", ["and this one has neither"]),
    ({"layers": ["relu"]}, "", ["missing 'input': give the input shape without the batch dimension"]),
    ({"input": [4, 0], "layers": ["relu"]}, "input", ["an input shape is a list of positive integers", "got [4, 0]"]),
    ({"input": "4", "layers": ["relu"]}, "input", ["got '4'"]),
    ({"input": [2.5], "layers": ["relu"]}, "input", ["got [2.5]"]),
    ({"input": [True], "layers": ["relu"]}, "input", ["got [True]"]),
    ({"input": {"shape": [4], "dtype": "int"}, "layers": ["relu"]}, "input.dtype",
     ["dtype must be 'float' or 'long' (token ids), got 'int'"]),
    ({"input": {"shape": [4], "dtyp": "long"}, "layers": ["relu"]}, "input",
     ["unknown key 'dtyp'; did you mean 'dtype'?"]),
    ({"input": {"dtype": "long"}, "layers": ["relu"]}, "input", ["got None"]),
    ({"input": [8], "layers": ["relu"], "name": "my model"}, "name",
     ["a name uses letters, digits, '-' and '_' only, got 'my model'"]),
    ({"input": [8], "layers": ["relu"], "name": 7}, "name", ["got 7"]),
    ({"input": [8], "layers": []}, "layers", ["'layers' must be a non-empty list of layer items"]),
    ({"input": [8], "layers": "relu"}, "layers", ["'layers' must be a non-empty list"]),
    ({"input": [8], "layers": ["relu"], "archlab": 2}, "archlab", ["this archlab reads spec format 1, got 2"]),
    ({"input": [8], "layers": ["relu"], "task": {"kind": "classify"}}, "task.kind",
     ["unknown task 'classify'; did you mean 'classification'?"]),
    ({"input": [8], "layers": ["relu"], "task": {"kind": "classification", "classes": 1}}, "task.classes",
     ["task.classes must be an integer >= 2, got 1"]),
    ({"input": [8], "layers": ["relu"], "train": 5}, "train", ["'train' is a mapping"]),
    ({"input": [8], "layers": ["relu"], "inputs": {"x": [8]}}, "inputs", ["'inputs' belongs to the graph form"]),
    ({"input": [8], 3: 4, "layers": ["relu"]}, "", ["keys must be strings, got 3"]),
    ({"input": [8], "layers": [{"dense": {"units": object()}}]}, "layers[0].dense.units",
     ["a spec holds only strings, numbers, booleans, lists and mappings"]),
])
def test_top_level_problems(data, path, fragments):
    raises(data, path, *fragments)


@pytest.mark.parametrize("source,fragment", [
    ("input: [8]\nlayers: [relu", "the spec text is not valid YAML/JSON at line"),
    ("- relu\n- tanh\n", "a spec is a mapping at the top level, got list"),
    ("missing_file.yaml", "spec file 'missing_file.yaml' does not exist"),
])
def test_unreadable_sources(source, fragment):
    with pytest.raises(archlab.SpecError, match=None) as info:
        archlab.build(source)
    assert fragment in str(info.value)


def test_spec_of_the_wrong_type():
    with pytest.raises(archlab.SpecError, match="a spec is a mapping at the top level, got int"):
        archlab.Spec(5)
