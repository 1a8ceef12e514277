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
from archlab.layers import Quantization, keras_class
from archlab.spec import Spec, dump, load

__all__ = ["check_layer", "check_layer_traits", "check_spec_roundtrip"]


def check_spec_roundtrip(spec: Spec | dict) -> None:
    """A spec survives YAML, JSON and dict round trips unchanged."""
    spec = load(spec)
    for fmt in ("yaml", "json"):
        again = load(dump(spec, format=fmt))
        if again != spec:
            raise AssertionError(f"{fmt} round trip changed the spec:\n{spec.to_dict()}\n!=\n{again.to_dict()}")
    if Spec.from_dict(spec.to_dict()) != spec:
        raise AssertionError("Spec.from_dict(spec.to_dict()) != spec")


def _one_layer(item: Any, input_shape: list[int], dtype: str) -> Spec:
    return Spec({"name": "check", "input": input_shape if dtype == "float" else {"shape": input_shape, "dtype": dtype},
                 "layers": [item]})


def check_layer(item: Any, input_shape: list[int], *, dtype: str = "float", batch_size: int = 2,
                seed: int = 0) -> None:
    """Check one layer item the way every built-in layer is checked.

    It must build; a forward pass must give exactly the inferred shape with finite values;
    a backward pass must give finite gradients to every trainable parameter; the analysis's
    parameter count must equal the module's; the spec must round-trip; and the type's traits
    must agree with its parameters and module (``check_layer_traits``).

    Raises:
        AssertionError: naming the check that failed.
    """
    spec = _one_layer(item, input_shape, dtype)
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
    check_layer_traits(item, input_shape, dtype=dtype)


def check_layer_traits(item: Any, input_shape: list[int], *, dtype: str = "float") -> None:
    """Check that a layer type's declared traits (``LayerType.structured``, ``keeps_channels``,
    ``lowrank``, ``quantization``, ``keras``, ``regularization``) agree with its Params and with the module it builds
    for this item, so compress, deploy and the Keras-style constructors can rely on them.

    Raises:
        AssertionError: naming the trait and what disagrees.
    """
    spec = _one_layer(item, input_shape, dtype)
    node = parse(spec).root.items[0]
    layer_type, p, x, y = node.layer_type, node.params, node.input, node.output
    state = build(spec, device="meta").get_submodule(f"net.{node.name or 0}").state_dict()
    fields = sorted(layer_type.Params.model_fields)

    def fail(message: str) -> None:
        raise AssertionError(f"layer type {layer_type.name!r}: {message}")

    def field(trait: str, name: str) -> None:
        if name not in fields:
            fail(f"{trait} names {name!r}, which is not a parameter of {layer_type.Params.__name__} "
                 f"(its parameters: {', '.join(fields) or 'none'})")

    def tensor(trait: str, name: str) -> torch.Tensor:
        if name not in state:
            fail(f"{trait} names {name!r}, which is not a tensor of the module it builds "
                 f"(its tensors: {', '.join(state) or 'none'})")
        return state[name]

    structured, keeps = layer_type.structured, layer_type.keeps_channels
    if structured is not None:
        if keeps is not None:
            fail("sets both structured and keeps_channels: a layer either makes its own outputs or passes the "
                 "channels of its input on")
        field("structured.width", structured.width)
        width = getattr(p, structured.width)
        weight = tensor("structured.weight", structured.weight)
        if weight.shape[0] != width:
            fail(f"structured.weight {structured.weight!r} has {weight.shape[0]} slices on axis 0, "
                 f"{structured.width} is {width}: the weight must hold one slice per output on axis 0")
        if not -weight.dim() <= structured.input_axis < weight.dim():
            fail(f"structured.input_axis {structured.input_axis} is not an axis of {structured.weight!r} "
                 f"{tuple(weight.shape)}")
        if structured.bias is not None and structured.bias in state and state[structured.bias].shape[0] != width:
            fail(f"structured.bias {structured.bias!r} has {state[structured.bias].shape[0]} entries, "
                 f"{structured.width} is {width}")
    if keeps is not None:
        for name in keeps.state:
            if tensor("keeps_channels.state", name).shape[0] != x.shape[0]:
                fail(f"keeps_channels.state {name!r} has {state[name].shape[0]} entries on axis 0, the input "
                     f"{x.described} has {x.shape[0]} channels")
        if keeps.score is not None and keeps.score not in keeps.state:
            fail(f"keeps_channels.score {keeps.score!r} is not one of keeps_channels.state {keeps.state}")
        if keeps.flattens and y.numel != x.numel:
            fail(f"keeps_channels.flattens, but the output {y} does not hold the input's {x.numel} elements")
        if not keeps.flattens and (not y.rank or not x.rank or y.shape[0] != x.shape[0]):
            fail(f"keeps_channels, but the output {y} does not keep the channels (axis 0) of the input {x}")
    if layer_type.lowrank:
        field("lowrank", "units")
        field("lowrank", "use_bias")
        weight = tensor("lowrank", "weight")
        if tuple(weight.shape) != (p.units, x.shape[-1]):
            fail(f"lowrank needs a weight (units, in) = {(p.units, x.shape[-1])}, the module has {tuple(weight.shape)}")
    if not isinstance(layer_type.quantization, Quantization):
        fail(f"quantization is a Quantization(static=..., dynamic=...), got {layer_type.quantization!r}")
    if layer_type.regularization is not None:
        field("regularization", layer_type.regularization)
    if layer_type.keras is not None:
        keras = layer_type.keras
        for name in (*keras.args, *keras.defaults, *keras.renames.values()):
            field("keras", name)
        for name in (keras.name, *keras.aliases):
            cls = keras_class(name)
            if cls is None or cls.type_name != layer_type.name:
                fail(f"the Keras name {name!r} writes {cls.type_name if cls else 'nothing'!r}: another type took it; "
                     "choose another keras name")
