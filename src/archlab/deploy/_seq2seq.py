"""export_seq2seq(), onnx_greedy_decode(), onnx_beam_search(): a seq2seq model as two ONNX files, an
encoder and one decoder step, and greedy and beam decoding over them in ONNX Runtime, by the loops
PyTorch's decoding runs (``archlab.generation``), so they give PyTorch's tokens.

The layout is Hugging Face optimum's for encoder-decoder models: a folder with
``encoder_model.onnx``, ``decoder_model.onnx`` and the run's ``tokenizer.json``. The graph is cut
where ``archlab.generation`` cuts it for its KV cache (``split_graph``): the nodes that do not
depend on ``target`` are the encoder, the rest is the decoder. The decoder step recomputes the
whole prefix at each call, so it is exact whatever the layers; it returns the log-probabilities of
the next token only, which is all a decode reads.

Padding: the model masks the source's pad ids (``pad_id`` in the spec) in the encoder's
self-attention and in the decoder's cross-attention. The encoder returns that mask as
``source_padding`` (True where padded), computed by the same rule as ``ArchlabModel`` does, and
the decoder reads it, so a batch of sources of different lengths decodes as its rows would.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from archlab._tokens import BOS_ID, EOS_ID, PAD_ID
from archlab.exceptions import SpecError

from ._export import (
    ExportError,
    ModelFileError,
    _check_batches,
    _copy_atomic,
    _ort_session,
    _quiet,
    _sibling_tmp,
    _strip_node_metadata,
    _summary,
    check_export_options,
)

__all__ = ["DECODER_FILE", "ENCODER_FILE", "OnnxStep", "Seq2SeqExportResult", "check_seq2seq_options",
           "export_seq2seq", "export_seq2seq_run", "onnx_beam_search", "onnx_greedy_decode"]

ENCODER_FILE = "encoder_model.onnx"
DECODER_FILE = "decoder_model.onnx"
TOKENIZER_FILE = "tokenizer.json"
#: the encoder's output that carries the source's padding mask, and the decoder's input of it
PADDING = "source_padding"
#: the decoder step's output: log-probabilities of the next token, (batch, vocabulary)
LOG_PROBS = "log_probs"


@dataclass
class Seq2SeqExportResult:
    """What export_seq2seq wrote and how closely it matches PyTorch.

    Attributes:
        folder: the folder holding the three files.
        encoder, decoder, tokenizer: the files (``tokenizer`` None when the run has none).
        opset: the ONNX opset of both files.
        size_bytes: the two ONNX files' sizes together.
        memory_diff: the largest ``|onnx - torch|`` of the encoder's memory at the source's real
            (not padded) positions.
        step_diff: the largest ``|onnx - torch|`` of the decoder's log-probabilities.
        greedy_equal, checked_samples: held-out sentences whose ORT greedy tokens equal PyTorch's, of how many.
        batch_sizes: the batch sizes checked (each batch cut to its longest source, so shorter rows are padded).
        rtol, atol: the tolerance of the memory and step checks.
    """

    folder: Path
    encoder: Path
    decoder: Path
    tokenizer: Path | None
    opset: int
    size_bytes: int
    memory_diff: float
    step_diff: float
    greedy_equal: int
    checked_samples: int
    batch_sizes: tuple[int, ...]
    rtol: float
    atol: float
    format: str = "onnx"


def _net_and_split(model: nn.Module, source_name: str, target_name: str) -> tuple[Any, Any]:
    from archlab.builder import ArchlabModel
    from archlab.builder._modules import GraphNet
    from archlab.generation._cache import split_graph
    from archlab.layers._recurrent_modules import ElmanRNN

    net = getattr(model, "net", None)
    if not isinstance(model, ArchlabModel) or not isinstance(net, GraphNet) or model.permute is not None:
        raise SpecError("a seq2seq export takes a graph-form spec with the long inputs source and target", "graph")
    if set(net.input_names) != {source_name, target_name}:
        raise SpecError(f"a seq2seq export takes the inputs {source_name} and {target_name}; this graph has "
                        f"{', '.join(net.input_names)}", "inputs")
    split = split_graph(net, target_name)
    if split.output is None:
        raise SpecError(f"a seq2seq export needs one output that depends on {target_name}", "outputs")
    for name in split.step:
        for path, module in net.nodes[name].layers.named_modules():
            if isinstance(module, (nn.RNNBase, ElmanRNN)):
                where = f"graph.{name}.layers.{path.split('.')[0]}"
                raise SpecError("a recurrent layer in the decoder: torch.export traces it over time at "
                                "the example's length, so the decoder step would only run at that prefix length. "
                                "Seq2seq specs whose decoder is attention and position-wise layers (Transformer) "
                                "export; recurrent decoders do not yet", where)
    return net, split


def _pad_id(model: nn.Module, name: str) -> int | None:
    masks = model.masks
    return None if masks is None else masks.pad_ids.get(name)


def _memory_names(reads: list[str]) -> list[str]:
    """The ONNX names of what the decoder reads from the encoder: ``memory`` for the usual one
    tensor, ``memory_<node>`` when the decoder reads several."""
    return ["memory"] if len(reads) == 1 else [f"memory_{name}" for name in reads]


class _Encoder(nn.Module):
    """The fixed part of the graph: source ids -> the tensors the decoder reads (and the source's padding)."""

    def __init__(self, model: nn.Module, source_name: str, target_name: str) -> None:
        super().__init__()
        self.model = model
        self.net, self.split = _net_and_split(model, source_name, target_name)
        self.source_name, self.pad_id = source_name, _pad_id(model, source_name)

    def forward(self, source: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from archlab.layers._masking import holding

        scope = self.model.masks
        masks = {} if scope is None else scope.of({self.source_name: source})
        with holding(scope, masks):
            values = self.net.run({self.source_name: source}, self.split.fixed)
        memory = tuple(values[name] for name in self.split.reads)
        return memory if self.source_name not in masks else (*memory, masks[self.source_name])


class _DecoderStep(nn.Module):
    """The step part: the encoder's tensors (and the source's padding) and the target prefix ->
    log-probabilities of the next token, ``(batch, V)``, as ``archlab.generation``'s FullStep takes them."""

    def __init__(self, model: nn.Module, source_name: str, target_name: str) -> None:
        super().__init__()
        self.model = model
        self.net, self.split = _net_and_split(model, source_name, target_name)
        self.source_name, self.target_name = source_name, target_name
        self.source_pad = _pad_id(model, source_name)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        from archlab.layers._masking import holding

        memory, target = args[: len(self.split.reads)], args[-1]
        scope = self.model.masks
        masks = {} if scope is None else scope.of({self.target_name: target})
        if self.source_pad is not None:  # the encoder's, passed on as an input
            masks[self.source_name] = args[len(self.split.reads)]
        with holding(scope, masks):
            values = self.net.run(dict(zip(self.split.reads, memory, strict=True)) | {self.target_name: target},
                                  self.split.step)
        return torch.log_softmax(values[self.split.output][:, -1].float(), dim=-1)


def _export_part(module: nn.Module, args: tuple[torch.Tensor, ...], names: list[str], outputs: list[str],
                 dynamic: Any, tmp: Path, metadata: dict[str, str], opset: int | None,
                 what: str, output_axes: tuple[dict[int, Any], ...] = ()) -> int:
    import onnx

    try:
        with _quiet():
            torch.onnx.export(module.eval(), args, str(tmp), dynamo=True, input_names=names, output_names=outputs,
                              opset_version=opset, external_data=False, verbose=False,
                              dynamic_shapes=dynamic)
    except Exception as exc:
        raise ExportError(f"torch.onnx could not export the {what}{f' at opset {opset}' if opset else ''}: "
                          f"{_summary(exc)}") from exc
    proto = onnx.load(str(tmp))
    _check_dynamic(proto, names, dynamic["args"] if isinstance(dynamic, dict) else dynamic, what)
    actual = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and actual != opset:
        raise ExportError(f"opset {opset} was asked for but the exporter produced opset {actual} for the {what}: "
                          f"its operators do not convert down to {opset}; use --opset {actual} or higher")
    _strip_node_metadata(proto.graph)
    # a recurrent encoder's output comes out declared at the example's length although the graph
    # computes it at any (ONNX Runtime warns on every call): declare the axes it has, and drop the
    # intermediate shapes, optional hints that carry the same stale length (ONNX Runtime infers them)
    for arg, dims in zip(proto.graph.output, output_axes, strict=False):
        for axis, dim in dims.items():
            arg.type.tensor_type.shape.dim[axis].dim_param = dim.__name__
    if output_axes:
        del proto.graph.value_info[:]
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(tmp))
    return int(actual) if actual is not None else 0


def _check_dynamic(proto: Any, names: list[str], axes: tuple[dict[int, Any], ...], what: str) -> None:
    """Every axis asked to be dynamic is dynamic in the file. torch.onnx falls back to a fixed size,
    without an error, where the model's tracing fixes one (a GRU/LSTM is traced step by step at the
    example's length), and such a decoder step could not run at any other prefix length."""
    for name, arg, dims in zip(names, proto.graph.input, axes, strict=True):
        for axis, dim in dims.items():
            fixed = arg.type.tensor_type.shape.dim[axis]
            if fixed.HasField("dim_value"):
                raise ExportError(f"the {what}'s input {name} came out with a fixed {dim.__name__} of "
                                  f"{fixed.dim_value}: a layer is traced at the example's length (torch.export "
                                  "unrolls recurrent layers, GRU and LSTM, over time), so the file would only run at "
                                  "that length. Seq2seq specs whose encoder and decoder are attention and "
                                  "position-wise layers (Transformer) export; recurrent ones do not yet.")


class OnnxStep:
    """An export's decoder step in ONNX Runtime as a step of ``archlab.generation``'s decode loops
    (``greedy_decode``, ``beam_decode``): the encoder runs once on the source, and each call runs
    the decoder on the whole prefix, with the encoder's outputs of the rows the beams keep."""

    def __init__(self, encoder: Any, decoder: Any, source: np.ndarray) -> None:
        fixed = dict(zip([o.name for o in encoder.get_outputs()],
                         encoder.run(None, {encoder.get_inputs()[0].name: source}), strict=True))
        *fixed_names, self.target_name = [i.name for i in decoder.get_inputs()]
        self.decoder = decoder
        self.fixed = {name: fixed[name] for name in fixed_names}

    def reorder(self, rows: torch.Tensor) -> None:
        index = rows.cpu().numpy()
        self.fixed = {name: value[index] for name, value in self.fixed.items()}

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        feed = {**self.fixed, self.target_name: ids.cpu().numpy()}
        return torch.from_numpy(self.decoder.run([LOG_PROBS], feed)[0])  # (R, V)


def _onnx_step(encoder: str | Path | Any, decoder: str | Path | Any,
               source: np.ndarray | Sequence[Sequence[int]]) -> tuple[OnnxStep, int]:
    from archlab.generation._common import as_batch

    enc = encoder if hasattr(encoder, "run") else _ort_session(Path(encoder))
    dec = decoder if hasattr(decoder, "run") else _ort_session(Path(decoder))
    ids = as_batch(torch.from_numpy(source) if isinstance(source, np.ndarray) else source, torch.device("cpu"),
                   "source")
    return OnnxStep(enc, dec, ids.numpy()), len(ids)


def onnx_greedy_decode(encoder: str | Path | Any, decoder: str | Path | Any,
                       source: np.ndarray | Sequence[Sequence[int]], max_len: int, *, bos_id: int = BOS_ID,
                       eos_id: int = EOS_ID, pad_id: int = PAD_ID) -> list[Any]:
    """Greedy decoding over an exported encoder and decoder step in ONNX Runtime: the loop of
    ``archlab.generation.greedy_search`` (``greedy_decode``) over ``OnnxStep``.

    Args:
        encoder, decoder: the ``.onnx`` files (or ONNX Runtime sessions of them).
        source: ``(B, S)`` ids padded with ``<pad>``, or id lists (padded here).
        max_len: the most tokens to decode, ``</s>`` included (at most the spec's target length).
        bos_id, eos_id, pad_id: the special ids (the project's by default).

    Returns:
        One ``archlab.generation.Hypothesis`` per sentence: its tokens (without ``<s>`` and ``</s>``),
        their log-probability, and whether ``</s>`` ended it.
    """
    from archlab.generation import greedy_decode

    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    step, batch = _onnx_step(encoder, decoder, source)
    return greedy_decode(step, batch, max_len, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)


def onnx_beam_search(encoder: str | Path | Any, decoder: str | Path | Any,
                     source: np.ndarray | Sequence[Sequence[int]], max_len: int, *, beam_size: int = 4,
                     length_penalty: float = 1.0, early_stopping: bool = True, bos_id: int = BOS_ID,
                     eos_id: int = EOS_ID) -> list[Any]:
    """Beam search over an exported encoder and decoder step in ONNX Runtime: the loop of
    ``archlab.generation.beam_search`` (``beam_decode``) over ``OnnxStep``; arguments as there and
    in ``onnx_greedy_decode``."""
    from archlab.generation import beam_decode

    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    step, batch = _onnx_step(encoder, decoder, source)
    return beam_decode(step, batch, max_len, beam_size=beam_size, length_penalty=length_penalty,
                       early_stopping=early_stopping, bos_id=bos_id, eos_id=eos_id)


def _trim(source: torch.Tensor, pad_id: int | None) -> torch.Tensor:
    """A batch cut to its longest source (trailing pad columns dropped), as a batch of id lists is
    padded: the rows of a batch then have different lengths and the shorter ones padding."""
    if pad_id is None:
        return source
    real = (source != pad_id).any(dim=0).nonzero()
    return source[:, : max(1, int(real.max()) + 1 if len(real) else 1)]


def _max_diff(got: np.ndarray, expected: np.ndarray, rtol: float, atol: float, what: str) -> tuple[float, str | None]:
    if got.shape != expected.shape:
        return float("inf"), f"the {what} has shape {got.shape} in ONNX Runtime, {expected.shape} in PyTorch"
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    excess = diff - (atol + rtol * np.abs(expected.astype(np.float64)))
    worst = float(np.nanmax(diff)) if diff.size else 0.0
    if diff.size and (not np.isfinite(diff).all() or float(excess.max()) > 0):
        where = np.unravel_index(int(np.nan_to_num(excess, nan=np.inf).argmax()), excess.shape)
        return worst, (f"the {what} at {[int(i) for i in where]}: ONNX {got[where]:.6g} vs torch "
                       f"{expected[where]:.6g}, beyond atol {atol:g} + rtol {rtol:g} * |torch|")
    return worst, None


def _load(path: Path) -> Any:
    try:
        return _ort_session(path)
    except ModelFileError as exc:
        raise ExportError(f"the exported file does not load: {exc}") from exc


def _span(batches: list[torch.Tensor], index: int) -> str:
    first = sum(len(b) for b in batches[:index])
    return f"sentences {first} to {first + len(batches[index]) - 1}"


def _check_encoder(encoder: _Encoder, session: Any, batches: list[torch.Tensor], outputs: list[str], rtol: float,
                   atol: float) -> float:
    """The largest |onnx - torch| of the encoder's memory at the real source positions; raises beyond tolerance."""
    worst = 0.0
    for index, src_ids in enumerate(batches):
        with torch.no_grad():
            expected = [t.numpy() for t in encoder(src_ids)]
        got = session.run(None, {encoder.source_name: src_ids.numpy()})
        real = (src_ids != encoder.pad_id).numpy() if encoder.pad_id is not None else None
        for name, g, e in zip(outputs, got, expected, strict=True):
            if name == PADDING:
                if not np.array_equal(g, e):
                    raise ExportError(f"the exported encoder's source_padding differs from PyTorch's for "
                                      f"{_span(batches, index)}. The files were not kept.")
                continue
            # padded positions are masked wherever the decoder reads them, so only the real ones count
            e_cmp, g_cmp = (e[real], g[real]) if real is not None and e.shape[:2] == real.shape else (e, g)
            diff, failure = _max_diff(g_cmp, e_cmp, rtol, atol, f"encoder's {name}")
            worst = max(worst, diff)
            if failure:
                raise ExportError(f"the exported encoder differs from PyTorch ({_span(batches, index)}): {failure}. "
                                  "The files were not kept.")
    return worst


def _check_step(encoder: _Encoder, step: _DecoderStep, session: Any, batches: list[torch.Tensor],
                targets: torch.Tensor, names: list[str], rtol: float, atol: float) -> float:
    """The largest |onnx - torch| of the decoder's log-probabilities on the held-out targets' prefixes
    of one id and of the whole length, from PyTorch's memory; raises beyond tolerance."""
    worst, first = 0.0, 0
    for index, src_ids in enumerate(batches):
        with torch.no_grad():
            memory = encoder(src_ids)
        feed = dict(zip(names[:-1], (t.numpy() for t in memory), strict=True))
        for length in sorted({1, targets.shape[1]}):
            prefix = targets[first: first + len(src_ids), :length]
            with torch.no_grad():
                want = step(*memory, prefix).numpy()
            have = session.run([LOG_PROBS], {**feed, names[-1]: prefix.numpy()})[0]
            diff, failure = _max_diff(have, want, rtol, atol, f"decoder's log-probabilities (prefix of {length})")
            worst = max(worst, diff)
            if failure:
                raise ExportError(f"the exported decoder step differs from PyTorch ({_span(batches, index)}): "
                                  f"{failure}. The files were not kept.")
        first += len(src_ids)
    return worst


def check_seq2seq_options(format: str, opset: int | None, out: str | Path | None) -> None:
    """What does not apply to a seq2seq export, refused before any work."""
    check_export_options(format, opset)
    if format != "onnx":
        raise ValueError(f"--format {format}: a seq2seq run exports to ONNX only, as an encoder and a decoder step "
                         "(encoder_model.onnx, decoder_model.onnx); drop --format")
    if out is not None:
        path = Path(out)
        if path.is_file() or path.suffix in (".onnx", ".pt", ".json"):
            raise ValueError(f"--out {path}: a seq2seq run exports a folder ({ENCODER_FILE}, {DECODER_FILE}, "
                             f"{TOKENIZER_FILE}); give a folder, e.g. --out {path.with_suffix('')}")
        from archlab._paths import check_out_dir

        check_out_dir(path)


def export_seq2seq(model: nn.Module, folder: str | Path, *, check_source: torch.Tensor, check_target: torch.Tensor,
                   tokenizer: str | Path | None = None, metadata: dict[str, str] | None = None,
                   opset: int | None = None, rtol: float = 1e-3, atol: float = 1e-5,
                   source_name: str = "source", target_name: str = "target",
                   on_event: Callable[[str], None] | None = None) -> Seq2SeqExportResult:
    """Export a seq2seq model as an encoder and a decoder step, and keep the files only if they
    compute what the model computes and decode what it decodes.

    Both files are written beside their final names under temporary ones and checked on the held-out
    sentences in batches of 1, 7 and the rest, each batch cut to its longest source: the encoder's
    memory (at the real source positions: what the decoder reads) and the decoder's log-probabilities
    (on prefixes of the held-out targets, of length 1 and the whole target) within
    ``atol + rtol * |torch|``, and the greedy tokens of ``onnx_greedy_decode`` equal to those of
    ``archlab.generation.greedy_search``. Only then are they renamed (and the tokenizer copied);
    a failed check leaves nothing new in ``folder``.

    Args:
        model: an ArchlabModel of a graph-form seq2seq spec (run in eval mode).
        folder: where ``encoder_model.onnx``, ``decoder_model.onnx`` and ``tokenizer.json`` go.
        check_source, check_target: held-out ``(N, S)`` source ids and ``(N, T)`` decoder inputs, N >= 3.
        tokenizer: the run's tokenizer.json, copied beside the models.
        metadata: text stored in both files (with ``archlab.part`` ``encoder`` or ``decoder``).
        opset: the ONNX opset (default: the exporter's).
        rtol, atol: the tolerance of the memory and step checks.

    Raises:
        ExportError: the exporter failed, or a check failed (saying which sentence or element).
    """
    from archlab.generation import greedy_search

    if len(check_source) < 3:
        raise ValueError(f"the check needs at least 3 held-out sentences, got {len(check_source)}")
    encoder, step = _Encoder(model, source_name, target_name), _DecoderStep(model, source_name, target_name)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"encoder": folder / ENCODER_FILE, "decoder": folder / DECODER_FILE}
    tmps = {part: _sibling_tmp(path) for part, path in paths.items()}
    metadata = {str(k): str(v) for k, v in (metadata or {}).items()}
    was_training = model.training
    model.eval()
    source_len, target_len = check_source.shape[1], check_target.shape[1]
    try:
        # torch.export fixes an axis of size 1 in the example, so the examples have two rows and two steps
        example = _trim(check_source[:2], encoder.pad_id)
        if example.shape[1] < 2:
            example = check_source[:2, :2]
        with torch.no_grad():
            fixed = encoder(example)
        batch = torch.export.Dim("batch", min=1)
        src = torch.export.Dim("source_length", min=1, max=source_len)
        tgt = torch.export.Dim("target_length", min=1, max=target_len)
        memory_names = _memory_names(encoder.split.reads)
        outputs = memory_names + ([PADDING] if encoder.pad_id is not None else [])
        # what the decoder reads from the encoder keeps the source's axes: (batch, S, ...) or (batch, S)
        fixed_dims = tuple({0: batch, 1: src} if t.dim() >= 2 and t.shape[1] == example.shape[1] else {0: batch}
                           for t in fixed)
        opset_used = _export_part(encoder, (example,), [source_name], outputs, ({0: batch, 1: src},),
                                  tmps["encoder"], {**metadata, "archlab.part": "encoder"}, opset, "encoder",
                                  output_axes=fixed_dims)
        enc_session = _load(tmps["encoder"])
        if on_event is not None:
            on_event(f"export: checking the encoder, the decoder step and greedy decoding on {len(check_source)} "
                     "held-out sentences")
        batches = [_trim(check_source[rows], encoder.pad_id) for rows in _check_batches(len(check_source))]
        memory_diff = _check_encoder(encoder, enc_session, batches, outputs, rtol, atol)  # before the decoder's export
        step_names = [*memory_names, *([PADDING] if step.source_pad is not None else []), target_name]
        _export_part(step, (*fixed, check_target[:2, :2]), step_names, [LOG_PROBS],
                     {"args": (*fixed_dims, {0: batch, 1: tgt})}, tmps["decoder"],
                     {**metadata, "archlab.part": "decoder"}, opset, "decoder step")
        dec_session = _load(tmps["decoder"])
        step_diff = _check_step(encoder, step, dec_session, batches, check_target, step_names, rtol, atol)
        equal, mismatch, first = 0, None, 0
        for src_ids in batches:
            torch_tokens = [h.tokens for h in greedy_search(model, src_ids, max_len=target_len,
                                                            source_name=source_name, target_name=target_name)]
            ort_tokens = [h.tokens for h in onnx_greedy_decode(enc_session, dec_session, src_ids.numpy(),
                                                               target_len)]
            for i, (a, b) in enumerate(zip(ort_tokens, torch_tokens, strict=True)):
                if a == b:
                    equal += 1
                elif mismatch is None:
                    mismatch = f"sentence {first + i}: ONNX Runtime decodes {a}, PyTorch {b}"
            first += len(src_ids)
        if mismatch is not None:
            raise ExportError(f"greedy decode: ORT tokens equal PyTorch's on only {equal}/{len(check_source)} "
                              f"held-out sentences; first difference at {mismatch}. The files were not kept.")
        for part, path in paths.items():
            os.replace(tmps[part], path)
        copied = None
        if tokenizer is not None and Path(tokenizer).is_file():
            copied = folder / TOKENIZER_FILE
            _copy_atomic(Path(tokenizer), copied)
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
        model.train(was_training)
    size = sum(path.stat().st_size for path in paths.values())
    return Seq2SeqExportResult(folder, paths["encoder"], paths["decoder"], copied, opset_used, size, memory_diff,
                               step_diff, equal, len(check_source), tuple(len(b) for b in batches), rtol, atol)


def export_seq2seq_run(run_dir: str | Path, *, opset: int | None = None, out: str | Path | None = None,
                       data: str | None = None, data_dir: str | Path | None = None, weights: str = "best",
                       samples: int = 256, rtol: float = 1e-3, atol: float = 1e-5,
                       on_event: Callable[[str], None] | None = None) -> Seq2SeqExportResult:
    """Export a trained seq2seq run (``export_run`` hands it here): the encoder, the decoder step
    and the run's tokenizer.json into ``out`` (default ``RUN/export``), checked on the first
    ``samples`` sentences of the data's test split. Both files carry the run's metadata, as
    ``export_run``'s file does."""
    from archlab.data import load_dataset
    from archlab.training import as_arrays, check_fit, model_inputs, run_task

    from ._export import _run_metadata, _test_metrics, load_run_model

    run_dir = Path(run_dir)
    folder = Path(out) if out is not None else run_dir / "export"
    spec, recipe, parsed, model = load_run_model(run_dir, weights)
    _net_and_split(model, "source", "target")  # a spec that cannot export is refused before the data loads
    name = data or recipe.data
    if name is None:
        raise SpecError("the run records no data set: pass --data NAME for the held-out check sentences")
    if on_event is not None:
        on_event(f"export: {run_dir} to ONNX as an encoder and a decoder step in {folder}, then the checks on "
                 f"{samples} held-out test sentences")
    task = run_task(spec, recipe)[0]
    dataset = as_arrays(load_dataset(name, data_dir), parsed, task, recipe, run_dir)  # the run's tokenizer
    check_fit(parsed, dataset, task)
    x = model_inputs(parsed, dataset.x_test, dataset.name)
    if len(x["source"]) < 3:
        raise ValueError(f"{dataset.name} has {len(x['source'])} test sentences; the checks need at least 3")
    metrics = _test_metrics(run_dir, weights, dataset, x)
    metadata = _run_metadata(run_dir, spec, weights, dataset.name, metrics, len(x["source"]))
    return export_seq2seq(model, folder, check_source=torch.from_numpy(np.ascontiguousarray(x["source"][:samples])),
                          check_target=torch.from_numpy(np.ascontiguousarray(x["target"][:samples])),
                          tokenizer=run_dir / TOKENIZER_FILE, metadata=metadata, opset=opset, rtol=rtol, atol=atol,
                          on_event=on_event)
