"""``augment: shift`` on a spec with named inputs: each input of images moves, the others stay."""

from __future__ import annotations

from types import SimpleNamespace

import torch

import archlab
from archlab.training import resolve_recipe
from archlab.training._augment import Augment, build_augment, input_traits
from archlab.training._engine import Engine

SPEC = {"name": "image-and-vector", "inputs": {"image": [1, 8, 8], "vector": [4]},
        "task": {"kind": "classification", "classes": 2},
        "graph": {"img": {"from": "image", "layers": ["flatten", {"dense": {"units": 8}}]},
                  "vec": {"from": "vector", "layers": [{"dense": {"units": 8}}]},
                  "out": {"from": ["img", "vec"], "merge": "concat", "layers": [{"dense": {"units": 2}}]}},
        "outputs": "out"}


def test_shift_moves_each_named_image_input_and_leaves_the_others() -> None:
    n = 200
    image = torch.zeros(n, 1, 8, 8)
    image[:, :, 3:5, 3:5] = 1.0  # a 2x2 blob that a shift of up to 2 pixels keeps inside the 8x8 frame
    vector = torch.randn(n, 4)
    x = {"image": image, "vector": vector}
    augment = build_augment(["shift"], input_traits(x), "classification", lambda: 2)
    out, _ = augment.on_batch(SimpleNamespace(generator=torch.Generator().manual_seed(0)), x, torch.zeros(n))
    assert torch.equal(out["vector"], vector)
    assert torch.equal(out["image"].sum((1, 2, 3)), torch.full((n,), 4.0))  # moved, not lost
    moved = (out["image"] != image).flatten(1).any(1).float().mean().item()
    assert 0.85 < moved < 1.0  # offsets of -2..2 on each axis: 1/25 of the samples stay put


def test_fit_with_named_inputs_shifts_the_images() -> None:
    recipe = resolve_recipe({"epochs": 1, "batch_size": 16, "augment": "shift"})
    engine = Engine(archlab.build(SPEC), recipe, "cross_entropy", verbose=0)
    x = {"image": torch.rand(32, 1, 8, 8), "vector": torch.randn(32, 4)}
    engine.fit(x, torch.randint(0, 2, (32,)))
    assert any(isinstance(c, Augment) for c in engine.callbacks)
