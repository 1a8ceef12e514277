"""Subcommands that read a spec: summary, validate, schema, layers."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import archlab
from archlab._data_names import data_sources
from archlab.analysis import render
from archlab.builder import CONNECTIONS
from archlab.schema import spec_schema
from archlab.spec import first_point

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="archlab: design neural-network architectures as specs; see their capacity before training.")
# Piped output (CI logs, files) gets a wide table instead of truncated columns.
_out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)

#: --quiet means the same on every command (docs/cli.md): no progress output, results still printed.
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output; results are still printed.")]



def data_help(default: str, purpose: str = "The data set") -> str:
    """The help of a --data option: what it is for, every source (archlab._data_names), the default."""
    return f"{purpose}: {data_sources()} (default: {default})."


SpecArg = Annotated[Path, typer.Argument(help="A spec file (.yaml, .yml or .json).", show_default=False)]
SummaryArg = Annotated[Path, typer.Argument(help="A spec file (.yaml, .yml or .json), or an ensemble directory.",
                                            show_default=False)]


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False) -> None:
    """Global options."""


@app.command()
def summary(
    spec: SummaryArg,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Batch for the memory estimate.")] = 1,
    depth: Annotated[int, typer.Option("--depth", "-d", min=0, help="Show nested rows down to this depth.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the analysis as JSON (stable schema).")] = False,
) -> None:
    """Parameters, FLOPs and memory of SPEC, per node and in total, without allocating weights; of an
    ensemble directory, each member's parameters and FLOPs and the totals."""
    if (spec / "ensemble.json").is_file():  # training.is_ensemble's test, without importing torch for a spec
        _ensemble_summary(spec, batch_size, as_json)
        return
    analysis = archlab.analyze(archlab.load(spec), batch_size=batch_size)
    if as_json:
        print(json.dumps(analysis.to_dict(), indent=2))
    else:
        _out.print(render(analysis, depth))


def _ensemble_summary(path: Path, batch_size: int, as_json: bool) -> None:
    from archlab.training import ensemble_summary  # torch: only for an ensemble

    summary = ensemble_summary(path, batch_size=batch_size)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    # the heading on a line of its own: as a table title, a long path would wrap to the table's width
    _out.print(f"{path}: {summary['method']} ensemble of {len(summary['members'])} ({summary['task']}, combined by "
               f"{summary['combine']})", markup=False, soft_wrap=True)
    table = Table()
    for column in ("member", "weights", "weight", "params", "FLOPs / sample"):
        table.add_column(column, justify="left" if column in ("member", "weights") else "right")
    for i, row in enumerate(summary["members"]):
        table.add_row(f"{i} {row['dir']}", row["weights"], f"{row['weight']:.4g}", f"{row['params']:,}",
                      f"{row['flops']:,}")
    total = summary["total"]
    table.add_row("combination", summary["combine"], "", "0", f"{total['combination_flops']:,}")
    table.add_row("total", "", "", f"{total['params']:,}", f"{total['flops']:,}")
    _out.print(table)


@app.command()
def validate(spec: SpecArg) -> None:
    """Check SPEC completely (types, parameters, shapes, graph, ties) and say what it is."""
    loaded = archlab.load(spec)
    markers = loaded.markers
    if markers:
        # A space: its markers are well-formed (find_markers checked them); check its structure at one point.
        archlab.parse(first_point(loaded.to_dict()))
        _out.print(f"{spec}: a valid search space with {len(markers)} search marker(s):", markup=False, soft_wrap=True)
        for path, marker in markers:
            _out.print(f"  {path}: {marker.describe()}", markup=False, soft_wrap=True)
        return
    parsed = archlab.parse(loaded)
    outputs = ", ".join(str(i) for i in parsed.output_infos)
    inputs = ", ".join(str(i) if n == "input" else f"{n} {i}" for n, i in parsed.raw_inputs.items())
    _out.print(f"{spec}: valid ({'graph' if parsed.is_graph else 'sequential'} form; input {inputs}; "
               f"output {outputs})", markup=False, soft_wrap=True)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the spec format (for editor completion)."""
    print(json.dumps(spec_schema(), indent=2))


@app.command(name="layers")
def layers_command() -> None:
    """List the registered layer types and the connections, with their parameters."""
    table = Table("type", "parameters (defaults)", "what it does", title="layer types", title_justify="left")
    for name in archlab.list_layers():
        layer_type = archlab.get_layer(name)
        params = []
        for field_name, info in layer_type.Params.model_fields.items():
            params.append(field_name if info.is_required() else f"{field_name}={info.default!r}")
        table.add_row(name, escape(", ".join(params)), escape(layer_type.summary))  # "from: [x, memory]" is no markup
    _out.print(table)
    connections = Table("connection", "keys (defaults)", "what it does", title="connections", title_justify="left")
    for name, connection in CONNECTIONS.items():
        keys = [*connection.required, *(f"{k}={v!r}" for k, v in connection.optional.items())]
        connections.add_row(name, escape(", ".join(keys)), escape(connection.summary))
    _out.print(connections)
