"""The seed's four formulas, implemented as written, checked by hand on tiny tensors.

Every weight is set explicitly, so each expected number below can be recomputed on paper
(or comes from an independent implementation: plain Python loops, or torch.nn.RNN).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archlab
from archlab.layers.attention import AdditiveAttention
from archlab.layers.recurrent import ElmanCell, ElmanRNN


def only_layer(model: archlab.ArchlabModel) -> nn.Module:
    """The module of a one-layer sequential spec."""
    (layer,) = list(model.net.children())
    return layer


# -- dense: y = f(Wx + b) ---------------------------------------------------------------------

W_DENSE = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])  # (units=2, features=3)
B_DENSE = torch.tensor([0.25, -4.0])


def _dense(activation: str | None, input_shape: list[int]) -> nn.Module:
    params = {"units": 2} | ({"activation": activation} if activation else {})
    model = archlab.build({"input": input_shape, "layers": [{"dense": params}]})
    layer = only_layer(model)
    with torch.no_grad():
        layer.weight.copy_(W_DENSE)
        layer.bias.copy_(B_DENSE)
    return model


def test_dense_is_wx_plus_b():
    model = _dense(None, [3])
    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 2.0]])
    # row 0: (1 - 4 + 1.5) + 0.25 = -1.25 ; (0 + 6 - 3) - 4 = -1
    # row 1: (0 + 2 + 1) + 0.25 = 3.25   ; (0 - 3 - 2) - 4 = -9
    expected = torch.tensor([[-1.25, -1.0], [3.25, -9.0]])
    torch.testing.assert_close(model(x), expected)


def test_dense_applies_its_activation_after_the_affine_map():
    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 2.0]])
    torch.testing.assert_close(_dense("relu", [3])(x), torch.tensor([[0.0, 0.0], [3.25, 0.0]]))
    torch.testing.assert_close(_dense("tanh", [3])(x), torch.tanh(torch.tensor([[-1.25, -1.0], [3.25, -9.0]])))


# The FLOP table (pure, for analysis) and the module factories (torch, for building) live apart.
ACTIVATION_REFERENCE = {"relu": F.relu, "gelu": F.gelu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
                        "softmax": lambda t: torch.softmax(t, dim=-1), "silu": F.silu, "leaky_relu": F.leaky_relu,
                        "linear": lambda t: t}


def test_every_activation_has_a_flop_count_and_the_module_it_names():
    from typing import get_args

    from archlab.layers._activation_modules import make_activation
    from archlab.layers._activations import ACTIVATION_FLOPS, ActivationName

    assert set(ACTIVATION_FLOPS) == set(get_args(ActivationName)) == set(ACTIVATION_REFERENCE)
    x = torch.tensor([[-2.0, -0.5, 0.0, 1.5]])
    for name, reference in ACTIVATION_REFERENCE.items():
        torch.testing.assert_close(make_activation(name)(x), reference(x), msg=name)
    assert isinstance(make_activation(None), nn.Identity)


def test_dense_without_bias_has_no_bias():
    model = archlab.build({"input": [3], "layers": [{"dense": {"units": 2, "use_bias": False}}]})
    layer = only_layer(model)
    assert layer.bias is None
    with torch.no_grad():
        layer.weight.copy_(W_DENSE)
    torch.testing.assert_close(model(torch.tensor([[1.0, 2.0, 3.0]])), torch.tensor([[-1.5, 3.0]]))


def test_dense_on_a_sequence_works_over_the_last_axis_step_by_step():
    model = _dense(None, [2, 3])  # (T=2, F=3) -> (T=2, units=2)
    x = torch.tensor([[[1.0, 2.0, 3.0], [0.0, -1.0, 2.0]]])  # (B=1, T=2, F=3)
    out = model(x)
    assert out.shape == (1, 2, 2)
    torch.testing.assert_close(out, torch.tensor([[[-1.25, -1.0], [3.25, -9.0]]]))
    assert archlab.parse({"input": [2, 3], "layers": [{"dense": {"units": 2}}]}).root.output.shape == (2, 2)


# -- conv2d: y = f(W * x + b) --------------------------------------------------------------------

X_3x3 = torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
K_2x2 = torch.tensor([[1.0, 2.0], [3.0, 4.0]])


def _conv(params: dict, bias: float) -> nn.Module:
    model = archlab.build({"input": [1, 3, 3], "layers": [{"conv2d": {"filters": 1, "kernel_size": 2, **params}}]})
    layer = only_layer(model)
    with torch.no_grad():
        layer.weight.copy_(K_2x2.reshape(1, 1, 2, 2))
        layer.bias.fill_(bias)
    return model


def test_conv2d_valid_is_a_hand_summed_cross_correlation():
    out = _conv({}, 0.5)(X_3x3)
    # top-left window [[1, 2], [4, 5]]: 1*1 + 2*2 + 3*4 + 4*5 = 37, + 0.5
    # top-right [[2, 3], [5, 6]]: 2 + 6 + 15 + 24 = 47; bottom-left [[4, 5], [7, 8]]: 4 + 10 + 21 + 32 = 67
    # bottom-right [[5, 6], [8, 9]]: 5 + 12 + 24 + 36 = 77
    torch.testing.assert_close(out, torch.tensor([[[[37.5, 47.5], [67.5, 77.5]]]]))


def test_conv2d_activation_and_strides():
    out = _conv({"strides": 2, "activation": "relu"}, -40.0)(X_3x3)
    # one window only (stride 2 over 3 pixels, valid): 37 - 40 = -3 -> relu -> 0
    torch.testing.assert_close(out, torch.zeros(1, 1, 1, 1))


def test_conv2d_same_padding_with_stride_2_pads_bottom_right_like_keras():
    model = _conv({"strides": 2, "padding": "same"}, 0.0)
    # Keras: out = ceil(3 / 2) = 2 per axis; total padding (2-1)*2 + 2 - 3 = 1 goes to the bottom/right
    # padded input: [[1, 2, 3, 0], [4, 5, 6, 0], [7, 8, 9, 0], [0, 0, 0, 0]]
    # windows: [[1,2],[4,5]] = 37; [[3,0],[6,0]] = 3 + 18 = 21; [[7,8],[0,0]] = 7 + 16 = 23; [[9,0],[0,0]] = 9
    expected = torch.tensor([[[[37.0, 21.0], [23.0, 9.0]]]])
    torch.testing.assert_close(model(X_3x3), expected)
    # PyTorch-style symmetric padding (extra on top/left) would give a different answer:
    top_left = F.conv2d(F.pad(X_3x3, (1, 0, 1, 0)), K_2x2.reshape(1, 1, 2, 2), stride=2)
    assert not torch.allclose(top_left, expected)
    parsed = archlab.parse({"input": [1, 3, 3], "layers": [
        {"conv2d": {"filters": 1, "kernel_size": 2, "strides": 2, "padding": "same"}}]})
    assert parsed.root.output.shape == (1, 2, 2)


@pytest.mark.parametrize("size,kernel,stride", [(4, 3, 2), (5, 3, 2), (7, 2, 3), (6, 1, 2), (5, 4, 1)])
def test_conv2d_same_padding_matches_the_keras_rule(size, kernel, stride):
    spec = {"input": [2, size, size], "layers": [
        {"conv2d": {"filters": 3, "kernel_size": kernel, "strides": stride, "padding": "same"}}]}
    model = archlab.build(spec)
    conv = only_layer(model)
    x = torch.randn(2, 2, size, size, generator=torch.Generator().manual_seed(0))
    out_size = math.ceil(size / stride)
    total = max((out_size - 1) * stride + kernel - size, 0)
    before, after = total // 2, total - total // 2  # Keras / TensorFlow: the extra pixel after
    reference = F.conv2d(F.pad(x, (before, after, before, after)), conv.weight, conv.bias, stride=stride)
    assert reference.shape[-2:] == (out_size, out_size)
    torch.testing.assert_close(model(x), reference)
    assert archlab.parse(spec).root.output.shape == (3, out_size, out_size)


def test_conv1d_same_padding_with_stride_pads_the_end():
    model = archlab.build({"input": [1, 3], "layers": [
        {"conv1d": {"filters": 1, "kernel_size": 2, "strides": 2, "padding": "same"}}]})
    conv = only_layer(model)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[1.0, 10.0]]]))
        conv.bias.zero_()
    # [1, 2, 3] padded to [1, 2, 3, 0]: 1 + 20 = 21, 3 + 0 = 3
    torch.testing.assert_close(model(torch.tensor([[[1.0, 2.0, 3.0]]])), torch.tensor([[[21.0, 3.0]]]))


# -- simple_rnn: h_t = f(W_xh x_t + W_hh h_(t-1) + b_h) ---------------------------------------

def _set_cell(cell: ElmanCell, w_xh, w_hh, b_h) -> None:
    with torch.no_grad():
        cell.weight_xh.copy_(torch.as_tensor(w_xh, dtype=torch.float32))
        cell.weight_hh.copy_(torch.as_tensor(w_hh, dtype=torch.float32))
        cell.bias_h.copy_(torch.as_tensor(b_h, dtype=torch.float32))


def test_elman_recurrence_by_hand_one_unit():
    rnn = ElmanRNN(1, 1, "tanh", num_layers=1, bidirectional=False, return_sequences=True)
    _set_cell(rnn.cells[0], [[0.5]], [[-0.3]], [0.1])
    x = torch.tensor([[[1.0], [2.0], [-1.0]]])  # (B=1, T=3, F=1)
    h1 = math.tanh(0.5 * 1.0 + 0.1)  # h_0 = 0
    h2 = math.tanh(0.5 * 2.0 - 0.3 * h1 + 0.1)
    h3 = math.tanh(0.5 * -1.0 - 0.3 * h2 + 0.1)
    torch.testing.assert_close(rnn(x), torch.tensor([[[h1], [h2], [h3]]]))
    rnn.return_sequences = False
    torch.testing.assert_close(rnn(x), torch.tensor([[h3]]))


def test_elman_recurrence_by_hand_two_units_relu_and_a_single_bias():
    rnn = ElmanRNN(2, 2, "relu", num_layers=1, bidirectional=False, return_sequences=True)
    w_xh = [[1.0, 0.0], [0.0, -1.0]]
    w_hh = [[0.5, 0.0], [1.0, 0.0]]
    _set_cell(rnn.cells[0], w_xh, w_hh, [0.0, 1.0])
    assert sum(p.numel() for p in rnn.parameters()) == 4 + 4 + 2  # one bias, as the seed writes it
    x = torch.tensor([[[1.0, 2.0], [3.0, 0.0]]])
    # t=1: W_xh x = (1, -2); + b = (1, -1); relu -> (1, 0)
    # t=2: W_xh x = (3, 0); W_hh h1 = (0.5, 1); + b = (3.5, 2) -> (3.5, 2)
    torch.testing.assert_close(rnn(x), torch.tensor([[[1.0, 0.0], [3.5, 2.0]]]))


def _elman_reference(x: torch.Tensor, cells: list[ElmanCell], activation, reverse: bool) -> torch.Tensor:
    """The recurrence written as a plain loop over single time steps, one sample at a time."""
    cell = cells[0]
    batch, steps, _ = x.shape
    out = torch.zeros(batch, steps, cell.weight_hh.shape[0])
    for b in range(batch):
        h = torch.zeros(cell.weight_hh.shape[0])
        for t in (reversed(range(steps)) if reverse else range(steps)):
            h = activation(cell.weight_xh @ x[b, t] + cell.weight_hh @ h + cell.bias_h)
            out[b, t] = h
    return out


def _torch_rnn_like(rnn: ElmanRNN, input_size: int, units: int, num_layers: int, bidirectional: bool) -> nn.RNN:
    """torch.nn.RNN carrying the same weights (its second bias set to zero): an independent oracle."""
    ref = nn.RNN(input_size, units, num_layers=num_layers, bidirectional=bidirectional, batch_first=True)
    directions = 2 if bidirectional else 1
    with torch.no_grad():
        for layer in range(num_layers):
            for d in range(directions):
                cell = rnn.cells[layer * directions + d]
                suffix = f"l{layer}" + ("_reverse" if d == 1 else "")
                getattr(ref, f"weight_ih_{suffix}").copy_(cell.weight_xh)
                getattr(ref, f"weight_hh_{suffix}").copy_(cell.weight_hh)
                getattr(ref, f"bias_ih_{suffix}").copy_(cell.bias_h)
                getattr(ref, f"bias_hh_{suffix}").zero_()
    return ref


def test_elman_matches_a_plain_loop_on_random_weights():
    torch.manual_seed(0)
    rnn = ElmanRNN(3, 4, "tanh", num_layers=1, bidirectional=False, return_sequences=True)
    x = torch.randn(2, 5, 3)
    with torch.no_grad():
        torch.testing.assert_close(rnn(x), _elman_reference(x, [rnn.cells[0]], torch.tanh, reverse=False))


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_elman_matches_torch_rnn(num_layers, bidirectional):
    torch.manual_seed(1)
    rnn = ElmanRNN(3, 4, "tanh", num_layers=num_layers, bidirectional=bidirectional, return_sequences=True)
    ref = _torch_rnn_like(rnn, 3, 4, num_layers, bidirectional)
    x = torch.randn(2, 5, 3)
    with torch.no_grad():
        sequence = rnn(x)
        expected_sequence, h_n = ref(x)
        torch.testing.assert_close(sequence, expected_sequence)
        rnn.return_sequences = False
        final = rnn(x)
    directions = 2 if bidirectional else 1
    # torch's h_n holds the last layer's final state of each direction; the backward one is at t = 0
    torch.testing.assert_close(final, torch.cat(list(h_n[-directions:]), dim=-1))
    assert final.shape == (2, 4 * directions)


def test_elman_bidirectional_final_state_of_the_backward_direction_is_at_t0():
    torch.manual_seed(2)
    rnn = ElmanRNN(2, 3, "tanh", num_layers=1, bidirectional=True, return_sequences=True)
    x = torch.randn(1, 4, 2)
    with torch.no_grad():
        forward = _elman_reference(x, [rnn.cells[0]], torch.tanh, reverse=False)
        backward = _elman_reference(x, [rnn.cells[1]], torch.tanh, reverse=True)
        torch.testing.assert_close(rnn(x), torch.cat([forward, backward], dim=-1))
        rnn.return_sequences = False
        torch.testing.assert_close(rnn(x), torch.cat([forward[:, -1], backward[:, 0]], dim=-1))


def test_elman_two_layers_feed_the_first_layers_sequence_to_the_second():
    torch.manual_seed(3)
    rnn = ElmanRNN(2, 3, "relu", num_layers=2, bidirectional=False, return_sequences=False)
    assert rnn.cells[1].weight_xh.shape == (3, 3)
    x = torch.randn(2, 4, 2)
    with torch.no_grad():
        first = _elman_reference(x, [rnn.cells[0]], torch.relu, reverse=False)
        second = _elman_reference(first, [rnn.cells[1]], torch.relu, reverse=False)
        torch.testing.assert_close(rnn(x), second[:, -1])


def test_simple_rnn_spec_builds_the_elman_network():
    spec = {"input": [5, 3], "layers": [{"simple_rnn": {"units": 4, "bidirectional": True, "num_layers": 2,
                                                         "return_sequences": True}}]}
    model = archlab.build(spec)
    rnn = only_layer(model)
    assert isinstance(rnn, ElmanRNN) and len(rnn.cells) == 4
    assert archlab.parse(spec).root.output.shape == (5, 8)
    ref = _torch_rnn_like(rnn, 3, 4, 2, True)
    x = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x)[0])
    # params: layer 0: 2 * (4*3 + 4*4 + 4); layer 1 reads 8 features: 2 * (4*8 + 4*4 + 4)
    expected = 2 * (12 + 16 + 4) + 2 * (32 + 16 + 4)
    assert model.num_params() == expected == archlab.analyze(spec).total_params


# -- additive attention: e = v^T tanh(W_h h + W_s s + b), alpha = softmax(e), c = sum alpha s --

def _set_attention(att: AdditiveAttention) -> dict[str, torch.Tensor]:
    weights = {
        "W_s": torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]),  # (units=3, dim=2)
        "b": torch.tensor([0.1, -0.2, 0.0]),
        "W_h": torch.tensor([[0.5, 0.5], [-1.0, 0.0], [0.0, 2.0]]),
        "v": torch.tensor([1.0, -1.0, 0.5]),
    }
    with torch.no_grad():
        att.W_s.weight.copy_(weights["W_s"])
        att.W_s.bias.copy_(weights["b"])
        att.W_h.weight.copy_(weights["W_h"])
        att.v.weight.copy_(weights["v"].unsqueeze(0))
    return weights


def _attention_by_hand(states: torch.Tensor, h: torch.Tensor, w: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample: states (T, D), query h (D,); the formula term by term with Python loops."""
    scores = []
    for s in states:
        hidden = [math.tanh(sum(w["W_h"][u, j] * h[j] + w["W_s"][u, j] * s[j] for j in range(len(h))) + w["b"][u])
                  for u in range(len(w["b"]))]
        scores.append(sum(float(w["v"][u]) * hidden[u] for u in range(len(hidden))))
    exps = [math.exp(e) for e in scores]
    alpha = torch.tensor([e / sum(exps) for e in exps])
    context = sum(alpha[t] * states[t] for t in range(len(states)))
    return context, alpha


def test_additive_attention_with_the_last_state_as_query():
    att = AdditiveAttention(2, 3, "last")
    w = _set_attention(att)
    states = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]],
                           [[0.5, 0.5], [2.0, -1.0], [0.0, 0.0]]])  # (B=2, T=3, D=2)
    out = att(states)
    assert out.shape == (2, 2)
    for b in range(2):
        context, alpha = _attention_by_hand(states[b], states[b, -1], w)
        torch.testing.assert_close(out[b], context)
        torch.testing.assert_close(att.last_alpha[b], alpha)
    assert att.last_alpha.shape == (2, 3)
    torch.testing.assert_close(att.last_alpha.sum(dim=1), torch.ones(2))
    assert not att.last_alpha.requires_grad  # kept for explanation, detached from the graph


def test_additive_attention_with_a_learned_query():
    att = AdditiveAttention(2, 3, "learned")
    w = _set_attention(att)
    assert isinstance(att.query, nn.Parameter) and att.query.shape == (2,)
    with torch.no_grad():
        att.query.copy_(torch.tensor([0.3, -0.7]))
    states = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0], [0.2, 0.1]]])
    out = att(states)
    context, alpha = _attention_by_hand(states[0], torch.tensor([0.3, -0.7]), w)
    torch.testing.assert_close(out[0], context)
    torch.testing.assert_close(att.last_alpha[0], alpha)
    torch.testing.assert_close(att.last_alpha.sum(), torch.tensor(1.0))
    # the query is learned: it receives a gradient
    out.sum().backward()
    assert att.query.grad is not None and torch.isfinite(att.query.grad).all()


def test_additive_attention_last_query_differs_from_learned_one():
    torch.manual_seed(5)
    states = torch.randn(1, 4, 2)
    last, learned = AdditiveAttention(2, 3, "last"), AdditiveAttention(2, 3, "learned")
    learned.load_state_dict(last.state_dict() | {"query": torch.tensor([5.0, -5.0])})
    assert not torch.allclose(last(states), learned(states))


def test_additive_attention_spec_builds_the_module_and_keeps_alpha():
    spec = {"input": [4, 2], "layers": [{"additive_attention": {"units": 3, "query": "learned"}}]}
    model = archlab.build(spec)
    att = only_layer(model)
    assert isinstance(att, AdditiveAttention)
    assert archlab.parse(spec).root.output.shape == (2,)
    out = model(torch.randn(3, 4, 2, generator=torch.Generator().manual_seed(6)))
    assert out.shape == (3, 2)
    assert att.last_alpha.shape == (3, 4)
    torch.testing.assert_close(att.last_alpha.sum(dim=1), torch.ones(3))
    assert (att.last_alpha >= 0).all()
    # W_s (3x2 + 3), W_h (3x2), v (3), query (2)
    assert model.num_params() == 6 + 3 + 6 + 3 + 2 == archlab.analyze(spec).total_params
