"""The streaming data path: the same batches as the in-memory path, chosen by the recipe or by
size, recorded in summary.json, and resumable bit-identically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import archlab
from archlab.exceptions import Interrupted, SpecError
from archlab.training import Callback, Engine, _fit, load_weights, resolve_recipe, train


def _weights(run_dir: Path, spec: dict) -> list[torch.Tensor]:
    model = archlab.build(spec)
    load_weights(run_dir / "last.safetensors", model)
    return list(model.state_dict().values())


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.parametrize(("workers", "precision"), [(0, "fp32"), (1, "fp32"), (0, "bf16")])
def test_streamed_training_equals_in_memory_training(digits, helpers, tmp_path: Path, workers: int,
                                                     precision: str) -> None:
    """Same seed, same batches in the same order (augmentation included): the same weights and metrics."""
    spec = helpers.spec_with(helpers.small_cnn, epochs=2, batch_size=64, device="cpu", augment="shift",
                             precision=precision)
    memory = train(spec, data="digits", out=tmp_path / "m", verbose=0, data_loading="memory")
    streamed = train(spec, data="digits", out=tmp_path / "s", verbose=0, data_loading="stream", workers=workers)
    assert [torch.equal(a, b) for a, b in zip(_weights(memory.run_dir, spec), _weights(streamed.run_dir, spec),
                                              strict=True)] == [True] * 6
    assert helpers.without_timing(memory_rows(streamed)) == \
        helpers.without_timing(memory_rows(memory))
    assert streamed.test_metrics == memory.test_metrics
    assert _summary(memory.run_dir)["data_loading"] == "memory"
    summary = _summary(streamed.run_dir)
    assert (summary["data_loading"], summary["workers"]) == ("stream", workers)
    assert not any(p.name.startswith("archlab-stream-") for p in streamed.run_dir.iterdir())  # the spill is removed


def memory_rows(result) -> list[dict]:
    return [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]


def test_auto_streams_when_available_memory_is_small(digits, helpers, tmp_path: Path, monkeypatch) -> None:
    spec = helpers.spec_with(helpers.tiny, epochs=1, batch_size=64, device="cpu")
    roomy = train(spec, data="digits", out=tmp_path / "roomy", verbose=0)
    assert _summary(roomy.run_dir)["data_loading"] == "memory"
    monkeypatch.setattr(_fit, "available_memory", lambda device=None: 100_000)  # digits' split: 331 KB
    tight = train(spec, data="digits", out=tmp_path / "tight", verbose=0)
    summary = _summary(tight.run_dir)
    assert summary["data_loading"] == "stream"
    assert "over 0.5 of the available memory (100,000 bytes)" in summary["data_loading_reason"]


class StopAt(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_start(self, engine: Engine, epoch: int) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_streamed_resume_is_bit_identical(digits, helpers, tmp_path: Path) -> None:
    spec = helpers.spec_with(helpers.small_cnn, epochs=3, batch_size=64, device="cpu", data_loading="stream")
    whole = train(spec, data="digits", out=tmp_path / "whole", verbose=0)
    with pytest.raises(Interrupted):
        train(spec, data="digits", out=tmp_path / "cut", verbose=0, callbacks=[StopAt(3)])
    (run_dir,) = (tmp_path / "cut").iterdir()
    resumed = train(resume=run_dir, verbose=0)
    helpers.assert_same_tensors(whole.run_dir / "last.safetensors", run_dir / "last.safetensors")
    assert helpers.without_timing(memory_rows(resumed)) == helpers.without_timing(memory_rows(whole))
    assert _summary(run_dir)["data_loading"] == "stream"


@pytest.mark.parametrize(("section", "path"), [({"data_loading": "disk"}, "train.data_loading"),
                                               ({"workers": -1}, "train.workers")])
def test_a_bad_data_loading_value_is_a_spec_error_with_its_path(section: dict, path: str) -> None:
    with pytest.raises(SpecError) as err:
        resolve_recipe(section)
    assert err.value.path == path
    message = str(err.value)
    assert ("auto" in message and "stream" in message) if "data_loading" in section else \
        "greater than or equal to 0" in message


def test_a_bad_data_loading_flag_exits_2_before_training(digits, helpers, tmp_path: Path, capsys) -> None:
    from archlab.cli import run

    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps(helpers.spec_with(helpers.tiny, epochs=1, device="cpu")))
    code = run(["train", str(spec), "--data", "digits", "--out", str(tmp_path / "runs"), "--data-loading", "strem"])
    assert code == 2
    err = capsys.readouterr().err
    assert "train.data_loading" in err and "stream" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
