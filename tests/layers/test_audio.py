"""The audio feature layers against independent implementations: Hugging Face transformers'
numpy audio_utils (mel_filter_bank, spectrogram, window_function), scipy.signal.stft and
scipy.fft.dct; a sine's peak bin; the frame count; transpose between conv1d and lstm."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import scipy.signal
import torch
from transformers import audio_utils

import archlab
from archlab.exceptions import ShapeError

SR = 8000  # FSDD's sample rate


def chirp(samples: int = 2000) -> np.ndarray:
    """A known, broadband signal: a 200 -> 3000 Hz chirp plus a 440 Hz tone."""
    t = np.arange(samples) / SR
    return (scipy.signal.chirp(t, 200, t[-1], 3000) + 0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def run(item: dict, wave: np.ndarray) -> np.ndarray:
    model = archlab.build({"input": [len(wave)], "layers": [item]}).eval()
    with torch.no_grad():
        return model(torch.from_numpy(wave)[None])[0].double().numpy()


def hf_mel(n_fft: int, n_mels: int, scale: str, norm: str | None, f_min=0.0, f_max=SR / 2) -> np.ndarray:
    return audio_utils.mel_filter_bank(n_fft // 2 + 1, n_mels, f_min, f_max, SR, norm=norm, mel_scale=scale)


@pytest.mark.parametrize("scale,norm", [("slaney", "slaney"), ("htk", None), ("htk", "slaney")])
def test_mel_filter_bank_matches_transformers(scale, norm):
    from archlab.layers._audio_modules import mel_filter_bank

    ours = mel_filter_bank(257, 40, SR, 60.0, 3800.0, scale, norm).double().numpy()  # (n_mels, freqs)
    assert ours.shape == (40, 257)
    np.testing.assert_allclose(ours.T, hf_mel(512, 40, scale, norm, 60.0, 3800.0), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("power,center,win", [(2, True, None), (1, False, 200)])
def test_spectrogram_matches_scipy_stft(power, center, win):
    wave, n_fft, hop = chirp(), 256, 64
    ours = run({"spectrogram": {"n_fft": n_fft, "hop_length": hop, "win_length": win, "power": power,
                                "center": center}}, wave)
    window = audio_utils.window_function(win or n_fft, "hann", frame_length=n_fft)  # centred in the frame
    padded = np.pad(wave, n_fft // 2, mode="reflect") if center else wave
    _, _, z = scipy.signal.stft(padded, window=window, nperseg=n_fft, noverlap=n_fft - hop, boundary=None,
                                padded=False, scaling="spectrum")
    reference = np.abs(z * window.sum()) ** power  # undo scipy's 1/sum(window) scaling
    assert ours.shape == reference.shape == (n_fft // 2 + 1, 1 + (len(wave) + 2 * (n_fft // 2 if center else 0)
                                                                  - n_fft) // hop)
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-3 * reference.max())


@pytest.mark.parametrize("extra", [{}, {"mel_scale": "htk", "norm": None, "power": 1, "top_db": 60.0},
                                   {"f_min": 100.0, "f_max": 3500.0, "hop_length": 100, "center": False}])
def test_log_mel_matches_transformers_spectrogram(extra):
    wave, n_fft, n_mels = chirp(), 256, 32
    p = {"n_fft": n_fft, "sample_rate": SR, "n_mels": n_mels, **extra}
    ours = run({"log_mel": p}, wave)
    power = p.get("power", 2)
    reference = audio_utils.spectrogram(
        wave.astype(np.float64), audio_utils.window_function(n_fft, "hann"), n_fft, p.get("hop_length", n_fft // 4),
        power=float(power), center=p.get("center", True),
        mel_filters=hf_mel(n_fft, n_mels, p.get("mel_scale", "slaney"), p.get("norm", "slaney"),
                           p.get("f_min", 0.0), p.get("f_max", SR / 2)),
        log_mel="dB", db_range=p.get("top_db"), dtype=np.float64)
    assert ours.shape == reference.shape
    loud = reference > reference.max() - 60  # float32's FFT rounding shows below that
    np.testing.assert_allclose(ours[loud], reference[loud], atol=5e-3)  # decibels
    np.testing.assert_allclose(ours, reference, rtol=2e-3)


def test_log_offset_is_log_of_mel_plus_eps():
    wave = chirp(1000)
    spec = {"n_fft": 128, "sample_rate": SR, "n_mels": 16}
    clamp = run({"log_mel": spec}, wave)
    offset = run({"log_mel": {**spec, "log": "offset", "eps": 1.0}}, wave)
    mel = 10 ** (clamp / 10)  # undo the decibels: the mel power
    np.testing.assert_allclose(offset, 10 * np.log10(mel + 1.0), rtol=1e-4, atol=1e-4)


def test_mfcc_is_the_ortho_dct_of_the_log_mel():
    wave = chirp()
    spec = {"n_fft": 256, "sample_rate": SR, "n_mels": 32, "top_db": 80.0}
    log_mel = run({"log_mel": spec}, wave)
    mfcc = run({"mfcc": {**spec, "n_mfcc": 13}}, wave)
    reference = scipy.fft.dct(log_mel, type=2, norm="ortho", axis=0)[:13]
    assert mfcc.shape == (13, log_mel.shape[1])
    np.testing.assert_allclose(mfcc, reference, rtol=1e-4, atol=1e-2)


def test_a_sine_peaks_in_its_bin():
    n_fft, freq = 256, 1250.0  # bin 1250 / (8000 / 256) = 40 exactly
    wave = np.sin(2 * np.pi * freq * np.arange(4000) / SR).astype(np.float32)
    ours = run({"spectrogram": {"n_fft": n_fft}}, wave)
    assert (ours[:, 2:-2].argmax(axis=0) == 40).all()  # the end frames hold reflected samples
    mel = run({"log_mel": {"n_fft": n_fft, "sample_rate": SR, "n_mels": 40}}, wave)
    centres = audio_utils.mel_to_hertz(np.linspace(0, audio_utils.hertz_to_mel(SR / 2, "slaney"), 42)[1:-1],
                                       "slaney")
    assert (mel[:, 4:-4].argmax(axis=0) == np.abs(centres - freq).argmin()).all()  # the filter centred nearest


@pytest.mark.parametrize("samples,n_fft,hop,center", [(1000, 256, 64, True), (1000, 256, 100, False),
                                                      (129, 256, 64, True), (8000, 400, 160, True)])
def test_frames_follow_the_stft_formula(samples, n_fft, hop, center):
    item = {"spectrogram": {"n_fft": n_fft, "hop_length": hop, "center": center}}
    shape = tuple(archlab.analyze({"input": [samples], "layers": [item]}).layers[-1].output_shape)
    pad = n_fft // 2 if center else 0
    assert shape == (n_fft // 2 + 1, 1 + (samples + 2 * pad - n_fft) // hop)
    assert shape == tuple(torch.stft(torch.zeros(samples), n_fft, hop, window=torch.hann_window(n_fft),
                                     center=center, return_complex=True).shape)


def test_no_parameters_and_buffers_are_not_saved():
    spec = {"input": [1000], "layers": [{"mfcc": {"n_fft": 128, "sample_rate": SR, "n_mels": 20, "n_mfcc": 10}}]}
    model = archlab.build(spec)
    assert sum(p.numel() for p in model.parameters()) == 0 == archlab.analyze(spec).total_params
    assert model.state_dict() == {}  # window, filters and DCT are rebuilt from the spec


@pytest.mark.parametrize("item,message", [
    ({"spectrogram": {"n_fft": 256}}, "more than that but has 100"),
    ({"spectrogram": {"n_fft": 256, "center": False}}, "at least n_fft = 256 samples"),
    ({"spectrogram": {"n_fft": 64, "win_length": 128}}, "win_length 128 is longer than n_fft 64"),
    ({"log_mel": {"n_fft": 64, "sample_rate": SR, "n_mels": 8, "f_max": 5000.0}}, "above the Nyquist"),
    ({"mfcc": {"n_fft": 64, "sample_rate": SR, "n_mels": 8, "n_mfcc": 9}}, "n_mfcc 9 is more than n_mels 8"),
])
def test_bad_settings_say_what_to_change(item, message):
    with pytest.raises((ShapeError, ValueError), match=message):
        archlab.analyze({"input": [100], "layers": [item]})


def test_transpose_joins_conv1d_and_lstm():
    spec = {"input": [1000], "layers": [{"log_mel": {"n_fft": 128, "sample_rate": SR, "n_mels": 16}},
                                        {"conv1d": {"filters": 8, "kernel_size": 3}}, "transpose",
                                        {"lstm": {"units": 4}}]}
    analysis = archlab.analyze(spec)
    assert [row.output_shape for row in analysis.layers][1:] == [[8, 30], [30, 8], [4]]
    model = archlab.build(spec)
    x = torch.randn(2, 1000)
    features = model.net[1](model.net[0](x))
    assert torch.equal(model.net[2](features), features.transpose(1, 2))
    assert model(x).shape == (2, 4)


def test_transpose_of_higher_rank_and_its_errors():
    analysis = archlab.analyze({"input": [2, 3, 4], "layers": [{"transpose": {"axes": [0, -1]}}]})
    assert analysis.layers[-1].output_shape == [4, 3, 2]
    with pytest.raises(ShapeError, match="same axis"):
        archlab.analyze({"input": [2, 3], "layers": [{"transpose": {"axes": [1, -1]}}]})
    with pytest.raises(ShapeError, match="at least 2 axes"):
        archlab.analyze({"input": [3], "layers": ["transpose"]})


def test_filter_bank_and_dct_macs_match_torchs_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    spec = {"input": [1000], "layers": [{"mfcc": {"n_fft": 128, "sample_rate": SR, "n_mels": 20, "n_mfcc": 10}}]}
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        archlab.build(spec)(torch.randn(1, 1000))
    # torch counts the two matrix products (2 FLOPs per MAC) and not the FFT, which it has no formula for
    assert counter.get_total_flops() == 2 * archlab.analyze(spec).macs
