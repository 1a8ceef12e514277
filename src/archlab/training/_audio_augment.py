"""``augment_audio``: waveform augmentation of (N, samples) training batches (speed perturbation,
time shift, additive noise at a random SNR), drawn from the engine's generator, whose state the
checkpoint keeps, so a run is the same under its seed and a resumed run draws what it would have.
SpecAugment's masks act on the features instead: the ``spec_augment`` layer (archlab.layers.audio)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ._callbacks import Callback

if TYPE_CHECKING:
    from ._engine import Engine
    from ._recipe import AudioAugmentConfig

__all__ = ["AudioAugment", "add_noise", "augment_waveforms", "change_speed", "time_shift"]


def _uniform(low: float, high: float, rows: int, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(rows, generator=generator)


def time_shift(x: torch.Tensor, max_fraction: float, generator: torch.Generator, fill: str = "zero") -> torch.Tensor:
    """Move each row by a whole number of samples drawn from [-max_fraction·T, max_fraction·T]:
    samples moved past an end are dropped and zeros come in (fill zero), or wrap round (fill roll)."""
    rows, length = x.shape  # (N, T)
    limit = int(max_fraction * length)
    offsets = torch.randint(-limit, limit + 1, (rows,), generator=generator).to(x.device)
    source = torch.arange(length, device=x.device) - offsets[:, None]  # (N, T): where each output sample comes from
    if fill == "roll":
        return x.gather(1, source % length)
    inside = (source >= 0) & (source < length)
    return x.gather(1, source.clamp(0, length - 1)) * inside


def add_noise(x: torch.Tensor, snr_db: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """Add white Gaussian noise to each row at an SNR drawn from [low, high] dB: noise power =
    signal power / 10^(snr/10), the signal's power its mean square (a silent row stays silent)."""
    rows = x.shape[0]  # (N, T)
    snr = _uniform(*snr_db, rows, generator).to(x.device)
    power = x.pow(2).mean(dim=1)
    scale = (power / 10 ** (snr / 10)).sqrt()[:, None]  # (N, 1): the noise's standard deviation
    return x + scale * torch.randn(x.shape, generator=generator).to(x.device, x.dtype)


def change_speed(x: torch.Tensor, factors: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """Play each row at a speed drawn from [low, high] (Ko et al. 2015): output sample t is the
    input at t·speed, linearly interpolated (torch's grid_sample), zeros past the input's end, so
    the length stays T; pitch moves with speed (frequencies scale by it). No anti-aliasing filter:
    speeding up folds content above Nyquist / speed back."""
    rows, length = x.shape  # (N, T)
    speed = _uniform(*factors, rows, generator).to(x.device, x.dtype)
    position = torch.arange(length, device=x.device, dtype=x.dtype)[None, :] * speed[:, None]  # (N, T) in samples
    grid = torch.stack([2 * position / max(length - 1, 1) - 1, torch.zeros_like(position)], dim=-1)  # (N, T, 2)
    out = nn.functional.grid_sample(x[:, None, None, :], grid[:, None], mode="bilinear", padding_mode="zeros",
                                    align_corners=True)  # (N, 1, 1, T)
    return out[:, 0, 0]


def augment_waveforms(x: torch.Tensor, config: AudioAugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Speed, then shift, then noise (last, so that the SNR is the one asked of the final signal)."""
    if config.speed is not None:
        x = change_speed(x, config.speed, generator)
    if config.shift:
        x = time_shift(x, config.shift, generator, config.shift_fill)
    if config.noise_snr_db is not None:
        x = add_noise(x, config.noise_snr_db, generator)
    return x


class AudioAugment(Callback):
    """``augment_audio``: each training batch of waveforms augmented (``augment_waveforms``)."""

    def on_batch(self, engine: Engine, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return augment_waveforms(xb, engine.recipe.augment_audio, engine.generator), yb
