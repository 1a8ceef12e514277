"""archlab plan: the table, --json, and one message with exit 2 for each bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import archlab
from archlab.cli import run
from archlab.cli._plan import parse_number

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GPT2 = EXAMPLES / "gpt2-small.yaml"  # 12 blocks of 12 heads
GPT3 = EXAMPLES / "gpt3-175b.yaml"


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = run(["plan", *(str(a) for a in args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_plan_prints_compute_memory_and_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, GPT3, "--tokens", "300B", "--gpus", "1024", "--tp", "8", "--pp", "8", "--sp")
    assert code == 0, err
    assert "174,604,259,328 parameters" in out and "training FLOPs (6N)        3.14e+23" in out
    assert "tp 8 x pp 8 x dp 16, sequence parallel" in out and "verdict: fits" in out
    for row in ("weights", "gradients", "optimizer", "activations", "total", "pipeline bubble", "GPU-hours"):
        assert row in out


def test_plan_json_is_the_plans_dict(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, GPT3, "--tokens", "3e11", "--gpus", "1024", "--json")
    data = json.loads(out)
    assert code == 0 and data["schema_version"] == 1
    assert data["flops"]["total"] == pytest.approx(3.14e23, rel=1e-3)
    assert data["fits"] is False and data["fixes"] and data["fixes"][0]["change"]
    assert data["memory"]["per_gpu"]["total"] == sum(v for k, v in data["memory"]["per_gpu"].items() if k != "total")
    assert data["config"]["dp"] == 1024 and data["model"]["layers"] == 96


def test_a_layout_that_does_not_fit_prints_the_changes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, GPT3, "--tokens", "300B", "--gpus", "64")
    assert code == 0  # a verdict, not an error
    assert "verdict: does not fit" in out and "smallest changes that fit" in out and "\n  - " in out


@pytest.mark.parametrize(("text", "value"), [("300B", 300e9), ("1.4T", 1.4e12), ("300e9", 300e9), ("2k", 2000.0),
                                             ("7", 7.0), ("1.5m", 1.5e6)])
def test_numbers_take_suffixes(text: str, value: float) -> None:
    assert parse_number(text, "--tokens") == value


@pytest.mark.parametrize(("args", "fragments"), [
    (["--tp", "5"], ["--tp 5", "12 heads do not divide by 5", "tp can be 1, 2, 3, 4, 6, 12"]),
    (["--pp", "5"], ["--pp 5", "12 blocks do not divide by 5", "pp can be 1, 2, 3, 4, 6, 12"]),
    (["--gpus", "12", "--tp", "4", "--pp", "2"], ["--gpus 12", "not a multiple of tp x pp = 8"]),
    (["--gpus", "4", "--global-batch", "6"], ["--global-batch 6", "multiple of micro-batch x dp = 1 x 4 = 4"]),
    (["--gpu", "a100"], ["--gpu a100", "did you mean 'a100-40gb' or 'a100-80gb'?"]),
    (["--gpu", "h100"], ["unknown GPU", "'h100-sxm'"]),
    (["--mfu", "1.5"], ["--mfu 1.5", "(0, 1]"]),
    (["--mfu", "0"], ["--mfu 0.0", "(0, 1]"]),
    (["--tokens", "lots"], ["--tokens lots", "300B"]),
    (["--gpus", "0"], ["--gpus 0", "positive integer"]),
    (["--zero", "4"], ["--zero 4", "0, 1, 2 and 3"]),
    (["--recompute", "some"], ["--recompute some", "none, selective, full"]),
    (["--optimizer", "lion"], ["--optimizer lion", "adam, adamw, sgd"]),
    (["--precision", "bf16", "--gpu", "v100-32gb"], ["--precision bf16", "has no bf16", "fp16, fp32"]),
    (["--micro-batch", "1.5"], ["--micro-batch 1.5", "whole number"]),
], ids=["tp-heads", "pp-layers", "gpus-product", "global-batch", "gpu-prefix", "gpu-typo", "mfu-high", "mfu-zero",
        "tokens", "gpus", "zero", "recompute", "optimizer", "precision", "micro-batch"])
def test_bad_input_is_one_message_and_exit_2(capsys: pytest.CaptureFixture[str], args: list[str],
                                             fragments: list[str]) -> None:
    code, out, err = cli(capsys, GPT2, *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


def test_a_spec_without_transformer_blocks_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, EXAMPLES / "digits-cnn.yaml")
    assert code == 2 and "plan sizes Transformer stacks" in err and "transformer_encoder" in err


def test_budget_flops_writes_the_scaled_spec(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "sized.yaml"
    code, stdout, err = cli(capsys, GPT2, "--budget-flops", "1e21", "--gpus", "8", "--out", out)
    assert code == 0, err
    assert "compute-optimal size for 1e+21 FLOPs (approach1" in stdout and f"wrote {out}" in stdout
    planned = int(stdout.split("scaled spec")[1].split(":")[1].split("parameters")[0].replace(",", ""))
    assert archlab.analyze(archlab.load(out)).total_params == planned


@pytest.mark.parametrize(("args", "fragments"), [
    (["--budget-flops", "1e3"], ["--budget-flops 1e+03", "too small for any model", "at least"]),
    (["--budget-flops", "1e21", "--tokens", "1e9"], ["--tokens and --budget-flops", "give one"]),
    (["--budget-flops", "1e21", "--method", "chinchilla"], ["--method chinchilla", "approach1, hoffmann, besiroglu"]),
    (["--out", "x.yaml"], ["--out x.yaml", "give --budget-flops"]),
    (["--budget-flops", "1e21", "--out", "x.txt"], ["--out x.txt", ".yaml, .yml or .json"]),
    (["--batch", "0"], ["--batch 0", "positive integer"]),
    (["--context", "-5"], ["--context -5", "not a number"]),
], ids=["budget-too-small", "budget-and-tokens", "method", "out-without-budget", "out-suffix", "batch", "context"])
def test_bad_sizing_and_serving_input_is_exit_2(capsys: pytest.CaptureFixture[str], args: list[str],
                                                fragments: list[str]) -> None:
    code, out, err = cli(capsys, GPT2, *args)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    for fragment in fragments:
        assert fragment in err


@pytest.mark.parametrize(("old", "new", "fragments"), [
    ("num_kv_heads: 8", "num_kv_heads: 7", ["transformer_block.num_kv_heads", "7 does not divide num_heads=32",
                                             "1, 2, 4, 8, 16, 32"]),
    ("top_k: 2", "top_k: 9", ["transformer_block.moe", "top_k 9 is more than num_experts 8", "at most 8"]),
], ids=["kv-heads", "moe-top-k"])
def test_a_spec_the_planner_cannot_size_is_one_message_and_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                                   old: str, new: str, fragments: list[str]) -> None:
    spec = tmp_path / "bad.yaml"
    text = (EXAMPLES / "llm" / "mixtral-8x7b.yaml").read_text()
    assert old in text
    spec.write_text(text.replace(old, new))
    code, out, err = cli(capsys, spec)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


def test_a_gpu_the_table_lacks_is_described_by_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    # an H100 NVL: 94 GB, 835 dense bf16 TFLOP/s, 3.9 TB/s, described as the H100 SXM changed
    code, out, err = cli(capsys, GPT2, "--gpu", "h100-sxm", "--gpu-memory", "94", "--peak-tflops", "835",
                         "--bandwidth", "3900", "--tokens", "1e9", "--json")
    assert code == 0, err
    hardware = json.loads(out)["hardware"]
    assert hardware["memory_bytes"] == 94 * 2**30 and hardware["peak_flops"]["bf16"] == 835e12
    assert hardware["bandwidth_bytes_per_s"] == 3900e9 and hardware["peak_flops"]["fp16"] != 835e12
    assert "94 GiB, 835 TFLOP/s bf16, 3900 GB/s (else H100 SXM" in hardware["name"]
    code, out, err = cli(capsys, GPT2, "--peak-tflops", "0")
    assert code == 2 and "--peak-tflops 0.0: must be a positive number" in err
