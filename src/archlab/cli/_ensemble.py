"""archlab ensemble: several members of one spec trained and recorded as one ensemble directory."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from archlab.exceptions import Interrupted

from ._app import Quiet, SpecArg, _out, app, data_help
from ._train import _members_table, interrupted

if TYPE_CHECKING:
    from archlab.training import Member


def _headline(member: Member) -> str:
    """A member's test accuracy (or its task's first metric); a snapshot before the last has no
    test evaluation of its own (its run evaluates its final weights): its validation score then."""
    metrics, split = member.test_metrics, "test"
    if not metrics:
        metrics, split = {k.removeprefix("val_"): v for k, v in member.info.items() if k.startswith("val_")}, "val"
    key = "accuracy" if "accuracy" in metrics else next((k for k in metrics if k != "loss"), "loss")
    return f"{split} {key} {metrics[key]:.4f}" if key in metrics else "no evaluation"


@app.command()
def ensemble(
    spec: SpecArg,
    data: Annotated[str | None, typer.Option(help=data_help("train.data"))] = None,
    method: Annotated[str, typer.Option(help="seeds (seed+i each), bagging (bootstrap samples), boosting (SAMME "
                                             "sample weights) or snapshot (one run's cosine cycles).")] = "seeds",
    members: Annotated[int, typer.Option(help="How many members (at least 2).")] = 5,
    jobs: Annotated[int, typer.Option(help="Seeds and bagging members train in this many processes.")] = 1,
    seed: Annotated[int | None, typer.Option(help="The first member's seed (train.seed); member i has seed+i.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="train.epochs of each member.")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (train.optimizer.lr).")] = None,
    device: Annotated[str | None, typer.Option(help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:1, mps.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where to look for data files first.")] = None,
    out: Annotated[Path, typer.Option(help="Folder of run directories.")] = Path("runs"),
    quiet: Quiet = False,
) -> None:
    """Train an ensemble of SPEC; writes runs/<name>-ensemble-<timestamp>/ (ensemble.json, members/00, ...)."""
    from archlab import training  # torch: only when the command runs

    # the API's warnings (--jobs with boosting, boosting stopping early) as plain lines on stderr
    notes = logging.StreamHandler(sys.stderr)
    notes.setFormatter(logging.Formatter("warning: %(message)s"))
    notes.setLevel(logging.WARNING)
    logger = logging.getLogger("archlab")
    logger.addHandler(notes)

    def progress(index: int, member: Member) -> None:
        if not quiet:
            seconds = f" ({member.seconds:.1f}s)" if member.seconds else ""
            _out.print(f"member {index:02d} [{member.weights}, weight {member.weight:.4g}]: "
                       f"{_headline(member)}{seconds}", markup=False)

    try:
        result = training.ensemble(spec, data=data, method=method, members=members, jobs=jobs, seed=seed,
                                   out=out, data_dir=data_dir, verbose=0, on_member=progress, epochs=epochs,
                                   batch_size=batch_size, lr=lr, device=device)
    except Interrupted as exc:
        raise interrupted(exc) from None
    finally:
        logger.removeHandler(notes)
    # the combination scored on the test split beside each member (evaluate's table and file)
    scored = training.evaluate_run(result.ensemble_dir, data_dir=data_dir)
    _out.print(_members_table(scored))
    _out.print(f"{method} ensemble of {len(result.members)}, combined by {result.combine}: test "
               f"{scored['headline']} {scored['metrics'][scored['headline']]:.4f}, "
               f"{scored['gain_over_best_member']:+.4f} over the best member ({scored['best_member']})",
               markup=False, soft_wrap=True)
    _out.print(f"ensemble: {result.ensemble_dir}", markup=False)
