"""The template library: every shipped template loads, builds, runs forward and round-trips."""

from __future__ import annotations

from importlib import resources

import pytest
import torch

import archlab
from archlab.design import get_template_info, list_templates, load_template, template_text
from archlab.exceptions import RegistryError

NAMES = [t.name for t in list_templates()]


def test_every_yaml_file_is_listed() -> None:
    files = sorted(p.name[:-5] for p in resources.files("archlab").joinpath("templates").iterdir()
                   if p.name.endswith(".yaml"))
    assert files == sorted(NAMES)
    assert {"mlp", "small-cnn", "resnet-small", "rnn-attention", "transformer-small", "deepfm"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_template_builds_runs_and_round_trips(name: str) -> None:
    assert template_text(name).startswith(f"# {name}:")  # the comment header says what it is
    spec = load_template(name)
    assert archlab.load(archlab.dump(spec)) == spec
    assert archlab.Spec.from_dict(spec.to_dict()) == spec
    torch.manual_seed(0)
    model = archlab.build(spec).eval()
    data = spec.to_dict()
    raw = data["input"]
    shape, dtype = (raw["shape"], raw.get("dtype", "float")) if isinstance(raw, dict) else (raw, "float")
    x = torch.randint(0, 100, (2, *shape)) if dtype == "long" else torch.randn(2, *shape)
    with torch.no_grad():
        y = model(x)
    assert tuple(y.shape) == (2, data["task"].get("classes", 1))  # one unit for a binary task
    assert torch.isfinite(y).all()
    analysis = archlab.analyze(spec)
    assert analysis.total_params == sum(p.numel() for p in model.parameters())


def test_template_info_paths_exist() -> None:
    from archlab.spec import get_at

    for info in list_templates():
        assert isinstance(get_at(load_template(info.name).to_dict(), info.depth_path), int)


def test_unknown_template_suggests_the_closest() -> None:
    with pytest.raises(RegistryError, match="did you mean 'small-cnn'"):
        get_template_info("small_cnn")
