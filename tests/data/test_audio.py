"""Audio sources: fsdd (counts, split, speakers) and audio: (decoding, resampling, bad files)."""

from __future__ import annotations

import json
import tarfile
import wave
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.io import wavfile

from archlab.cli import run
from archlab.data import DataError, Dataset, load_dataset

from .conftest import SHARED_DATA

needs_fsdd = pytest.mark.skipif(not (SHARED_DATA / "fsdd" / "recordings.tar.gz").is_file(),
                                reason="FSDD archive not present (shared/data/fsdd/recordings.tar.gz)")


def _sine(freq: float, rate: int, seconds: float = 0.5, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


def _write_24bit_stereo(path: Path, left: np.ndarray, right: np.ndarray, rate: int) -> None:
    """A 24-bit PCM stereo file via the stdlib ``wave`` module (scipy cannot write 24-bit)."""
    frames = np.stack([left, right], axis=1)  # (frames, channels)
    ints = np.round(frames * (2 ** 23 - 1)).astype("<i4").reshape(-1)
    raw = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
    with wave.open(str(path), "wb") as file:
        file.setnchannels(2)
        file.setsampwidth(3)
        file.setframerate(rate)
        file.writeframes(raw)


def _folder(tmp_path: Path, per_label: int = 5, rate: int = 8000) -> Path:
    root = tmp_path / "rec"
    for label, freq in (("low", 300.0), ("high", 1200.0)):
        (root / label).mkdir(parents=True)
        for i in range(per_label):
            wavfile.write(root / label / f"{i}.wav", rate, (_sine(freq, rate) * 32767).astype(np.int16))
    return root


@needs_fsdd
def test_fsdd_counts_conventional_split_and_speakers() -> None:
    ds = load_dataset("fsdd", data_dir=SHARED_DATA)
    assert ds.x_train.shape == (2700, 8000) and ds.x_test.shape == (300, 8000)
    assert ds.x_train.dtype == np.float32 and ds.classes == tuple("0123456789")
    assert -1 <= ds.x_train.min() < 0 < ds.x_train.max() <= 1
    speakers = {"george", "jackson", "lucas", "nicolas", "theo", "yweweler"}
    # every speaker on both sides: 50 test (10 digits x indices 0-4) and 450 training recordings each
    for groups, count in ((ds.groups_train, 450), (ds.groups_test, 50)):
        names, counts = np.unique(groups, return_counts=True)
        assert set(names) == speakers and set(counts) == {count}
    assert np.bincount(ds.y_test).tolist() == [30] * 10 and np.bincount(ds.y_train).tolist() == [270] * 10
    # the last 10% of training rows (train's default validation split) hold every digit and speaker
    assert set(ds.y_train[-270:]) == set(range(10)) and set(ds.groups_train[-270:]) == speakers
    # 0_george_0.wav decoded independently (stdlib tarfile + wave): 2,384 int16 samples, then zero padding
    with tarfile.open(SHARED_DATA / "fsdd" / "recordings.tar.gz") as archive, \
            wave.open(archive.extractfile("recordings/0_george_0.wav")) as file:
        expected = np.frombuffer(file.readframes(file.getnframes()), "<i2") / 32768
    assert len(expected) == 2384
    match = [i for i in range(300) if np.allclose(ds.x_test[i, :2384], expected, atol=1e-7)]
    assert len(match) == 1 and ds.y_test[match[0]] == 0 and ds.groups_test[match[0]] == "george"
    assert not np.any(ds.x_test[match[0], 2384:])


@needs_fsdd
def test_fsdd_options_resample_and_length() -> None:
    ds = load_dataset("fsdd?rate=16000&length=4000", data_dir=SHARED_DATA)
    assert ds.input_shape == (4000,) and ds.train_samples == 2700
    assert float(np.abs(ds.x_train).max()) <= 1 and ds.groups_train.shape == (2700,)


@needs_fsdd
def test_fsdd_rejects_unknown_options() -> None:
    with pytest.raises(DataError, match=r"bad option 'rte=16000'.*did you mean 'rate'"):
        load_dataset("fsdd?rte=16000", data_dir=SHARED_DATA)
    with pytest.raises(DataError, match=r"the 'mnist' source takes no '\?' options"):
        load_dataset("mnist?rate=1")


@needs_fsdd
def test_fsdd_test_speaker_holds_that_speaker_out() -> None:
    ds = load_dataset("fsdd?test_speaker=jackson&length=800", data_dir=SHARED_DATA)
    # all 500 of jackson's recordings (10 digits x indices 0-49) are the test split, the 2,500 others train
    assert ds.x_test.shape == (500, 800) and ds.x_train.shape == (2500, 800)
    assert set(ds.groups_test) == {"jackson"} and "jackson" not in set(ds.groups_train)
    assert np.bincount(ds.y_test).tolist() == [50] * 10
    two = load_dataset("fsdd?test_speaker=theo,george&length=800", data_dir=SHARED_DATA)
    assert set(two.groups_test) == {"theo", "george"} and len(two.y_test) == 1000


@needs_fsdd
def test_fsdd_unknown_test_speaker_names_the_speakers() -> None:
    with pytest.raises(DataError, match=r"test_speaker='jakson' is not one of FSDD's speakers \(george, jackson, "
                       r"lucas, nicolas, theo, yweweler\).*did you mean 'jackson'"):
        load_dataset("fsdd?test_speaker=jakson", data_dir=SHARED_DATA)
    with pytest.raises(DataError, match="leaving none to train on"):
        load_dataset("fsdd?test_speaker=george,jackson,lucas,nicolas,theo,yweweler", data_dir=SHARED_DATA)


def test_audio_folder_labels_split_and_resampled_sine(tmp_path: Path) -> None:
    root = _folder(tmp_path, rate=16000)
    ds = load_dataset(f"audio:{root}?rate=8000&length=4000")
    assert ds.classes == ("high", "low") and ds.train_samples == 8 and ds.test_samples == 2
    assert ds.input_shape == (4000,) and ds.groups_train is None
    assert sorted(ds.y_test.tolist()) == [0, 1]  # stratified: one of each class held out
    low = ds.x_train[ds.y_train == 1][0]
    # 0.5 s at 16 kHz resampled to 8 kHz is 4,000 samples; the 300 Hz tone keeps its frequency
    assert _peak_hz(low, 8000) == pytest.approx(300, abs=2)
    assert np.abs(low).max() == pytest.approx(0.5, abs=0.01)


def test_audio_manifest_groups_and_relative_paths(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    lines = ["path,label,group"] + [f"{lab}/{i}.wav,{lab},spk{i % 2}" for lab in ("low", "high") for i in range(5)]
    (root / "list.csv").write_text("\n".join(lines) + "\n")
    ds = load_dataset(f"audio:{root / 'list.csv'}")
    assert ds.input_shape == (8000,) and ds.train_samples + ds.test_samples == 10
    assert set(ds.groups_train) | set(ds.groups_test) == {"spk0", "spk1"}
    assert len(ds.groups_train) == ds.train_samples


def test_stereo_24bit_is_mixed_to_mono_and_scaled(tmp_path: Path) -> None:
    root = tmp_path / "rec" / "a"
    root.mkdir(parents=True)
    left = _sine(440, 8000)
    _write_24bit_stereo(root / "0.wav", left, 0.5 * left, 8000)
    _write_24bit_stereo(root / "1.wav", left, left, 8000)
    ds = load_dataset(f"audio:{root.parent}?length=4000")
    waves = np.concatenate([ds.x_train, ds.x_test])
    amplitudes = sorted(float(np.abs(w).max()) for w in waves)
    # the mean of the two channels: 0.5 * (1 + 0.5) / 2 = 0.375, and 0.5 when both carry the tone
    assert amplitudes == pytest.approx([0.375, 0.5], abs=1e-3)
    assert _peak_hz(waves[0], 8000) == pytest.approx(440, abs=2)


def test_truncated_non_wav_and_empty_files_are_named_or_skipped(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    root = _folder(tmp_path)
    good = (root / "low" / "0.wav").read_bytes()
    (root / "low" / "cut.wav").write_bytes(good[:len(good) // 2])
    with pytest.raises(DataError, match=r"cut\.wav: not a readable WAV file \(Reached EOF prematurely"):
        load_dataset(f"audio:{root}")
    (root / "low" / "cut.wav").unlink()
    wavfile.write(root / "low" / "empty.wav", 8000, np.zeros(0, np.int16))
    with pytest.raises(DataError, match=r"empty\.wav: an empty recording"):
        load_dataset(f"audio:{root}?skip_bad=0")
    (root / "high" / "text.wav").write_text("not audio")
    with pytest.raises(DataError, match=r"text\.wav: not a readable WAV file.*skip_bad=1"):
        load_dataset(f"audio:{root}")
    ds = load_dataset(f"audio:{root}?skip_bad=1")
    assert ds.train_samples + ds.test_samples == 10
    assert "skipped 2 bad recording(s)" in caplog.text


def test_label_folder_without_files_and_bad_options(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    (root / "silent").mkdir()
    with pytest.raises(DataError, match=r"silent: label folder 'silent' holds no \.wav files"):
        load_dataset(f"audio:{root}")
    with pytest.raises(DataError, match=r"option length= is a whole number above 0"):
        load_dataset(f"audio:{root}?length=0")
    with pytest.raises(DataError, match=r"nope is neither a folder of label folders .* nor a manifest"):
        load_dataset(f"audio:{tmp_path / 'nope'}")
    (tmp_path / "bad.csv").write_text("file,class\na.wav,x\n")
    with pytest.raises(DataError, match=r"bad\.csv: a manifest's header is 'path,label'"):
        load_dataset(f"audio:{tmp_path / 'bad.csv'}")


def test_dataset_groups_must_match_the_samples() -> None:
    x, y = np.zeros((4, 2), np.float32), np.array([0, 1, 0, 1])
    ok = Dataset("g", x, y, x, y, "classification", ("a", "b"), "memory",
                 groups_train=np.array(["s1"] * 4), groups_test=np.arange(4))
    assert ok.groups_test.tolist() == [0, 1, 2, 3]
    with pytest.raises(DataError, match=r"groups_test must be an int or str array of one group per sample, \(4,\)"):
        Dataset("g", x, y, x, y, "classification", ("a", "b"), "memory", groups_train=np.arange(4),
                groups_test=np.arange(3))
    with pytest.raises(DataError, match="groups_train and groups_test both"):
        Dataset("g", x, y, x, y, "classification", ("a", "b"), "memory", groups_train=np.arange(4))


def test_cli_train_on_a_bad_recording_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _folder(tmp_path)
    (root / "low" / "broken.wav").write_bytes(b"RIFF")
    spec = {"name": "tiny-audio", "input": [8000], "task": {"kind": "classification", "classes": 2},
            "layers": [{"dense": {"units": 2, "activation": "softmax"}}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    code = run(["train", str(tmp_path / "s.yaml"), "--data", f"audio:{root}", "--epochs", "1",
                "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "broken.wav: not a readable WAV file" in err and "Traceback" not in err


@needs_fsdd
@pytest.mark.usefixtures("one_thread")
def test_cli_trains_a_conv1d_on_fsdd_for_one_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("ARCHLAB_DATA", str(SHARED_DATA))
    spec = {"name": "tiny-fsdd", "input": [8000], "task": {"kind": "classification", "classes": 10},
            "layers": [{"reshape": {"shape": [1, 8000]}},  # (samples,) -> (channels=1, samples) for conv1d
                       {"conv1d": {"filters": 4, "kernel_size": 64, "strides": 16, "activation": "relu"}},
                       "global_avgpool1d", {"dense": {"units": 10, "activation": "softmax"}}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    code = run(["train", str(tmp_path / "s.yaml"), "--data", "fsdd", "--epochs", "1", "--out", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert code == 0, out
    summary = json.loads(next((tmp_path / "runs").glob("*/summary.json")).read_text())
    assert summary["data"] == "fsdd" and summary["test_samples"] == 300
    assert summary["train_samples"] + summary["val_samples"] == 2700
    assert f"accuracy {summary['test']['accuracy']:.4f}" in out


def test_8bit_and_float_files_are_scaled_to_unit_range(tmp_path: Path) -> None:
    root = tmp_path / "rec" / "a"
    root.mkdir(parents=True)
    tone = _sine(440, 8000)
    wavfile.write(root / "u8.wav", 8000, np.round(tone * 128 + 128).astype(np.uint8))  # silence at 128
    wavfile.write(root / "loud.wav", 8000, (3 * tone).astype(np.float32))  # peaks 1.5: clipped to 1
    ds = load_dataset(f"audio:{root.parent}?length=4000")
    peaks = sorted(float(np.abs(w).max()) for w in np.concatenate([ds.x_train, ds.x_test]))
    assert peaks == pytest.approx([0.5, 1.0], abs=0.01)


@needs_fsdd
@pytest.mark.usefixtures("one_thread")
def test_speaker_held_out_validation_and_accuracy_per_speaker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    import torch
    from sklearn.metrics import accuracy_score

    from archlab.training import restore_run

    monkeypatch.setenv("ARCHLAB_DATA", str(SHARED_DATA))
    spec = {"name": "tiny-fsdd", "input": [800], "task": {"kind": "classification", "classes": 10},
            "layers": [{"dense": {"units": 10, "activation": "softmax"}}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    source = "fsdd?length=800"
    code = run(["train", str(tmp_path / "s.yaml"), "--data", source, "--epochs", "1", "--validation", "group",
                "--out", str(tmp_path / "runs"), "--quiet"])
    assert code == 0, capsys.readouterr()
    run_dir = next((tmp_path / "runs").glob("tiny-fsdd-*"))
    summary = json.loads((run_dir / "summary.json").read_text())
    # validation: group with the default 0.1 of 6 speakers holds one speaker's 450 training rows out
    assert (summary["train_samples"], summary["val_samples"]) == (2250, 450)
    capsys.readouterr()
    assert run(["evaluate", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((run_dir / "evaluation-test-best.json").read_text())
    ds = load_dataset(source, data_dir=SHARED_DATA)
    model = restore_run(run_dir, "best").model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(ds.x_test)).argmax(1).numpy()
    assert sorted(report["groups"]) == sorted(set(ds.groups_test))
    for speaker, row in report["groups"].items():
        mine = ds.groups_test == speaker
        assert row["samples"] == 50
        assert row["accuracy"] == pytest.approx(accuracy_score(ds.y_test[mine], predicted[mine]), abs=1e-9)
        assert f"{speaker}" in printed and f"{row['accuracy']:.4f}" in printed
    assert "per group" in printed
