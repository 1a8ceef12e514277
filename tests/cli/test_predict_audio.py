"""archlab predict on a .wav recording: made as the run's audio data set made its samples (rate, length).

A tiny waveform model learns two tones (300 Hz "low", 1500 Hz "high") from an ``audio:`` folder
written here; predict must name the class of new tones, resampled and cut or padded with a warning.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import wavfile

import archlab
from archlab.cli import run
from archlab.data import audio_options
from archlab.exceptions import SpecError
from archlab.training import load_weights, train
from archlab.training._train import read_input

pytestmark = pytest.mark.usefixtures("one_thread")

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
SAMPLE_LINE = re.compile(r"^sample 0: (\S+) ([0-9.]+), (\S+) ([0-9.]+)$")
RATE, LENGTH = 8000, 2000  # the run's rate and its spec's input: a quarter second

TONES = {
    "name": "tones",
    "input": [LENGTH],
    "layers": [
        {"log_mel": {"sample_rate": RATE, "n_fft": 128, "n_mels": 16, "top_db": 80}},  # (16, frames)
        "global_avgpool1d",  # the bands' mean over time: where the tone's energy is
        {"dense": {"units": 2, "activation": "softmax"}},
    ],
}


def tone(freq: float, rate: int, seconds: float, seed: int) -> np.ndarray:
    """A sine of random phase and level with a little noise, as int16 PCM."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    wave = rng.uniform(0.3, 0.8) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    wave += rng.normal(0, 0.01, len(t))
    return (wave * 32767).astype(np.int16)


@pytest.fixture(scope="module")
def tone_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two epochs on 2 x 12 tones (``audio:DIR?length=2000``: FSDD's default 8 kHz)."""
    root = tmp_path_factory.mktemp("tones")
    for label, freq in (("high", 1500.0), ("low", 300.0)):
        (root / "rec" / label).mkdir(parents=True)
        for i in range(12):
            wavfile.write(root / "rec" / label / f"{i}.wav", RATE, tone(freq * (1 + 0.03 * (i % 3)), RATE, 0.25, i))
    spec = {**TONES, "train": {"data": f"audio:{root / 'rec'}?length={LENGTH}", "epochs": 2, "batch_size": 4,
                               "optimizer": {"name": "adam", "lr": 0.01}, "device": "cpu", "seed": 0}}
    return train(spec, out=root / "runs", verbose=0).run_dir


def predict(capsys: pytest.CaptureFixture[str], run_dir: Path, path: Path) -> tuple[int, str, str]:
    code = run(["predict", str(run_dir), str(path), "--top", "2"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def top_class(out: str) -> tuple[str, float]:
    match = SAMPLE_LINE.match(out.strip())
    assert match, out
    assert abs(float(match.group(2)) + float(match.group(4)) - 1) < 1e-3  # two classes: all the mass
    return match.group(1), float(match.group(2))


def reference(run_dir: Path, wave: np.ndarray) -> np.ndarray:
    """The spec's model with the run's weights on a waveform: the independent reference."""
    model = archlab.build(archlab.load(run_dir / "spec.yaml")).eval()
    load_weights(run_dir / "best.safetensors", model)
    with torch.no_grad():
        return model(torch.from_numpy(wave[None].astype(np.float32))).numpy()[0]


@pytest.mark.parametrize(("label", "freq", "seconds"), [("low", 320.0, 0.4), ("high", 1450.0, 0.1)])
def test_predict_names_the_class_of_a_new_tone(capsys: pytest.CaptureFixture[str], tone_run: Path, tmp_path: Path,
                                               label: str, freq: float, seconds: float) -> None:
    path = tmp_path / f"{label}.wav"
    pcm = tone(freq, RATE, seconds, seed=99)
    wavfile.write(path, RATE, pcm)
    code, out, err = predict(capsys, tone_run, path)
    assert code == 0, err
    name, probability = top_class(out)
    assert name == label and probability > 0.9
    # 3,200 samples are cut, 800 padded, to the spec's 2,000; the rate is the run's, so no resampling
    how = "cut" if len(pcm) > LENGTH else "zero-padded"
    assert err == (f"warning: {path.name}: {how} from {len(pcm)} to {LENGTH} samples ({seconds:.2f} s to 0.25 s at "
                   f"{RATE} Hz), the spec's input\n")
    # the same numbers as the model on the waveform made by hand: scaled by 2**15, cut or padded with zeros
    wave = np.zeros(LENGTH, np.float32)
    wave[:min(len(pcm), LENGTH)] = pcm[:LENGTH] / 32768
    assert probability == pytest.approx(reference(tone_run, wave)[["high", "low"].index(label)], abs=1e-4)


def test_a_16khz_stereo_file_is_resampled_to_the_runs_8khz(capsys: pytest.CaptureFixture[str], tone_run: Path,
                                                           tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    left = tone(1500.0, 16000, 0.25, seed=5)
    wavfile.write(path, 16000, np.stack([left, left // 2], axis=1))  # (frames, channels)
    code, out, err = predict(capsys, tone_run, path)
    assert code == 0, err
    assert top_class(out)[0] == "high"
    # 4,000 samples at 16 kHz become the 2,000 of a quarter second at 8 kHz: no length warning
    assert err == f"warning: {path.name}: resampled from 16000 Hz to 8000 Hz, the rate of the run's data " \
                  f"({archlab.load(tone_run / 'spec.yaml').to_dict()['train']['data']})\n"


def test_read_input_resamples_to_the_rate_of_the_data_name(tmp_path: Path) -> None:
    """A 1 kHz tone at 16 kHz for a run on ``fsdd?rate=4000``: scipy's polyphase filter halves it twice
    (the reference), the tone stays at 1 kHz, and the half second is cut to the spec's 1,000 samples."""
    from scipy.signal import resample_poly

    path = tmp_path / "tone.wav"
    pcm = tone(1000.0, 16000, 0.5, seed=3)
    wavfile.write(path, 16000, pcm)
    with pytest.warns(UserWarning) as caught:
        x = read_input(path, (1000,), "fsdd?rate=4000")
    assert [str(w.message) for w in caught] == [
        "tone.wav: resampled from 16000 Hz to 4000 Hz, the rate of the run's data (fsdd?rate=4000)",
        "tone.wav: cut from 2000 to 1000 samples (0.50 s to 0.25 s at 4000 Hz), the spec's input"]
    assert x.shape == (1, 1000) and x.dtype == np.float32
    expected = np.clip(resample_poly(pcm / 32768, 1, 4), -1, 1)[:1000]
    np.testing.assert_allclose(x[0], expected, atol=1e-6)
    assert np.fft.rfftfreq(1000, 1 / 4000)[np.argmax(np.abs(np.fft.rfft(x[0])))] == 1000.0


def test_a_run_on_no_audio_source_keeps_the_files_rate(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    pcm = tone(500.0, 11025, 0.1, seed=4)
    wavfile.write(path, 11025, pcm)
    with pytest.warns(UserWarning, match=r"tone\.wav: the run's data \(npz:waves\.npz\) is not an audio source "
                      r"and gives no sample rate; the recording is used at its own 11025 Hz"):
        x = read_input(path, (len(pcm),), "npz:waves.npz")
    np.testing.assert_array_equal(x[0], pcm / np.float32(32768))


def test_the_rate_comes_from_the_runs_data_name() -> None:
    assert audio_options("fsdd?rate=16000").rate == 16000
    assert audio_options("fsdd").rate == 8000  # FSDD's own
    assert (audio_options("audio:/any/folder?rate=22050&length=100").rate,
            audio_options("audio:/any/folder?rate=22050&length=100").length) == (22050, 100)
    assert audio_options("digits") is None


def _truncated(path: Path) -> None:
    wavfile.write(path, RATE, tone(300.0, RATE, 0.25, 0))
    path.write_bytes(path.read_bytes()[:1000])


def _empty(path: Path) -> None:
    wavfile.write(path, RATE, np.zeros(0, np.int16))


@pytest.mark.parametrize(("name", "write", "fragment"), [
    ("text.wav", lambda p: p.write_text("hello, not audio"), "text.wav: not a readable WAV file"),
    ("cut.wav", _truncated, "cut.wav: not a readable WAV file"),
    ("empty.wav", _empty, "empty.wav: an empty recording (no samples)"),
    ("digit.flac", lambda p: p.write_bytes(b"fLaC"), "cannot read digit.flac: archlab reads WAV recordings only"),
])
def test_bad_recordings_exit_2_with_one_message(capsys: pytest.CaptureFixture[str], tone_run: Path, tmp_path: Path,
                                                name: str, write, fragment: str) -> None:
    path = tmp_path / name
    write(path)
    code, out, err = predict(capsys, tone_run, path)
    assert code == 2, (out, err)
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert fragment in err, err
    assert "skip_bad" not in err  # the data sets' way out does not apply to one file


def test_a_recording_needs_a_waveform_input(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    wavfile.write(path, RATE, tone(300.0, RATE, 0.25, 0))
    with pytest.raises(SpecError, match=r"needs a spec with a waveform input \(samples,\); this one takes \(1, 8, 8\)"):
        read_input(path, (1, 8, 8), "digits")


FSDD_CNN = {
    "name": "fsdd-small",
    "input": [8000],
    "layers": [
        {"log_mel": {"sample_rate": 8000, "n_fft": 256, "win_length": 200, "hop_length": 80, "n_mels": 40,
                     "top_db": 80}},
        "batchnorm",
        {"conv1d": {"filters": 64, "kernel_size": 5, "padding": "same", "activation": "relu"}},
        "global_avgpool1d",
        {"dense": {"units": 10}},
    ],
}


@pytest.mark.skipif(not (SHARED_DATA / "fsdd" / "recordings.tar.gz").is_file(),
                    reason="FSDD archive not present (shared/data/fsdd/recordings.tar.gz)")
def test_a_run_on_fsdd_predicts_recordings_from_the_archive(capsys: pytest.CaptureFixture[str],
                                                            tmp_path: Path) -> None:
    """Six epochs (about 20 s on two cores; 83% test accuracy), then predict on jackson's ten test
    recordings of each digit, written out of the archive as files."""
    spec = {**FSDD_CNN, "train": {"data": "fsdd", "epochs": 6, "batch_size": 32, "device": "cpu", "seed": 0,
                                  "optimizer": {"name": "adam", "lr": 0.005}}}
    run_dir = train(spec, out=tmp_path / "runs", data_dir=SHARED_DATA, verbose=0).run_dir
    right = 0
    with tarfile.open(SHARED_DATA / "fsdd" / "recordings.tar.gz") as archive:
        for digit in range(10):
            path = tmp_path / f"{digit}_jackson_0.wav"  # index 0: in FSDD's test split, never trained on
            path.write_bytes(archive.extractfile(f"recordings/{path.name}").read())
            code, out, err = run(["predict", str(run_dir), str(path), "--top", "1"]), *capsys.readouterr()
            assert code == 0, err
            name, probability = re.fullmatch(r"sample 0: (\d) ([0-9.]+)\n", out).groups()
            right += name == str(digit)
            # the reference: scipy's int16 samples / 2**15, cut or zero-padded to one second by hand
            pcm = wavfile.read(path)[1]
            wave = np.zeros(8000, np.float32)
            wave[:min(len(pcm), 8000)] = pcm[:8000] / 32768
            expected = torch.softmax(torch.from_numpy(reference(run_dir, wave)), 0)
            assert int(expected.argmax()) == int(name)
            assert float(probability) == pytest.approx(float(expected.max()), abs=1e-4)
    assert right >= 7, f"{right} of 10 digits right"
