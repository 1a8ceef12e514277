"""The speech specs in examples/speech/: pinned counts, agreement with the built modules, and a
waveform in, ten logits out."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import archlab

SPEECH = Path(__file__).resolve().parents[1] / "examples" / "speech"
PINNED = {"bilstm-logmel": 572_116, "cnn-logmel": 104_986}


def test_every_speech_example_is_pinned():
    assert sorted(p.stem for p in SPEECH.glob("*.yaml")) == sorted(PINNED)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_a_second_of_audio_gives_ten_logits_with_the_analysed_parameters(name):
    spec = archlab.load(SPEECH / f"{name}.yaml")
    model = archlab.build(spec).eval()
    assert archlab.analyze(spec).total_params == model.num_params() == PINNED[name]
    with torch.no_grad():
        logits = model(torch.randn(3, 8000) * 0.1)
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
