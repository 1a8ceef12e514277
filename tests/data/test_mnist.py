"""MNIST: the real copy (counts, histograms, pixel mean), gzip and raw files, every kind of
corrupt file, the lookup order, and the download path with a fake urlopen (never the network)."""

from __future__ import annotations

import gzip
import io
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from archlab.data import DataError, find_data_dir, load_dataset
from archlab.data._mnist import FILES, MIRRORS
from archlab.exceptions import ArchlabError

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
STEMS = list(FILES)


# --- the real copy ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_mnist(shared_data):
    """The real MNIST, read once through ARCHLAB_DATA (as a user would point at the shared folder)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARCHLAB_DATA", str(shared_data))
        mp.setattr("platformdirs.user_cache_dir", lambda *a, **k: "/nonexistent/archlab-test-cache")
        return load_dataset("mnist", download=False)


def test_real_mnist_shapes_and_types(real_mnist):
    ds = real_mnist
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10 and ds.task == "classification"
    assert ds.classes == tuple("0123456789")
    assert ds.source.endswith("mnist")
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() == 1.0
    assert "60000 train / 10000 test" in ds.describe()


def test_real_mnist_matches_published_statistics(real_mnist):
    assert np.bincount(real_mnist.y_train, minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(real_mnist.y_test, minlength=10).tolist() == TEST_COUNTS
    assert real_mnist.x_train.mean(dtype=np.float64) == pytest.approx(0.1307, abs=1e-4)
    assert real_mnist.x_train.std(dtype=np.float64) == pytest.approx(0.3081, abs=1e-4)
    assert real_mnist.x_test.mean(dtype=np.float64) == pytest.approx(0.1325, abs=1e-4)


def test_raw_and_recompressed_files_read_the_same(real_mnist, shared_data, tmp_path):
    """Uncompressed files, and a .gz recompressed with other settings, pass verification."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    for stem in STEMS:
        data = gzip.decompress((shared_data / "mnist" / f"{stem}.gz").read_bytes())
        if stem == "train-labels-idx1-ubyte":  # the .gz digest differs; the content digest decides
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data, compresslevel=1, mtime=0))
        else:
            (folder / stem).write_bytes(data)
    ds = load_dataset("mnist", data_dir=tmp_path, download=False)
    assert ds.source == str(folder)
    np.testing.assert_array_equal(ds.x_train, real_mnist.x_train)
    np.testing.assert_array_equal(ds.y_train, real_mnist.y_train)
    np.testing.assert_array_equal(ds.x_test, real_mnist.x_test)
    np.testing.assert_array_equal(ds.y_test, real_mnist.y_test)


def test_real_file_with_one_changed_label_fails_its_checksum(shared_data, tmp_path):
    for stem in STEMS:
        (tmp_path / f"{stem}.gz").symlink_to(shared_data / "mnist" / f"{stem}.gz")
    labels = bytearray(gzip.decompress((shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    labels[-1] = (labels[-1] + 1) % 10  # still a well-formed label file
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(bytes(labels))
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load_dataset("mnist", data_dir=tmp_path)
    assert "t10k-labels-idx1-ubyte" in str(info.value) and "verify=False" in str(info.value)
    assert load_dataset("mnist", data_dir=tmp_path, verify=False).y_test[-1] == labels[-1]


# --- small synthetic files: parsing and corrupt files -------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_tiny_files_read_exactly(make_mnist, tmp_path, gz):
    arrays = make_mnist(tmp_path / "mnist", gz=gz)
    ds = load_dataset("mnist", data_dir=tmp_path, verify=False)
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.x_test.shape == (10, 1, 28, 28)
    np.testing.assert_array_equal(ds.x_train[:, 0] * 255, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert ds.y_train.dtype == np.int64 and ds.x_train.dtype == np.float32
    assert ds.x_train.flags.writeable  # the engine may normalise in place or hand it to torch


def test_gzip_content_without_gz_suffix_is_read(make_mnist, tmp_path):
    make_mnist(tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.rename(tmp_path / "train-labels-idx1-ubyte")
    assert len(load_dataset("mnist", data_dir=tmp_path, verify=False).y_train) == 20


def _rewrite(path: Path, change) -> None:
    """Apply ``change`` to the uncompressed bytes of a .gz file and write it back compressed."""
    path.write_bytes(gzip.compress(change(gzip.decompress(path.read_bytes()))))


CORRUPTIONS = {
    "bad magic": ("train-images-idx3-ubyte", lambda b: (0x0801).to_bytes(4, "big") + b[4:],
                  r"bad magic number 0x00000801, expected 0x00000803"),
    "labels magic": ("t10k-labels-idx1-ubyte", lambda b: b"\x00\x00\x08\x03" + b[4:], "bad magic number"),
    "truncated": ("t10k-images-idx3-ubyte", lambda b: b[:-100], "truncated"),
    "too long": ("train-labels-idx1-ubyte", lambda b: b + b"\x00", "1 byte too long"),
    "cut header": ("train-images-idx3-ubyte", lambda b: b[:10], "truncated inside the IDX header"),
    "empty": ("train-labels-idx1-ubyte", lambda b: b"", "too short for an IDX header"),
    "label out of range": ("train-labels-idx1-ubyte", lambda b: b[:-1] + b"\x0a", "label 10 at index 19"),
    "wrong count": ("t10k-labels-idx1-ubyte", lambda b: (0x0801).to_bytes(4, "big") + (9).to_bytes(4, "big")
                    + b[8:-1], "holds 10 images but .* holds 9 labels"),
    "not 28x28": ("t10k-images-idx3-ubyte",
                  lambda b: b[:8] + (14).to_bytes(4, "big") + (56).to_bytes(4, "big") + b[16:],
                  "14 x 56, MNIST's are 28 x 28"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupt_file_is_a_data_error_naming_it(make_mnist, tmp_path, case):
    stem, change, pattern = CORRUPTIONS[case]
    make_mnist(tmp_path)
    _rewrite(tmp_path / f"{stem}.gz", change)
    with pytest.raises(DataError, match=pattern) as info:
        load_dataset("mnist", data_dir=tmp_path, verify=False)
    assert stem in str(info.value)
    assert info.value.path is not None and Path(info.value.path).name.startswith(stem[:4])
    assert isinstance(info.value, ValueError) and isinstance(info.value, ArchlabError)


@pytest.mark.parametrize("blob", [b"not gzip at all", b"\x1f\x8b\x08\x00broken", None], ids=["garbage", "bad header",
                                                                                              "cut stream"])
def test_bad_gzip_is_a_data_error_naming_the_file(make_mnist, tmp_path, blob):
    make_mnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200] if blob is None else blob)
    with pytest.raises(DataError, match="not a valid gzip file") as info:
        load_dataset("mnist", data_dir=tmp_path, verify=False)
    assert "t10k-images-idx3-ubyte.gz" in str(info.value)


def test_checksum_mismatch_names_the_file(make_mnist, tmp_path):
    make_mnist(tmp_path)
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load_dataset("mnist", data_dir=tmp_path)  # verify=True is the default
    assert "train-labels-idx1-ubyte.gz" in str(info.value)
    assert FILES["train-labels-idx1-ubyte"][2] in str(info.value)  # the expected digest


# --- where the files are looked for -------------------------------------------------------

def test_lookup_order_data_dir_then_env_then_cache(make_mnist, tmp_path, monkeypatch, isolated):
    given, env, cache = tmp_path / "given", tmp_path / "env", isolated
    make_mnist(given)
    make_mnist(env / "mnist")
    make_mnist(cache / "mnist")
    monkeypatch.setenv("ARCHLAB_DATA", str(env))
    assert find_data_dir("mnist", given) == given
    assert find_data_dir("mnist", tmp_path / "nothing-here") == env / "mnist"
    assert find_data_dir("mnist") == env / "mnist"
    monkeypatch.delenv("ARCHLAB_DATA")
    assert find_data_dir("mnist") == cache / "mnist"
    shutil.rmtree(cache / "mnist")
    assert find_data_dir("mnist") is None
    assert find_data_dir("digits") is None  # a source that reads no folder


def test_data_dir_may_be_the_parent_and_incomplete_folders_are_skipped(make_mnist, tmp_path):
    make_mnist(tmp_path / "mnist", gz=False)
    assert find_data_dir("mnist", tmp_path) == tmp_path / "mnist"
    make_mnist(tmp_path)  # now the parent holds the files itself: it comes first
    assert find_data_dir("mnist", tmp_path) == tmp_path
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    assert find_data_dir("mnist", tmp_path) == tmp_path / "mnist"
    assert load_dataset("mnist", data_dir=tmp_path, verify=False).source == str(tmp_path / "mnist")


def test_missing_with_download_false_says_where_to_put_the_files(make_mnist, tmp_path, monkeypatch, isolated):
    make_mnist(tmp_path / "partial")
    (tmp_path / "partial" / "train-images-idx3-ubyte.gz").unlink()
    monkeypatch.setenv("ARCHLAB_DATA", str(tmp_path / "env"))
    calls = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: calls.append(a))
    with pytest.raises(DataError, match=r"download=False") as info:
        load_dataset("mnist", data_dir=tmp_path / "partial", download=False)
    message = str(info.value)
    assert not calls
    assert f"{tmp_path / 'partial'} (data_dir): lacks train-images-idx3-ubyte[.gz]" in message
    assert f"{tmp_path / 'env' / 'mnist'} ($ARCHLAB_DATA/mnist): does not exist" in message
    assert f"{isolated / 'mnist'} (cache)" in message
    assert all(f"{stem}.gz" in message for stem in STEMS) and "ARCHLAB_DATA" in message


# --- downloading (a fake urlopen; the tests never reach the network) -----------------------

def test_offline_download_failure_is_one_clear_error(tmp_path, isolated):
    with pytest.raises(DataError) as info:
        load_dataset("mnist")  # the conftest makes every urlopen raise URLError
    message = str(info.value)
    assert "downloading them failed" in message and "network disabled in tests" in message
    assert all(mirror + "train-images-idx3-ubyte.gz" in message for mirror in MIRRORS)
    assert f"{isolated / 'mnist'} (cache): does not exist" in message
    assert "$ARCHLAB_DATA is not set" in message and "data_dir=" in message
    assert all(f"{stem}.gz" in message for stem in STEMS)
    assert not (isolated / "mnist").exists() or not any((isolated / "mnist").iterdir())


def _serve(monkeypatch, files: dict[str, bytes], urls: list[str]) -> None:
    def fake_urlopen(request, timeout=None):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        urls.append(url)
        name = url.rsplit("/", 1)[-1]
        if name not in files:
            raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)
        return io.BytesIO(files[name])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)


def test_download_verifies_and_stores_in_the_cache(shared_data, monkeypatch, isolated):
    served = {f"{stem}.gz": (shared_data / "mnist" / f"{stem}.gz").read_bytes() for stem in STEMS}
    urls: list[str] = []
    _serve(monkeypatch, served, urls)
    ds = load_dataset("mnist")
    assert ds.source == str(isolated / "mnist") and len(ds.x_train) == 60000
    assert urls == [MIRRORS[0] + name for name in served]  # the first mirror served every file
    assert sorted(p.name for p in (isolated / "mnist").iterdir()) == sorted(served)  # no temp files left
    urls.clear()
    load_dataset("mnist")
    assert urls == []  # found in the cache the second time


def test_download_falls_back_to_the_next_mirror(shared_data, monkeypatch, isolated):
    served = {f"{stem}.gz": (shared_data / "mnist" / f"{stem}.gz").read_bytes() for stem in STEMS}
    urls: list[str] = []

    def flaky(request, timeout=None):
        urls.append(request.full_url)
        if request.full_url.startswith(MIRRORS[0]):
            raise TimeoutError("timed out")
        return io.BytesIO(served[request.full_url.rsplit("/", 1)[-1]])

    monkeypatch.setattr(urllib.request, "urlopen", flaky)
    assert len(load_dataset("mnist").y_test) == 10000
    assert len(urls) == 8


def test_download_with_wrong_bytes_is_a_checksum_error_and_leaves_nothing(monkeypatch, isolated):
    urls: list[str] = []
    _serve(monkeypatch, {f"{stem}.gz": gzip.compress(b"not mnist") for stem in STEMS}, urls)
    with pytest.raises(DataError, match="checksum mismatch for train-images-idx3-ubyte.gz") as info:
        load_dataset("mnist")
    assert FILES["train-images-idx3-ubyte"][1] in str(info.value)  # the expected digest
    assert len(urls) == len(MIRRORS)  # every mirror tried for the first file, then stop
    leftovers = list((isolated / "mnist").iterdir()) if (isolated / "mnist").exists() else []
    assert leftovers == []


def test_download_into_an_unwritable_cache_is_a_data_error(shared_data, monkeypatch, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setattr("platformdirs.user_cache_dir", lambda *a, **k: str(blocker))
    served = {f"{stem}.gz": (shared_data / "mnist" / f"{stem}.gz").read_bytes() for stem in STEMS[:1]}
    _serve(monkeypatch, served, [])
    with pytest.raises(DataError, match="cannot write it to"):
        load_dataset("mnist")
