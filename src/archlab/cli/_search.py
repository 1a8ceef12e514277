"""archlab search: architecture search over a spec with markers, on Optuna."""

from __future__ import annotations

import shlex
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from archlab.search import PRUNERS, SAMPLERS

from ._app import Quiet, _out, app, data_help

if TYPE_CHECKING:
    from archlab.search import SearchProgress, SearchResult

_err = Console(stderr=True, highlight=False)


class _Line:
    """One live status line on a terminal (trials done, best so far, pruned); plain lines otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.status = None
        self.last: tuple | None = None
        if sys.stdout.isatty() and not quiet:
            self.status = _out.status("search: starting")
            self.status.start()

    def __call__(self, p: SearchProgress) -> None:
        best = f"best {p.objective} {p.best:.4f}" if p.best is not None else "no complete trial yet"
        text = (f"search: {p.finished}/{p.target} trials, {best}, {p.pruned} pruned"
                + (f", {p.failed} failed" if p.failed else "") + (f", {p.running} running" if p.running else ""))
        key = (p.finished, p.failed, p.best)
        if self.status is not None:
            self.status.update(text)
        elif not self.quiet and key != self.last:
            _out.print(text, markup=False)
        self.last = key

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()


def _print_report(result: SearchResult, top: int = 10) -> None:
    from archlab.search import trial_rows

    objectives = result.objectives
    rows = trial_rows(result.study, objectives)
    counts = Counter(r["state"] for r in rows)
    why = Counter(r["pruned_by"] for r in rows if r["state"] == "PRUNED")
    pruned = ", ".join(f"{n} {k}" for k, n in why.most_common())
    # a trial two workers began at once when the study was one short steps back: not a failure
    surplus = sum(1 for r in rows if r["state"] == "FAIL" and r["pruned_by"] == "surplus")
    failed = counts["FAIL"] - surplus
    _out.print(f"study '{result.study.study_name}': {len(rows)} trials: {counts['COMPLETE']} complete, "
               f"{counts['PRUNED']} pruned" + (f" ({pruned})" if pruned else "")
               + (f", {failed} failed" if failed else "")
               + (f", {surplus} surplus (begun as the study filled up, stepped back)" if surplus else "")
               + (f", {counts['RUNNING']} running" if counts["RUNNING"] else ""), markup=False)
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    first = objectives[0]
    complete.sort(key=lambda r: r[first.name], reverse=first.direction == "maximize")
    params = [k for k in dict.fromkeys(k for r in rows for k in r) if k.startswith("param:")]
    table = Table(title=f"best {min(top, len(complete))} of {len(complete)} complete trials by {first.name}")
    for name in ["#", *(o.name for o in objectives), "params", "FLOPs", "epochs",
                 *(p.removeprefix("param:") for p in params)]:
        table.add_column(name, justify="right" if name in ("#", "params", "FLOPs", "epochs") else "left",
                         overflow="fold")
    for r in complete[:top]:
        values = [f"{r[o.name]:.4g}" if o.name not in ("params", "flops") else f"{int(r[o.name]):,}"
                  for o in objectives]
        size = ["" if r[k] is None else f"{r[k]:,}" for k in ("params", "flops")]  # None: not an archlab trial
        table.add_row(str(r["number"]), *values, *size, str(r["epochs_trained"]),
                      *("" if r.get(p) is None else f"{r[p]:.3g}" if isinstance(r[p], float) else str(r[p])
                        for p in params))
    _out.print(table)
    if len(objectives) == 1 and result.best:
        b = result.best[0]
        where = f" -> {b['spec_path']}" if b["spec_path"] else ""
        size = f", {b['params']:,} parameters" if b["params"] is not None else ""
        _out.print(f"best: trial {b['number']}, {first.name} {b['values'][first.name]:.4f}{size}{where}",
                   markup=False, soft_wrap=True)
        if b.get("run_dir"):
            _out.print(f"best trial's run (archlab evaluate / predict it): {b['run_dir']}", markup=False,
                       soft_wrap=True)
    elif result.best:
        _out.print(f"Pareto front ({', '.join(str(o) for o in objectives)}): {len(result.best)} trials", markup=False)
        for b in result.best:
            values = ", ".join(f"{k} {v:.4g}" for k, v in b["values"].items())
            where = f" -> {b['spec_path']}" if b["spec_path"] else ""
            _out.print(f"  trial {b['number']}: {values}{where}", markup=False, soft_wrap=True)


@app.command("search")
def search_command(
    ctx: typer.Context,
    space: Annotated[Path | None, typer.Argument(help="A spec with search markers: {choice: [...]}, {int: [lo, hi]}, "
                                                "{float: [lo, hi], log: true}.", show_default=False)] = None,
    data: Annotated[str | None, typer.Option(help=data_help("the space's train.data"))] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where to look for data files first.")] = None,
    trials: Annotated[int, typer.Option(min=1, help="Finished trials the study should hold (a resumed study "
                                        "continues up to it).")] = 20,
    timeout: Annotated[float | None, typer.Option(help="Seconds each worker searches before it stops "
                                                  "starting trials.")] = None,
    sampler: Annotated[str, typer.Option(help=f"{', '.join(SAMPLERS)}.")] = "tpe",
    pruner: Annotated[str | None, typer.Option(help=f"{', '.join(PRUNERS)} (default: asha for one objective, "
                                               "none for several).")] = None,
    objective: Annotated[list[str] | None, typer.Option(help="val_METRIC (default: the task's headline metric: "
                                                        "val_accuracy, val_auc, val_micro_f1, val_mse, "
                                                        "val_perplexity), val_loss, "
                                                        "params:min, flops:min, latency:min; repeat for several."
                                                        )] = None,
    max_params: Annotated[int | None, typer.Option(min=1, help="Prune sampled specs with more parameters, "
                                                   "untrained.")] = None,
    max_flops: Annotated[int | None, typer.Option(min=1, help="Prune sampled specs with more FLOPs, "
                                                  "untrained.")] = None,
    storage: Annotated[str | None, typer.Option(help="SQLAlchemy URL, e.g. postgresql://user:pw@host/db "
                                                "(default: SQLite in the run directory, OUT/search-STUDY/study.db)."
                                                )] = None,
    study: Annotated[str | None, typer.Option(help="Study name (default: the spec's name); the same name "
                                              "resumes the same study.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Local worker processes on the same storage.")] = 1,
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs per trial (overrides train.epochs).")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Training batch of every trial (overrides "
                                                   "train.batch_size).")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seeds the sampler (worker k uses seed + k; a resumed study "
                                      "derives new seeds from it and its trial count).")] = 0,
    heartbeat: Annotated[int, typer.Option(min=1, help="Seconds between a trial's heartbeats; a trial silent for "
                                           "twice that (its worker died) is marked failed.")] = 30,
    force: Annotated[bool, typer.Option("--force", help="Continue a study that was created with a different "
                                        "space.")] = False,
    report: Annotated[str | None, typer.Option(help="Print the study STUDY and exit (from --storage; default: "
                                               "OUT/search-STUDY/study.db).")] = None,
    out: Annotated[Path, typer.Option(help="Folder of run directories.")] = Path("runs"),
    quiet: Quiet = False,
) -> None:
    """Search the architectures in SPACE: sample, check budgets, train with pruning, keep the best."""
    from archlab.search import load_report, search  # numpy, Optuna and torch: only when the command runs

    if report is not None:
        _print_report(load_report(report, storage, out=out))
        return
    if space is None:
        raise ValueError("give a SPACE spec to search, or --report STUDY")
    line = _Line(quiet)
    try:
        result = search(space, data, trials, study=study, storage=storage, objectives=objective, sampler=sampler,
                        pruner=pruner, timeout=timeout, max_params=max_params, max_flops=max_flops, epochs=epochs,
                        batch_size=batch_size, workers=workers, seed=seed, out=out, data_dir=data_dir, force=force,
                        heartbeat=heartbeat, on_progress=line)
    except KeyboardInterrupt:
        line.stop()
        argv = (ctx.obj or {}).get("argv") or sys.argv[1:]
        _err.print(f"interrupted: the finished trials are kept in the study; continue with: "
                   f"archlab {shlex.join(argv)}", markup=False, style="red", soft_wrap=True)
        raise typer.Exit(130) from None
    finally:
        line.stop()
    _print_report(result)
    _out.print(f"run: {result.run_dir}", markup=False)
