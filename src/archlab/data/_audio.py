"""Audio sources: ``fsdd`` (the Free Spoken Digit Dataset) and ``audio:`` for a user's own recordings.

Every recording becomes one float32 waveform of a fixed number of samples, ``(N, length)``, the
``(samples,)`` input that the feature layers (``spectrogram``, ``log_mel``, ``mfcc``) take: mixed
to mono, scaled to [-1, 1] from its integer or float encoding, resampled to ``rate`` with
``scipy.signal.resample_poly`` when its own rate differs, then cut to its first ``length`` samples
or padded with zeros at the end. Options, after a ``?``: ``rate`` (Hz, default 8000, FSDD's own),
``length`` (samples, default one second at ``rate``) and ``skip_bad=1`` (skip, count and report
unreadable or empty recordings instead of refusing the data set). Each sample carries a group
(``Dataset.groups_train``/``groups_test``): FSDD's speaker, or a manifest's ``group`` column.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import struct
import tarfile
import warnings
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from archlab.exceptions import suggest

from ._dataset import SPLIT_SEED, DataError, Dataset, encode_labels, split_train_test
from ._files import _resolve, _split_options
from ._paths import describe_search, find_file
from ._registry import DatasetRequest, find_data_dir, register_dataset, registry

__all__ = ["AUDIO_OPTIONS", "FSDD_RATE", "FSDD_TEST_INDICES", "AudioOptions", "audio_options", "decode_wav",
           "fit_length", "load_audio", "load_fsdd", "resample"]

logger = logging.getLogger("archlab")

#: FSDD's recordings are 8 kHz mono 16-bit PCM (its README).
FSDD_RATE = 8000
#: FSDD's conventional split (its README): recordings with these indices are the test set.
FSDD_TEST_INDICES = range(5)
_FSDD_ARCHIVE = "recordings.tar"  # read as recordings.tar.gz (find_file adds .gz)
_FSDD_FIX = ("make recordings.tar.gz again: 'tar -czf recordings.tar.gz recordings' of the recordings/ folder of "
             "https://github.com/Jakobovski/free-spoken-digit-dataset (v1.0.10)")
#: The options of ``fsdd?...`` and ``audio:DIR?...``.
AUDIO_OPTIONS = ("rate", "length", "skip_bad")
#: fsdd's options: the audio ones, and the speakers held out as the test split (``test_speaker=a,b``).
_FSDD_OPTIONS = (*AUDIO_OPTIONS, "test_speaker")
_WAV_FIX = "re-export it as a PCM or float WAV file, or pass ?skip_bad=1 to skip unreadable recordings"


@dataclass(frozen=True)
class AudioOptions:
    """How recordings become fixed-length waveforms: the target rate, the length, and whether bad files are skipped."""

    rate: int
    length: int
    skip_bad: bool

    @classmethod
    def parse(cls, request: DatasetRequest, options: dict[str, str], default_rate: int) -> AudioOptions:
        where = f"dataset {request.name!r}"
        values = {}
        for key, default in (("rate", default_rate), ("length", None)):
            text = options.get(key)
            if text is None:
                values[key] = default
                continue
            if not text.isdigit() or int(text) < 1:
                raise DataError(f"{where}: option {key}= is a whole number above 0 ("
                                f"{'Hz' if key == 'rate' else 'samples'}), got {text!r}")
            values[key] = int(text)
        skip = options.get("skip_bad", "0")
        if skip not in ("0", "1"):
            raise DataError(f"{where}: option skip_bad= is 0 or 1, got {skip!r}")
        rate = values["rate"]
        return cls(rate, values["length"] or rate, skip == "1")  # default length: one second


def decode_wav(blob: bytes, name: str, *, fix: str | None = None) -> tuple[np.ndarray, int]:
    """A WAV file's samples as float32 mono in [-1, 1], and its sample rate.

    Integer PCM is scaled by its full range (uint8 is offset by 128; scipy reads 24-bit PCM into
    the top bits of int32, so it scales as 32-bit); float files are clipped to [-1, 1]. Several
    channels are averaged. ``fix``: what a message tells the person to do, for a caller that
    reads one file (predict) rather than a data set, where ``?skip_bad=1`` is the way out.

    Raises:
        DataError: the bytes are not a WAV file, are truncated, or hold no samples (naming ``name``).
    """
    from scipy.io import wavfile  # scipy is slow to import; only audio sources need it

    try:
        with warnings.catch_warnings():
            # scipy only warns when the data ends before its header says; a truncated file is bad, not short
            warnings.simplefilter("error", wavfile.WavFileWarning)
            rate, data = wavfile.read(io.BytesIO(blob))
    except (ValueError, EOFError, struct.error, wavfile.WavFileWarning) as exc:
        raise DataError(f"{name}: not a readable WAV file ({exc}); {fix or _WAV_FIX}", name) from None
    if rate < 1:
        raise DataError(f"{name}: its header gives the sample rate {rate} Hz; {fix or _WAV_FIX}", name)
    if data.size == 0:
        raise DataError(f"{name}: an empty recording (no samples); {fix or 'remove it, or pass ?skip_bad=1'}", name)
    if data.dtype.kind == "u":  # 8-bit PCM is unsigned, silence at 128
        samples = (data.astype(np.float32) - 128) / 128
    elif data.dtype.kind == "i":
        samples = data.astype(np.float32) / float(2 ** (8 * data.dtype.itemsize - 1))
    else:
        samples = np.clip(data.astype(np.float32), -1, 1)
    if samples.ndim == 2:  # (frames, channels) -> (frames,)
        samples = samples.mean(axis=1)
    return samples.astype(np.float32), int(rate)


def resample(samples: np.ndarray, rate: int, to: int) -> np.ndarray:
    """``samples`` at ``rate`` Hz resampled to ``to`` Hz (polyphase, ``scipy.signal.resample_poly``); as they are
    when the rates agree."""
    if rate == to:
        return samples
    from scipy.signal import resample_poly

    step = math.gcd(rate, to)
    # the filter can ring a little past full scale; the waveform stays in [-1, 1]
    return np.clip(resample_poly(samples, to // step, rate // step), -1, 1).astype(np.float32)


def fit_length(samples: np.ndarray, rate: int, options: AudioOptions) -> np.ndarray:
    """Resample ``samples`` from ``rate`` to ``options.rate``, then crop or zero-pad to ``options.length``."""
    samples = resample(samples, rate, options.rate)
    out = np.zeros(options.length, np.float32)
    kept = samples[:options.length]
    out[:len(kept)] = kept
    return out


#: The audio sources' options, by source; both default to FSDD's rate.
_SOURCE_OPTIONS = {"fsdd": _FSDD_OPTIONS, "audio": AUDIO_OPTIONS}


def audio_options(name: str) -> AudioOptions | None:
    """How the data set ``name`` (``fsdd?rate=16000``, ``audio:DIR``) turns recordings into waveforms, read
    from the name alone (no file is opened), so that a single recording can be made the same way;
    None when ``name`` is not an audio source.

    Example:
        >>> audio_options("fsdd?rate=16000")
        AudioOptions(rate=16000, length=16000, skip_bad=False)
        >>> audio_options("digits") is None
        True
    """
    source, argument = registry.parse(name)
    known = _SOURCE_OPTIONS.get(source.name)
    if known is None:
        return None
    request = DatasetRequest(name.strip(), source.name, argument, None)
    return AudioOptions.parse(request, _split_options(request, known)[1], FSDD_RATE)


def _decode_all(recordings: Iterable[tuple[str, bytes]], options: AudioOptions, where: str
                ) -> tuple[np.ndarray, list[int]]:
    """The waveforms ``(N, length)`` of the recordings that decode, and their positions among ``recordings``."""
    waves, kept, bad = [], [], []
    for i, (name, blob) in enumerate(recordings):
        try:
            samples, rate = decode_wav(blob, name)
        except DataError:
            if not options.skip_bad:
                raise
            bad.append(name)
            continue
        waves.append(fit_length(samples, rate, options))
        kept.append(i)
    if bad:
        logger.warning("%s: skipped %d bad recording(s) (skip_bad=1): %s%s", where, len(bad), ", ".join(bad[:5]),
                       ", ..." if len(bad) > 5 else "")
    if not waves:
        raise DataError(f"{where}: no recording could be read ({len(bad)} bad)")
    return np.stack(waves), kept


def _fsdd_members(path: Path) -> list[tuple[str, bytes]]:
    """Every ``*.wav`` of the archive as (name, bytes), in archive order (sorted names)."""
    try:
        with tarfile.open(path, "r:*") as archive:
            return [(f"{path}:{m.name}", archive.extractfile(m).read()) for m in archive
                    if m.isfile() and m.name.endswith(".wav")]
    except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
        raise DataError(f"{path}: cannot be read as a tar archive ({exc}); {_FSDD_FIX}", path) from None


@register_dataset("fsdd", files=(_FSDD_ARCHIVE,), options=True, modality="audio")
def load_fsdd(request: DatasetRequest) -> Dataset:
    """FSDD: 3,000 spoken digits by 6 speakers, x ``(N, length)`` float32, classes "0".."9", group = speaker.

    Read straight from ``fsdd/recordings.tar.gz`` (``data_dir``, ``$ARCHLAB_DATA/fsdd`` or the cache;
    never extracted, never downloaded). The split is the data set's own: recordings 0-4 of every
    speaker and digit are the test set (300), 5-49 the training set (2,700), so every speaker is in
    both. ``fsdd?test_speaker=jackson`` (or ``a,b``) holds speakers out instead: the test split is
    all of their recordings, the training split all of the others'. Each split is in a fixed shuffled
    order (``numpy.random.default_rng(0)``), not the archive's, which is sorted by digit.
    """
    given = _split_options(request, _FSDD_OPTIONS)[1]
    options = AudioOptions.parse(request, given, FSDD_RATE)
    folder = find_data_dir("fsdd", request.data_dir)
    if folder is None:
        raise DataError("dataset 'fsdd': recordings.tar.gz was not found; archlab does not download it: "
                        f"{_FSDD_FIX}.\n" + describe_search("fsdd", request.data_dir, [_FSDD_ARCHIVE]))
    path = find_file(folder, _FSDD_ARCHIVE)
    members = _fsdd_members(path)
    keys = []
    for name, _ in members:
        parts = Path(name.rpartition(":")[2]).stem.split("_")  # {digit}_{speaker}_{index}
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
            raise DataError(f"{name}: not named {{digit}}_{{speaker}}_{{index}}.wav as FSDD's files are; "
                            f"{_FSDD_FIX}", path)
        keys.append((int(parts[0]), parts[1], int(parts[2])))
    if not keys:
        raise DataError(f"{path}: holds no .wav files; {_FSDD_FIX}", path)
    held_out = _test_speakers(given.get("test_speaker"), sorted({k[1] for k in keys}), request.name)
    x, kept = _decode_all(members, options, f"dataset {request.name!r}")
    digits = np.array([keys[i][0] for i in kept], np.int64)
    speakers = np.array([keys[i][1] for i in kept])
    is_test = (np.isin(speakers, held_out) if held_out
               else np.isin([keys[i][2] for i in kept], FSDD_TEST_INDICES))
    # The archive is sorted by digit; a fixed shuffle keeps a validation split of the last rows
    # (train's default) from holding only nines.
    order = np.random.default_rng(SPLIT_SEED).permutation(len(kept))
    train, test = order[~is_test[order]], order[is_test[order]]
    return Dataset(request.name, x[train], digits[train], x[test], digits[test], "classification",
                   tuple(str(d) for d in range(10)), str(path.resolve()),
                   groups_train=speakers[train], groups_test=speakers[test])


def _test_speakers(text: str | None, known: list[str], name: str) -> list[str]:
    """The speakers of ``test_speaker=a,b`` (none without it), each one of ``known``; not all of them,
    which would leave nothing to train on."""
    if text is None:
        return []
    wanted = [s.strip() for s in text.split(",") if s.strip()]
    for speaker in wanted:
        if speaker not in known:
            raise DataError(f"dataset {name!r}: option test_speaker={speaker!r} is not one of FSDD's speakers "
                            f"({', '.join(known)}){suggest(speaker, known)}; e.g. 'fsdd?test_speaker={known[0]}'")
    if set(wanted) >= set(known):
        raise DataError(f"dataset {name!r}: test_speaker= names every speaker ({', '.join(known)}), leaving none "
                        "to train on; hold out fewer")
    return wanted


def _manifest(path: Path) -> tuple[list[Path], list[str], list[str] | None]:
    """The files, labels and groups (None without a ``group`` column) of a ``path,label[,group]`` CSV."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as file:
            rows = [(line, row) for line, row in enumerate(csv.reader(file), 1) if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot be read as a CSV manifest ({exc}); save it as UTF-8 text", path) from None
    header = [c.strip().lower() for c in rows[0][1]] if rows else []
    if header[:2] != ["path", "label"] or not set(header[2:]) <= {"group"}:
        raise DataError(f"{path}: a manifest's header is 'path,label' or 'path,label,group', got "
                        f"{','.join(header) or 'an empty file'}", path)
    files, labels, groups = [], [], []
    for line, row in rows[1:]:
        cells = [c.strip() for c in row]
        if len(cells) != len(header) or not all(cells):
            raise DataError(f"{path}, line {line}: needs {len(header)} non-empty cells ({','.join(header)}), "
                            f"got {row!r}", path)
        file = Path(cells[0]).expanduser()
        files.append(file if file.is_absolute() else path.parent / file)  # relative to the manifest
        labels.append(cells[1])
        groups.append(cells[2] if len(cells) > 2 else "")
    if not files:
        raise DataError(f"{path}: has a header but no recordings", path)
    return files, labels, groups if len(header) > 2 else None


def _label_folders(folder: Path) -> tuple[list[Path], list[str]]:
    """``DIR/<label>/*.wav``: the files and their labels, sorted; a label folder without .wav files is an error."""
    files, labels = [], []
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir())
    if not subfolders:
        raise DataError(f"{folder}: has no label folders; put each class's recordings in DIR/<label>/*.wav, or "
                        "give a manifest: 'audio:manifest.csv' with columns path,label[,group]", folder)
    for sub in subfolders:
        waves = sorted(p for p in sub.iterdir() if p.is_file() and p.suffix.lower() == ".wav")
        if not waves:
            raise DataError(f"{sub}: label folder {sub.name!r} holds no .wav files; add recordings or remove "
                            "the folder", sub)
        files += waves
        labels += [sub.name] * len(waves)
    return files, labels


def _read_files(files: list[Path]) -> Iterable[tuple[str, bytes]]:
    for file in files:
        try:
            yield str(file), file.read_bytes()
        except OSError as exc:
            raise DataError(f"{file}: cannot be read ({exc}); check the path (a manifest's paths are relative "
                            "to the manifest's folder)", file) from None


@register_dataset("audio", argument="DIR", modality="audio")
def load_audio(request: DatasetRequest) -> Dataset:
    """A user's recordings: ``audio:DIR`` (label = sub-folder, ``DIR/<label>/*.wav``) or
    ``audio:manifest.csv`` (columns ``path,label[,group]``); x ``(N, length)`` float32.

    The test set is the usual fixed, stratified 80/20 split (``split_train_test``, as ``csv:`` and
    ``npz:`` files get). Groups are the manifest's ``group`` column; a folder, or a manifest without
    that column, has none (``groups_train`` is None).
    """
    path_text, options_text = _split_options(request, AUDIO_OPTIONS)
    options = AudioOptions.parse(request, options_text, FSDD_RATE)
    where = f"dataset {request.name!r}"
    path = Path(path_text).expanduser()
    if not path.is_dir() and request.data_dir is not None and (request.data_dir / path).is_dir():
        path = request.data_dir / path
    if path.is_dir():
        files, labels = _label_folders(path)
        groups = None
    else:
        if not path.is_file() and not (request.data_dir is not None and (request.data_dir / path).is_file()):
            raise DataError(f"{where}: {path.resolve()} is neither a folder of label folders (DIR/<label>/*.wav) "
                            "nor a manifest (a CSV with columns path,label[,group]); give an existing path", path)
        path = _resolve(path_text, request)
        files, labels, groups = _manifest(path)
    x, kept = _decode_all(_read_files(files), options, where)
    y, classes = encode_labels(np.array([labels[i] for i in kept]))
    index = np.arange(len(y))
    train, test, y_train, y_test = split_train_test(index, y, stratify=True, where=where)
    group = None if groups is None else np.array([groups[i] for i in kept])
    return Dataset(request.name, x[train], y_train, x[test], y_test, "classification", classes, str(path.resolve()),
                   groups_train=None if group is None else group[train],
                   groups_test=None if group is None else group[test])
