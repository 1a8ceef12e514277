"""Subcommands about data sets: ``archlab data show`` and ``archlab data convert``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from archlab._data_names import data_sources

from ._app import _out, app

data_app = typer.Typer(no_args_is_help=True, help="Data sets: describe one, or convert one to .npy files.")
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


@data_app.command()
def show(
    source: Annotated[str, typer.Argument(help=f"A data set: {data_sources()}; or a pairing A+B such as "
                                               "fsdd+mnist.", show_default=False)],
    data_dir: Annotated[Path | None, typer.Option(help="Where to look for data files first.")] = None,
) -> None:
    """Load SOURCE and print what a spec needs to fit it: task, classes, counts, and each input's shape and dtype."""
    import numpy as np  # only when the command runs

    from archlab._inputs import as_named, fmt_shape
    from archlab.data import Dataset, load_dataset

    dataset = load_dataset(source, data_dir)
    _out.print(dataset.describe(), markup=False, soft_wrap=True)
    _out.print(f"source: {dataset.source}", markup=False, soft_wrap=True)
    if not isinstance(dataset, Dataset):  # a text data set: sentences until archlab.text tokenizes them
        return
    for key, x in as_named(dataset.x_train).items():
        label = f"input {key}" if dataset.named else "input"
        _out.print(f"{label}: {fmt_shape(x.shape[1:])} {x.dtype}", markup=False, soft_wrap=True)
    if dataset.groups_train is not None:
        for split, groups in (("train", dataset.groups_train), ("test", dataset.groups_test)):
            names, counts = np.unique(groups, return_counts=True)
            listed = ", ".join(f"{n} {c}" for n, c in zip(names.tolist(), counts.tolist(), strict=True))
            _out.print(f"groups {split}: {listed}", markup=False, soft_wrap=True)
