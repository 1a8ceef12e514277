"""archlab shrink: adaptive depth and width by pruning a trained run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ._app import Quiet, _out, app, data_help


@app.command()
def shrink(
    run: Annotated[Path, typer.Argument(help="A trained run directory (archlab train).", show_default=False)],
    data: Annotated[str | None, typer.Option(help=data_help("the run's"))] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where to look for data files first.")] = None,
    max_drop: Annotated[float, typer.Option(min=0, help="Undo a step that leaves the task's headline "
                                                        "validation metric more than this many percentage points "
                                                        "below the start (accuracy, auc, f1), or an error (mse) this "
                                                        "many percent above it.")] = 0.5,
    finetune_epochs: Annotated[int, typer.Option(min=0, help="Fine-tuning epochs after each step.")] = 1,
    block_fraction: Annotated[float, typer.Option(min=0, max=1, help="Share of removable blocks per step.")] = 0.25,
    channel_ratio: Annotated[float, typer.Option(min=0, max=0.95, help="Share of channels pruned per step.")] = 0.25,
    max_steps: Annotated[int, typer.Option(min=1)] = 12,
    train_samples: Annotated[int | None, typer.Option(min=1, help="Fine-tune on the first N samples only.")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Fine-tuning batch (default: the run's "
                                                   "train.batch_size).")] = None,
    out: Annotated[Path, typer.Option(help="Folder of run directories.")] = Path("runs"),
    quiet: Quiet = False,
) -> None:
    """Remove the blocks and channels a trained RUN does not need; writes a new, smaller run (none when
    nothing could be removed within --max-drop)."""
    from archlab.compress import shrink as shrink_run
    from archlab.compress._shrink import format_score

    logging.getLogger("archlab").setLevel(logging.WARNING if quiet else logging.INFO)  # INFO: a line per step
    if not logging.getLogger("archlab").handlers:
        logging.basicConfig(format="%(message)s")
    result = shrink_run(run, data=data, data_dir=data_dir, max_drop=max_drop, finetune_epochs=finetune_epochs,
                        block_fraction=block_fraction, channel_ratio=channel_ratio, max_steps=max_steps,
                        train_samples=train_samples, out=out, batch_size=batch_size)
    table = Table(title="archlab shrink")
    metric, direction = result.metric, result.direction
    for column in ("step", "action", "params", "FLOPs", f"val {metric}", "kept"):
        table.add_column(column, justify="left" if column == "action" else "right")
    for s in result.steps:
        table.add_row(str(s["step"]), s["action"], f"{s['params']:,}", f"{s['flops']:,}",
                      format_score(s[f"val_{metric}"], direction), "yes" if s["kept"] else "undone")
    _out.print(table)
    before = result.test_before.get(metric)
    after = result.test_after.get(metric)
    if before is not None and after is not None:
        _out.print(f"test {metric}: {format_score(before, direction)} -> {format_score(after, direction)}",
                   markup=False)
    if result.run_dir is None:
        _out.print(f"nothing could be removed within --max-drop {max_drop:g} points: every step was undone, or "
                   f"{run} had no removable block or channel; no run written ({run} is as small as it gets here; "
                   "a larger --max-drop allows more loss)", markup=False, soft_wrap=True)
        return
    _out.print(f"run: {result.run_dir}", markup=False)
