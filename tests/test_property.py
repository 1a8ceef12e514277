"""Property: any spec either builds and runs with exactly the shape inferred at parse time,
or is refused with a SpecError. Nothing else (KeyError, TypeError, a torch RuntimeError from
a shape the parser let through, a pydantic ValidationError) may escape.

Specs are drawn at random, valid and invalid: inputs of rank 1-3 (sometimes token ids), random
sequences of every built-in layer type with random and sometimes wrong parameters, nested
residual / parallel / repeat / sequential connections, names and ties, and now and then the
graph form. Shapes stay tiny so that 150 examples run in seconds.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archlab

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ACTIVATIONS = ["relu", "gelu", "tanh", "sigmoid", "softmax", "silu", "leaky_relu", "linear"]
NAMES = ["n0", "n1", "n2"]

# Values that are wrong for most parameters: a parameter sometimes gets one of these.
JUNK = st.sampled_from([0, -1, "a", 1.5, None, [], [0], True, {"x": 1}, 64])  # 64: larger than any input


def sometimes_wrong(valid: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(valid, valid, valid, valid, valid, valid, valid, JUNK)


small = st.integers(1, 4)
kernel = st.one_of(st.integers(1, 3), st.lists(st.integers(1, 3), min_size=1, max_size=2))
rate = st.sampled_from([0.0, 0.1, 0.5])

# type -> (required params, optional params), each a strategy for its value
PARAMS: dict[str, tuple[dict, dict]] = {
    "dense": ({"units": small}, {"activation": st.sampled_from(ACTIVATIONS), "use_bias": st.booleans()}),
    "conv1d": ({"filters": small, "kernel_size": kernel},
               {"strides": st.integers(1, 2), "padding": st.sampled_from(["valid", "same", 0, 1]),
                "dilation_rate": st.integers(1, 2), "groups": st.integers(1, 2),
                "activation": st.sampled_from(ACTIVATIONS), "use_bias": st.booleans()}),
    "conv2d": ({"filters": small, "kernel_size": kernel},
               {"strides": st.one_of(st.integers(1, 2), st.lists(st.integers(1, 2), min_size=2, max_size=2)),
                "padding": st.sampled_from(["valid", "same", 0, 1, [1, 0]]),
                "dilation_rate": st.integers(1, 2), "groups": st.integers(1, 2),
                "activation": st.sampled_from(ACTIVATIONS), "use_bias": st.booleans()}),
    "maxpool1d": ({"pool_size": st.integers(1, 3)}, {"strides": st.integers(1, 2), "padding": st.integers(0, 1)}),
    "maxpool2d": ({"pool_size": kernel}, {"strides": st.integers(1, 2), "padding": st.integers(0, 1)}),
    "avgpool1d": ({"pool_size": st.integers(1, 3)}, {"strides": st.integers(1, 2), "padding": st.integers(0, 1)}),
    "avgpool2d": ({"pool_size": kernel}, {"strides": st.integers(1, 2), "padding": st.integers(0, 1)}),
    "global_avgpool1d": ({}, {}),
    "global_avgpool2d": ({}, {}),
    "global_maxpool1d": ({}, {}),
    "global_maxpool2d": ({}, {}),
    "flatten": ({}, {}),
    "reshape": ({"shape": st.lists(st.sampled_from([-1, 1, 2, 3, 4, 6]), min_size=0, max_size=3)}, {}),
    "transpose": ({}, {"axes": st.lists(st.integers(-2, 2), min_size=2, max_size=2)}),
    "dropout": ({"rate": rate}, {}),
    "spatial_dropout": ({"rate": rate}, {}),
    "batchnorm": ({}, {"momentum": st.sampled_from([0.1, 0.5]), "epsilon": st.sampled_from([1e-5, 1e-3])}),
    "layernorm": ({}, {"epsilon": st.sampled_from([1e-5, 1e-3])}),
    "rmsnorm": ({}, {"epsilon": st.sampled_from([1e-5, 1e-6])}),
    "gated_mlp": ({"ff_dim": small}, {"activation": st.sampled_from(["silu", "gelu"]), "use_bias": st.booleans()}),
    "moe": ({"num_experts": small, "ff_dim": small},
            {"top_k": small, "shared_experts": st.integers(0, 1), "activation": st.sampled_from(["silu", "gelu"]),
             "use_bias": st.booleans()}),
    "spectrogram": ({"n_fft": st.integers(2, 8)}, {"hop_length": st.integers(1, 3), "power": st.sampled_from([1, 2]),
                                                    "center": st.booleans()}),
    "log_mel": ({"n_fft": st.integers(2, 8), "sample_rate": st.just(8000), "n_mels": small},
                {"mel_scale": st.sampled_from(["slaney", "htk"]), "log": st.sampled_from(["clamp", "offset"]),
                 "top_db": st.sampled_from([None, 80.0])}),
    "mfcc": ({"n_fft": st.integers(2, 8), "sample_rate": st.just(8000), "n_mels": small, "n_mfcc": st.integers(1, 2)},
             {"norm": st.sampled_from(["slaney", None])}),
    "spec_augment": ({}, {"freq_masks": st.integers(0, 2), "freq_mask_width": small, "time_masks": st.integers(0, 2),
                          "time_mask_width": small}),
    "relu": ({}, {}), "tanh": ({}, {}), "sigmoid": ({}, {}), "softmax": ({}, {}), "silu": ({}, {}),
    "gelu": ({}, {"approximate": st.sampled_from(["none", "tanh"])}),
    "leaky_relu": ({}, {"negative_slope": st.sampled_from([0.01, 0.2])}),
    "embedding": ({"input_dim": small, "output_dim": small}, {"init_std": st.sampled_from([0.01, 0.5])}),
    "fm": ({}, {}),
    "reduce": ({}, {"op": st.sampled_from(["sum", "mean", "max"]), "axis": st.integers(-2, 2)}),
    "bias": ({}, {}),
    "positional_embedding": ({"max_len": st.integers(1, 6)}, {"kind": st.sampled_from(["learned", "sinusoidal"])}),
    "simple_rnn": ({"units": small}, {"activation": st.sampled_from(ACTIVATIONS), "return_sequences": st.booleans(),
                                      "bidirectional": st.booleans(), "num_layers": st.integers(1, 2)}),
    "lstm": ({"units": small}, {"return_sequences": st.booleans(), "bidirectional": st.booleans(),
                                "num_layers": st.integers(1, 2)}),
    "gru": ({"units": small}, {"return_sequences": st.booleans(), "bidirectional": st.booleans(),
                               "num_layers": st.integers(1, 2)}),
    "additive_attention": ({"units": small}, {"query": st.sampled_from(["last", "learned"])}),
    "multi_head_attention": ({"num_heads": st.integers(1, 2)}, {"dropout": rate, "causal": st.booleans(),
                                                                "num_kv_heads": st.just(1), "rotary": st.booleans(),
                                                                "use_bias": st.booleans()}),
    "transformer_block": ({"num_heads": st.integers(1, 2), "ff_dim": small},
                          {"num_kv_heads": st.just(1), "mlp": st.sampled_from(["swiglu", "geglu", "gelu", "relu"]),
                           "norm": st.sampled_from(["rmsnorm", "layernorm"]), "rotary": st.booleans(),
                           "use_bias": st.booleans(), "causal": st.booleans(), "dropout": rate}),
    "transformer_encoder": ({"num_heads": st.integers(1, 2), "ff_dim": small},
                            {"dropout": rate, "activation": st.sampled_from(["relu", "gelu"]),
                             "norm_first": st.booleans(), "causal": st.booleans()}),
    "transformer_decoder": ({"num_heads": st.integers(1, 2), "ff_dim": small}, {}),
    "additive_cross_attention": ({"units": small}, {}),
}


def test_the_property_test_draws_every_builtin_type():
    assert set(PARAMS) == set(archlab.list_layers())


# Which layer types usually fit which kind of input; a spec mostly draws from its family's
# pool (so that many specs are valid) and now and then from every type (so that many are not).
ELEMENTWISE = ["relu", "gelu", "tanh", "sigmoid", "silu", "leaky_relu", "dropout"]
FAMILIES: dict[str, list[str]] = {
    "vector": ["dense", "dense", "batchnorm", "layernorm", "rmsnorm", "softmax", "reshape", "reduce", "bias",
               *ELEMENTWISE],
    "sequence": ["dense", "layernorm", "rmsnorm", "simple_rnn", "lstm", "gru", "additive_attention",
                 "multi_head_attention", "transformer_encoder", "positional_embedding", "conv1d", "maxpool1d",
                 "avgpool1d", "global_avgpool1d", "global_maxpool1d", "batchnorm", "flatten", *ELEMENTWISE],
    "image": ["conv2d", "conv2d", "maxpool2d", "avgpool2d", "global_avgpool2d", "global_maxpool2d", "batchnorm",
              "flatten", "dense", *ELEMENTWISE],
    "tokens": ["embedding", "embedding", "positional_embedding", "flatten", "reshape", "dense", "simple_rnn",
               "multi_head_attention", "layernorm", "fm"],
}


@st.composite
def layer_item(draw, family: str, wild: bool) -> object:
    pool = FAMILIES[family] if draw(st.integers(0, 5)) else sorted(PARAMS)
    type_name = draw(st.sampled_from(pool))
    required, optional = PARAMS[type_name]
    value = sometimes_wrong if wild else (lambda strategy: strategy)
    params = {}
    for key, strategy in required.items():
        if not wild or draw(st.integers(0, 9)):  # a wild spec may miss a required parameter
            params[key] = draw(value(strategy))
    for key, strategy in optional.items():
        if draw(st.booleans()):
            params[key] = draw(value(strategy))
    if wild and draw(st.integers(0, 9)) == 0:
        params[draw(st.sampled_from(["unit", "filter", "bogus"]))] = 1
    if wild and draw(st.integers(0, 14)) == 0:
        type_name = draw(st.sampled_from(["conv2", "Dense", "pool"]))  # unknown types
    if not params and draw(st.booleans()):
        item: object = type_name
    else:
        item = {type_name: params}
    if isinstance(item, dict):
        if draw(st.integers(0, 4)) == 0:
            item["name"] = draw(st.sampled_from(NAMES))
        if draw(st.integers(0, 14)) == 0:
            item["tie"] = draw(st.sampled_from(NAMES))
        if draw(st.integers(0, 9)) == 0:
            item["trainable"] = draw(st.sampled_from([False, False, True, "no"] if wild else [False, True]))
    return item


def layer_list(depth: int, family: str, wild: bool) -> st.SearchStrategy:
    return st.lists(item_strategy(depth, family, wild), min_size=0 if depth else 1, max_size=3)


def item_strategy(depth: int, family: str, wild: bool) -> st.SearchStrategy:
    leaf = layer_item(family, wild)
    if depth >= 2:
        return leaf
    inner = layer_list(depth + 1, family, wild)
    shortcuts = ["auto", "identity", "projection"] + (["skip"] if wild else [])
    merges = ["concat", "add", "mean", "max", "mul"] + (["sum"] if wild else [])
    residual = st.fixed_dictionaries(
        {"layers": inner},
        optional={"shortcut": st.sampled_from(shortcuts), "post": st.lists(leaf, max_size=1)})
    parallel = st.fixed_dictionaries(
        {"branches": st.lists(inner, min_size=1, max_size=3)},
        optional={"merge": st.sampled_from(merges), "axis": st.sampled_from([0, -1, 1, 3])})
    if not wild:  # axis goes with merge: concat only
        parallel = parallel.map(lambda v: v if v.get("merge", "concat") == "concat"
                                else {k: x for k, x in v.items() if k != "axis"})
    repeat = st.fixed_dictionaries(
        {"times": st.sampled_from([1, 2, 3] + ([0] if wild else [])), "layers": inner},
        optional={"share_weights": st.booleans()})
    sequential = st.fixed_dictionaries({"layers": inner}, optional={"name": st.sampled_from(NAMES)})
    connection = st.one_of(
        residual.map(lambda v: {"residual": v}),
        parallel.map(lambda v: {"parallel": v}),
        repeat.map(lambda v: {"repeat": v}),
        sequential.map(lambda v: {"sequential": v}),
    )
    return st.one_of(leaf, leaf, leaf, connection)


@st.composite
def input_shape(draw, family: str) -> object:
    if family == "tokens":
        return {"shape": draw(st.lists(st.integers(1, 5), min_size=1, max_size=2)), "dtype": "long"}
    if family == "vector":
        return [draw(st.integers(1, 6))]
    if family == "sequence":
        return [draw(st.integers(1, 5)), draw(st.sampled_from([1, 2, 4, 6]))]
    return [draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6))]


@st.composite
def specs(draw) -> dict:
    wild = draw(st.integers(0, 2)) == 0
    family = draw(st.sampled_from(sorted(FAMILIES)))
    if draw(st.integers(0, 7)) == 0:  # the graph form: two inputs, a merge or a decoder, maybe a bad edge
        a, b = draw(input_shape(family)), draw(input_shape(family))
        first = {"from": "a", "layers": draw(layer_list(1, family, wild))}
        joined: dict = {"from": ["left", "b"], "layers": draw(layer_list(1, family, wild))}
        if draw(st.booleans()):
            joined["merge"] = draw(st.sampled_from(["concat", "add", "mean", "max", "mul"]))
        elif draw(st.booleans()):
            joined["layers"] = [{"transformer_decoder": {"num_heads": draw(st.integers(1, 2)), "ff_dim": 2}},
                                *joined["layers"]]
        else:
            joined["layers"] = [{"additive_cross_attention": {"units": draw(st.integers(1, 3))}}, *joined["layers"]]
        graph = {"left": first, "joined": joined}
        outputs: object = draw(st.sampled_from(["joined", ["joined", "left"]] + (["nowhere"] if wild else [])))
        return {"inputs": {"a": a, "b": b}, "graph": graph, "outputs": outputs}
    spec: dict = {"input": draw(input_shape(family)), "layers": draw(layer_list(0, family, wild))}
    if draw(st.integers(0, 9)) == 0:
        spec["data_format"] = "channels_last"
    return spec


def _zeros(info) -> torch.Tensor:
    return torch.zeros(2, *info.shape, dtype=torch.long if info.dtype == "long" else torch.float32)


def check_spec(spec: dict) -> str:
    """Build and run ``spec``, or accept a SpecError; return what happened (for statistics)."""
    try:
        parsed = archlab.parse(spec)
        model = archlab.build(spec)
    except archlab.SpecError as exc:
        assert str(exc)  # every refusal says something
        return "refused"
    model.eval()
    raw = list(parsed.raw_inputs.values())
    with torch.no_grad():
        out = model(*[_zeros(info) for info in raw])
    outs = out if isinstance(out, tuple) else (out,)
    expected = parsed.output_infos
    assert len(outs) == len(expected)
    for tensor, info in zip(outs, expected, strict=True):
        assert tuple(tensor.shape) == (2, *info.shape), (spec, tensor.shape, info)
        assert (tensor.dtype == torch.long) == (info.dtype == "long"), (spec, tensor.dtype, info)
    analysis = archlab.analyze(parsed)
    assert analysis.total_params == model.num_params(), spec
    assert analysis.trainable_params == model.num_params(trainable_only=True), spec
    return "built"


OUTCOMES: dict[str, int] = {"built": 0, "refused": 0}


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(specs())
def test_random_specs_build_with_the_inferred_shape_or_raise_spec_error(spec):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        OUTCOMES[check_spec(spec)] += 1


def test_the_random_specs_are_a_mix_of_valid_and_invalid():
    # runs after the property test in file order; a generator that only ever produced one kind
    # of spec would test little. At least 1 in 10 of either kind: the draws are derandomized, so
    # each new type in PARAMS reshuffles them (31 built of 150 before moe, 28 with it)
    if sum(OUTCOMES.values()) == 0:
        pytest.skip("the property test did not run first")
    assert OUTCOMES["built"] >= 15, OUTCOMES
    assert OUTCOMES["refused"] >= 15, OUTCOMES
