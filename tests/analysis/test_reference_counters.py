"""Our counts against independent counters run on the real built modules: fvcore
(FlopCountAnalysis, which counts one per multiply-accumulate for conv/linear/matmul), ptflops
(get_model_complexity_info, MACs) and torch.utils.flop_counter (2 FLOPs per MAC).

Where a counter agrees with us the test asserts equality. Where it differs, the difference was
traced to the counter (a skipped operator, a bias counted as a MAC, a module missed or hooked
twice) and the test asserts that documented difference exactly; docs/analysis.md, "Where fvcore
and ptflops differ from us", explains each one. Measured with fvcore 0.1.5.post20221221 and
ptflops 0.7.5 on torch 2.13 (CPU).
"""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import pytest
import torch

import archlab

fvcore_nn = pytest.importorskip("fvcore.nn")
ptflops = pytest.importorskip("ptflops")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BATCH = 2


def seq(input_shape, *layers) -> dict:
    return {"input": input_shape, "layers": list(layers)}


def build(spec) -> torch.nn.Module:
    torch.manual_seed(0)
    return archlab.build(spec).eval()


def input_shape(spec) -> tuple[int, ...]:
    return tuple(archlab.parse(spec).inputs["input"].shape)


def fvcore_count(model: torch.nn.Module, *inputs: torch.Tensor):
    """fvcore's total per sample, and the analysis object (by_operator, unsupported_ops)."""
    analysis = fvcore_nn.FlopCountAnalysis(model, inputs)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    total = analysis.total()
    assert total % inputs[0].shape[0] == 0
    return total // inputs[0].shape[0], analysis


def ptflops_count(model: torch.nn.Module, shape: tuple[int, ...], backend: str, **kwargs) -> tuple[int, int]:
    """ptflops (MACs, params) for one sample; ptflops adds the batch dimension of 1 itself."""
    with contextlib.redirect_stdout(io.StringIO()):
        macs, params = ptflops.get_model_complexity_info(model, shape, as_strings=False, print_per_layer_stat=False,
                                                         backend=backend, **kwargs)
    assert macs is not None, "ptflops failed"
    return macs, params


def torch_flops(model: torch.nn.Module, *inputs: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    # not under no_grad: an eval-mode nn.MultiheadAttention without grad takes torch's fused fast
    # path (_native_multi_head_attention), which FlopCounterMode does not count at all
    with FlopCounterMode(display=False) as counter:
        model(*inputs)
    return counter.get_total_flops() // inputs[0].shape[0]


# -- dense and convolutions: fvcore agrees exactly; ptflops adds one per bias element ----------------

DENSE = [
    pytest.param(seq([12], {"dense": {"units": 7}}), 7, id="vector"),
    pytest.param(seq([5, 12], {"dense": {"units": 7, "use_bias": False, "activation": "relu"}}), 0, id="seq-nobias"),
    pytest.param(seq([5, 12], {"dense": {"units": 7, "activation": "gelu"}}), 5 * 7, id="seq-gelu"),
]

CONV = [
    pytest.param(seq([3, 20], {"conv1d": {"filters": 4, "kernel_size": 5, "strides": 2, "padding": "same"}}),
                 id="conv1d-same-stride2"),
    pytest.param(seq([4, 16], {"conv1d": {"filters": 8, "kernel_size": 3, "groups": 4, "dilation_rate": 2}}),
                 id="conv1d-groups-dilation"),
    pytest.param(seq([4, 9, 9], {"conv2d": {"filters": 6, "kernel_size": 3, "strides": 2, "padding": 1, "groups": 2}}),
                 id="conv2d-groups-stride-pad"),
    pytest.param(seq([3, 8, 8], {"conv2d": {"filters": 5, "kernel_size": [3, 5], "strides": 2, "padding": "same",
                                            "use_bias": False}}), id="conv2d-same-stride2-asymmetric"),
    pytest.param(seq([6, 10, 10], {"conv2d": {"filters": 6, "kernel_size": 3, "groups": 6, "padding": "same",
                                              "activation": "relu"}}), id="conv2d-depthwise-same"),
    pytest.param(seq([2, 12, 12], {"conv2d": {"filters": 3, "kernel_size": 3, "dilation_rate": 2, "strides": 3}}),
                 id="conv2d-dilation-stride3"),
]


@pytest.mark.parametrize(("spec", "bias_elements"), DENSE)
def test_dense(spec, bias_elements):
    ours = archlab.analyze(spec)
    model = build(spec)
    x = torch.randn(BATCH, *input_shape(spec))
    fv, _ = fvcore_count(model, x)
    assert fv == ours.macs
    assert torch_flops(model, x) == 2 * ours.macs
    macs, params = ptflops_count(model, input_shape(spec), "aten")
    assert (macs, params) == (ours.macs + bias_elements, ours.total_params)  # ptflops counts the bias add


@pytest.mark.parametrize("spec", CONV)
def test_conv(spec):
    ours = archlab.analyze(spec)
    conv = ours.layers[0]
    model = build(spec)
    x = torch.randn(BATCH, *input_shape(spec))
    fv, analysis = fvcore_count(model, x)
    assert fv == ours.macs == analysis.by_operator()["conv"] // BATCH
    assert torch_flops(model, x) == 2 * ours.macs
    has_bias = spec["layers"][0][next(iter(spec["layers"][0]))].get("use_bias", True)
    macs, _ = ptflops_count(model, input_shape(spec), "aten")
    assert macs == ours.macs + (math.prod(conv.output_shape) if has_bias else 0)


# -- whole models ---------------------------------------------------------------------------------------

def test_seed_cnn():
    spec = str(EXAMPLES / "seed-mnist-cnn.yaml")
    ours = archlab.analyze(spec)
    assert ours.macs == 2_631_040
    model = build(spec)
    fv, analysis = fvcore_count(model, torch.randn(BATCH, 1, 28, 28))
    assert fv == ours.macs  # fvcore skips relu, max pooling and softmax, as our MACs do
    biases = 32 * 26 * 26 + 64 * 11 * 11 + 128 + 10  # one add per output element of each biased layer
    assert ptflops_count(model, (1, 28, 28), "aten") == (ours.macs + biases, 225_034)


def test_ptflops_pytorch_backend_on_archlab_modules():
    """ptflops' default backend hooks modules by exact type, so archlab's Conv2d and Dense (subclasses
    of nn.Conv2d and nn.Linear that carry their activation) are not counted at all; and it counts
    nn.ReLU and nn.MaxPool2d twice, once by the module hook and once by its patched F.relu/F.max_pool2d."""
    model = build(str(EXAMPLES / "seed-mnist-cnn.yaml"))
    relu_elements = 32 * 26 * 26 + 64 * 11 * 11 + 128  # the ReLUs inside both convolutions and the first dense
    pool_inputs = 32 * 26 * 26 + 64 * 11 * 11  # ptflops counts a pooling layer's input elements
    softmax = 10  # nn.Softmax has no module hook; the patched F.softmax counts it once
    macs, params = ptflops_count(model, (1, 28, 28), "pytorch")
    assert params == 225_034
    assert macs == 2 * relu_elements + 2 * pool_inputs + softmax  # no convolution or dense work at all

    from ptflops.pytorch_ops import conv_flops_counter_hook, linear_flops_counter_hook

    from archlab.layers.conv import Conv2d
    from archlab.layers.core import Dense

    hooks = {Conv2d: conv_flops_counter_hook, Dense: linear_flops_counter_hook}
    macs, _ = ptflops_count(model, (1, 28, 28), "pytorch", custom_modules_hooks=hooks,
                            backend_specific_config={"count_functional": False})
    ours = archlab.analyze(str(EXAMPLES / "seed-mnist-cnn.yaml"))
    biases = 32 * 26 * 26 + 64 * 11 * 11 + 128 + 10
    # with the subclasses hooked and the functional patching off: our MACs + biases + the max pools'
    # inputs (the activations inside a hooked module are not visited)
    assert macs == ours.macs + biases + pool_inputs


def test_resnet18_at_224():
    spec = str(EXAMPLES / "resnet18.yaml")
    ours = archlab.analyze(spec)
    assert ours.macs == 1_814_073_344  # about 1.814 G MACs, as commonly reported for ResNet-18
    model = build(spec)
    fv, analysis = fvcore_count(model, torch.randn(1, 3, 224, 224))
    by_op = analysis.by_operator()
    assert by_op["conv"] + by_op["linear"] == ours.macs
    # fvcore also counts batchnorm (2 per element at inference, our FLOPs) and the global pool
    # (1 per input element, our FLOPs) into its "flop" total
    bn_flops = sum(r.flops for r in ours.layers if r.type == "batchnorm")
    gap_flops = sum(r.flops for r in ours.layers if r.type == "global_avgpool2d")
    assert (by_op["batch_norm"], by_op["adaptive_avg_pool2d"]) == (bn_flops, gap_flops) == (4_967_424, 512 * 7 * 7)
    assert fv == ours.macs + bn_flops + gap_flops == 1_819_065_856
    # ptflops' aten backend: convolutions (no bias in ResNet) + fc with its 1000 bias adds
    assert ptflops_count(model, (3, 224, 224), "aten") == (ours.macs + 1000, 11_689_512)


def test_inception_fvcore():
    spec = str(EXAMPLES / "inception.yaml")
    ours = archlab.analyze(spec)
    fv, analysis = fvcore_count(build(spec), torch.randn(BATCH, 3, 32, 32))
    by_op = analysis.by_operator()
    assert (by_op["conv"] + by_op["linear"]) // BATCH == ours.macs
    assert fv == ours.macs + 112 * 8 * 8  # + the global average pool over (112, 8, 8); max pools not counted


# -- attention: fvcore and ptflops' aten backend skip the attention matmuls -----------------------------

T, D, HEADS, FF = 8, 16, 4, 24


class _WithWeights(torch.nn.Module):
    """The same nn.MultiheadAttention, called so that it computes the attention with explicit bmm's
    (need_weights=True) instead of the fused scaled_dot_product_attention."""

    def __init__(self, attn: torch.nn.MultiheadAttention) -> None:
        super().__init__()
        self.attn = attn

    def forward(self, x):
        return self.attn(x, x, x, need_weights=True, average_attn_weights=False)[0]


def test_multi_head_attention():
    spec = seq([T, D], {"multi_head_attention": {"num_heads": HEADS}})
    ours = archlab.analyze(spec)
    projections, scores_and_mix = 4 * T * D * D, 2 * T * T * D
    assert ours.macs == projections + scores_and_mix
    model = build(spec)
    x = torch.randn(BATCH, T, D)
    fv, analysis = fvcore_count(model, x)
    # fvcore has no rule for aten::scaled_dot_product_attention: only the projections are counted
    assert fv == projections == ours.macs - 2 * T * T * D
    assert "aten::scaled_dot_product_attention" in analysis.unsupported_ops()
    # the same weights through the explicit path: QK^T and AV are bmm's, and both counters agree with us
    explicit = _WithWeights(model.net[0].attn).eval()
    assert fvcore_count(explicit, x)[0] == ours.macs
    assert torch_flops(explicit, x) == 2 * ours.macs
    # ptflops' nn.MultiheadAttention hook counts the same matmuls, plus the query scaling (T*D),
    # the four projection biases (4*T*D) and one per score for the softmax (heads*T*T)
    macs, params = ptflops_count(model, (T, D), "pytorch")
    assert (macs, params) == (ours.macs + T * D + 4 * T * D + HEADS * T * T, ours.total_params)
    # ptflops' aten backend sees the projections with their biases, not the fused attention
    assert ptflops_count(model, (T, D), "aten")[0] == projections + 4 * T * D


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder(norm_first):
    spec = seq([T, D], {"transformer_encoder": {"num_heads": HEADS, "ff_dim": FF, "norm_first": norm_first,
                                                "dropout": 0.0}})
    ours = archlab.analyze(spec)
    attention_macs, ff_macs = 4 * T * D * D + 2 * T * T * D, 2 * T * D * FF
    assert ours.macs == attention_macs + ff_macs
    model = build(spec)
    fv, analysis = fvcore_count(model, torch.randn(BATCH, T, D))
    by_op = analysis.by_operator()
    assert by_op["linear"] // BATCH == ours.macs - 2 * T * T * D  # attention matmuls skipped, as above
    assert by_op["layer_norm"] // BATCH == 2 * 5 * T * D  # our layernorm rule: 5 per element
    # ptflops: the attention hook as above, each nn.Linear with its bias, each nn.LayerNorm at one
    # per element; the relu is the F.relu the block captured before ptflops patched it: not counted
    macs, params = ptflops_count(model, (T, D), "pytorch")
    assert params == ours.total_params
    assert macs == ours.macs + (5 * T * D + HEADS * T * T) + (T * FF + T * D) + 2 * T * D


def test_transformer_decoder_fvcore():
    s = 5
    spec = {"inputs": {"x": [T, D], "memory": [s, D]},
            "graph": {"dec": {"from": ["x", "memory"],
                              "layers": [{"transformer_decoder": {"num_heads": HEADS, "ff_dim": FF}}]}},
            "outputs": "dec"}
    ours = archlab.analyze(spec)
    fv, _ = fvcore_count(build(spec), torch.randn(BATCH, T, D), torch.randn(BATCH, s, D))
    # linear layers counted; self-attention (2*T*T*D) and cross-attention (2*T*S*D) matmuls skipped;
    # three layernorms at 5 per element added
    assert fv == ours.macs - 2 * T * T * D - 2 * T * s * D + 3 * 5 * T * D


def test_additive_cross_attention_matches_torchs_flop_counter():
    """Every multiply-add of the cross-attention is a matmul here (W_s s_j, W_h h_t, v^T per pair, the
    contexts as a bmm), so torch's own FlopCounterMode, 2 FLOPs per multiply-add, sees all of them."""
    from torch.utils.flop_counter import FlopCounterMode

    t, d, s, e = 4, 6, 7, 5  # decoder steps and memory steps, of different widths
    spec = {"inputs": {"x": [t, d], "memory": [s, e]},
            "graph": {"att": {"from": ["x", "memory"], "layers": [{"additive_cross_attention": {"units": 3}}]}},
            "outputs": "att"}
    ours = archlab.analyze(spec)
    model = build(spec)
    with FlopCounterMode(display=False) as counter:
        model(x=torch.randn(BATCH, t, d), memory=torch.randn(BATCH, s, e))
    assert counter.get_total_flops() == BATCH * 2 * ours.macs == BATCH * 2 * (s * e * 3 + t * d * 3 + t * s * 3
                                                                              + t * s * e)


def test_additive_attention():
    t, d, u = 9, 6, 5
    spec = seq([t, d], {"additive_attention": {"units": u}})
    ours = archlab.analyze(spec)
    model = build(spec)
    fv, _ = fvcore_count(model, torch.randn(BATCH, t, d))
    # the context sum_t alpha_t s_t is an elementwise multiply and a sum (t*d multiply-adds that we
    # count as MACs), not a matmul, so the counters see only the three linear maps
    assert fv == ours.macs - t * d == t * d * u + d * u + t * u
    assert ptflops_count(model, (t, d), "aten")[0] == ours.macs - t * d + t * u  # + W_s's bias per step


# -- recurrences ----------------------------------------------------------------------------------------

def test_simple_rnn_matmuls():
    spec = seq([7, 3], {"simple_rnn": {"units": 5, "bidirectional": True, "num_layers": 2}})
    ours = archlab.analyze(spec)
    model = build(spec)
    x = torch.randn(BATCH, 7, 3)
    assert fvcore_count(model, x)[0] == ours.macs
    assert ptflops_count(model, (7, 3), "aten")[0] == ours.macs
    assert torch_flops(model, x) == 2 * ours.macs


# ptflops' nn.LSTM/nn.GRU hook: the weight products (our MACs) plus, per unit, step and run,
# LSTM 4 + 3 + 3 elementwise ops and both biases of 4 gates (8); GRU 1 + 3 + 3 and 2 x 3 biases.
@pytest.mark.parametrize(("kind", "extra_per_unit"), [("lstm", 10 + 8), ("gru", 7 + 6)])
@pytest.mark.parametrize(("bidirectional", "num_layers"), [(False, 1), (True, 2)])
def test_lstm_gru_against_ptflops(kind, extra_per_unit, bidirectional, num_layers):
    steps, features, units = 7, 3, 5
    spec = seq([steps, features], {kind: {"units": units, "bidirectional": bidirectional,
                                          "num_layers": num_layers, "return_sequences": True}})
    ours = archlab.analyze(spec)
    gates = 4 if kind == "lstm" else 3
    directions = 2 if bidirectional else 1
    widths = [features] * directions + [units * directions] * directions * (num_layers - 1)
    assert ours.macs == sum(steps * gates * units * (w + units) for w in widths)
    model = build(spec)
    macs, params = ptflops_count(model, (steps, features), "pytorch")
    assert params == ours.total_params
    assert macs == ours.macs + len(widths) * steps * units * extra_per_unit
    # fvcore has no rule for the fused recurrent kernels: it counts nothing
    fv, analysis = fvcore_count(model, torch.randn(BATCH, steps, features))
    assert fv == 0
    assert f"aten::{kind}" in analysis.unsupported_ops()
