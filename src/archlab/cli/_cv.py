"""archlab cv: cross-validated sweeps over spec values, a capacity choice and a diagnosis."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ._app import Quiet, _out, app, data_help
from ._train import interrupted


class _Bar:
    """A Rich bar over configurations x folds on a terminal; plain lines otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.live = sys.stdout.isatty() and not quiet
        self.quiet = quiet
        self.progress = None
        self.total = 0
        self.done = 0

    def start(self, total: int) -> None:
        self.total = total
        if self.live and total:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("cv"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                     console=_out, transient=True)
            self.progress.start()
            self.task = self.progress.add_task("folds", total=total)

    def update(self, row: dict) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress.advance(self.task)
        elif not self.quiet:
            what = f"fraction {row['fraction']}" if row["kind"] == "learning_curve" else f"config {row['config']}"
            metric = row.get("metric", "accuracy")
            _out.print(f"[{self.done}/{self.total}] {what} fold {row['fold']}: val {row[f'val_{metric}']:.4f} "
                       f"train {row[f'train_{metric}']:.4f} ({row['seconds']:.1f}s)", markup=False)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _same_command(ctx: typer.Context, run_dir: Path) -> str:
    """This command line again, with ``--resume RUN``: what continues an interrupted sweep."""
    parts = ["archlab", str(ctx.info_name)]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name == "resume" or value is None or value == param.default or value in ([], ()):
            continue
        if param.param_type_name == "argument":
            parts.append(str(value))
        elif isinstance(value, bool):
            parts.append(param.opts[0])
        else:
            parts.extend(item for v in (value if isinstance(value, (list, tuple)) else [value])
                         for item in (param.opts[0], str(v)))
    return shlex.join([*parts, "--resume", str(run_dir)])


@app.command()
def cv(
    ctx: typer.Context,
    spec: Annotated[Path, typer.Argument(help="The base spec; its train: section is the recipe.", show_default=False)],
    data: Annotated[str | None, typer.Option(help=data_help("the spec's train.data"))] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where to look for data files first.")] = None,
    folds: Annotated[int | None, typer.Option(help="K-fold (stratified for classification; over sentence pairs "
                                              "or sentences for text): K; default 5, or with --groups one fold "
                                              "per group.")] = None,
    groups: Annotated[str | None, typer.Option(help="Fold by the data's groups, named so in the report (speaker "
                                               "for fsdd): leave-one-group-out, or GroupKFold(--folds); no group "
                                               "is trained on and validated in one fold.")] = None,
    repeats: Annotated[int, typer.Option(help="Repeat the K folds with new shuffles.")] = 1,
    sweep: Annotated[list[str] | None, typer.Option(help="PATH=V1,V2,... (repeat for a grid).")] = None,
    jobs: Annotated[int, typer.Option(help="Parallel processes, one (configuration, fold) each.")] = 1,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (train.optimizer.lr).")] = None,
    seed: Annotated[int, typer.Option(help="Seeds the folds and every training.")] = 0,
    metric: Annotated[str | None, typer.Option(help="What each fold scores (accuracy, auc, rmse, loss, "
                                               "perplexity...; default: the task's first metric); the choice "
                                               "follows its direction.")] = None,
    learning_curve: Annotated[bool, typer.Option("--learning-curve", help="Score the chosen configuration on "
                                                 "10%, 25%, 50%, 100% of each training fold.")] = False,
    out: Annotated[Path, typer.Option(help="Folder of run directories.")] = Path("runs"),
    resume: Annotated[Path | None, typer.Option(help="Continue this interrupted cv run (same arguments).")] = None,
    quiet: Quiet = False,
) -> None:
    """Cross-validate SPEC over swept values; choose a capacity by the one-standard-error rule."""
    from archlab.selection import CVInterrupted, cross_validate  # numpy, and torch to train: only when the command runs

    bar = _Bar(quiet)
    try:
        result = cross_validate(spec, data, sweep or [], folds=folds, groups=groups, repeats=repeats, jobs=jobs,
                                seed=seed,
                                out=out, data_dir=data_dir, resume=resume, learning_curve=learning_curve,
                                metric=metric, on_start=bar.start, on_result=bar.update, epochs=epochs,
                                batch_size=batch_size, lr=lr)
    except CVInterrupted as exc:
        bar.stop()
        hint = f"; continue with: {_same_command(ctx, exc.run_dir)}" if exc.run_dir is not None else ""
        raise interrupted(CVInterrupted(f"{exc}{hint}", exc.run_dir)) from None
    finally:
        bar.stop()
    paths = list(result.configs[0]["values"])
    held = f", {result.groups}s held out" if result.groups else ""
    table = Table(title=f"{result.configs[0]['folds']}-fold cross-validation on {result.data}{held}"
                  + (f", {repeats} repeats" if repeats > 1 else ""))
    for p in paths:
        table.add_column(p)
    short = "acc" if result.metric == "accuracy" else result.metric
    # the other metrics the folds recorded (val loss, perplexity, token accuracy...), mean ± std each
    others = [m for m in result.configs[0].get("metrics", {}) if m != result.metric]
    for name in ("params", "FLOPs", f"val {short}", "± std", f"train {short}", "gap",
                 *(f"val {m}" for m in others), "seconds", ""):
        table.add_column(name, justify="right")
    for i, row in enumerate(result.configs):
        mark = " ".join(m for m, hit in (("best", i == result.best_index), ("one-SE", i == result.one_se_index))
                        if hit)
        table.add_row(*(str(row["values"][p]) for p in paths), f"{row['params']:,}", f"{row['flops']:,}",
                      f"{row['val_mean']:.4f}", f"{row['val_std']:.4f}", f"{row['train_mean']:.4f}",
                      f"{row['gap']:+.4f}",
                      *(f"{row['metrics'][m]['val_mean']:.4f} ± {row['metrics'][m]['val_std']:.4f}" for m in others),
                      f"{row['seconds']:.1f}", mark)
    _out.print(table)
    best, chosen = result.configs[result.best_index], result.chosen
    label = lambda r: ", ".join(f"{p}={v}" for p, v in r["values"].items()) or "the spec as given"  # noqa: E731
    _out.print(f"best mean: {label(best)} ({best['val_mean']:.4f})", markup=False)
    _out.print(f"chosen (one-standard-error rule, the smallest within one SE of the best): {label(chosen)} "
               f"({chosen['params']:,} params, {chosen['val_mean']:.4f}) -> chosen.yaml", markup=False, soft_wrap=True)
    if result.groups:  # the chosen configuration's score on each group, with that group held out
        scores = ", ".join(f"{g} {v:.4f}" for g, v in chosen["groups"].items())
        _out.print(f"{result.metric} per held-out {result.groups} (chosen): {scores}", markup=False, soft_wrap=True)
    _out.print(f"diagnosis: {result.diagnosis}", markup=False, soft_wrap=True)
    if result.learning_curve:
        curve = ", ".join(f"{r['train_samples']}: {r['val_mean']:.4f}" for r in result.learning_curve)
        _out.print(f"learning curve (training samples: validation {result.metric}): {curve}", markup=False,
                   soft_wrap=True)
        _out.print(f"more data? {result.learning_answer}", markup=False, soft_wrap=True)
    _out.print(f"run: {result.run_dir}", markup=False)
