"""MNIST from its four IDX files (gzip or uncompressed), found locally or downloaded once.

IDX is a tiny format: a 4-byte big-endian magic number (0x00000803 for 3-D uint8 images,
0x00000801 for 1-D uint8 labels), one big-endian uint32 per dimension, then the raw bytes.
Every way a file can be wrong (not gzip, wrong magic, truncated, labels out of range,
counts that disagree, bytes that differ from the published ones) is a DataError naming the
file, because a silently wrong MNIST wastes a whole training run.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from ._dataset import DataError, Dataset
from ._paths import cache_dir, describe_search, find_file
from ._registry import DatasetRequest, find_data_dir, register_dataset

__all__ = ["FILES", "MIRRORS", "read_idx"]

logger = logging.getLogger("archlab")

#: Mirrors of the canonical gzip files, tried in order.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
_IMAGES, _LABELS = 0x00000803, 0x00000801
_SHAPE = (28, 28)
_TIMEOUT_S = 60

#: file stem -> (magic number, SHA-256 of the published .gz, SHA-256 of the uncompressed IDX file).
#: The .gz digests are those the usual mirrors serve; the uncompressed ones let a copy that was
#: recompressed (or never compressed) be checked too.
FILES = {
    "train-images-idx3-ubyte": (_IMAGES, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels-idx1-ubyte": (_LABELS, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images-idx3-ubyte": (_IMAGES, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                               "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte": (_LABELS, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                               "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}
_FIX = "delete it (archlab then downloads it again) or replace it with the original from " + MIRRORS[0]


def _decompress(path: Path, blob: bytes) -> bytes:
    try:
        return gzip.decompress(blob)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a cut-off stream an EOFError
        raise DataError(f"{path}: not a valid gzip file ({exc}); {_FIX}", path) from None


def read_idx(path: Path, magic: int, *, digests: tuple[str, str] | None = None) -> np.ndarray:
    """Read one IDX file (gzip or not) into a uint8 array shaped by its header.

    Args:
        path: the file; gzip is recognised by its content, and a ``.gz`` name must be gzip.
        magic: the magic number the file must have (0x00000803 images, 0x00000801 labels).
        digests: ``(sha256 of the .gz, sha256 of the uncompressed file)`` to check the content
            against, or ``None`` to skip the check.

    Raises:
        DataError: naming the file, for anything that is not a complete IDX file of that kind,
            or whose content differs from the digests.
    """
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})", path) from None
    known_good = False
    if path.suffix == ".gz" or blob[:2] == b"\x1f\x8b":
        # A match of the published .gz proves the content and saves hashing 47 MB; a mismatch
        # proves nothing (the same IDX bytes recompressed differ), so the raw digest decides.
        known_good = digests is not None and hashlib.sha256(blob).hexdigest() == digests[0]
        blob = _decompress(path, blob)
    kind = "images (3-D)" if magic == _IMAGES else "labels (1-D)" if magic == _LABELS else "IDX"
    if len(blob) < 4:
        raise DataError(f"{path}: is {len(blob)} bytes long, too short for an IDX header; {_FIX}", path)
    found = int.from_bytes(blob[:4], "big")
    if found != magic:
        raise DataError(f"{path}: bad magic number 0x{found:08X}, expected 0x{magic:08X} (IDX uint8 {kind}); "
                        f"it is not this MNIST file or it is damaged; {_FIX}", path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise DataError(f"{path}: truncated inside the IDX header ({len(blob)} of {header} bytes); {_FIX}", path)
    dims = tuple(int(d) for d in np.frombuffer(blob, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(blob) != expected:
        extra = len(blob) - expected
        state = "truncated" if extra < 0 else f"{extra} byte{'s' if extra > 1 else ''} too long"
        raise DataError(f"{path}: {state}: the header says {' x '.join(map(str, dims))} values, so the file "
                        f"should hold {expected} bytes, but it holds {len(blob)}; {_FIX}", path)
    if digests is not None and not known_good:
        digest = hashlib.sha256(blob).hexdigest()
        if digest != digests[1]:
            raise DataError(f"{path}: checksum mismatch: the uncompressed content has SHA-256 {digest}, the "
                            f"published MNIST file has {digests[1]}; {_FIX} (or pass verify=False to read "
                            "a modified copy on purpose)", path)
    return np.frombuffer(blob, dtype=np.uint8, offset=header).reshape(dims)


def _read_split(folder: Path, split: str, verify: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images scaled to [0, 1] as (N, 1, 28, 28) float32, and int64 labels, of 'train' or 't10k'."""
    paths = {}
    for kind in ("labels-idx1", "images-idx3"):
        stem = f"{split}-{kind}-ubyte"
        path = find_file(folder, stem)
        if path is None:  # removed between the search and now
            raise DataError(f"{folder / stem}[.gz]: missing; {_FIX}", folder / stem)
        paths[kind] = path
    magic, gz_digest, raw_digest = FILES[f"{split}-labels-idx1-ubyte"]
    labels = read_idx(paths["labels-idx1"], magic, digests=(gz_digest, raw_digest) if verify else None)
    if labels.size and labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise DataError(f"{paths['labels-idx1']}: label {int(labels[bad])} at index {bad} is outside 0-9; "
                        f"it is not an MNIST label file; {_FIX}", paths["labels-idx1"])
    magic, gz_digest, raw_digest = FILES[f"{split}-images-idx3-ubyte"]
    images = read_idx(paths["images-idx3"], magic, digests=(gz_digest, raw_digest) if verify else None)
    if images.shape[1:] != _SHAPE:
        raise DataError(f"{paths['images-idx3']}: images are {images.shape[1]} x {images.shape[2]}, MNIST's are "
                        f"28 x 28; {_FIX}", paths["images-idx3"])
    if len(images) != len(labels):
        raise DataError(f"{paths['images-idx3']} holds {len(images)} images but {paths['labels-idx1']} holds "
                        f"{len(labels)} labels; the two files must come from the same MNIST split; {_FIX}",
                        paths["images-idx3"])
    # One pass from uint8 to float32 (astype followed by a division is 20x slower here).
    x = np.divide(images, np.float32(255), dtype=np.float32)[:, None]  # (N, 28, 28) -> (N, 1, 28, 28)
    return x, labels.astype(np.int64)


def _fetch(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "archlab"})
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:  # noqa: S310 - fixed https URLs
        return response.read()


def _write_atomic(path: Path, blob: bytes) -> None:
    """Write through a temporary file and rename, so an interrupted write never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(blob)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _not_found(request: DatasetRequest, why: str) -> DataError:
    return DataError(f"dataset 'mnist': the MNIST files were not found{why}\n"
                     + describe_search("mnist", request.data_dir, list(FILES)))


def _download(request: DatasetRequest) -> Path:
    """Fetch the missing .gz files into the cache, each checked against its published SHA-256."""
    target = cache_dir() / "mnist"
    for stem, (_magic, gz_digest, _raw) in FILES.items():
        if find_file(target, stem) is not None:
            continue
        name = f"{stem}.gz"
        failures = []
        for mirror in MIRRORS:
            url = mirror + name
            logger.info("downloading %s", url)
            try:
                blob = _fetch(url)
            except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError is an OSError
                failures.append(f"  {url}: {getattr(exc, 'reason', None) or exc}")
                continue
            digest = hashlib.sha256(blob).hexdigest()
            if digest != gz_digest:
                failures.append(f"  {url}: checksum mismatch for {name}: got SHA-256 {digest} "
                                f"({len(blob)} bytes), expected {gz_digest}")
                continue
            try:
                _write_atomic(target / name, blob)
            except OSError as exc:
                raise DataError(f"dataset 'mnist': downloaded {name} but cannot write it to {target} "
                                f"({exc.strerror or exc}); set ARCHLAB_DATA to a writable folder, or pass "
                                "data_dir=", target) from None
            break
        else:
            raise _not_found(request, ", and downloading them failed:\n" + "\n".join(failures))
    return target


@register_dataset("mnist", files=tuple(FILES), modality="image")
def load_mnist(request: DatasetRequest) -> Dataset:
    """MNIST: 60000 train and 10000 test digits, x (N, 1, 28, 28) float32 in [0, 1], y int64 0-9."""
    folder = find_data_dir("mnist", request.data_dir)
    if folder is None:
        if not request.download:
            raise _not_found(request, " (download=False)")
        folder = _download(request)
    x_train, y_train = _read_split(folder, "train", request.verify)
    x_test, y_test = _read_split(folder, "t10k", request.verify)
    return Dataset(request.name, x_train, y_train, x_test, y_test, "classification",
                   tuple(str(d) for d in range(10)), str(folder))
