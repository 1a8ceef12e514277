"""Residual shortcuts for (channels, length) inputs: a 1x1 conv1d projection, like ResNet's 2-D one."""

import torch

import archlab


def spec(strides: int) -> dict:
    return {"input": [4, 16], "layers": [{"residual": {"layers": [
        {"conv1d": {"filters": 8, "kernel_size": 3, "padding": "same", "strides": strides}}]}}]}


def test_channel_change_gets_conv1d_projection_with_length_stride():
    model = archlab.build(spec(2))
    shortcut = model.net[0].shortcut
    conv, norm = shortcut[0], shortcut[1]
    assert isinstance(conv, torch.nn.Conv1d) and conv.kernel_size == (1,) and conv.stride == (2,)
    assert conv.bias is None and isinstance(norm, torch.nn.BatchNorm1d)
    assert model(torch.zeros(2, 4, 16)).shape == (2, 8, 8)
    # body conv 8*4*3 + 8, shortcut conv 8*4 + batchnorm 2*8
    assert archlab.analyze(spec(2)).total_params == 104 + 32 + 16 == sum(p.numel() for p in model.parameters())


def test_projection_output_is_conv_then_norm_of_input():
    model = archlab.build(spec(1)).eval()
    x = torch.randn(3, 4, 16)
    residual = model.net[0]
    expected = residual.layers(x) + residual.shortcut[1](residual.shortcut[0](x))
    torch.testing.assert_close(model(x), expected)


def test_time_feature_sequences_keep_the_dense_projection():
    model = archlab.build({"input": [5, 6], "layers": [{"residual": {"layers": [{"dense": {"units": 3}}]}}]})
    assert isinstance(model.net[0].shortcut[0], torch.nn.Linear)
    assert model(torch.zeros(2, 5, 6)).shape == (2, 5, 3)
