"""spatial_dropout: whole channels dropped while training (Tompson et al. 2015), the identity in eval."""

from __future__ import annotations

import pytest
import torch

import archlab
from archlab.exceptions import ShapeError


def _model(shape: list[int], rate: float) -> archlab.ArchlabModel:
    return archlab.build({"input": shape, "layers": [{"spatial_dropout": {"rate": rate}}]})


@pytest.mark.parametrize("shape", [[6, 10], [6, 5, 5]])
def test_a_channel_is_dropped_whole_or_kept_whole_and_scaled(shape):
    rate = 0.5
    model = _model(shape, rate).train()
    x = torch.rand(40, *shape) + 1.0  # no zero of its own
    torch.manual_seed(0)
    y = model(x)
    per_channel = (y / x).flatten(2)  # (B, C, elements): one value per channel, 0 or 1/(1-rate)
    assert torch.allclose(per_channel, per_channel[..., :1].expand_as(per_channel))
    values = sorted({round(v, 4) for v in per_channel[..., 0].flatten().tolist()})
    assert values == [0.0, 1 / (1 - rate)]
    # the same draws as torch's own channel dropout under the same seed
    reference = (torch.nn.Dropout2d if len(shape) == 3 else torch.nn.Dropout1d)(rate).train()
    torch.manual_seed(0)
    torch.testing.assert_close(y, reference(x))


def test_eval_is_the_identity():
    model = _model([3, 4, 4], 0.9).eval()
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(model(x), x)


def test_a_vector_is_refused_with_the_layer_to_use():
    with pytest.raises(ShapeError, match=r"layers\[0\].*needs \(channels, length\) or \(channels, height, width\) "
                                         r"but receives \(6,\).*use 'dropout' on vectors"):
        archlab.parse({"input": [6], "layers": [{"spatial_dropout": {"rate": 0.1}}]})
