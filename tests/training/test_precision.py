"""``precision: auto``: the rule (CPU bf16 units, the model's size, a cached matmul probe), that a run
trains in what the rule says and records it, that an explicit precision wins, and that bf16 keeps
evaluation, best-weights restore and resume exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import archlab
from archlab.deploy import export_run, load_runner, read_metadata
from archlab.training import Engine, load_weights, resolve_recipe, train
from archlab.training import _precision as precision_module
from archlab.training._precision import (
    MIN_BF16_PARAMS,
    PrecisionChoice,
    choose_cpu_precision,
    cpu_bf16_flags,
    matmul_speedup,
    resolve_precision,
)

#: A CNN for the 8x8 digits over MIN_BF16_PARAMS (131,466 parameters), so auto may pick bf16 for it.
WIDE_CNN = {
    "name": "wide-cnn",
    "input": [1, 8, 8],
    "task": {"kind": "classification", "classes": 10},
    "layers": [
        {"conv2d": {"filters": 32, "kernel_size": 3, "padding": "same", "activation": "relu"}},
        "flatten",
        {"dense": {"units": 64, "activation": "relu"}},
        {"dense": {"units": 10, "activation": "softmax"}},
    ],
}
CPU = torch.device("cpu")


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Pretend this CPU has the given bf16 flags and bf16 matmul speedup (a pre-filled probe
    cache), in a cache folder of the test's own."""
    monkeypatch.setattr("platformdirs.user_cache_dir", lambda *a, **k: str(tmp_path / "cache"))
    precision_module._cpu_speedup.cache_clear()

    def pretend(flags: tuple[str, ...], speedup: float | None = None) -> None:
        monkeypatch.setattr(precision_module, "cpu_bf16_flags", lambda cpuinfo=None: flags)
        if speedup is not None:
            path = tmp_path / "cache" / precision_module.CACHE_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({precision_module._machine_key(flags): {"speedup": speedup}}))

    yield pretend
    precision_module._cpu_speedup.cache_clear()


@pytest.mark.parametrize(("flags", "params", "speedup", "expected"), [
    ((), 225_034, None, PrecisionChoice("fp32", "this CPU has no bf16 units (amx_bf16 or avx512_bf16)")),
    (("avx512_bf16",), 2_410, None,
     PrecisionChoice("fp32", "2,410 parameters, under the 100,000 where bf16 pays off")),
    (("avx512_bf16",), 225_034, 1.2,
     PrecisionChoice("fp32", "avx512_bf16, but bf16 matmul only 1.2x fp32 (bf16 needs 1.5x)")),
    (("avx512_bf16",), MIN_BF16_PARAMS, 4.4, PrecisionChoice("bf16", "avx512_bf16, 4.4x faster matmul")),
    (("amx_bf16", "avx512_bf16"), 225_034, 5.0,
     PrecisionChoice("bf16", "amx_bf16+avx512_bf16, 5.0x faster matmul")),
])
def test_the_cpu_rule(flags: tuple[str, ...], params: int, speedup: float | None, expected: PrecisionChoice) -> None:
    assert choose_cpu_precision(flags, params, speedup) == expected


def test_the_rule_needs_the_probe_only_when_flags_and_size_leave_it_open() -> None:
    with pytest.raises(ValueError, match="needs the measured bf16 matmul speedup"):
        choose_cpu_precision(("avx512_bf16",), 225_034, None)


@pytest.mark.parametrize(("flags_line", "expected"), [
    ("flags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni", ("avx512_bf16",)),
    ("flags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile amx_int8", ("amx_bf16", "avx512_bf16")),
    ("flags\t\t: fpu sse avx2 fma", ()),
    ("processor\t: 0\nmodel name\t: Apple M2", ()),  # no flags line at all
])
def test_cpu_flags_from_cpuinfo(flags_line: str, expected: tuple[str, ...]) -> None:
    assert cpu_bf16_flags(f"processor\t: 0\nvendor_id\t: X\n{flags_line}\n") == expected


def test_the_probe_runs_once_per_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("platformdirs.user_cache_dir", lambda *a, **k: str(tmp_path / "cache"))
    first = matmul_speedup(("avx512_bf16",))  # the real probe: two small matmuls timed
    cached = json.loads((tmp_path / "cache" / precision_module.CACHE_FILE).read_text())
    (entry,) = cached.values()
    assert first > 0 and entry["speedup"] == first and entry["size"] == 512

    def no_probe() -> float:
        raise AssertionError("probed again although the result is cached")

    monkeypatch.setattr(precision_module, "_probe", no_probe)
    assert matmul_speedup(("avx512_bf16",)) == entry["speedup"]


def test_a_broken_probe_cache_is_measured_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("platformdirs.user_cache_dir", lambda *a, **k: str(tmp_path))
    (tmp_path / precision_module.CACHE_FILE).write_text("{not json")
    monkeypatch.setattr(precision_module, "_probe", lambda: 3.25)
    assert matmul_speedup(("avx512_bf16",)) == 3.25
    assert [e["speedup"] for e in json.loads((tmp_path / precision_module.CACHE_FILE).read_text()).values()] == [3.25]


@pytest.mark.parametrize(("flags", "speedup", "spec", "expected"), [
    (("avx512_bf16",), 3.0, WIDE_CNN, PrecisionChoice("bf16", "avx512_bf16, 3.0x faster matmul")),
    (("avx512_bf16",), 1.1, WIDE_CNN, PrecisionChoice("fp32", "avx512_bf16, but bf16 matmul only 1.1x fp32 "
                                                              "(bf16 needs 1.5x)")),
    ((), None, WIDE_CNN, PrecisionChoice("fp32", "this CPU has no bf16 units (amx_bf16 or avx512_bf16)")),
])
def test_auto_trains_in_what_the_rule_says_and_records_it(machine, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          flags, speedup, spec, expected: PrecisionChoice) -> None:
    machine(flags, speedup)
    result = train({**spec, "train": {"data": "digits", "epochs": 1, "device": "cpu"}}, out=tmp_path / "runs",
                   verbose=2)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert (summary["precision"], summary["precision_reason"]) == (expected.precision, expected.reason)
    assert f"precision auto: {expected.precision} ({expected.reason})" in capsys.readouterr().out
    assert summary["test"]["accuracy"] > 0.5  # one epoch on digits learns in either precision


def test_an_explicit_precision_wins(machine, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = archlab.build(WIDE_CNN)
    machine(("avx512_bf16",), 4.0)
    assert resolve_precision("auto", CPU, model).precision == "bf16"
    result = train({**WIDE_CNN, "train": {"data": "digits", "epochs": 1, "device": "cpu"}}, out=tmp_path,
                   verbose=2, precision="fp32")  # the override --precision fp32 makes
    assert (result.summary["precision"], result.summary["precision_reason"]) == (
        "fp32", "given (train.precision or --precision)")
    assert "precision auto" not in capsys.readouterr().out
    assert resolve_precision("fp32", CPU, model) == PrecisionChoice("fp32", "given (train.precision or --precision)")
    machine((), None)
    assert resolve_precision("bf16", CPU, model) == PrecisionChoice("bf16", "given (train.precision or --precision)")
    assert resolve_precision("auto", CPU, model).precision == "fp32"


def test_a_small_model_keeps_fp32_without_probing(machine, monkeypatch: pytest.MonkeyPatch) -> None:
    machine(("avx512_bf16",))
    monkeypatch.setattr(precision_module, "_probe", lambda: pytest.fail("probed for a small model"))
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    assert resolve_precision("auto", CPU, model) == PrecisionChoice(
        "fp32", "2,410 parameters, under the 100,000 where bf16 pays off")


def _engine(run_dir: Path | None, **recipe: object) -> Engine:
    torch.manual_seed(0)
    model = archlab.build(WIDE_CNN)
    model.net[-1].activation = nn.Identity()
    recipe = resolve_recipe({"batch_size": 64, "device": "cpu", "precision": "bf16", **recipe})
    return Engine(model, recipe, "cross_entropy", run_dir=run_dir, verbose=0, output_activation="softmax")


def test_bf16_runs_a_cnn_channels_last_with_the_same_values(digits) -> None:
    x = torch.from_numpy(digits.x_test[:200])
    eng = _engine(None)
    conv = next(m for m in eng.model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    reference = archlab.build(WIDE_CNN)
    reference.load_state_dict(eng.model.state_dict())
    reference.net[-1].activation = nn.Identity()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = reference(x).float()
    # the layout changes no value beyond bf16's own rounding (8 bits of mantissa)
    torch.testing.assert_close(eng.outputs(x), expected, atol=0.05, rtol=0.02)


def test_bf16_resume_and_best_weights_are_exact(digits, tmp_path: Path, helpers) -> None:
    """Two epochs, then two more resumed from the checkpoint, equal four uninterrupted epochs bit
    for bit; the restored best weights are best.safetensors; evaluation of the reloaded weights
    gives the metrics the run computed."""
    x, y = torch.from_numpy(digits.x_train[:512]), torch.from_numpy(digits.y_train[:512]).long()
    xv, yv = torch.from_numpy(digits.x_train[512:640]), torch.from_numpy(digits.y_train[512:640]).long()
    stop = {"monitor": "val_accuracy", "patience": 10}
    whole = _engine(tmp_path / "whole", epochs=4, early_stopping=stop)
    (tmp_path / "whole").mkdir()
    history = whole.fit(x, y, xv, yv)
    assert whole.bf16 and history.epoch == [1, 2, 3, 4]

    (tmp_path / "split").mkdir()
    _engine(tmp_path / "split", epochs=2, early_stopping=stop).fit(x, y, xv, yv)
    resumed = _engine(tmp_path / "split", epochs=4, early_stopping=stop)
    resumed.fit(x, y, xv, yv, resume=True)
    helpers.assert_same_tensors(tmp_path / "whole" / "last.safetensors", tmp_path / "split" / "last.safetensors")
    helpers.assert_same_tensors(tmp_path / "whole" / "best.safetensors", tmp_path / "split" / "best.safetensors")
    assert helpers.without_timing(resumed.rows) == helpers.without_timing(whole.rows)

    best = archlab.build(WIDE_CNN)
    load_weights(tmp_path / "whole" / "best.safetensors", best)
    for key, value in best.state_dict().items():
        assert torch.equal(whole.model.state_dict()[key], value), key  # restore_best loaded the best epoch
    fresh = _engine(None)
    fresh.model.load_state_dict(best.state_dict())
    metrics, _ = fresh.evaluate(xv, yv)
    assert metrics["accuracy"] == whole.rows[history.best_epoch - 1]["val_accuracy"]


def test_a_bf16_run_exports_in_fp32_with_fp32_metrics(digits, tmp_path: Path) -> None:
    """The exported file computes in fp32, so the metrics it carries are fp32 ones (not the bf16
    evaluation of the run), and they match what the file itself predicts."""
    spec = {**WIDE_CNN, "train": {"data": "digits", "epochs": 1, "device": "cpu", "precision": "bf16"}}
    run_dir = train(spec, out=tmp_path / "runs", verbose=0).run_dir
    result = export_run(run_dir, out=tmp_path / "model.onnx")
    record = json.loads(read_metadata(result.path)["archlab.metrics"])["metrics"]
    torch.manual_seed(0)
    model = archlab.build(WIDE_CNN)
    load_weights(run_dir / "best.safetensors", model)
    model.net[-1].activation = nn.Identity()
    recipe = resolve_recipe({"device": "cpu", "precision": "fp32", "metrics": ["accuracy", "macro_f1"]})
    fp32, _ = Engine(model, recipe, "cross_entropy", verbose=0).evaluate(
        torch.from_numpy(digits.x_test), torch.from_numpy(digits.y_test).long())
    assert record == fp32
    predicted = load_runner(result.path)(digits.x_test).argmax(axis=1)
    assert (predicted == digits.y_test).mean() == pytest.approx(record["accuracy"], abs=1e-6)
