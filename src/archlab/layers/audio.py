"""Audio feature layers computed inside the model with torch.stft: ``spectrogram``, ``log_mel``
and ``mfcc`` turn a (samples,) waveform into (features, frames), which conv1d reads as
(channels, length); ``transpose`` (archlab.layers.core) turns it into lstm's (time, features). ``spec_augment``
masks bands and stretches of those features while training (SpecAugment, Park et al. 2019).

FLOPs per frame (docs/analysis.md): the window n_fft multiplies, the FFT 5·N·log2 N real FLOPs
(N = n_fft, the radix-2 Cooley-Tukey count of a complex FFT, rounded to an integer), 3 per bin for
re² + im² (+1 sqrt for power 1); the mel filter bank and the DCT are matrix products, counted as
MACs. torch.stft runs an FFT, not a DFT matrix product, so the FFT is counted as one.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, model_validator

from archlab._lazy import lazy_attributes
from archlab.exceptions import ShapeError

from ._params import Epsilon, PosInt
from ._registry import (
    PASSES_QUANTIZATION,
    Cost,
    InputRule,
    KerasStyle,
    LayerParams,
    LayerType,
    TensorInfo,
    register_layer,
)

if TYPE_CHECKING:
    from torch import nn

    from ._audio_modules import MFCC, LogMel, SpecAugment, Spectrogram

# torch is heavy and validate/schema never build: the modules live in _audio_modules
__getattr__, __dir__ = lazy_attributes(__name__, dict.fromkeys(("LogMel", "MFCC", "SpecAugment", "Spectrogram"),
                                                                "archlab.layers._audio_modules"))

__all__ = ["LogMel", "LogMelParams", "MFCC", "MFCCParams", "SpecAugment", "SpecAugmentParams", "Spectrogram",
           "SpectrogramParams"]

Hz = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class SpectrogramParams(LayerParams):
    n_fft: Annotated[int, Field(ge=2)]
    #: samples between frames; None: n_fft // 4 (torchaudio, librosa)
    hop_length: PosInt | None = None
    #: samples the Hann window spans, centred in the n_fft frame; None: n_fft
    win_length: PosInt | None = None
    window: Literal["hann"] = "hann"
    #: 1: magnitudes, 2: power
    power: Literal[1, 2] = 2
    #: pad n_fft // 2 samples each side (reflected) so frame t is centred on sample t·hop
    center: bool = True

    @model_validator(mode="after")
    def _window_within_frame(self) -> SpectrogramParams:
        if self.win_length is not None and self.win_length > self.n_fft:
            raise ValueError(f"win_length {self.win_length} is longer than n_fft {self.n_fft}: the window must fit "
                             f"in the frame; lower win_length or raise n_fft")
        return self

    @property
    def hop(self) -> int:
        return self.hop_length or self.n_fft // 4 or 1

    @property
    def window_length(self) -> int:
        return self.win_length or self.n_fft

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1


class LogMelParams(SpectrogramParams):
    sample_rate: PosInt
    n_mels: PosInt
    f_min: Hz = 0.0
    #: None: sample_rate / 2 (Nyquist)
    f_max: Hz | None = None
    #: slaney: librosa's default and Whisper's; htk: torchaudio's default
    mel_scale: Literal["slaney", "htk"] = "slaney"
    #: slaney: each filter of unit area (librosa, Whisper); None: peak 1 (torchaudio's default)
    norm: Literal["slaney"] | None = "slaney"
    #: clamp: log(max(x, eps)) (Whisper, torchaudio AmplitudeToDB); offset: log(x + eps)
    log: Literal["clamp", "offset"] = "clamp"
    eps: Epsilon = 1e-10
    #: keep only the top_db decibels below each sample's peak; None: no floor
    top_db: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _band_within_nyquist(self) -> LogMelParams:
        nyquist = self.sample_rate / 2
        if self.upper_hz > nyquist:
            raise ValueError(f"f_max {self.f_max} is above the Nyquist frequency {nyquist:g} of sample_rate "
                             f"{self.sample_rate}; lower f_max or leave it out")
        if self.f_min >= self.upper_hz:
            raise ValueError(f"f_min {self.f_min} must be below f_max {self.upper_hz:g}")
        return self

    @property
    def upper_hz(self) -> float:
        return self.sample_rate / 2 if self.f_max is None else self.f_max


class MFCCParams(LogMelParams):
    n_mfcc: PosInt

    @model_validator(mode="after")
    def _coefficients_within_mels(self) -> MFCCParams:
        if self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc {self.n_mfcc} is more than n_mels {self.n_mels}: the DCT of n_mels values "
                             f"has n_mels coefficients; lower n_mfcc or raise n_mels")
        return self


def frames(p: SpectrogramParams, samples: int) -> int:
    """STFT frames of ``samples`` samples: 1 + (T + 2·pad - n_fft) // hop, pad = n_fft // 2 when centred."""
    pad = p.n_fft // 2 if p.center else 0
    return 1 + (samples + 2 * pad - p.n_fft) // p.hop


def fft_flops(n: int) -> int:
    """Real FLOPs of one n-point FFT by the 5·N·log2 N convention, rounded to an integer."""
    return round(5 * n * math.log2(n))


@register_layer("spectrogram")
class SpectrogramLayer(LayerType):
    """|STFT(x)|^power with a Hann window (torch.stft), frequency bins first.

    Input shape: (samples,). Output shape: (n_fft // 2 + 1, frames).
    """

    Params = SpectrogramParams
    accepts = InputRule(ranks={1: "(samples,)"}, hints={2: "add 'flatten' before it (one channel of samples)"})
    summary = "|STFT|^power of a (samples,) waveform -> (n_fft // 2 + 1, frames), Hann window"
    keras = KerasStyle("Spectrogram", ("n_fft",))

    def features(self, p: SpectrogramParams) -> int:
        return p.bins

    def output(self, p: SpectrogramParams, x: TensorInfo) -> TensorInfo:
        samples = x.shape[0]
        if p.center and samples <= p.n_fft // 2:
            raise ShapeError(f"centred frames reflect n_fft // 2 = {p.n_fft // 2} samples at each end, so the "
                             f"input needs more than that but has {samples}; lower n_fft or set center: false")
        if not p.center and samples < p.n_fft:
            raise ShapeError(f"needs at least n_fft = {p.n_fft} samples for one frame but has {samples}; "
                             "lower n_fft or set center: true")
        return TensorInfo((self.features(p), frames(p, samples)))

    def cost(self, p: SpectrogramParams, x: TensorInfo, y: TensorInfo) -> Cost:
        count = frames(p, x.shape[0])
        per_bin = 3 + (p.power == 1)  # re², im², their sum (+ the square root of magnitudes)
        return Cost(flops=count * (p.n_fft + fft_flops(p.n_fft) + p.bins * per_bin))

    def count_params(self, p: SpectrogramParams, x: TensorInfo) -> int:
        return 0

    def saved_elements(self, p: SpectrogramParams, x: TensorInfo, y: TensorInfo) -> int:
        # the STFT's real and imaginary parts (for the squares), and the output for the square root
        stft = 2 * p.bins * frames(p, x.shape[0])
        return stft + (stft // 2 if p.power == 1 else 0)

    def module(self, p: SpectrogramParams, x: TensorInfo) -> nn.Module:
        from ._audio_modules import Spectrogram

        return Spectrogram(p.n_fft, p.hop, p.window_length, p.power, p.center)


@register_layer("log_mel")
class LogMelLayer(SpectrogramLayer):
    """Log-mel spectrogram in decibels: the spectrogram through a mel filter bank (Slaney or HTK
    scale), then 10·log10 of power (20·log10 of magnitudes), floored at eps, optionally top_db.

    Input shape: (samples,). Output shape: (n_mels, frames).
    """

    Params = LogMelParams
    summary = "decibels of a mel spectrogram (Slaney/HTK filter bank) -> (n_mels, frames)"
    keras = KerasStyle("LogMel", ("n_fft", "sample_rate", "n_mels"))

    def features(self, p: LogMelParams) -> int:
        return p.n_mels

    def cost(self, p: LogMelParams, x: TensorInfo, y: TensorInfo) -> Cost:
        count = frames(p, x.shape[0])
        filter_bank = p.n_mels * p.bins * count
        log = 3 * y.numel  # the clamp (or offset), log10 and the decibel scale
        top_db = 2 * y.numel + 1 if p.top_db is not None else 0  # the peak, peak - top_db, the floor
        return super().cost(p, x, y) + Cost(filter_bank, 2 * filter_bank + log + top_db)

    def saved_elements(self, p: LogMelParams, x: TensorInfo, y: TensorInfo) -> int:
        # the spectrogram's (and the spectrogram itself, the product's input), the mel power for the log
        spectrogram = p.bins * frames(p, x.shape[0])
        return super().saved_elements(p, x, y) + spectrogram + y.numel

    def module(self, p: LogMelParams, x: TensorInfo) -> nn.Module:
        from ._audio_modules import LogMel, mel_filter_bank

        filters = mel_filter_bank(p.bins, p.n_mels, p.sample_rate, p.f_min, p.upper_hz, p.mel_scale, p.norm)
        return LogMel(super().module(p, x), filters, p.log, p.eps, p.top_db)


@register_layer("mfcc")
class MFCCLayer(LogMelLayer):
    """Mel-frequency cepstral coefficients: the orthonormal DCT-II of the log-mel over its mel axis
    (librosa.feature.mfcc, torchaudio.transforms.MFCC), the first n_mfcc kept.

    Input shape: (samples,). Output shape: (n_mfcc, frames).
    """

    Params = MFCCParams
    summary = "DCT-II (ortho) of the log-mel -> (n_mfcc, frames)"
    keras = KerasStyle("MFCC", ("n_fft", "sample_rate", "n_mels", "n_mfcc"))

    def features(self, p: MFCCParams) -> int:
        return p.n_mfcc

    def _log_mel(self, p: MFCCParams, x: TensorInfo) -> TensorInfo:
        return TensorInfo((p.n_mels, frames(p, x.shape[0])))

    def cost(self, p: MFCCParams, x: TensorInfo, y: TensorInfo) -> Cost:
        dct = y.numel * p.n_mels
        return super().cost(p, x, self._log_mel(p, x)) + Cost(dct, 2 * dct)

    def saved_elements(self, p: MFCCParams, x: TensorInfo, y: TensorInfo) -> int:
        return super().saved_elements(p, x, self._log_mel(p, x)) + self._log_mel(p, x).numel  # + the DCT's input

    def module(self, p: MFCCParams, x: TensorInfo) -> nn.Module:
        from ._audio_modules import MFCC

        return MFCC(super().module(p, x), p.n_mfcc)


Count = Annotated[int, Field(ge=0)]


class SpecAugmentParams(LayerParams):
    """Defaults: Park et al.'s LibriSpeech-double policy (LD) without its time-mask ratio."""

    freq_masks: Count = 2
    #: each frequency mask's width is drawn from 0 .. freq_mask_width rows (F), clipped to the rows
    freq_mask_width: PosInt = 27
    time_masks: Count = 2
    #: each time mask's width is drawn from 0 .. time_mask_width frames (T), clipped to the frames
    time_mask_width: PosInt = 100


@register_layer("spec_augment")
class SpecAugmentLayer(LayerType):
    """SpecAugment's masks (Park et al. 2019): while training, zero freq_masks bands of up to
    freq_mask_width feature rows and time_masks stretches of up to time_mask_width frames, each
    width and start drawn per sample from torch's global RNG (which a run seeds and its
    checkpoint keeps, as dropout's); the identity in eval. Masks may overlap.

    Input shape: (features, frames). Output shape: the same.
    """

    Params = SpecAugmentParams
    accepts = InputRule(ranks={2: "(features, frames)"},
                        hints={1: "put it after spectrogram, log_mel or mfcc, which give (features, frames)"})
    summary = "SpecAugment: zeroes random frequency bands and time stretches while training"
    quantization = PASSES_QUANTIZATION
    keras = KerasStyle("SpecAugment")

    def output(self, p: SpecAugmentParams, x: TensorInfo) -> TensorInfo:
        return x

    def cost(self, p, x, y) -> Cost:
        return Cost()  # identity at inference

    def count_params(self, p, x) -> int:
        return 0

    def module(self, p: SpecAugmentParams, x: TensorInfo) -> nn.Module:
        from ._audio_modules import SpecAugment

        return SpecAugment(p.freq_masks, p.freq_mask_width, p.time_masks, p.time_mask_width)
