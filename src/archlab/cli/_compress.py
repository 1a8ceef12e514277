"""archlab compress: a trained run through pruning, low-rank, distillation and int8 steps, measured."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ._app import Quiet, _out, app, data_help


def _step(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
    """Click processes options in command-line order; each step option records itself here, so the
    steps run in the order they were given (``--lowrank 16 --quantize static``)."""
    if value is not None and value is not False:
        ctx.meta.setdefault("archlab_steps", []).append((param.name, value))
    return value


@app.command()
def compress(
    ctx: typer.Context,
    run: Annotated[Path, typer.Argument(help="A trained run directory (archlab train); only read.",
                                        show_default=False)],
    data: Annotated[str | None, typer.Option(help=data_help("the run's"))] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where to look for data files first.")] = None,
    prune_structured: Annotated[float | None, typer.Option(callback=_step, help="Remove this fraction of the "
                                                           "channels/units of every prunable layer.")] = None,
    channel_multiple: Annotated[int, typer.Option(min=1, help="--prune-structured keeps a multiple of this many "
                                                  "outputs per layer (16 suits ONNX Runtime on AVX-512).")] = 1,
    prune_unstructured: Annotated[float | None, typer.Option(callback=_step, help="Zero this fraction of the "
                                                             "weights (magnitude).")] = None,
    global_: Annotated[bool, typer.Option("--global", help="Rank weights across layers for "
                                          "--prune-unstructured.")] = False,
    quantize: Annotated[str | None, typer.Option(callback=_step, help="int8: dynamic (dense/recurrent) or static "
                                                 "(convolutional, calibrated); must be the last step.")] = None,
    distill_from: Annotated[Path | None, typer.Option(callback=_step, help="A teacher run: train the student "
                                                      "on its soft targets plus the labels.")] = None,
    student: Annotated[Path | None, typer.Option(help="The student spec for --distill-from (default: the "
                                                 "current model's spec, re-initialised).")] = None,
    temperature: Annotated[float, typer.Option(min=0.01, help="Distillation temperature.")] = 4.0,
    alpha: Annotated[float, typer.Option(min=0, max=1, help="Weight of the teacher's soft targets (0.5 beat 0.9 "
                                         "on MNIST, docs/results.md).")] = 0.5,
    distill_epochs: Annotated[int | None, typer.Option(min=1, help="Student epochs (default: its recipe's).")] = None,
    lowrank: Annotated[int | None, typer.Option(callback=_step, min=1, help="Factor large dense layers at this "
                                                "rank (truncated SVD).")] = None,
    finetune_epochs: Annotated[int, typer.Option(min=0, help="Fine-tuning epochs after each PyTorch step.")] = 1,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Fine-tuning and distillation batch (default: "
                                                   "the run's train.batch_size).")] = None,
    train_samples: Annotated[int | None, typer.Option(min=1, help="Fine-tune/distill on the first N samples "
                                                      "only.")] = None,
    calibration_samples: Annotated[int, typer.Option(min=1, help="Training samples that calibrate static "
                                                     "quantization.")] = 512,
    out: Annotated[Path, typer.Option(help="Folder that receives compress-<name>-<timestamp>/, with one model "
                                       "folder per step.")] = Path("runs"),
    quiet: Quiet = False,
) -> None:
    """Compress RUN with the steps in the order given; every model measured side by side."""
    from archlab.compress import CompressStep
    from archlab.compress import compress as compress_run
    from archlab.compress._shrink import format_score
    from archlab.tasks import direction_of

    names = {"prune_structured": "prune-structured", "prune_unstructured": "prune-unstructured",
             "distill_from": "distill"}
    steps = [CompressStep(names.get(name, name), str(value) if isinstance(value, Path) else value)
             for name, value in ctx.meta.get("archlab_steps", [])]
    result = compress_run(run, steps, data=data, data_dir=data_dir, out=out, finetune_epochs=finetune_epochs,
                          global_unstructured=global_, channel_multiple=channel_multiple, student=student,
                          temperature=temperature, alpha=alpha,
                          distill_epochs=distill_epochs, calibration_samples=calibration_samples,
                          train_samples=train_samples, batch_size=batch_size,
                          on_event=None if quiet else (lambda line: _out.print(line, markup=False)))
    table = Table(title=f"archlab compress {run}")
    metric = result.rows[0].get("metric", "accuracy")  # the task's headline metric
    score_column = "test acc" if metric == "accuracy" else f"test {metric}"
    for column in ("model", "format", score_column, "params", "non-zero", "FLOPs", "ONNX KB", "ORT b1 ms",
                   "ORT b256 ms", "torch b1 ms"):
        table.add_column(column, justify="left" if column in ("model", "format") else "right")
    for r in result.rows:
        nonzero = "" if r["nonzero_params"] is None else f"{r['nonzero_params']:,}"
        score = r.get(f"test_{metric}")
        table.add_row(r["model"], r["format"], "" if score is None else format_score(score, direction_of(metric)),
                      f"{r['params']:,}", nonzero,
                      f"{r['flops']:,}", f"{r['onnx_bytes'] / 1024:,.1f}", f"{r.get('onnxrt_b1_ms', 0):.3f}",
                      f"{r.get('onnxrt_b256_ms', 0):.3f}",
                      "" if r.get("torch_b1_ms") is None else f"{r['torch_b1_ms']:.3f}")
    _out.print(table)
    _out.print(f"report: {result.out_dir / 'compression.md'}, {result.out_dir / 'tradeoff.png'}", markup=False)
    _out.print(f"final model: {result.final_dir}", markup=False)
