"""Subcommands that help choose an architecture: suggest, templates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

import archlab
from archlab.analysis import render

from ._app import _out, app


@app.command()
def suggest(
    data: Annotated[str, typer.Option(help="digits, mnist, csv:PATH or npz:PATH.", show_default=False)],
    budget_params: Annotated[int | None, typer.Option(min=1, help="At most this many parameters.")] = None,
    budget_flops: Annotated[int | None, typer.Option(min=1, help="At most this many FLOPs per sample.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the spec here (.yaml or .json); else print it.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where to look for data files first.")] = None,
) -> None:
    """A starting spec for a data set from proven templates and rules of thumb, with the reasons."""
    from archlab import design  # imports the data sets (numpy): only when the command runs

    suggestion = design.suggest(data, budget_params=budget_params, budget_flops=budget_flops, data_dir=data_dir)
    _out.print("Why this spec:", markup=False)
    for reason in suggestion.reasons:
        _out.print(f"  - {reason}", markup=False, soft_wrap=True)
    _out.print(render(archlab.analyze(suggestion.spec)))
    if out is not None:
        archlab.dump(suggestion.spec, out)
        _out.print(f"wrote {out}; train it with: archlab train {out}", markup=False, soft_wrap=True)
    else:
        _out.print(archlab.dump(suggestion.spec), markup=False, soft_wrap=True)


@app.command()
def templates() -> None:
    """List the spec templates that suggest starts from (src/archlab/templates/)."""
    from archlab import design  # imports the data sets (numpy): only when the command runs

    table = Table("template", "input", "for", "params (default size)")
    for info in design.list_templates():
        params = archlab.analyze(design.load_template(info.name)).total_params
        table.add_row(info.name, info.input_kind, info.purpose, f"{params:,}")
    _out.print(table)
