"""The layer contract, checked for every registered layer type (timm's test_models, Keras'
run_layer_test): it builds; forward and backward give finite values and gradients; the output
has the inferred shape; the built module has the analysed number of parameters (and buffers);
the spec round-trips through YAML, JSON and Spec.to_dict.

A newly registered type fails ``test_every_registered_type_has_a_case`` until CASES holds a
small valid spec for it.
"""

from __future__ import annotations

import json

import pytest
import torch

import archlab
from archlab.spec import Spec
from archlab.testing import check_layer_traits


def seq(input_shape, *items, dtype: str = "float") -> dict:
    shape = input_shape if dtype == "float" else {"shape": input_shape, "dtype": dtype}
    return {"name": "contract", "input": shape, "layers": list(items)}


# One or more small valid specs per layer type; each spec's LAST layer (or the graph's
# last node's first layer) is the one under test.
CASES: dict[str, list[dict]] = {
    "dense": [seq([5], {"dense": {"units": 3}}),
              seq([4, 5], {"dense": {"units": 3, "activation": "gelu", "use_bias": False}})],
    "conv1d": [seq([2, 9], {"conv1d": {"filters": 4, "kernel_size": 3}}),
               seq([4, 9], {"conv1d": {"filters": 4, "kernel_size": 3, "strides": 2, "padding": "same",
                                       "groups": 2, "dilation_rate": 2, "activation": "relu"}})],
    "conv2d": [seq([1, 6, 6], {"conv2d": {"filters": 3, "kernel_size": 3}}),
               seq([2, 7, 6], {"conv2d": {"filters": 4, "kernel_size": [3, 2], "strides": 2, "padding": "same",
                                          "use_bias": False, "activation": "silu"}}),
               seq([2, 6, 6], {"conv2d": {"filters": 2, "kernel_size": 3, "padding": 1, "dilation_rate": 2}})],
    "maxpool1d": [seq([2, 8], {"maxpool1d": {"pool_size": 2}})],
    "maxpool2d": [seq([2, 6, 6], {"maxpool2d": {"pool_size": 2}}),
                  seq([2, 7, 7], {"maxpool2d": {"pool_size": 3, "strides": 2, "padding": 1}})],
    "avgpool1d": [seq([2, 8], {"avgpool1d": {"pool_size": 3, "strides": 1}})],
    "avgpool2d": [seq([2, 6, 6], {"avgpool2d": {"pool_size": [2, 3]}})],
    "global_avgpool1d": [seq([3, 7], "global_avgpool1d")],
    "global_avgpool2d": [seq([3, 4, 5], "global_avgpool2d")],
    "global_maxpool1d": [seq([3, 7], "global_maxpool1d")],
    "global_maxpool2d": [seq([3, 4, 5], "global_maxpool2d")],
    "flatten": [seq([2, 3, 4], "flatten")],
    "reshape": [seq([12], {"reshape": {"shape": [3, -1]}}), seq([2, 3, 4], {"reshape": {"shape": [4, 6]}})],
    "transpose": [seq([3, 5], "transpose"), seq([2, 3, 4], {"transpose": {"axes": [-1, 0]}})],
    "dropout": [seq([6], {"dropout": {"rate": 0.5}})],
    "spatial_dropout": [seq([3, 8], {"spatial_dropout": {"rate": 0.5}}),
                        seq([3, 4, 4], {"spatial_dropout": {"rate": 0.2}})],
    "batchnorm": [seq([6], "batchnorm"), seq([3, 5], {"batchnorm": {"momentum": 0.2}}),
                  seq([3, 4, 4], {"batchnorm": {"epsilon": 0.001}})],
    "layernorm": [seq([4, 6], "layernorm"), seq([6], {"layernorm": {"epsilon": 1e-6}})],
    "rmsnorm": [seq([4, 6], "rmsnorm"), seq([6], {"rmsnorm": {"epsilon": 1e-6}})],
    "spectrogram": [seq([40], {"spectrogram": {"n_fft": 16}}),
                    seq([40], {"spectrogram": {"n_fft": 16, "hop_length": 5, "win_length": 12, "power": 1,
                                               "center": False}})],
    "log_mel": [seq([40], {"log_mel": {"n_fft": 16, "sample_rate": 8000, "n_mels": 4}}),
                seq([40], {"log_mel": {"n_fft": 16, "sample_rate": 8000, "n_mels": 4, "mel_scale": "htk",
                                       "norm": None, "log": "offset", "eps": 1e-6, "top_db": 80.0}})],
    "mfcc": [seq([40], {"mfcc": {"n_fft": 16, "sample_rate": 8000, "n_mels": 6, "n_mfcc": 3, "f_min": 100.0,
                                 "f_max": 3000.0}})],
    "spec_augment": [seq([6, 8], "spec_augment"),
                     seq([40], {"log_mel": {"n_fft": 16, "sample_rate": 8000, "n_mels": 4}},
                         {"spec_augment": {"freq_masks": 1, "freq_mask_width": 2, "time_masks": 0}})],
    "gated_mlp": [seq([4, 6], {"gated_mlp": {"ff_dim": 10}}),
                  seq([6], {"gated_mlp": {"ff_dim": 4, "activation": "gelu", "use_bias": True}})],
    "moe": [seq([4, 6], {"moe": {"num_experts": 4, "ff_dim": 5}}),
            seq([6], {"moe": {"num_experts": 3, "top_k": 1, "ff_dim": 4, "shared_experts": 1, "activation": "gelu",
                              "use_bias": True}})],
    "relu": [seq([5], "relu")],
    "gelu": [seq([5], "gelu"), seq([5], {"gelu": {"approximate": "tanh"}})],
    "tanh": [seq([5], "tanh")],
    "sigmoid": [seq([5], "sigmoid")],
    "softmax": [seq([3, 5], "softmax")],
    "silu": [seq([5], "silu")],
    "leaky_relu": [seq([5], "leaky_relu"), seq([5], {"leaky_relu": {"negative_slope": 0.2}})],
    "embedding": [seq([6], {"embedding": {"input_dim": 11, "output_dim": 4}}, dtype="long"),
                  seq([6], {"embedding": {"input_dim": 11, "output_dim": 2, "init_std": 0.01}}, dtype="long")],
    "fm": [seq([5], {"embedding": {"input_dim": 11, "output_dim": 3}}, "fm", dtype="long"), seq([4, 2], "fm")],
    "reduce": [seq([4, 3], "reduce"), seq([4, 3], {"reduce": {"op": "mean", "axis": -1}}),
               seq([2, 3, 4], {"reduce": {"op": "max", "axis": 1}}), seq([5], {"reduce": {"op": "sum"}})],
    "bias": [seq([3], "bias"), seq([4, 2], "bias")],
    "positional_embedding": [
        seq([6], {"embedding": {"input_dim": 11, "output_dim": 4}}, {"positional_embedding": {"max_len": 8}},
            dtype="long"),
        seq([5, 4], {"positional_embedding": {"max_len": 5, "kind": "sinusoidal"}})],
    "simple_rnn": [seq([5, 3], {"simple_rnn": {"units": 4}}),
                   seq([5, 3], {"simple_rnn": {"units": 4, "activation": "relu", "return_sequences": True,
                                               "bidirectional": True, "num_layers": 2}})],
    "lstm": [seq([5, 3], {"lstm": {"units": 4}}),
             seq([5, 3], {"lstm": {"units": 4, "return_sequences": True, "bidirectional": True, "num_layers": 2}})],
    "gru": [seq([5, 3], {"gru": {"units": 4}}),
            seq([5, 3], {"gru": {"units": 2, "bidirectional": True, "num_layers": 3}})],
    "additive_attention": [seq([5, 4], {"additive_attention": {"units": 3}}),
                           seq([5, 4], {"additive_attention": {"units": 3, "query": "learned"}})],
    "multi_head_attention": [seq([5, 8], {"multi_head_attention": {"num_heads": 2}}),
                             seq([5, 8], {"multi_head_attention": {"num_heads": 4, "causal": True, "dropout": 0.1}}),
                             seq([6, 8], {"multi_head_attention": {"num_heads": 4, "num_kv_heads": 2, "rotary": True,
                                                                   "causal": True, "use_bias": False}}),
                             seq([5, 8], {"multi_head_attention": {"num_heads": 2, "num_kv_heads": 1, "head_dim": 6,
                                                                   "sliding_window": 2, "causal": True,
                                                                   "dropout": 0.1, "rope_theta": 500.0,
                                                                   "rotary": True}})],
    "transformer_block": [
        seq([5, 8], {"transformer_block": {"num_heads": 2, "ff_dim": 12}}),
        seq([5, 8], {"transformer_block": {"num_heads": 4, "num_kv_heads": 2, "ff_dim": 8, "mlp": "geglu",
                                           "norm": "layernorm", "norm_eps": 1e-6, "use_bias": True,
                                           "sliding_window": 3, "dropout": 0.1}}),
        seq([5, 8], {"transformer_block": {"num_heads": 2, "ff_dim": 16, "mlp": "relu", "rotary": False,
                                           "causal": False, "use_bias": True, "head_dim": 3}}),
        seq([5, 8], {"transformer_block": {"num_heads": 2, "num_kv_heads": 1, "ff_dim": 6, "mlp": "geglu",
                                           "moe": {"num_experts": 3, "top_k": 2, "shared_experts": 1}}})],
    "transformer_encoder": [
        seq([5, 8], {"transformer_encoder": {"num_heads": 2, "ff_dim": 16}}),
        seq([5, 8], {"transformer_encoder": {"num_heads": 2, "ff_dim": 12, "dropout": 0.0, "activation": "gelu",
                                             "norm_first": True, "causal": True}})],
    "additive_cross_attention": [
        {"name": "contract", "inputs": {"x": [4, 6], "memory": [5, 8]},
         "graph": {"att": {"from": ["x", "memory"], "layers": [{"additive_cross_attention": {"units": 7}}]}},
         "outputs": "att"}],
    "transformer_decoder": [
        {"name": "contract", "inputs": {"x": [5, 8], "memory": [3, 8]},
         "graph": {"dec": {"from": ["x", "memory"], "layers": [
             {"transformer_decoder": {"num_heads": 2, "ff_dim": 16}}]}},
         "outputs": "dec"},
        {"name": "contract", "inputs": {"x": [4, 8], "memory": [6, 8]},
         "graph": {"dec": {"from": ["x", "memory"], "layers": [
             {"transformer_decoder": {"num_heads": 4, "ff_dim": 8, "causal": True, "norm_first": True,
                                      "activation": "gelu"}}]}},
         "outputs": "dec"}],
}

ALL_TYPES = sorted(set(archlab.list_layers()) | set(CASES))
CASE_IDS = [(name, i) for name in sorted(CASES) for i in range(len(CASES[name]))]


@pytest.mark.parametrize("type_name", ALL_TYPES)
def test_every_registered_type_has_a_case(type_name):
    assert type_name in archlab.list_layers(), f"CASES has {type_name!r}, which is no longer registered"
    assert CASES.get(type_name), (f"layer type {type_name!r} is registered but has no case in CASES "
                                  "(tests/layers/test_contract.py): add a small valid spec for it")


def _case(type_name: str, index: int) -> dict:
    spec = CASES[type_name][index]
    items = spec["layers"] if "layers" in spec else next(iter(spec["graph"].values()))["layers"]
    assert any((item if isinstance(item, str) else next(iter(item))) == type_name for item in items)
    return spec


def _random_inputs(parsed, batch: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    out = {}
    for name, info in parsed.inputs.items():
        if info.dtype == "long":
            out[name] = torch.randint(0, 11, (batch, *info.shape), generator=generator)
        else:
            out[name] = torch.randn(batch, *info.shape, generator=generator).requires_grad_(True)
    return out


def _layer_module(model: archlab.ArchlabModel, type_name: str, parsed) -> torch.nn.Module:
    """The module of the layer under test: the last one of the sequence or of the graph node."""
    if parsed.is_graph:
        return list(model.net.nodes.values())[-1].layers[-1]
    return model.net[-1]


def _layer_row(analysis, type_name: str):
    rows = [row for row in analysis.layers if row.type == type_name]
    assert rows, f"the analysis has no row for {type_name}"
    return rows[-1]


@pytest.mark.parametrize("type_name,index", CASE_IDS, ids=[f"{n}-{i}" for n, i in CASE_IDS])
def test_layer_contract(type_name, index):
    torch.manual_seed(0)
    spec = _case(type_name, index)
    parsed = archlab.parse(spec)
    model = archlab.build(spec)
    model.train()
    batch = 3
    inputs = _random_inputs(parsed, batch)

    # forward: finite, and the shape inferred before any weight existed
    out = model(**inputs)
    (expected,) = parsed.output_infos
    assert tuple(out.shape) == (batch, *expected.shape)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()

    # backward: every parameter and every real-valued input receives a finite gradient
    (out.float() * torch.randn_like(out.float())).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name} received no gradient"
        assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"
    for name, tensor in inputs.items():
        if tensor.is_floating_point():
            assert tensor.grad is not None and torch.isfinite(tensor.grad).all(), f"input {name}"

    # eval mode is deterministic (dropout off, batchnorm on running statistics)
    model.eval()
    with torch.no_grad():
        plain = {k: v.detach() for k, v in inputs.items()}
        torch.testing.assert_close(model(**plain), model(**plain))

    # the analysis counts what the module holds: in total and for the layer under test
    analysis = archlab.analyze(spec)
    assert model.num_params() == analysis.total_params
    layer = _layer_module(model, type_name, parsed)
    assert sum(p.numel() for p in layer.parameters()) == _layer_row(analysis, type_name).params
    assert _layer_row(analysis, type_name).output_shape == list(expected.shape)
    buffers = sum(t.numel() for k, t in model.state_dict(keep_vars=True).items()
                  if not isinstance(t, torch.nn.Parameter))
    assert buffers == analysis.buffers
    assert analysis.flops >= analysis.macs * 2 >= 0


@pytest.mark.parametrize("type_name,index", CASE_IDS, ids=[f"{n}-{i}" for n, i in CASE_IDS])
def test_layer_spec_round_trips(type_name, index):
    spec_dict = _case(type_name, index)
    spec = archlab.load(spec_dict)
    assert archlab.load(archlab.dump(spec)) == spec
    assert archlab.load(archlab.dump(spec, format="json")) == spec
    assert json.loads(archlab.dump(spec, format="json")) == spec_dict
    assert Spec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict() == spec_dict
    # the round-tripped spec builds to the same architecture
    assert archlab.analyze(archlab.load(archlab.dump(spec))).to_dict() == archlab.analyze(spec).to_dict()


def test_meta_device_build_allocates_nothing_and_counts_the_same():
    for type_name in sorted(CASES):
        spec = CASES[type_name][0]
        model = archlab.build(spec, device="meta")
        assert all(p.is_meta for p in model.parameters()), type_name
        assert model.num_params() == archlab.analyze(spec).total_params, type_name


@pytest.mark.parametrize("type_name,index", CASE_IDS, ids=[f"{n}-{i}" for n, i in CASE_IDS])
def test_layer_traits_agree_with_params_and_module(type_name, index):
    spec = _case(type_name, index)
    parsed = archlab.parse(spec)
    if parsed.is_graph:
        pytest.skip("check_layer_traits takes one layer on one input (a graph node's layer reads several)")
    node = parsed.root.items[-1]
    check_layer_traits(spec["layers"][-1], list(node.input.shape), dtype=node.input.dtype)
