"""Subcommands that train and use models: train, evaluate, predict."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ._app import _out, app

RunArg = Annotated[Path, typer.Argument(help="A run directory written by archlab train.", show_default=False)]


@app.command()
def train(
    spec: Annotated[Path | None, typer.Argument(help="The spec to train (not needed with --resume).")] = None,
    data: Annotated[str | None, typer.Option(help="digits, mnist, csv:PATH or npz:PATH (default: train.data).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where to look for data files first.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (train.optimizer.lr).")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    device: Annotated[str | None, typer.Option(help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:1, mps.")] = None,
    precision: Annotated[str | None, typer.Option(help="auto, fp32 or bf16.")] = None,
    out: Annotated[Path, typer.Option(help="Folder of run directories.")] = Path("runs"),
    resume: Annotated[Path | None, typer.Option(help="Continue this run from its last checkpoint.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="One plain line per epoch instead of bars.")] = False,
) -> None:
    """Train SPEC on a data set; writes runs/<name>-<timestamp>/ and reports test metrics."""
    from archlab import training  # torch: only when the command runs

    if spec is None and resume is None:
        raise typer.BadParameter("give a SPEC to train, or --resume RUN")
    if resume is not None and any(v is not None for v in (spec, data, epochs, batch_size, lr, seed, precision)):
        raise typer.BadParameter("--resume continues a run with its own spec and recipe; drop the other options")
    result = training.train(spec, data=data, data_dir=data_dir, out=out, resume=resume, verbose=2 if quiet else 1,
                            epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device,
                            precision=precision)
    test = "  ".join(f"{k} {v:.4f}" for k, v in result.test_metrics.items())
    _out.print(f"run: {result.run_dir}", markup=False)
    _out.print(f"test: {test}", markup=False)


@app.command()
def evaluate(
    run: RunArg,
    data: Annotated[str | None, typer.Option(help="Another data set of the same shape (default: the run's).")] = None,
    split: Annotated[str, typer.Option(help="test or train.")] = "test",
    weights: Annotated[str, typer.Option(help="best or last.")] = "best",
    data_dir: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Metrics and a confusion matrix of a trained RUN (stored in the run directory)."""
    from archlab import training  # torch: only when the command runs

    if weights not in ("best", "last"):
        raise typer.BadParameter(f"--weights is best or last, got {weights!r}")
    result = training.evaluate_run(run, data=data, split=split, weights=weights, data_dir=data_dir)
    table = Table(title=f"{result['data']} {split} ({result['samples']} samples, {weights} weights)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result["metrics"].items():
        table.add_row(key, f"{value:.4f}")
    _out.print(table)
    if "confusion_matrix" in result:
        _out.print(f"confusion matrix: {Path(run) / f'confusion-{split}.png'} and evaluation-{split}.json",
                   markup=False)


@app.command()
def predict(
    run: RunArg,
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help=".npy, .png/.jpg or a .csv row.")],
    top: Annotated[int, typer.Option(min=1, help="How many classes to show.")] = 3,
    weights: Annotated[str, typer.Option(help="best or last.")] = "best",
) -> None:
    """The top classes of a trained RUN for each sample in INPUT, with probabilities."""
    from archlab import training  # torch: only when the command runs

    for i, result in enumerate(training.predict_run(run, input_path, top=top, weights=weights)):
        if "top" in result:
            line = ", ".join(f"{r['class']} {r['probability']:.4f}" for r in result["top"])
        else:
            line = ", ".join(f"{v:.4f}" for v in result["output"])
        _out.print(f"sample {i}: {line}", markup=False)
