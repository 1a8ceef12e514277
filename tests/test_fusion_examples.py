"""The audio + image fusion specs in examples/fusion/: pinned counts built from torch modules, two
named inputs in and ten logits out, both modalities read and reached by the loss, late fusion
additive over them, the speech example's audio encoder, and ONNX Runtime computing what torch
computes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import archlab
from archlab.deploy import export_model, load_runner
from archlab.training import resolve_recipe

FUSION = Path(__file__).resolve().parents[1] / "examples" / "fusion"
SPEECH_CNN = 104_986  # examples/speech/cnn-logmel.yaml, pinned in tests/test_speech_examples.py


def numel(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


# The parts, counted on torch's own modules: the speech CNN without its 10-way dense is the audio
# encoder; the image CNN is conv 1->16 and 16->32 (3x3) before a dense from the (32, 5, 5) maps.
AUDIO_CNN = SPEECH_CNN - numel(nn.Linear(128, 10))
IMAGE_CNN = numel(nn.Conv2d(1, 16, 3), nn.Conv2d(16, 32, 3))
IMAGE_DENSE = numel(nn.Linear(800, 64))
PINNED = {
    "early": AUDIO_CNN + IMAGE_CNN + IMAGE_DENSE + numel(nn.Linear(128 + 64, 64), nn.Linear(64, 10)),
    "late": SPEECH_CNN + IMAGE_CNN + IMAGE_DENSE + numel(nn.Linear(64, 10)),
    "attention": AUDIO_CNN + numel(nn.Linear(128, 64)) + IMAGE_CNN + IMAGE_DENSE + 2 * 64  # modality embedding
    + numel(nn.TransformerEncoderLayer(64, 4, 128), nn.Linear(64, 10)),
}
NODE_SUFFIX = {"early": "features", "late": "logits", "attention": "token"}  # graph: audio_<suffix>, image_<suffix>


def batch(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random batch of both inputs in their data set's ranges: waveforms in [-1, 1], pixels in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return {"audio": (torch.rand(n, 8000, generator=g) * 2 - 1) * 0.3,
            "image": torch.rand(n, 1, 28, 28, generator=g)}


def built(name: str) -> nn.Module:
    torch.manual_seed(0)
    return archlab.build(archlab.load(FUSION / f"{name}.yaml")).eval()


def test_every_fusion_example_is_pinned():
    assert sorted(p.stem for p in FUSION.glob("*.yaml")) == sorted(PINNED)
    assert PINNED == {"early": 172_762, "late": 161_700, "attention": 202_266}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_two_named_inputs_give_ten_logits_with_the_analysed_parameters(name):
    text = (FUSION / f"{name}.yaml").read_text()
    assert f"{PINNED[name]:,} parameters" in text.split("\nname:")[0], "the header states the parameter count"
    spec = archlab.load(FUSION / f"{name}.yaml")
    analysis = archlab.analyze(spec)
    model = built(name)
    assert analysis.total_params == model.num_params() == numel(model) == PINNED[name]
    assert analysis.outputs == [{"shape": [10], "dtype": "float"}]
    recipe = resolve_recipe(spec.to_dict()["train"])
    assert (recipe.data, recipe.batch_size, recipe.optimizer.name, recipe.schedule.name) == \
        ("fsdd+mnist", 32, "adamw", "cosine")
    x = batch(3)
    with torch.no_grad():
        by_name, by_position = model(**x), model(x["audio"], x["image"])
    assert by_name.shape == (3, 10) and torch.isfinite(by_name).all()
    torch.testing.assert_close(by_name, by_position, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(PINNED))
@pytest.mark.parametrize("silenced", ["audio", "image"])
def test_zeroing_either_input_changes_the_output(name, silenced):
    model, x = built(name), batch(4)
    with torch.no_grad():
        both = model(**x)
        one = model(**{**x, silenced: torch.zeros_like(x[silenced])})
    assert (both - one).abs().amax(dim=1).min() > 1e-4, f"every sample's logits depend on {silenced}"


@pytest.mark.parametrize("name", sorted(PINNED))
def test_only_late_fusion_adds_the_modalities_contributions(name):
    """Late fusion averages two classifiers, f(a, i) = (g(a) + h(i)) / 2, so swapping images between
    two samples changes their outputs by opposite amounts; early and attention fusion mix the
    modalities before the output, so they do not (at initialisation too, for inputs as unlike as
    noise and pure tones, full and sparse images)."""
    model, x = built(name), batch(4, seed=1)
    seconds = torch.arange(8000) / 8000
    tones = 0.5 * torch.sin(2 * math.pi * torch.tensor([200.0, 400.0, 800.0, 1600.0])[:, None] * seconds)
    strokes = (torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(2)) > 0.8).float()
    with torch.no_grad():
        interaction = (model(x["audio"], x["image"]) + model(tones, strokes)
                       - model(x["audio"], strokes) - model(tones, x["image"]))
    if name == "late":
        assert interaction.abs().max() < 1e-5
    else:
        assert interaction.abs().max() > 1e-4


@pytest.mark.parametrize("name", sorted(PINNED))
def test_onnx_export_takes_both_inputs_by_name_and_matches_torch(name, tmp_path):
    model, x = built(name), batch(9)
    result = export_model(model, tmp_path / f"{name}.onnx", example={k: v[:2] for k, v in x.items()},
                          check_inputs=x)
    assert result.max_abs_diff < 1e-4 and result.batch_sizes == (1, 7, 1)
    with torch.no_grad():
        expected = model(**{k: v[:3] for k, v in x.items()}).numpy()
    got = load_runner(result.path)({k: v[:3].numpy() for k, v in x.items()})
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_one_step_of_the_loss_reaches_every_parameter_of_both_encoders(name):
    """Cross-entropy on the logits (what training computes, the specs ending in logits) sends a
    gradient into every weight: no branch is cut off from the loss."""
    model, x = built(name).train(), batch(8)
    nn.functional.cross_entropy(model(**x), torch.arange(8) % 10).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []
    nodes = {n.split(".")[2] for n, _ in model.named_parameters()}  # net.nodes.<node>.layers...
    assert {f"audio_{NODE_SUFFIX[name]}", f"image_{NODE_SUFFIX[name]}"} <= nodes


def test_the_audio_encoder_is_the_speech_examples():
    """The audio branch of every fusion spec is examples/speech/cnn-logmel.yaml up to its pooling
    (late fusion: its whole classifier), so FSDD results on that spec are the audio-only baseline."""
    speech = archlab.load(FUSION.parent / "speech" / "cnn-logmel.yaml").to_dict()["layers"]
    for name, suffix in NODE_SUFFIX.items():
        layers = archlab.load(FUSION / f"{name}.yaml").to_dict()["graph"][f"audio_{suffix}"]["layers"]
        shared = len(speech) if name == "late" else speech.index("global_avgpool1d") + 1
        assert layers[:shared] == speech[:shared], name
