"""Pairings A+B: the rule (same label, drawn without replacement, train/test kept apart, seeded) on tiny
registered sources, the errors, and the real fsdd+mnist (skipped without the data)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from archlab.cli import run
from archlab.data import DataError, Dataset, TextDataset, TextSplit, load_dataset, register_dataset, registry
from archlab.data._paired import Part, pair_datasets

from .conftest import SHARED_DATA

needs_data = pytest.mark.skipif(
    not ((SHARED_DATA / "fsdd" / "recordings.tar.gz").is_file() and (SHARED_DATA / "mnist").is_dir()),
    reason="FSDD or MNIST not present (shared/data/fsdd/recordings.tar.gz, shared/data/mnist)")


def _indexed(name: str, classes: tuple[str, ...], y_train: list[int], y_test: list[int], shape: tuple[int, ...],
             task: str = "classification", groups: bool = False) -> Dataset:
    """A data set whose sample i of a split is filled with i (train) or 1000 + i (test), so a pair's
    sample says which one it is."""
    def x(n: int, offset: int) -> np.ndarray:
        return np.broadcast_to((offset + np.arange(n, dtype=np.float32)).reshape(-1, *[1] * len(shape)),
                               (n, *shape)).copy()
    g_train = np.array([f"g{i % 2}" for i in range(len(y_train))]) if groups else None
    g_test = np.array([f"g{i % 2}" for i in range(len(y_test))]) if groups else None
    return Dataset(name, x(len(y_train), 0), np.array(y_train), x(len(y_test), 1000), np.array(y_test), task,
                   classes, f"memory:{name}", groups_train=g_train, groups_test=g_test)


#: The first part: 3 classes, 4 training and 2 test samples of each.
WAVES = dict(classes=("a", "b", "c"), y_train=[0, 1, 2] * 4, y_test=[2, 1, 0] * 2, shape=(3,))
#: The second part: the same class names in another id order, 10 training and 3 test samples of each.
PICS = dict(classes=("c", "b", "a"), y_train=[0, 1, 2] * 10, y_test=[0, 1, 2] * 3, shape=(1, 2, 2), groups=True)
LOADS: list[str] = []


@pytest.fixture
def sources() -> Iterator[None]:
    """Tiny sources: toy-wave (modality wave), toy-pic (pic), toy-pic2 (pic), toy-few (1 sample of 'a'),
    toy-two (2 classes), toy-reg (regression), toy-text (sentences), toy-tab (modality toy_tab)."""
    def source(name: str, make, modality: str | None = None) -> None:
        def load(request):
            LOADS.append(request.name)
            return make(request.name)
        register_dataset(name, modality=modality, override=True)(load)

    source("toy-wave", lambda n: _indexed(n, **WAVES), "wave")
    source("toy-pic", lambda n: _indexed(n, **PICS), "pic")
    source("toy-pic2", lambda n: _indexed(n, **PICS), "pic")
    source("toy-few", lambda n: _indexed(n, ("a", "b", "c"), [0, 1, 1, 1, 1, 2, 2, 2, 2], [0, 1, 2, 0, 1, 2],
                                         (2,)), "few")
    source("toy-two", lambda n: _indexed(n, ("a", "b"), [0, 1] * 4, [0, 1], (2,)), "two")
    source("toy-reg", lambda n: Dataset(n, np.zeros((4, 2), np.float32), np.zeros(4, np.float32),
                                        np.zeros((2, 2), np.float32), np.zeros(2, np.float32), "regression",
                                        None, "memory"), "reg")
    source("toy-text", lambda n: TextDataset(n, "language_model", {"train": TextSplit(("a b", "c d"))}, "memory"),
           "text")
    source("toy-tab", lambda n: _indexed(n, **WAVES))  # default modality: the name, '-' read as '_'
    LOADS.clear()
    yield
    for name in ("toy-wave", "toy-pic", "toy-pic2", "toy-few", "toy-two", "toy-reg", "toy-text", "toy-tab"):
        registry.unregister(name)


def _index(x: np.ndarray) -> np.ndarray:
    """Which sample each row is (see ``_indexed``)."""
    return x.reshape(len(x), -1)[:, 0].astype(np.int64)


@pytest.mark.usefixtures("sources")
def test_each_sample_gets_one_of_the_same_label_without_replacement_and_splits_kept_apart() -> None:
    ds = load_dataset("toy-wave+toy-pic")
    wave, pic = _indexed("w", **WAVES), _indexed("p", **PICS)
    assert list(ds.x_train) == ["wave", "pic"] and ds.input_shapes == {"wave": (3,), "pic": (1, 2, 2)}
    assert ds.classes == ("a", "b", "c") and ds.source == "memory:toy-wave + memory:toy-pic"
    # the first part drives: its inputs, targets and order unchanged
    np.testing.assert_array_equal(ds.x_train["wave"], wave.x_train)
    np.testing.assert_array_equal(ds.y_test, wave.y_test)
    for split, first_y, other_y, offset in (("train", ds.y_train, pic.y_train, 0),
                                            ("test", ds.y_test, pic.y_test, 1000)):
        chosen = _index(getattr(ds, f"x_{split}")["pic"]) - offset
        assert chosen.min() >= 0 and chosen.max() < len(other_y)  # train from train, test from test
        assert len(set(chosen.tolist())) == len(chosen)  # no sample of the second part twice
        # matched by class NAME: the second part numbers its classes the other way round
        assert [ds.classes[c] for c in first_y] == [pic.classes[c] for c in other_y[chosen]]
    # the groups come from the part that has them, carried with its drawn samples
    np.testing.assert_array_equal(ds.groups_train, pic.groups_train[_index(ds.x_train["pic"])])


@pytest.mark.usefixtures("sources")
def test_the_same_name_gives_the_same_pairs_and_the_seed_decides_them() -> None:
    one, two = load_dataset("toy-wave+toy-pic"), load_dataset(" toy-wave + toy-pic ")
    np.testing.assert_array_equal(one.x_train["pic"], two.x_train["pic"])
    np.testing.assert_array_equal(one.x_test["pic"], two.x_test["pic"])
    parts = [Part("toy-wave", "wave", _indexed("w", **WAVES)), Part("toy-pic", "pic", _indexed("p", **PICS))]
    other = pair_datasets("w+p", parts, seed=1)
    assert not np.array_equal(_index(other.x_train["pic"]), _index(one.x_train["pic"]))


@pytest.mark.usefixtures("sources")
def test_three_parts_each_paired_with_the_first() -> None:
    ds = load_dataset("toy-pic+toy-wave+toy-tab")
    assert list(ds.x_train) == ["pic", "wave", "toy_tab"] and ds.train_samples == 30
    wave = _indexed("w", **WAVES)
    for key in ("wave", "toy_tab"):
        chosen = _index(ds.x_train[key])
        assert [ds.classes[c] for c in ds.y_train] == [wave.classes[c] for c in wave.y_train[chosen]]
        # the first part has 10 of each class, the others 4: all 4 are used, then some again
        assert len(set(chosen.tolist())) == 12


@pytest.mark.usefixtures("sources")
def test_too_few_of_a_label_uses_each_then_draws_with_replacement_and_warns(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="archlab"):
        ds = load_dataset("toy-wave+toy-few")
    few = _indexed("f", ("a", "b", "c"), [0, 1, 1, 1, 1, 2, 2, 2, 2], [0, 1, 2, 0, 1, 2], (2,))
    chosen = _index(ds.x_train["few"])
    assert [ds.classes[c] for c in ds.y_train] == [few.classes[c] for c in few.y_train[chosen]]
    assert chosen[ds.y_train == 0].tolist() == [0, 0, 0, 0]  # the only 'a', four times
    assert len(set(chosen[ds.y_train == 1].tolist())) == 4  # 'b' had enough: no repeat
    assert ("part 'toy-few', train split, has 1 sample(s) of label 'a' for the first part's 4: drawing 3"
            in caplog.text) and "test split" not in caplog.text


@pytest.mark.usefixtures("sources")
@pytest.mark.parametrize(("name", "pattern"), [
    ("toy-wave+toy-two", r"part 'toy-two' lacks the label\(s\) c of part 'toy-wave'; a pairing matches samples by "
                         r"class name"),
    ("toy-two+toy-wave", r"part 'toy-two' lacks the label\(s\) c of part 'toy-wave'"),
    ("toy-wave+toy-reg", r"part 'toy-reg' is a regression data set; a pairing joins classification data sets"),
    ("toy-text+toy-wave", r"part 'toy-text' is a text data set"),
])
def test_parts_that_cannot_be_paired_are_named(name: str, pattern: str) -> None:
    with pytest.raises(DataError, match=f"dataset '{re.escape(name)}': {pattern}"):
        load_dataset(name)


@pytest.mark.usefixtures("sources")
@pytest.mark.parametrize(("name", "pattern"), [
    ("toy-pic+toy-wave+toy-pic2", r"parts 'toy-pic' and 'toy-pic2' are both of modality 'pic'"),
    ("toy-wave+", r"'toy-wave\+', part 2 of 2 is empty; a pairing is written A\+B"),
    ("+toy-wave", r"part 1 of 2 is empty"),
    ("toy-wave++toy-pic", r"part 2 of 3 is empty"),
    ("toy-wave+toy-picc", r"'toy-wave\+toy-picc', part 2 of 2: unknown dataset 'toy-picc'; did you mean 'toy-pic'"),
    ("toy-wave+digits:x", r"part 2 of 2: dataset 'digits:x': the 'digits' source takes no argument"),
])
def test_bad_pairing_names_fail_before_any_part_is_loaded(name: str, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        load_dataset(name)
    assert LOADS == []


def test_a_plus_inside_a_path_stays_in_the_path_unless_a_source_follows() -> None:
    assert [text for text, _, _ in registry.parse_parts("csv:data/a+b.csv")] == ["csv:data/a+b.csv"]
    assert [text for text, _, _ in registry.parse_parts("audio:my+dir?rate=8000")] == ["audio:my+dir?rate=8000"]
    assert [text for text, _, _ in registry.parse_parts("audio:my+dir+mnist")] == ["audio:my+dir", "mnist"]
    assert [text for text, _, _ in registry.parse_parts("fsdd?test_speaker=george+mnist")] == [
        "fsdd?test_speaker=george", "mnist"]


def test_a_modality_is_an_input_name() -> None:
    with pytest.raises(DataError, match=r"'toy-bad': modality is an input name .* got '2d'"):
        register_dataset("toy-bad", modality="2d")(lambda request: None)
    assert "toy-bad" not in registry


def test_cli_train_on_an_unknown_part_exits_2_with_the_suggestion(tmp_path: Path, capsys) -> None:
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(_FUSION))
    code = run(["train", str(tmp_path / "s.yaml"), "--data", "fsdd+mnsit", "--epochs", "1",
                "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "part 2 of 2: unknown dataset 'mnsit'; did you mean 'mnist'?" in err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()


def _digests(x: np.ndarray) -> list[bytes]:
    return [hashlib.sha1(row.tobytes()).digest() for row in x]


@needs_data
def test_fsdd_mnist_pairs_each_recording_with_an_image_of_its_digit(monkeypatch) -> None:
    monkeypatch.setenv("ARCHLAB_DATA", str(SHARED_DATA))
    ds, fsdd, mnist = load_dataset("fsdd+mnist"), load_dataset("fsdd"), load_dataset("mnist")
    assert (ds.train_samples, ds.test_samples) == (2700, 300)
    assert ds.input_shapes == {"audio": (8000,), "image": (1, 28, 28)}
    assert ds.x_train["audio"].dtype == ds.x_train["image"].dtype == np.float32
    np.testing.assert_array_equal(ds.x_train["audio"], fsdd.x_train)
    np.testing.assert_array_equal(ds.groups_train, fsdd.groups_train)
    np.testing.assert_array_equal(ds.groups_test, fsdd.groups_test)
    # find each paired image among MNIST's own images by its bytes: an independent check of the draw
    where = {split: {d: i for i, d in enumerate(_digests(x))} for split, x in (("train", mnist.x_train),
                                                                              ("test", mnist.x_test))}
    found = {}
    for split, y_mnist in (("train", mnist.y_train), ("test", mnist.y_test)):
        chosen = np.array([where[split][d] for d in _digests(getattr(ds, f"x_{split}")["image"])])
        assert (y_mnist[chosen] == getattr(ds, f"y_{split}")).all()  # every pair's two labels equal
        assert len(set(chosen.tolist())) == len(chosen)  # no image twice within the split
        found[split] = set(_digests(getattr(ds, f"x_{split}")["image"]))
    assert not found["train"] & found["test"]  # no image in both train and test
    again = load_dataset("fsdd+mnist")
    np.testing.assert_array_equal(again.x_train["image"], ds.x_train["image"])
    np.testing.assert_array_equal(again.x_test["image"], ds.x_test["image"])


@needs_data
def test_fsdd_speaker_held_out_pairing_keeps_its_options(monkeypatch) -> None:
    monkeypatch.setenv("ARCHLAB_DATA", str(SHARED_DATA))
    ds = load_dataset("fsdd?test_speaker=george&length=800+mnist")
    assert (ds.train_samples, ds.test_samples) == (2500, 500) and ds.input_shapes["audio"] == (800,)
    assert set(ds.groups_test.tolist()) == {"george"} and "george" not in set(ds.groups_train.tolist())


_FUSION = {"name": "tiny-fusion", "inputs": {"audio": [800], "image": [1, 28, 28]},
           "task": {"kind": "classification", "classes": 10},
           "graph": {"a": {"from": "audio", "layers": [{"dense": {"units": 8, "activation": "relu"}}]},
                     "i": {"from": "image", "layers": ["flatten",  # (1, 28, 28) -> (784,)
                                                       {"dense": {"units": 8, "activation": "relu"}}]},
                     "f": {"from": ["a", "i"], "merge": "concat",  # (8,) + (8,) -> (16,)
                           "layers": [{"dense": {"units": 10, "activation": "softmax"}}]}},
           "outputs": "f"}


@needs_data
@pytest.mark.usefixtures("one_thread")
def test_cli_shows_and_trains_a_fusion_spec_on_fsdd_mnist(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ARCHLAB_DATA", str(SHARED_DATA))
    assert run(["data", "show", "fsdd+mnist"]) == 0
    out = capsys.readouterr().out
    assert "fsdd+mnist: classification, inputs audio (8000,), image (1, 28, 28), 2700 train / 300 test" in out
    assert "input image: (1, 28, 28) float32" in out and "groups test: george 50, jackson 50" in out
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(_FUSION))
    name = "fsdd?length=800+mnist"
    code = run(["train", str(tmp_path / "s.yaml"), "--data", name, "--epochs", "1", "--out", str(tmp_path / "runs"),
                "--quiet"])
    assert code == 0, capsys.readouterr()
    summary = json.loads(next((tmp_path / "runs").glob("*/summary.json")).read_text())
    assert summary["data"] == name and summary["test_samples"] == 300
    assert summary["train_samples"] + summary["val_samples"] == 2700
    assert 0 <= summary["test"]["accuracy"] <= 1


@pytest.mark.usefixtures("sources")
def test_a_pairing_converts_to_a_folder_of_named_npy_inputs(tmp_path: Path) -> None:
    from archlab.data import write_npy_dir

    ds = load_dataset("toy-wave+toy-pic")
    back = load_dataset(f"npy:{write_npy_dir('toy-wave+toy-pic', tmp_path / 'paired')}")
    assert back.input_shapes == ds.input_shapes and back.classes == ds.classes
    for key in ds.x_train:
        np.testing.assert_array_equal(back.x_train[key], ds.x_train[key])
        np.testing.assert_array_equal(back.x_test[key], ds.x_test[key])
    np.testing.assert_array_equal(back.y_train, ds.y_train)


def test_a_split_without_a_class_the_first_part_needs_is_refused() -> None:
    lacking = _indexed("p", ("a", "b", "c"), [0, 1, 2] * 2, [0, 1, 0], (2,))  # no 'c' in its test split
    parts = [Part("toy-wave", "wave", _indexed("w", **WAVES)), Part("toy-p", "pic", lacking)]
    with pytest.raises(DataError, match=r"'w\+p': part 'toy-p', test split, has no sample of label 'c' to pair "
                                        r"with the first part's 2"):
        pair_datasets("w+p", parts)
