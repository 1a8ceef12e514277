"""The specs in examples/: pinned parameter counts, agreement with the built modules, forward
shapes, ResNet-18 layer for layer as torchvision, GPT-2 small and GPT-3 175B by formula, and
GPT-3's analysis staying cheap (no weights allocated)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import archlab

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def gpt_params(vocab: int, context: int, width: int, blocks: int, ff: int) -> int:
    """GPT-2-layout parameters with the head tied to the token embedding."""
    attention = 4 * width * width + 4 * width  # Q, K, V, output projections with biases
    mlp = width * ff + ff + ff * width + width
    norms = 2 * (2 * width)
    return vocab * width + context * width + blocks * (attention + mlp + norms) + 2 * width  # + final layernorm


def gpt_macs(vocab: int, context: int, width: int, blocks: int, ff: int) -> int:
    """Forward MACs of one sequence: projections, QK^T and AV, the MLP, and the tied head."""
    per_block = 4 * context * width * width + 2 * context * context * width + 2 * context * width * ff
    return blocks * per_block + context * width * vocab


GPT2_PARAMS = 124_439_808
GPT3_PARAMS = 174_604_259_328  # tied head; an untied head adds 50257 * 12288 = 617,558,016 (175.22 B)

PINNED = {
    "seed-mnist-cnn": 225_034,
    "resnet18": 11_689_512,
    "gpt2-small": GPT2_PARAMS,
    "inception": 29_870,
    "rnn-attention-text": 652_676,
    "fusion": 57_882,
    "digits-cnn": 43_050,
    "seed-mnist-cnn-recommended": 225_034,
    "gpt3-175b": GPT3_PARAMS,
    "mnist-resnet-oversized": 149_162,
}
LARGE = {"gpt2-small", "gpt3-175b"}  # built on the meta device only


def path(name: str) -> str:
    return str(EXAMPLES / f"{name}.yaml")


def test_every_example_is_pinned():
    assert sorted(p.stem for p in EXAMPLES.glob("*.yaml")) == sorted(PINNED)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_example_names_and_header(name):
    text = (EXAMPLES / f"{name}.yaml").read_text()
    assert text.startswith("#"), "each example starts with a comment header"
    assert f"{PINNED[name]:,}" in text.split("\nname:")[0], "the header states the parameter count"
    assert archlab.load(path(name)).name == name


@pytest.mark.parametrize("name", sorted(PINNED))
def test_params_pinned_and_equal_to_the_built_module(name):
    analysis = archlab.analyze(path(name))
    assert analysis.total_params == PINNED[name]
    assert analysis.trainable_params == PINNED[name]
    model = archlab.build(path(name), device="meta" if name in LARGE else None)
    # parameters() yields a shared (tied) parameter once
    assert sum(p.numel() for p in model.parameters()) == PINNED[name]
    assert sum(b.numel() for b in model.buffers() if b is not None) == analysis.buffers


SMALL_INPUTS = {
    "seed-mnist-cnn": lambda b: (torch.zeros(b, 1, 28, 28),),
    "resnet18": lambda b: (torch.zeros(b, 3, 224, 224),),
    "inception": lambda b: (torch.zeros(b, 3, 32, 32),),
    "rnn-attention-text": lambda b: (torch.zeros(b, 100, dtype=torch.long),),
    "fusion": lambda b: (torch.zeros(b, 1, 28, 28), torch.zeros(b, 8)),
}


@pytest.mark.parametrize("name", sorted(SMALL_INPUTS))
def test_forward_gives_the_inferred_shape(name):
    analysis = archlab.analyze(path(name))
    model = archlab.build(path(name)).eval()
    with torch.no_grad():
        y = model(*SMALL_INPUTS[name](2))
    assert list(y.shape) == [2, *analysis.outputs[0]["shape"]]
    assert torch.isfinite(y).all()


@pytest.mark.parametrize(("name", "length"), [("gpt2-small", 1024), ("gpt3-175b", 2048)])
def test_gpt_forward_shape_on_meta(name, length):
    model = archlab.build(path(name), device="meta").eval()
    with torch.no_grad():
        y = model(torch.zeros(1, length, dtype=torch.long, device="meta"))
    assert tuple(y.shape) == (1, length, 50257)


def test_small_examples_classify():
    for name, classes in [("seed-mnist-cnn", 10), ("resnet18", 1000), ("inception", 10),
                          ("rnn-attention-text", 4), ("fusion", 10)]:
        a = archlab.analyze(path(name))
        assert a.outputs == [{"shape": [classes], "dtype": "float"}], name


# -- ResNet-18 -----------------------------------------------------------------------------------

def torchvision_resnet18_parameter_shapes() -> list[tuple[int, ...]]:
    """torchvision.models.resnet18()'s parameters in registration order (conv1, bn1, then per
    BasicBlock conv1, bn1, conv2, bn2, downsample conv + bn, then fc), written out by hand."""
    shapes: list[tuple[int, ...]] = [(64, 3, 7, 7), (64,), (64,)]
    channels = 64
    for width, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        for block in range(2):
            s = stride if block == 0 else 1
            shapes += [(width, channels, 3, 3), (width,), (width,), (width, width, 3, 3), (width,), (width,)]
            if s != 1 or channels != width:
                shapes += [(width, channels, 1, 1), (width,), (width,)]
            channels = width
    return shapes + [(1000, 512), (1000,)]


def test_resnet18_is_torchvision_layer_for_layer():
    model = archlab.build(path("resnet18"), device="meta")
    expected = torchvision_resnet18_parameter_shapes()
    assert [tuple(p.shape) for p in model.parameters()] == expected
    assert sum(torch.Size(s).numel() for s in expected) == 11_689_512
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 20 and all(c.bias is None for c in convs)
    assert [c.stride for c in convs if c.kernel_size == (1, 1)] == [(2, 2)] * 3  # the three downsamples
    assert convs[0].padding == (3, 3) and convs[0].stride == (2, 2)
    pool = next(m for m in model.modules() if isinstance(m, torch.nn.MaxPool2d))
    assert (pool.kernel_size, pool.stride, pool.padding) == ((3, 3), (2, 2), (1, 1))
    # 20 batchnorms: running mean and var per channel, plus num_batches_tracked
    assert archlab.analyze(path("resnet18")).buffers == 2 * (64 + 4 * 64 + 5 * 128 + 5 * 256 + 5 * 512) + 20


def test_resnet18_macs():
    # torchvision ResNet-18 at 224: 1.814 G multiply-accumulates (convolutions + fc)
    assert archlab.analyze(path("resnet18")).macs == 1_814_073_344


# -- GPT-2 / GPT-3 -------------------------------------------------------------------------------

def test_gpt2_small_matches_formula_and_ties_the_head():
    assert gpt_params(50257, 1024, 768, 12, 3072) == GPT2_PARAMS
    a = archlab.analyze(path("gpt2-small"))
    assert a.total_params == GPT2_PARAMS
    assert a.macs == gpt_macs(50257, 1024, 768, 12, 3072) == 145_824_153_600
    head = a.layers[-1]
    assert (head.type, head.params, head.note) == ("dense", 0, "weight tied to wte")
    model = archlab.build(path("gpt2-small"), device="meta")
    assert model.net.lm_head.weight is model.net.wte.weight


def test_gpt3_params_and_macs_by_formula():
    expected = gpt_params(50257, 2048, 12288, 96, 49152)
    assert expected == GPT3_PARAMS
    # the familiar closed form: 12 * layers * d^2 + 13 * d per block, embeddings, final norm
    d = 12288
    assert expected == 96 * (12 * d * d + 13 * d) + (50257 + 2048) * d + 2 * d
    a = archlab.analyze(path("gpt3-175b"), batch_size=8)
    assert a.total_params == expected
    assert a.macs == gpt_macs(50257, 2048, 12288, 96, 49152)
    assert a.model_bytes["bf16"] == 2 * expected
    assert a.training_memory_bytes["optimizer"] == 8 * expected
    assert sum(p.numel() for p in archlab.build(path("gpt3-175b"), device="meta").parameters()) == expected


GPT3_PROBE = """
import json, sys, time
import archlab
start = time.perf_counter()
a = archlab.analyze(sys.argv[1], batch_size=8)
seconds = time.perf_counter() - start
# VmHWM is this process's own peak; ru_maxrss can carry the parent's peak across fork + exec
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"params": a.total_params, "seconds": seconds, "max_rss_kib": peak}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads the peak memory from /proc/self/status")
def test_gpt3_analysis_is_fast_and_allocates_no_weights():
    out = subprocess.run([sys.executable, "-c", GPT3_PROBE, path("gpt3-175b")], capture_output=True, text=True,
                         timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["params"] == GPT3_PARAMS
    assert result["seconds"] < 10
    assert result["max_rss_kib"] < 1024 * 1024  # < 1 GiB for the whole process; fp32 weights would be 650 GiB


def archlab_command() -> list[str]:
    script = Path(sys.executable).with_name("archlab")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from archlab.cli import main; main()"]


def test_cli_summary_of_gpt3():
    out = subprocess.run([*archlab_command(), "summary", path("gpt3-175b"), "--batch-size", "8"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"{GPT3_PARAMS:,}" in out.stdout


def test_cli_summary_json_of_the_seed(capsys):
    from archlab.cli import run

    assert run(["summary", path("seed-mnist-cnn"), "--json", "--batch-size", "128"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema_version"] == 1
    assert (data["name"], data["batch_size"], data["total_params"]) == ("seed-mnist-cnn", 128, 225_034)
    assert data["inputs"] == {"input": {"shape": [1, 28, 28], "dtype": "float"}}
    assert data["macs"] == 2_631_040
    assert data["flops_per_batch"] == 128 * data["flops"]
    assert [r["type"] for r in data["layers"]] == ["conv2d", "maxpool2d", "conv2d", "maxpool2d", "flatten",
                                                   "dense", "dense"]


@pytest.mark.parametrize("name", sorted(PINNED))
def test_cli_summary_prints_every_example(name, capsys):
    from archlab.cli import run

    assert run(["summary", path(name), "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert f"{PINNED[name]:,}" in out  # the pinned total, as the table prints it


@pytest.mark.parametrize("name", ["digits-cnn", "seed-mnist-cnn-recommended"])
def test_example_recipes_are_valid(name):
    from archlab.training import resolve_recipe

    recipe = resolve_recipe(archlab.load(path(name)).to_dict()["train"])
    assert recipe.data in ("digits", "mnist") and recipe.epochs <= 30


# -- recommendation (examples/recsys/, on movielens-100k) --------------------------------------

ML_VOCAB, ML_FIELDS = 2707, 25  # movielens-100k's ids and fields


def mlp(k: int) -> int:
    """The examples' MLP over the flattened (25, k) embeddings: 25k -> 128 -> 64 -> 1."""
    return (ML_FIELDS * k * 128 + 128) + (128 * 64 + 64) + (64 * 1 + 1)


RECSYS_PINNED = {
    "logreg-movielens": ML_VOCAB + 1,  # one weight per id and the intercept
    "wide-deep-movielens": ML_VOCAB + ML_VOCAB * 8 + mlp(8),
    "deepfm-movielens": ML_VOCAB + ML_VOCAB * 32 + mlp(32),  # the FM adds no parameters
}


def recsys_path(name: str) -> str:
    return str(EXAMPLES / "recsys" / f"{name}.yaml")


def test_every_recsys_example_is_pinned():
    assert sorted(p.stem for p in (EXAMPLES / "recsys").glob("*.yaml")) == sorted(RECSYS_PINNED)
    assert RECSYS_PINNED["deepfm-movielens"] == 200_180 and RECSYS_PINNED["wide-deep-movielens"] == 58_412


@pytest.mark.parametrize("name", sorted(RECSYS_PINNED))
def test_recsys_examples_params_header_forward_and_recipe(name):
    from archlab.training import resolve_recipe

    text = (EXAMPLES / "recsys" / f"{name}.yaml").read_text()
    assert f"{RECSYS_PINNED[name]:,}" in text.split("\nname:")[0], "the header states the parameter count"
    spec = archlab.load(recsys_path(name))
    analysis = archlab.analyze(spec)
    assert spec.name == name and analysis.total_params == RECSYS_PINNED[name]
    model = archlab.build(spec).eval()
    assert sum(p.numel() for p in model.parameters()) == RECSYS_PINNED[name]
    ids = torch.tensor([[0] * ML_FIELDS, [ML_VOCAB - 1] * ML_FIELDS])
    with torch.no_grad():
        y = model(ids)
    assert y.shape == (2, 1) and ((y > 0) & (y < 1)).all()  # probabilities
    recipe = resolve_recipe(spec.to_dict()["train"])
    assert recipe.data == "movielens-100k" and recipe.early_stopping.monitor == "val_loss"


def test_deepfm_flops_are_its_parts():
    def parts(k: int) -> tuple[int, int, int]:
        macs = ML_FIELDS * k * 128 + 128 * 64 + 64
        return macs, 2 * macs + 128 + 64, 3 * ML_FIELDS * k + k  # MLP MACs, MLP FLOPs (two relus), FM FLOPs
    first_order, sigmoid = ML_FIELDS - 1, 1
    macs, mlp_flops, fm = parts(32)
    deepfm = archlab.analyze(recsys_path("deepfm-movielens"))
    assert deepfm.macs == macs
    assert deepfm.flops == fm + first_order + mlp_flops + 2 + sigmoid  # two adds of (1,)
    macs, mlp_flops, _ = parts(8)
    assert archlab.analyze(recsys_path("wide-deep-movielens")).flops == first_order + mlp_flops + 1 + sigmoid


def _transformer_params(v: int = 8000, d: int = 256, ff: int = 1024) -> int:
    attention = 4 * d * d + 4 * d
    block_ff = 2 * d * ff + ff + d
    encoder = attention + block_ff + 4 * d  # two layer norms
    decoder = 2 * attention + block_ff + 6 * d  # three
    return v * d + 3 * encoder + 2 * d + 3 * decoder + 2 * d  # one tied embedding/head, two final norms


#: The sequence examples by folder and name, parameters derived by hand (one shared vocabulary, tied).
SEQUENCE_PINNED = {
    ("translation", "transformer-multi30k"): _transformer_params(),
    ("translation", "gru-attention-multi30k"): (8000 * 256 + 2 * 3 * (256 * 256 + 256 * 256 + 2 * 256)
                                                + (512 * 256 + 256) + 3 * (256 * 256 + 256 * 256 + 2 * 256)
                                                + 256 * (256 + 256 + 2) + (512 * 256 + 256)),
    ("lm", "gpt-multi30k"): 8000 * 256 + 64 * 256 + 4 * (4 * 256 * 256 + 4 * 256 + 2 * 256 * 1024 + 1024 + 256
                                                         + 4 * 256) + 2 * 256,
}


def test_every_sequence_example_is_pinned():
    found = {(p.parent.name, p.stem) for folder in ("translation", "lm") for p in (EXAMPLES / folder).glob("*.yaml")}
    assert found == set(SEQUENCE_PINNED)


@pytest.mark.parametrize("folder,name", sorted(SEQUENCE_PINNED))
def test_sequence_examples_params_header_and_forward(folder, name):
    path = EXAMPLES / folder / f"{name}.yaml"
    assert f"{SEQUENCE_PINNED[folder, name]:,}" in path.read_text().split("\nname:")[0]
    spec = archlab.load(str(path))
    assert archlab.analyze(spec).total_params == SEQUENCE_PINNED[folder, name]
    model = archlab.build(spec).eval()
    ids = torch.randint(1, 8000, (2, 64))
    with torch.no_grad():
        out = model(source=ids, target=ids) if folder == "translation" else model(ids)
    assert out.shape == (2, 64, 8000)


def test_the_weak_learner_of_the_ensemble_results():
    """examples/ensemble/mnist-mlp-weak.yaml: what docs/results.md boosts and bags."""
    from archlab.training import resolve_recipe

    path = EXAMPLES / "ensemble" / "mnist-mlp-weak.yaml"
    assert sorted(p.name for p in (EXAMPLES / "ensemble").glob("*.yaml")) == ["mnist-mlp-weak.yaml"]
    spec = archlab.load(path)
    params = 28 * 28 * 16 + 16 + 16 * 10 + 10
    assert archlab.analyze(spec).total_params == params == 12_730
    assert f"{params:,} parameters" in path.read_text().split("\nname:")[0]
    recipe = resolve_recipe(spec.to_dict()["train"])
    assert (recipe.data, recipe.epochs) == ("mnist", 2)
