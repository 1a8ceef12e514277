"""The torch side of the audio feature layers: short-time Fourier transform (torch.stft), the mel
filter bank and the DCT-II, so that training, evaluation, export and analysis all see the features
as part of the model."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["LogMel", "MFCC", "SpecAugment", "Spectrogram", "band_masks", "dct_matrix", "hz_to_mel", "mel_filter_bank",
           "mel_to_hz"]

# Slaney's Auditory Toolbox scale (librosa's default, Whisper's filters): linear up to 1 kHz, then log
_SLANEY_HZ_PER_MEL = 200.0 / 3
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_BREAK_MEL = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL  # 15 mels
_SLANEY_LOG_STEP = math.log(6.4) / 27.0


def hz_to_mel(hz: torch.Tensor, scale: str) -> torch.Tensor:
    """Frequencies in Hz on the mel scale: "htk" (2595·log10(1 + f/700)) or "slaney"."""
    if scale == "htk":
        return 2595.0 * torch.log10(1.0 + hz / 700.0)
    log_part = _SLANEY_BREAK_MEL + torch.log(hz.clamp(min=_SLANEY_BREAK_HZ) / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP
    return torch.where(hz >= _SLANEY_BREAK_HZ, log_part, hz / _SLANEY_HZ_PER_MEL)


def mel_to_hz(mel: torch.Tensor, scale: str) -> torch.Tensor:
    """The inverse of ``hz_to_mel``."""
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    log_part = _SLANEY_BREAK_HZ * torch.exp(_SLANEY_LOG_STEP * (mel - _SLANEY_BREAK_MEL))
    return torch.where(mel >= _SLANEY_BREAK_MEL, log_part, mel * _SLANEY_HZ_PER_MEL)


def mel_filter_bank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float, f_max: float, scale: str,
                    norm: str | None) -> torch.Tensor:
    """(n_mels, n_freqs) triangular filters over the rfft bins 0 .. sample_rate/2, their centres
    evenly spaced in mels (librosa.filters.mel, torchaudio.functional.melscale_fbanks); "slaney"
    norm scales each triangle to unit area (2 / its width in Hz) so wide filters do not outweigh
    narrow ones."""
    fft_hz = torch.linspace(0.0, sample_rate / 2, n_freqs, dtype=torch.float64)
    edges = hz_to_mel(torch.tensor([f_min, f_max], dtype=torch.float64), scale)
    steps = torch.linspace(0.0, 1.0, n_mels + 2, dtype=torch.float64)  # no .item(): the builder also runs on meta
    hz = mel_to_hz(edges[0] + steps * (edges[1] - edges[0]), scale)
    rising = (fft_hz[None, :] - hz[:-2, None]) / (hz[1:-1] - hz[:-2])[:, None]  # (n_mels, n_freqs)
    falling = (hz[2:, None] - fft_hz[None, :]) / (hz[2:] - hz[1:-1])[:, None]
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)
    if norm == "slaney":
        filters = filters * (2.0 / (hz[2:] - hz[:-2]))[:, None]
    return filters.float()


def dct_matrix(n_out: int, n_in: int) -> torch.Tensor:
    """(n_out, n_in) orthonormal DCT-II (scipy.fft.dct(norm="ortho"), as librosa's and torchaudio's
    MFCC take it): row k is cos(pi·k·(n + 1/2) / n_in), scaled to unit length."""
    k = torch.arange(n_out, dtype=torch.float64)[:, None]
    n = torch.arange(n_in, dtype=torch.float64)[None, :]
    basis = torch.cos(math.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    basis[0] /= math.sqrt(2.0)
    return basis.float()


class Spectrogram(nn.Module):
    """|STFT|^power of a batch of waveforms, frequency first so conv1d reads it as channels.

    Input shape: (batch, samples). Output shape: (batch, n_fft // 2 + 1, frames).
    """

    def __init__(self, n_fft: int, hop_length: int, win_length: int, power: int, center: bool) -> None:
        super().__init__()
        self.n_fft, self.hop_length, self.win_length, self.power, self.center = (
            n_fft, hop_length, win_length, power, center)
        # recomputed on build, so not in the state dict; periodic Hann as torchaudio, librosa and scipy
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stft = torch.stft(x, self.n_fft, self.hop_length, self.win_length, self.window, center=self.center,
                          pad_mode="reflect", return_complex=True)  # (B, freqs, frames) complex
        # re² + im² from the real view: no complex abs, which ONNX lacks
        power = torch.view_as_real(stft).pow(2).sum(-1)  # (B, freqs, frames, 2) -> (B, freqs, frames)
        return power if self.power == 2 else power.sqrt()

    def extra_repr(self) -> str:
        return (f"n_fft={self.n_fft}, hop_length={self.hop_length}, win_length={self.win_length}, "
                f"power={self.power}, center={self.center}")


class LogMel(nn.Module):
    """Decibels of a mel spectrogram: 10·log10 of the mel power (20·log10 of magnitudes, power 1),
    floored at ``eps`` ("clamp", Whisper's and torchaudio's AmplitudeToDB) or shifted by it
    ("offset", log(x + eps)); ``top_db`` keeps the top_db decibels below each sample's peak.

    Input shape: (batch, samples). Output shape: (batch, n_mels, frames).
    """

    def __init__(self, spectrogram: Spectrogram, filters: torch.Tensor, log: str, eps: float,
                 top_db: float | None) -> None:
        super().__init__()
        self.spectrogram = spectrogram
        self.register_buffer("filters", filters, persistent=False)  # (n_mels, freqs)
        self.log, self.eps, self.top_db = log, eps, top_db
        self.db_per_decade = 20.0 / spectrogram.power  # 10·log10 of power is 20·log10 of magnitude

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mel = torch.matmul(self.filters, self.spectrogram(x))  # (n_mels, F) @ (B, F, frames) -> (B, n_mels, frames)
        floored = mel.clamp(min=self.eps) if self.log == "clamp" else mel + self.eps
        db = self.db_per_decade * torch.log10(floored)
        if self.top_db is not None:
            peak = db.amax(dim=(-2, -1), keepdim=True)  # (B, 1, 1): each sample's own peak
            db = torch.maximum(db, peak - self.top_db)
        return db

    def extra_repr(self) -> str:
        return f"n_mels={self.filters.shape[0]}, log={self.log!r}, eps={self.eps}, top_db={self.top_db}"


class MFCC(nn.Module):
    """Mel-frequency cepstral coefficients: the orthonormal DCT-II of the log-mel over the mel axis.

    Input shape: (batch, samples). Output shape: (batch, n_mfcc, frames).
    """

    def __init__(self, log_mel: LogMel, n_mfcc: int) -> None:
        super().__init__()
        self.log_mel = log_mel
        self.register_buffer("dct", dct_matrix(n_mfcc, log_mel.filters.shape[0]), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.dct, self.log_mel(x))  # (n_mfcc, n_mels) @ (B, n_mels, frames)


def band_masks(batch: int, length: int, masks: int, max_width: int) -> torch.Tensor:
    """(batch, length) bool, True in each sample's ``masks`` bands: widths uniform in
    0 .. min(max_width, length), starts uniform over where the band fits (SpecAugment's draws),
    from torch's global CPU RNG so that a seeded (or resumed) run draws the same on any device."""
    width = torch.randint(0, min(max_width, length) + 1, (batch, masks))
    start = (torch.rand(batch, masks) * (length - width + 1)).long()  # in 0 .. length - width
    steps = torch.arange(length)[None, None, :]  # (1, 1, length)
    return ((steps >= start[..., None]) & (steps < (start + width)[..., None])).any(dim=1)


class SpecAugment(nn.Module):
    """SpecAugment's frequency and time masks on (batch, features, frames) while training; the identity in eval."""

    def __init__(self, freq_masks: int, freq_mask_width: int, time_masks: int, time_mask_width: int) -> None:
        super().__init__()
        self.freq_masks, self.freq_mask_width = freq_masks, freq_mask_width
        self.time_masks, self.time_mask_width = time_masks, time_mask_width

    def extra_repr(self) -> str:
        return (f"freq_masks={self.freq_masks}, freq_mask_width={self.freq_mask_width}, "
                f"time_masks={self.time_masks}, time_mask_width={self.time_mask_width}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        batch, features, frames = x.shape  # (B, F, T)
        rows = band_masks(batch, features, self.freq_masks, self.freq_mask_width)[:, :, None]  # (B, F, 1)
        cols = band_masks(batch, frames, self.time_masks, self.time_mask_width)[:, None, :]  # (B, 1, T)
        return x.masked_fill((rows | cols).to(x.device), 0.0)
