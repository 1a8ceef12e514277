"""A bidirectional GRU/LSTM over padded input exports to ONNX: torch.export cannot trace the packed
sequences the layer runs in PyTorch, so the export takes an unpacked path with the same outputs."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import archlab
from archlab.deploy import export_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("kind, layers, sequences", [("gru", 2, False), ("lstm", 1, True)])
def test_a_bidirectional_rnn_over_padded_ids_exports_and_matches_the_packed_model(tmp_path, kind, layers,
                                                                                 sequences) -> None:
    spec = {"input": {"shape": [6], "dtype": "long", "pad_id": 0},
            "layers": [{"embedding": {"input_dim": 20, "output_dim": 8}},
                       {kind: {"units": 5, "bidirectional": True, "num_layers": layers, "return_sequences": sequences}},
                       {"dense": {"units": 3}}]}
    torch.manual_seed(0)
    model = archlab.build(spec).eval()
    ids = torch.randint(1, 20, (9, 6))
    ids[1, 3:] = 0
    ids[2, 1:] = 0
    ids[4, 5:] = 0
    ids[5] = 0  # an empty sentence: the packed path keeps its first step
    result = export_model(model, tmp_path / "m.onnx", example=ids[:2], check_inputs=ids)
    assert result.checked_samples == 9 and result.max_abs_diff < 1e-5
    # the file on padded rows: what the packed model computes (the backward direction starts at each
    # sentence's last real id, not at the padding)
    [got] = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"]).run(None, {"input": ids.numpy()})
    with torch.no_grad():
        expected = model(ids).numpy()
        alone = model(ids[1:2, :3]).numpy()  # the sentence of three ids without its padding
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got[1, :3] if sequences else got[1], alone[0], rtol=1e-4, atol=1e-6)
