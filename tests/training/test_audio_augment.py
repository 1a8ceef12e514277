"""augment_audio (the waveform augmentations) measured on known signals, the spec_augment layer's
masks counted, and training with both the same under its seed and when resumed."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy.io import wavfile

import archlab
from archlab.cli import run
from archlab.exceptions import SpecError
from archlab.training import resolve_recipe
from archlab.training._audio_augment import add_noise, change_speed, time_shift
from archlab.training._engine import Engine

RATE, SAMPLES = 8000, 8000


def sine(hz: float, rows: int = 4) -> torch.Tensor:
    t = torch.arange(SAMPLES) / RATE
    return torch.sin(2 * math.pi * hz * t).repeat(rows, 1)  # (rows, samples)


def dominant_hz(x: torch.Tensor) -> float:
    return float(torch.fft.rfft(x).abs().argmax()) * RATE / x.shape[-1]


def test_noise_has_the_drawn_snr() -> None:
    x = 0.5 * sine(440, rows=8)
    noisy = add_noise(x, (20.0, 20.0), torch.Generator().manual_seed(0))
    noise = noisy - x
    snr = 10 * torch.log10(x.pow(2).mean(1) / noise.pow(2).mean(1))
    torch.testing.assert_close(snr, torch.full((8,), 20.0), atol=0.2, rtol=0)
    spread = add_noise(x, (5.0, 30.0), torch.Generator().manual_seed(1)) - x
    snr = 10 * torch.log10(x.pow(2).mean(1) / spread.pow(2).mean(1))
    assert snr.min() > 4.7 and snr.max() < 30.3 and snr.max() - snr.min() > 3  # drawn per sample
    assert torch.equal(add_noise(torch.zeros(2, 100), (10.0, 10.0), torch.Generator()), torch.zeros(2, 100))


def test_shift_moves_the_signal_within_bounds() -> None:
    x = torch.zeros(16, 100)
    x[:, 50] = 1.0  # a click in the middle
    moved = time_shift(x, 0.1, torch.Generator().manual_seed(0))
    where = moved.argmax(1) - 50
    assert moved.sum(1).eq(1).all() and where.abs().max() <= 10 and len(where.unique()) > 3
    rolled = time_shift(torch.arange(10.0)[None], 0.5, torch.Generator().manual_seed(3), fill="roll")
    assert sorted(rolled[0].tolist()) == list(range(10))  # a roll loses nothing
    edge = torch.ones(64, 10)
    cut = time_shift(edge, 0.5, torch.Generator().manual_seed(0))  # zero fill: the shift's samples are zeros
    zeros = (cut == 0).sum(1)
    assert zeros.max() <= 5 and zeros.max() > 0 and set(cut.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("speed", [0.9, 1.1, 1.25])
def test_speed_scales_the_frequency(speed: float) -> None:
    out = change_speed(sine(400.0), (speed, speed), torch.Generator())
    assert out.shape == (4, SAMPLES)
    played = int(SAMPLES / speed) if speed > 1 else SAMPLES  # faster: the end is zero padding
    assert dominant_hz(out[0, :played]) == pytest.approx(400.0 * speed, abs=2.0)
    if speed > 1:
        assert out[:, played + 1:].abs().max() == 0


def test_recipe_ranges_are_checked() -> None:
    cfg = resolve_recipe({"augment_audio": {"shift": 0.1, "noise_snr_db": [10, 30], "speed": [0.9, 1.1]}})
    assert cfg.augment_audio.noise_snr_db == (10, 30) and cfg.augment_audio.shift_fill == "zero"
    with pytest.raises(SpecError, match="low first") as err:
        resolve_recipe({"augment_audio": {"noise_snr_db": [30, 10]}})
    assert err.value.path == "train.augment_audio.noise_snr_db"
    with pytest.raises(SpecError, match="train.augment_audio.speed"):
        resolve_recipe({"augment_audio": {"speed": [0.1, 1.0]}})
    with pytest.raises(SpecError, match="unknown key 'snr'"):
        resolve_recipe({"augment_audio": {"snr": 3}})


def masked(features: int, frames: int, **params: int) -> torch.Tensor:
    """The zeros spec_augment leaves in 300 training samples of ones: (300, features, frames) bool."""
    layer = archlab.build({"name": "masks", "input": [features, frames], "layers": [{"spec_augment": params}]})
    return layer.train()(torch.ones(300, features, frames)) == 0


def test_frequency_masks_zero_whole_bands_of_bounded_width() -> None:
    torch.manual_seed(0)
    zeros = masked(40, 30, freq_masks=1, freq_mask_width=8, time_masks=0)
    rows = zeros.all(dim=2)  # (300, 40): the rows zeroed in every frame
    assert torch.equal(zeros, rows[:, :, None].expand_as(zeros))  # nothing but whole rows
    width = rows.sum(1)
    assert set(width.tolist()) == set(range(9))  # each width 0 .. F drawn
    starts = rows.float().argmax(1)
    band = torch.arange(40)[None] - starts[:, None]
    assert torch.equal(rows, (band >= 0) & (band < width[:, None]))  # one contiguous band each
    two = masked(40, 30, freq_masks=2, freq_mask_width=8, time_masks=0).all(dim=2).sum(1)
    assert two.max() <= 16 and two.float().mean() > width.float().mean()


def test_time_masks_zero_whole_frames_clipped_to_the_length() -> None:
    torch.manual_seed(1)
    zeros = masked(5, 12, freq_masks=0, time_masks=2, time_mask_width=100)  # widths clipped to 12 frames
    cols = zeros.all(dim=1)  # (300, 12)
    assert torch.equal(zeros, cols[:, None, :].expand_as(zeros))
    assert cols.sum(1).max() == 12 and (cols.sum(1) == 0).any()


def test_spec_augment_is_the_identity_in_eval_and_follows_the_global_seed() -> None:
    model = archlab.build({"name": "masks", "input": [10, 20], "layers": ["spec_augment"]})
    x = torch.randn(4, 10, 20)
    assert torch.equal(model.eval()(x), x)
    model.train()
    torch.manual_seed(5)
    first = model(x)
    torch.manual_seed(5)
    assert torch.equal(model(x), first) and not torch.equal(first, x)


SPEC = {"name": "tiny-audio", "input": [256], "task": {"kind": "classification", "classes": 3},
        "layers": [{"log_mel": {"n_fft": 32, "sample_rate": RATE, "n_mels": 8}},
                   {"spec_augment": {"freq_masks": 1, "freq_mask_width": 2, "time_masks": 1, "time_mask_width": 4}},
                   "flatten", {"dense": {"units": 16, "activation": "relu"}}, {"dropout": {"rate": 0.2}},
                   {"dense": {"units": 3, "activation": "softmax"}}]}
AUGMENT = {"shift": 0.1, "noise_snr_db": [5, 20], "speed": [0.9, 1.1]}


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    y = torch.arange(96) % 3
    t = torch.arange(256) / RATE
    x = torch.sin(2 * math.pi * (500 + 1000 * y[:, None]) * t) + 0.1 * torch.randn(96, 256, generator=g)
    return x, y


def engine(run_dir: Path | None, epochs: int, seed: int = 3, **recipe: object) -> Engine:
    torch.manual_seed(0)
    recipe = {"device": "cpu", "epochs": epochs, "batch_size": 16, "seed": seed, "validation_split": 0,
              "augment_audio": AUGMENT, **recipe}
    return Engine(archlab.build(SPEC), resolve_recipe(recipe), "cross_entropy", run_dir=run_dir, verbose=0)


def test_same_seed_same_weights_and_augmentation_matters(helpers) -> None:
    x, y = data()
    runs = []
    for seed, recipe in ((3, {}), (3, {}), (4, {}), (3, {"augment_audio": None})):
        eng = engine(None, 2, seed, **recipe)
        eng.fit(x, y)
        runs.append(helpers.model_weights(eng))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])  # another seed: other draws
    assert not all(torch.equal(runs[0][k], runs[3][k]) for k in runs[0])  # the augmentation reached the batches


def test_resumed_run_ends_with_the_uninterrupted_weights(tmp_path: Path, helpers) -> None:
    helpers.assert_resume_is_exact(tmp_path, engine, *data())


def test_non_waveform_inputs_are_refused_before_training() -> None:
    eng = engine(None, 1)
    with pytest.raises(SpecError, match=r"augment_audio augments waveforms.*\(96, 4, 64\)"):
        eng.fit(torch.zeros(96, 4, 64), torch.zeros(96, dtype=torch.long))
    assert eng.rows == []


def _recordings(root: Path) -> Path:
    for label, hz in (("low", 300.0), ("high", 1200.0)):
        (root / label).mkdir(parents=True)
        for i in range(6):
            wave = 0.5 * torch.sin(2 * math.pi * hz * torch.arange(2000) / RATE)
            wavfile.write(root / label / f"{i}.wav", RATE, (wave.numpy() * 32767).astype(np.int16))
    return root


def test_cli_trains_with_both_augmentations_the_same_twice(tmp_path: Path, helpers) -> None:
    """Through ``archlab train`` (fit_spec seeds torch's RNG for spec_augment): same seed, same weights."""
    root = _recordings(tmp_path / "rec")
    spec = {"name": "aug", "input": [2000], "task": {"kind": "classification", "classes": 2},
            "layers": [{"log_mel": {"n_fft": 64, "sample_rate": RATE, "n_mels": 8}},
                       {"spec_augment": {"freq_masks": 1, "freq_mask_width": 2, "time_masks": 1,
                                         "time_mask_width": 8}},
                       "flatten", {"dense": {"units": 2, "activation": "softmax"}}],
            "train": {"epochs": 2, "batch_size": 4, "device": "cpu", "augment_audio": AUGMENT}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    for out in ("a", "b"):
        assert run(["train", str(tmp_path / "s.yaml"), "--data", f"audio:{root}?rate={RATE}&length=2000",
                    "--out", str(tmp_path / out)]) == 0
    (a,), (b,) = (list((tmp_path / out).glob("*/last.safetensors")) for out in ("a", "b"))
    helpers.assert_same_tensors(a, b)


def test_cli_refuses_augment_audio_on_images_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = {"name": "img", "input": [1, 8, 8], "task": {"kind": "classification", "classes": 10},
            "layers": ["flatten", {"dense": {"units": 10, "activation": "softmax"}}],
            "train": {"data": "digits", "epochs": 1, "device": "cpu", "augment_audio": {"shift": 0.1}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    code = run(["train", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "train.augment_audio" in err and "(N, samples)" in err and "Traceback" not in err
