"""A spec that computes its features with torch.stft exports to ONNX (STFT is an opset-17
operator; torch.onnx writes 18 and up) and ONNX Runtime matches PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from archlab.builder import build
from archlab.deploy import export_model, load_runner

FEATURES = {"n_fft": 128, "sample_rate": 8000, "n_mels": 16, "top_db": 80.0}


@pytest.mark.parametrize("item,opset", [({"log_mel": FEATURES}, None),
                                        ({"mfcc": {**FEATURES, "n_mfcc": 8, "power": 1}}, 18),
                                        ({"spectrogram": {"n_fft": 64, "center": False}}, None)])
def test_stft_features_export_and_onnx_runtime_matches_torch(item, opset, tmp_path):
    torch.manual_seed(0)
    spec = {"input": [800], "layers": [item, "transpose", {"lstm": {"units": 4}}, {"dense": {"units": 3}}]}
    model = build(spec).eval()
    waves = torch.randn(12, 800)
    result = export_model(model, tmp_path / "audio.onnx", example=waves[:2], check_inputs=waves, opset=opset)
    assert result.opset == (opset or 20) and result.max_abs_diff < 1e-5 and result.batch_sizes == (1, 7, 4)
    features = build({"input": [800], "layers": [item]}).eval()  # the features alone, not squashed by the lstm
    export_model(features, tmp_path / "features.onnx", example=waves[:2], check_inputs=waves, opset=opset)
    with torch.no_grad():
        expected = features(waves[:3]).numpy()
    np.testing.assert_allclose(load_runner(tmp_path / "features.onnx")(waves[:3].numpy()), expected,
                               rtol=1e-3, atol=1e-3)
