"""Subcommands that take a trained model toward deployment: export, bench."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ._app import Quiet, _out, app, data_help

_err = Console(stderr=True, highlight=False)  # progress: standard output holds the results


def _size(count: int) -> str:
    return f"{count / 1024:,.1f} KiB" if count < 1024 ** 2 else f"{count / 1024 ** 2:,.2f} MiB"


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(s < 1 for s in sizes):
        raise typer.BadParameter(f"--batch-sizes takes positive integers separated by commas (1,32,256), got {text!r}")
    return sizes


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="A run directory (train, search, shrink, compress), or an ensemble "
                                        "directory (one ONNX graph).", show_default=False)],
    format: Annotated[str, typer.Option("--format", "-f", help="onnx or torchscript.")] = "onnx",
    opset: Annotated[int | None, typer.Option(min=1, help="ONNX opset, 7 to the newest the onnx package defines "
                                              "(default: the exporter's, 20; below 18 only if the model's "
                                              "operators convert down).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="The file (default RUN/export/model.onnx or "
                                             "model.pt); for a seq2seq run the folder (default RUN/export) that "
                                             "receives encoder_model.onnx, decoder_model.onnx and tokenizer.json.")
                   ] = None,
    data: Annotated[str | None, typer.Option(help=data_help("the run's", "Data set for the parity samples"))] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where to look for data files first.")] = None,
    weights: Annotated[str, typer.Option(help="best or last.")] = "best",
    samples: Annotated[int, typer.Option(min=3, help="Held-out test samples (sentences) the parity check runs.")
                       ] = 256,
    quiet: Quiet = False,
) -> None:
    """Export RUN's model to ONNX or TorchScript, kept only if it matches PyTorch on held-out samples.

    A seq2seq run writes a folder: an ONNX encoder, decoder step and tokenizer, checked by greedy decoding."""
    from archlab.deploy import Seq2SeqExportResult, export_run

    result = export_run(run, format=format, opset=opset, out=out, data=data, data_dir=data_dir,  # type: ignore[arg-type]
                        weights=weights, samples=samples,
                        on_event=None if quiet else (lambda line: _err.print(line, markup=False, soft_wrap=True)))
    if isinstance(result, Seq2SeqExportResult):
        _print_seq2seq(result)
        return
    if result.ensemble is not None:  # one graph of the members and their combination
        members = result.ensemble["members"]
        _out.print(f"ensemble: {len(members)} members ({result.ensemble['method']}: "
                   f"{', '.join(m['dir'] + ('' if m['weights'] == 'best' else ':' + m['weights']) for m in members)})"
                   f", combined by {result.ensemble['combine']} in the graph", markup=False, soft_wrap=True)
    kind = f"ONNX opset {result.opset}" if result.format == "onnx" else "TorchScript"
    _out.print(f"exported: {result.path} ({kind}, {result.size_bytes:,} bytes = {_size(result.size_bytes)})",
               markup=False, soft_wrap=True)
    batches = ", ".join(map(str, result.batch_sizes))
    _out.print(f"parity: max |{result.format} - torch| = {result.max_abs_diff:.3g} within atol {result.atol:g} + "
               f"rtol {result.rtol:g} * |torch| on {result.checked_samples} held-out test samples (batches of "
               f"{batches}): ok", markup=False, soft_wrap=True)


def _print_seq2seq(result) -> None:
    for path in (result.encoder, result.decoder):
        size = path.stat().st_size
        _out.print(f"exported: {path} (ONNX opset {result.opset}, {size:,} bytes = {_size(size)})", markup=False,
                   soft_wrap=True)
    if result.tokenizer is not None:
        _out.print(f"tokenizer: {result.tokenizer}", markup=False, soft_wrap=True)
    batches = ", ".join(map(str, result.batch_sizes))
    _out.print(f"parity: max |onnx - torch| = {result.memory_diff:.3g} (encoder memory), {result.step_diff:.3g} "
               f"(decoder log-probabilities) within atol {result.atol:g} + rtol {result.rtol:g} * |torch| on "
               f"{result.checked_samples} held-out test sentences (batches of {batches}): ok", markup=False,
               soft_wrap=True)
    _out.print(f"greedy decode: ORT tokens equal PyTorch's on {result.greedy_equal}/{result.checked_samples} "
               "held-out sentences", markup=False, soft_wrap=True)


@app.command()
def bench(
    path: Annotated[Path, typer.Argument(metavar="RUN_OR_FILE", help="A run directory, a model folder of compress "
                                         "(int8 ones too), or an .onnx / TorchScript file.", show_default=False)],
    format: Annotated[str | None, typer.Option("--format", "-f", help="torch, onnx or torchscript (default: torch "
                                                                      "for a run, the file's own).")] = None,
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,32,256",
    data: Annotated[str | None, typer.Option(help=data_help("random inputs",
                                                            "Time on this data set's test samples"))] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where to look for data files first.")] = None,
    weights: Annotated[str, typer.Option(help="A run's best or last weights.")] = "best",
    max_seconds: Annotated[float, typer.Option(min=0.01, help="Timed seconds per batch size at most.")] = 2.0,
    threads: Annotated[int | None, typer.Option(min=1, help="Intra-op threads for torch and ONNX Runtime alike "
                                                            "(default: torch's).")] = None,
) -> None:
    """Latency and throughput of a run or model file per batch size, and the model file's size."""
    sizes = _batch_sizes(batch_sizes)  # before torch is imported and the run loaded
    from archlab.deploy import bench_path

    result = bench_path(path, format=format, batch_sizes=sizes, data=data, data_dir=data_dir,
                        weights=weights, threads=threads, max_seconds=max_seconds)
    runtime = {"torch": "PyTorch", "onnx": "ONNX Runtime", "torchscript": "TorchScript"}[result.runtime]
    table = Table(title=f"{path} on {runtime}, {result.threads} thread{'s' if result.threads != 1 else ''}")
    for column in ("batch size", "median ms", "p95 ms", "samples/s", "repeats"):
        table.add_column(column, justify="right")
    for row in result.rows:
        table.add_row(str(row["batch_size"]), f"{row['median_ms']:.3f}", f"{row['p95_ms']:.3f}",
                      f"{row['samples_per_s']:,.0f}", str(row["repeats"]))
    _out.print(table)
    what = "temporary export" if result.temporary else str(result.file)
    _out.print(f"model file: {what} ({result.size_bytes:,} bytes = {_size(result.size_bytes)})", markup=False,
               soft_wrap=True)
