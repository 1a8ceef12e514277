"""Subcommands that help choose an architecture: suggest, templates."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

import archlab
from archlab._data_names import data_sources
from archlab._paths import check_out_file
from archlab.analysis import render

from ._app import _out, app

# Without --out, standard output is the spec alone (archlab suggest > spec.yaml); the reasons go here.
_err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)


@app.command()
def suggest(
    data: Annotated[str, typer.Option(help=f"The data set: {data_sources()}.", show_default=False)],
    budget_params: Annotated[int | None, typer.Option(min=1, help="At most this many parameters.")] = None,
    budget_flops: Annotated[int | None, typer.Option(min=1, help="At most this many FLOPs per sample.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the spec to this file (.yaml, .yml or "
                                             ".json); without it the spec alone goes to standard output and the "
                                             "reasons to standard error.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where to look for data files first.")] = None,
) -> None:
    """A starting spec for a data set from proven templates and rules of thumb, with the reasons."""
    from archlab import design  # imports the data sets (numpy): only when the command runs

    if out is not None:
        if out.suffix not in (".yaml", ".yml", ".json"):
            raise ValueError(f"--out {out}: a spec file ends in .yaml, .yml or .json")
        check_out_file(out)
    suggestion = design.suggest(data, budget_params=budget_params, budget_flops=budget_flops, data_dir=data_dir)
    notes = _out if out is not None else _err
    notes.print("Why this spec:", markup=False)
    for reason in suggestion.reasons:
        notes.print(f"  - {reason}", markup=False, soft_wrap=True)
    notes.print(render(archlab.analyze(suggestion.spec)))
    if out is not None:
        archlab.dump(suggestion.spec, out)
        _out.print(f"wrote {out}; train it with: archlab train {out}", markup=False, soft_wrap=True)
    else:
        sys.stdout.write(archlab.dump(suggestion.spec))  # the document as is: no console wrapping


@app.command()
def templates() -> None:
    """List the spec templates that suggest starts from (src/archlab/templates/)."""
    from archlab import design  # imports the data sets (numpy): only when the command runs

    table = Table("template", "input", "for", "params (default size)")
    for info in design.list_templates():
        params = archlab.analyze(design.load_template(info.name)).total_params
        table.add_row(info.name, info.input_kind, info.purpose, f"{params:,}")
    _out.print(table)
