"""quantize_onnx(): int8 weights for an exported ONNX model, with ONNX Runtime's quantizer.

ONNX Runtime's ``onnxruntime.quantization`` is the maintained int8 path for a model that leaves
PyTorch. PyTorch's own is not (checked in torch 2.13): the eager entry points
(``torch.ao.quantization.quantize``, ``quantize_dynamic``) and the FX ones (``quantize_fx.prepare_fx``,
``convert_fx``) are marked ``@deprecated`` ("torch.ao.quantization is deprecated and will be removed
in 2.10", a message older than the release that still ships it) and send users to torchao;
creating quantized tensors (``torch.quantize_per_tensor``) warns that it will be removed too.
torchao is not installed here.

Two methods, chosen by what a spec contains (ONNX Runtime's own guidance: dynamic for RNNs and
transformers, static for CNNs):

- ``dynamic``: weights int8 ahead of time, activations quantized at run time from their observed
  range; no calibration data. It covers dense layers (``Gemm`` is rewritten to ``MatMul`` + ``Add``
  first, because ORT's dynamic quantizer only knows ``MatMul``), LSTM (ORT's ``DynamicQuantizeLSTM``),
  the Elman recurrence and attention projections (``MatMul``) and embedding tables (``Gather``).
  GRU stays float (ORT has no int8 GRU kernel), and so do convolutions: ORT's ``ConvInteger``
  made a small digits CNN 8x slower at batch 256 on this machine (6.95 ms vs 0.82 ms fp32).
  For dense, recurrent and attention models.
- ``static``: QDQ format (QuantizeLinear/DequantizeLinear pairs around float ops, which ORT fuses
  into int8 kernels), int8 weights per output channel, int8 activations with ranges fixed by
  calibration. For convolutional and dense models; refused (naming the layer) for attention,
  recurrent and embedding layers: ORT's static quantizer has no rule for LSTM or GRU, and one
  activation range per tensor, fixed in advance, fits attention scores and recurrent states poorly.

What each method does with a layer type is that type's ``quantization`` trait
(``archlab.layers.Quantization``), so a plugin layer that declares one is treated like a built-in.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from archlab._inputs import is_named, num_rows
from archlab.exceptions import SpecError
from archlab.layers import Quantization

from ._export import ExportError, _check_file, _quiet, _sibling_tmp, file_size, read_metadata

__all__ = ["QuantizeResult", "check_quantizable", "quantize_onnx"]

log = logging.getLogger("archlab")

Mode = Literal["dynamic", "static"]

DYNAMIC_OPS = ["MatMul", "LSTM", "Gather", "Attention"]
#: Quantized ops of ONNX Runtime's dynamic quantizer, by the float op they replace.
_INTEGER_OPS = {"MatMulInteger": "MatMul", "DynamicQuantizeMatMul": "MatMul", "DynamicQuantizeLSTM": "LSTM",
                "ConvInteger": "Conv", "QAttention": "Attention"}


@dataclass
class QuantizeResult:
    """What quantize_onnx wrote.

    Attributes:
        path: the int8 model file.
        size_bytes: its size.
        mode: ``"dynamic"`` or ``"static"``.
        ops_quantized: ONNX op type -> how many nodes now read int8 weights (``{"Conv": 2, "Gemm": 2}``).
        float_layers: spec layers left in float, with the reason (``"layers[0] (conv2d): ..."``).
        method: the calibration method (static), else None.
        calibration_samples: how many samples calibrated the activation ranges (static).
        max_abs_diff: largest |int8 - fp32| output difference on the calibration samples, when given.
    """

    path: Path
    size_bytes: int
    mode: str
    ops_quantized: dict[str, int]
    float_layers: list[str] = field(default_factory=list)
    method: str | None = None
    calibration_samples: int = 0
    max_abs_diff: float | None = None


def _layers(spec: Any) -> list[tuple[str, str, Quantization]]:
    """(spec path, layer type, its quantization trait) of every layer, once each (repeat
    iterations share a path)."""
    from archlab.builder import LayerNode, parse

    seen: dict[str, tuple[str, str, Quantization]] = {}
    for _, node in parse(spec).walk():
        if isinstance(node, LayerNode):
            seen.setdefault(node.path, (node.path, node.kind, node.layer_type.quantization))
    return list(seen.values())


def check_quantizable(spec: Any, mode: str) -> list[str]:
    """Refuse what the method cannot do, naming the layer; return the layers left in float."""
    layers = _layers(spec)
    if mode == "static":
        for path, kind, trait in layers:
            if isinstance(trait.static, str):
                raise SpecError(f"({kind}): static int8 quantization covers convolutional and dense layers; "
                                f"{trait.static}", path)
            if not trait.static:
                raise SpecError(f"({kind}): static int8 quantization covers convolutional and dense layers (conv, "
                                "dense, pooling, batchnorm, activations); this layer type is not one of them", path)
        return []
    floats = [f"{path} ({kind}): {trait.dynamic}" for path, kind, trait in layers if isinstance(trait.dynamic, str)]
    if not any(trait.dynamic is True for _, _, trait in layers):
        where = ", ".join(f"{p} ({k})" for p, k, trait in layers if isinstance(trait.dynamic, str)) or "no layer"
        raise SpecError(f"dynamic int8 quantization has nothing to quantize here: it covers dense, LSTM, Elman, "
                        f"attention and embedding weights, and this spec's weights are in {where}; use "
                        "--quantize static for convolutional models")
    return floats


def _gemm_to_matmul(model: Any) -> int:
    """Rewrite ``Gemm(x, W, b)`` with a constant W as ``MatMul(x, W^T) + b``: ORT's dynamic
    quantizer quantizes MatMul, not Gemm (which is what torch exports a 2-D dense layer as)."""
    from onnx import helper, numpy_helper

    initializers = {i.name: i for i in model.graph.initializer}
    users = Counter(name for node in model.graph.node for name in node.input)
    nodes, rewritten = [], 0
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight = node.input[1] if node.op_type == "Gemm" else None
        if (weight is None or weight not in initializers or users[weight] != 1 or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(initializers[weight])
        if attrs.get("transB", 0):
            initializers[weight].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(w.T), weight))
        if len(node.input) > 2 and node.input[2]:
            product = f"{node.output[0]}_matmul"
            nodes.append(helper.make_node("MatMul", [node.input[0], weight], [product], name=f"{node.name}_matmul"))
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_bias"))
        else:
            nodes.append(helper.make_node("MatMul", [node.input[0], weight], [node.output[0]], name=node.name))
        rewritten += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.value_info[:]  # shapes of the transposed weights changed; the quantizer infers them anew
    return rewritten


def _count_quantized(path: Path) -> dict[str, int]:
    """Nodes that read int8 weights: ORT's integer ops, float ops fed by DequantizeLinear of an
    int8 initializer (QDQ), or ops that read one themselves (dynamic mode's Gather of an int8
    embedding table, dequantized after the lookup)."""
    import onnx

    model = onnx.load(str(path))
    int8 = {i.name for i in model.graph.initializer if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)}
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int8}
    counts: Counter[str] = Counter()
    for node in model.graph.node:
        if node.op_type in _INTEGER_OPS:
            counts[_INTEGER_OPS[node.op_type]] += 1
        elif node.op_type not in ("QuantizeLinear", "DequantizeLinear") and any(i in dequantized or i in int8
                                                                                 for i in node.input):
            counts[node.op_type] += 1
    return dict(sorted(counts.items()))


class _Batches:
    """ORT's CalibrationDataReader protocol over calibration samples (by the ONNX input names), 32
    at a time: one dict per batch with a slice of every input."""

    def __init__(self, x: dict[str, np.ndarray], batch: int = 32) -> None:
        rows = num_rows(x)
        self._batches = iter([{name: a[i:i + batch] for name, a in x.items()} for i in range(0, rows, batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _model_inputs(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each ONNX input's sample shape (-1 for a dynamic axis) and dtype, by name."""
    import onnx

    found = {}
    for arg in onnx.load(str(path), load_external_data=False).graph.input:
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in arg.type.tensor_type.shape.dim)
        found[arg.name] = (dims[1:], np.dtype(np.int64 if arg.type.tensor_type.elem_type == onnx.TensorProto.INT64
                                              else np.float32))
    return found


def _calibration(calibration: Any, inputs: dict[str, tuple[tuple[int, ...], np.dtype]]) -> dict[str, np.ndarray]:
    """Calibration samples by ONNX input name, each in its input's dtype: one array for a model of
    one input, a dict of arrays by input name for several (more names are left out)."""
    if not is_named(calibration):
        if len(inputs) > 1:
            raise ValueError(f"the model takes the inputs {', '.join(inputs)}: give calibration as a dict of arrays "
                             "by input name")
        calibration = {next(iter(inputs)): calibration}
    missing = [name for name in inputs if name not in calibration]
    if missing:
        raise ValueError(f"calibration lacks the input(s) {', '.join(missing)}; it holds {', '.join(calibration)}")
    chosen = {}
    for name, (shape, dtype) in inputs.items():
        array = np.ascontiguousarray(calibration[name], dtype=dtype)
        of = "" if len(inputs) == 1 else f" of input {name!r}"
        if array.ndim != len(shape) + 1 or any(s not in (-1, c) for s, c in zip(shape, array.shape[1:], strict=False)):
            raise ValueError(f"calibration samples{of} have shape {array.shape[1:]}, the model takes {shape}")
        chosen[name] = array
    if not num_rows(chosen):
        raise ValueError("calibration holds no samples")
    if len({len(a) for a in chosen.values()}) > 1:
        raise ValueError(f"the calibration inputs hold different numbers of samples "
                         f"({', '.join(f'{n}: {len(a)}' for n, a in chosen.items())})")
    return chosen


def quantize_onnx(fp32_path: str | Path, out_path: str | Path, *, mode: Mode = "dynamic",
                  calibration: np.ndarray | dict[str, np.ndarray] | None = None, spec: Any = None,
                  method: Literal["minmax", "percentile"] = "minmax") -> QuantizeResult:
    """Quantize an exported fp32 ONNX model to int8 with ONNX Runtime.

    Static calibration uses MinMax by default: with the few hundred samples calibration usually
    gets, the observed range is exact and deterministic, and clipping it (Percentile keeps 99.999 %
    of a histogram) cost accuracy on digits (an MLP lost 0.3 points with Percentile, none with
    MinMax). Percentile is there for large calibration sets with rare outliers.

    Args:
        fp32_path: the fp32 model (``export_run``/``export_model``).
        out_path: where the int8 model goes; written only when quantization succeeds.
        mode: ``"dynamic"`` (dense, recurrent, attention models) or ``"static"`` (convolutional and dense).
        calibration: input samples ``(N, *input_shape)``, or a dict of them by input name for a
            model of several inputs; needed for static, where they fix the activation ranges.
            Take them from the training split, never the test split.
        spec: the model's spec, to check its layers; default: the spec stored in the file.
        method: static calibration, ``"minmax"`` or ``"percentile"``.

    Returns:
        QuantizeResult. The file keeps the fp32 file's metadata and adds ``archlab.quantization``.

    Raises:
        SpecError: the method cannot quantize a layer of the spec (naming its path and type).
        ValueError: missing or ill-shaped calibration data, an unknown mode or method.
        ExportError: ONNX Runtime failed to quantize, or the result does not run.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from archlab.spec import load

    from ._export import load_runner

    fp32_path, out_path = _check_file(fp32_path), Path(out_path)
    if mode not in ("dynamic", "static"):
        raise ValueError(f"mode is dynamic or static, got {mode!r}")
    if method not in ("minmax", "percentile"):
        raise ValueError(f"method is minmax or percentile, got {method!r}")
    metadata = read_metadata(fp32_path)
    if spec is None:
        if "archlab.spec" not in metadata:
            raise ValueError(f"{fp32_path} carries no archlab.spec metadata: pass spec= (the model's spec)")
        spec = metadata["archlab.spec"]
    float_layers = check_quantizable(load(spec), mode)
    inputs = _model_inputs(fp32_path)
    samples = _calibration(calibration, inputs) if calibration is not None else None
    if samples is None and mode == "static":
        raise ValueError("static quantization needs calibration samples (a few hundred from the training split) "
                         "to fix the activation ranges")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling_tmp(out_path)
    pre, rewritten = tmp.with_name(tmp.name + ".pre.onnx"), tmp.with_name(tmp.name + ".mm.onnx")
    try:
        with _quiet(), contextlib.redirect_stdout(io.StringIO()):  # ORT's quantizer prints progress
            source = fp32_path
            try:  # shape inference and graph cleanup, as ORT recommends before quantizing
                quant_pre_process(str(fp32_path), str(pre))
                source = pre
            except Exception as exc:  # the quantizer still works without it, with less shape information
                log.debug("quantize: pre-processing skipped: %s", exc)
            if mode == "dynamic":
                import onnx

                proto = onnx.load(str(source))
                _gemm_to_matmul(proto)
                onnx.save(proto, str(rewritten))
                quantize_dynamic(str(rewritten), str(tmp), weight_type=QuantType.QInt8,
                                 op_types_to_quantize=DYNAMIC_OPS)
            else:
                calibrate = CalibrationMethod.MinMax if method == "minmax" else CalibrationMethod.Percentile
                quantize_static(str(source), str(tmp), _Batches(samples), quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                calibrate_method=calibrate)
        _set_metadata(tmp, metadata, mode, method, samples)
        max_diff = _check_result(load_runner, fp32_path, tmp, samples, inputs)
        ops = _count_quantized(tmp)
        os.replace(tmp, out_path)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"ONNX Runtime could not quantize {fp32_path} ({mode}): {exc}") from exc
    finally:
        for leftover in (tmp, pre, rewritten, pre.with_name(pre.name + ".data")):
            leftover.unlink(missing_ok=True)
    return QuantizeResult(out_path, file_size(out_path), mode, ops, float_layers,
                          method if mode == "static" else None,
                          0 if samples is None or mode == "dynamic" else num_rows(samples), max_diff)


def _set_metadata(path: Path, metadata: dict[str, str], mode: str, method: str,
                  calibration: dict[str, np.ndarray] | None) -> None:
    """The fp32 file's metadata (spec, metrics, source run) plus how the weights were quantized;
    ORT's own bookkeeping keys (onnx.infer, onnx.quant.pre_process) are dropped."""
    import onnx

    proto = onnx.load(str(path))
    info: dict[str, Any] = {"mode": mode, "weights": "int8"}
    if mode == "static":
        info |= {"format": "QDQ", "per_channel": True, "activations": "int8", "method": method,
                 "calibration_samples": num_rows(calibration) if calibration is not None else 0}
    del proto.metadata_props[:]
    for key, value in {**metadata, "archlab.quantization": json.dumps(info)}.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def _check_result(load_runner: Any, fp32_path: Path, path: Path, calibration: dict[str, np.ndarray] | None,
                  inputs: dict[str, tuple[tuple[int, ...], np.dtype]]) -> float | None:
    """The int8 model must load and give finite outputs of the fp32 model's shape."""
    if calibration is not None:
        x = {name: a[:64] for name, a in calibration.items()}
    else:  # zeros: in range for token ids too
        x = {name: np.zeros((2, *(max(s, 1) for s in shape)), dtype) for name, (shape, dtype) in inputs.items()}
    x = x if len(x) > 1 else next(iter(x.values()))  # a runner of one input takes one array
    reference, got = load_runner(fp32_path)(x), load_runner(path)(x)
    if got.shape != reference.shape or not np.isfinite(got).all():
        raise ExportError(f"the int8 model of {fp32_path} gives outputs of shape {got.shape} with "
                          f"{'' if np.isfinite(got).all() else 'non-finite values '}where fp32 gives {reference.shape}")
    return float(np.abs(got - reference).max()) if calibration is not None else None
