"""Training straight from a data set's memory-mapped files (npy:DIR): the same run as in memory,
and the training split is read where it lies, never copied or spilled."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from archlab.data import load_dataset, write_npy_dir
from archlab.training import Engine, _fit, resolve_recipe, train
from archlab.training._stream import MappedSplit


@pytest.fixture()
def seen(monkeypatch: pytest.MonkeyPatch) -> list:
    """What every Engine.fit was given as its training inputs."""
    given: list = []
    real = Engine.fit

    def spy(self, x, *args, **kwargs):
        given.append(x)
        return real(self, x, *args, **kwargs)

    monkeypatch.setattr(Engine, "fit", spy)
    return given


def _summary(result) -> dict:
    return json.loads((result.run_dir / "summary.json").read_text())


def _rows(result) -> list[dict]:
    """The run's metrics rows without their timing columns."""
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in ("seconds", "samples_per_s")} for row in rows]


def test_streaming_from_npy_equals_memory_and_reads_the_files_in_place(digits, helpers, tmp_path: Path,
                                                                      seen: list) -> None:
    folder = write_npy_dir("digits", tmp_path / "digits")
    spec = helpers.spec_with(helpers.tiny, epochs=2, batch_size=64, device="cpu")
    memory = train(spec, data=f"npy:{folder}", out=tmp_path / "m", verbose=0, data_loading="memory")
    streamed = train(spec, data=f"npy:{folder}", out=tmp_path / "s", verbose=0, data_loading="stream")
    in_ram = train(spec, data="digits", out=tmp_path / "d", verbose=0)
    assert _rows(streamed) == _rows(memory) == _rows(in_ram)
    assert streamed.test_metrics == memory.test_metrics == in_ram.test_metrics
    assert (_summary(memory)["data_loading"], _summary(streamed)["data_loading"]) == ("memory", "stream")

    memory_x, streamed_x, _ = seen
    assert isinstance(memory_x, torch.Tensor)
    # The training rows are the first 90% of the data set's own file: no copy, no spill.
    assert isinstance(streamed_x, MappedSplit)
    assert streamed_x.paths == (folder / "x_train.npy").resolve() and streamed_x.start == 0
    assert len(streamed_x) == int(1437 * 0.9) and streamed_x.shape == (1293, 1, 8, 8)
    assert not any(p.name.startswith("archlab-stream-") for p in streamed.run_dir.iterdir())


def test_named_inputs_stream_from_their_files(named_task, tmp_path: Path, seen: list) -> None:
    data, spec = named_task("classification")
    folder = write_npy_dir(data, tmp_path / "named")
    memory = train(spec, data=data, out=tmp_path / "m", verbose=0)
    streamed = train(spec, data=f"npy:{folder}", out=tmp_path / "s", verbose=0, data_loading="stream", workers=1)
    assert _rows(streamed) == _rows(memory) and streamed.test_metrics == memory.test_metrics
    split = seen[1]
    assert split.named and split.paths == {"ids": (folder / "x_train" / "ids.npy").resolve(),
                                           "num": (folder / "x_train" / "num.npy").resolve()}
    assert split.dtypes == {"ids": np.int64, "num": np.float32}


def test_validation_and_test_splits_view_the_mapped_pages(digits, helpers, tmp_path: Path) -> None:
    folder = write_npy_dir("digits", tmp_path / "digits")
    dataset = load_dataset(f"npy:{folder}")
    spec = helpers.spec_with(helpers.tiny, epochs=1, device="cpu")
    recipe = resolve_recipe(spec["train"], data_loading="stream")
    splits = _fit.prepare_splits(dataset, recipe, "classification", spec, test=True, stream=True)
    assert np.shares_memory(splits.x_val.numpy(), dataset.x_train)  # the last 10% as a slice, not a copy
    assert np.shares_memory(splits.x_test.numpy(), dataset.x_test)
    assert splits.x_val.shape == (1437 - 1293, 1, 8, 8)
    # Without stream=True (compress, which indexes x itself) the same data is tensors in memory.
    plain = _fit.prepare_splits(dataset, recipe, "classification", spec, test=True)
    assert isinstance(plain.x, torch.Tensor) and not np.shares_memory(plain.x.numpy(), dataset.x_train)


def test_auto_decides_on_the_files_size(digits, helpers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_npy_dir("digits", tmp_path / "digits")
    spec = helpers.spec_with(helpers.tiny, epochs=1, batch_size=64, device="cpu")
    assert _summary(train(spec, data=f"npy:{folder}", out=tmp_path / "roomy", verbose=0))["data_loading"] == "memory"
    monkeypatch.setattr(_fit, "available_memory", lambda device=None: 100_000)
    summary = _summary(train(spec, data=f"npy:{folder}", out=tmp_path / "tight", verbose=0))
    assert summary["data_loading"] == "stream"
    # 1293 rows of 64 float32: the training rows of the file, not the process's memory
    assert f"the training split ({1293 * 64 * 4:,} bytes) is over 0.5" in summary["data_loading_reason"]


def test_stratified_validation_falls_back_to_the_last_rows(digits, helpers, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    folder = write_npy_dir("digits", tmp_path / "digits")
    dataset = load_dataset(f"npy:{folder}")
    spec = helpers.spec_with(helpers.tiny, epochs=1, device="cpu")
    recipe = resolve_recipe({**spec["train"], "validation": "stratified"}, data_loading="stream")
    with caplog.at_level(logging.WARNING, logger="archlab"):
        splits = _fit.prepare_splits(dataset, recipe, "classification", spec, stream=True)
    assert "using the last 0.1 of them (validation: last) instead" in caplog.text
    np.testing.assert_array_equal(splits.y_val.numpy(), dataset.y_train[1293:])
