"""User callbacks: every hook in order, a stop request, and state that survives a resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import archlab
from archlab.training import Callback, Engine, load_weights, resolve_recipe, train

MLP = {"name": "mlp", "input": [4], "layers": [{"dense": {"units": 8, "activation": "relu"}},
                                               {"dense": {"units": 3, "activation": "softmax"}}]}


def toy(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


class Recorder(Callback):
    """Every hook call, in order; asks to stop after ``stop_after`` epochs."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.stop_after = stop_after

    def on_fit_start(self, engine: Engine) -> None:
        self.calls.append(("fit_start",))

    def on_epoch_start(self, engine: Engine, epoch: int) -> None:
        self.calls.append(("epoch_start", epoch))

    def on_batch_end(self, engine: Engine, step: int, loss: float) -> None:
        assert isinstance(loss, float) and loss > 0
        self.calls.append(("batch_end", step))

    def on_epoch_end(self, engine: Engine, epoch: int, logs: dict) -> bool:
        self.calls.append(("epoch_end", epoch, sorted(k for k in logs if k.startswith("val_"))))
        return epoch == self.stop_after

    def on_fit_end(self, engine: Engine) -> None:
        self.calls.append(("fit_end",))


def test_a_user_callback_sees_every_hook_in_order_and_can_stop() -> None:
    recipe = resolve_recipe({"epochs": 5, "batch_size": 10, "device": "cpu", "metrics": ["accuracy"]})
    engine = Engine(archlab.build(MLP), recipe, "classification", verbose=0)
    x, y = toy()
    recorder = Recorder(stop_after=2)
    history = engine.fit(x, y, x[:6], y[:6], callbacks=[recorder])
    epoch = [("batch_end", 0), ("batch_end", 1), ("batch_end", 2)]  # 24 rows in batches of 10
    val = ["val_accuracy", "val_loss"]
    assert recorder.calls == [("fit_start",), ("epoch_start", 1), *epoch, ("epoch_end", 1, val),
                              ("epoch_start", 2), *epoch, ("epoch_end", 2, val), ("fit_end",)]
    assert history.epoch == [1, 2] and history.stopped_early


class BatchCounter(Callback):
    """State that a resume must carry: the batches seen and the sum of their losses."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.batches, self.loss_sum, self.interrupt_at = 0, 0.0, interrupt_at

    def on_epoch_start(self, engine: Engine, epoch: int) -> None:
        if epoch == self.interrupt_at:
            raise KeyboardInterrupt

    def on_batch_end(self, engine: Engine, step: int, loss: float) -> None:
        self.batches += 1
        self.loss_sum += loss

    def state_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "loss_sum": self.loss_sum}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches, self.loss_sum = state["batches"], state["loss_sum"]


def test_a_callbacks_state_survives_resume_bit_identically(digits, helpers, tmp_path: Path) -> None:
    spec = helpers.spec_with(helpers.tiny, epochs=3, batch_size=64)
    whole = BatchCounter()
    reference = train(spec, data="digits", out=tmp_path / "whole", verbose=0, callbacks=[whole])
    with pytest.raises(archlab.exceptions.Interrupted):
        train(spec, data="digits", out=tmp_path / "cut", verbose=0, callbacks=[BatchCounter(interrupt_at=3)])
    (run_dir,) = (tmp_path / "cut").iterdir()
    resumed = BatchCounter()
    result = train(resume=run_dir, verbose=0, callbacks=[resumed])
    assert (resumed.batches, resumed.loss_sum) == (whole.batches, whole.loss_sum)
    assert whole.batches == 3 * 21  # ceil(1293 / 64) steps in each of 3 epochs
    assert result.history.history == reference.history.history | {
        "seconds": result.history.history["seconds"], "samples_per_s": result.history.history["samples_per_s"]}
    a, b = archlab.build(spec), archlab.build(spec)
    load_weights(reference.run_dir / "last.safetensors", a)
    load_weights(run_dir / "last.safetensors", b)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_a_run_a_callback_stopped_is_finished_for_resume(digits, helpers, tmp_path: Path) -> None:
    from archlab.training import RunError

    spec = helpers.spec_with(helpers.tiny, epochs=3, batch_size=64)
    stopped = train(spec, data="digits", out=tmp_path, verbose=0, callbacks=[Recorder(stop_after=1)])
    assert stopped.history.epoch == [1] and stopped.history.stopped_early
    again = Recorder()
    assert train(resume=stopped.run_dir, verbose=0, callbacks=[again]).history.epoch == [1]  # nothing left to train
    assert again.calls == [("fit_start",), ("fit_end",)]
    with pytest.raises(RunError, match="stopped early at epoch 1 \\(a callback asked it to stop\\); train a new run "
                                       "with --epochs 5"):
        train(resume=stopped.run_dir, epochs=5, verbose=0)


@pytest.mark.parametrize(("key", "value", "shown"), [
    ("tokens_per_s", 969.1, "969 tokens/s"), ("samples_per_s", 12345.6, "12,346 samples/s"),
    ("lr", 0.00123456, "lr 0.00123"), ("seconds", 3.14159, "3.14s"), ("val_loss", 0.123456, "val_loss 0.1235"),
])
def test_epoch_lines_show_rates_as_whole_numbers_and_metrics_to_four_places(key: str, value: float, shown: str) -> None:
    from archlab.training._callbacks import _format

    assert _format(key, value) == shown
