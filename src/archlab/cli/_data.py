"""Subcommands about data sets: ``archlab data convert``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._app import _out, app

data_app = typer.Typer(no_args_is_help=True, help="Data sets: convert one into memory-mapped .npy files.")
app.add_typer(data_app, name="data")


@data_app.command()
def convert(
    source: Annotated[str, typer.Argument(help="A data set: csv:PATH (with its ?options), digits, npz:PATH, ...",
                                          show_default=False)],
    folder: Annotated[Path, typer.Argument(help="The new folder of .npy files (must not exist, or be empty).",
                                           show_default=False)],
    data_dir: Annotated[Path | None, typer.Option(help="Where to look for data files first.")] = None,
    chunk_rows: Annotated[int, typer.Option(min=1, help="Rows of a CSV table read and written at a time.")] = 65_536,
) -> None:
    """Write SOURCE as FOLDER, a folder of .npy files that npy:FOLDER reads memory-mapped
    (a csv: table chunk by chunk, never whole in memory)."""
    from archlab.data import load_dataset, write_npy_dir  # numpy: only when the command runs

    written = write_npy_dir(source, folder, data_dir=data_dir, chunk_rows=chunk_rows)
    _out.print(load_dataset(f"npy:{written}").describe(), markup=False, soft_wrap=True)
    _out.print(f"data: npy:{written}", markup=False, soft_wrap=True)
