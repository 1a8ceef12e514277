"""Conformance checks shipped with archlab, so that a plugin layer can prove itself.

Example:
    >>> from archlab.testing import check_layer
    >>> check_layer({"dense": {"units": 3}}, input_shape=[5])
"""

from __future__ import annotations

import math
from typing import Any

import torch

from archlab.analysis import analyze
from archlab.builder import build, parse
from archlab.spec import Spec, dump, load

__all__ = ["check_layer", "check_spec_roundtrip"]


def check_spec_roundtrip(spec: Spec | dict) -> None:
    """A spec survives YAML, JSON and dict round trips unchanged."""
    spec = load(spec)
    for fmt in ("yaml", "json"):
        again = load(dump(spec, format=fmt))
        if again != spec:
            raise AssertionError(f"{fmt} round trip changed the spec:\n{spec.to_dict()}\n!=\n{again.to_dict()}")
    if Spec.from_dict(spec.to_dict()) != spec:
        raise AssertionError("Spec.from_dict(spec.to_dict()) != spec")


def check_layer(item: Any, input_shape: list[int], *, dtype: str = "float", batch_size: int = 2,
                seed: int = 0) -> None:
    """Check one layer item the way every built-in layer is checked.

    It must build; a forward pass must give exactly the inferred shape with finite values;
    a backward pass must give finite gradients to every trainable parameter; the analysis's
    parameter count must equal the module's; and the spec must round-trip.

    Raises:
        AssertionError: naming the check that failed.
    """
    spec = Spec({"name": "check", "input": input_shape if dtype == "float" else {"shape": input_shape, "dtype": dtype},
                 "layers": [item]})
    parsed = parse(spec)
    model = build(spec)
    torch.manual_seed(seed)
    shape = (batch_size, *parsed.inputs["input"].shape)
    x = torch.randint(0, 2, shape) if dtype == "long" else torch.randn(shape)
    y = model(x)
    expected = (batch_size, *parsed.root.output.shape)
    if tuple(y.shape) != expected:
        raise AssertionError(f"forward gives {tuple(y.shape)}, the shape rule says {expected}")
    if not torch.isfinite(y).all():
        raise AssertionError("forward gives non-finite values")
    trainable = [p for p in model.parameters() if p.requires_grad]
    if trainable:
        y.float().square().mean().backward()
        for name, p in model.named_parameters():
            if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all()):
                raise AssertionError(f"parameter {name} gets no finite gradient")
    counted = analyze(parsed).total_params
    actual = sum(p.numel() for p in model.parameters())
    if counted != actual:
        raise AssertionError(f"the analysis counts {counted:,} parameters, the module has {actual:,}")
    if not math.isfinite(float(analyze(parsed).flops)):
        raise AssertionError("the FLOP rule gives a non-finite count")
    check_spec_roundtrip(spec)
