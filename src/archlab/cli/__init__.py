"""The ``archlab`` command line: thin commands over the public API.

Bad input exits with code 2 and one message (no traceback); a failed run exits 1;
``--debug`` shows the traceback.
"""

from __future__ import annotations

import sys

from rich.console import Console

from archlab.exceptions import ArchlabError, SpecError

from . import _compress, _cv, _data, _deploy, _design, _ensemble, _plan, _search, _shrink, _train  # noqa: F401  (each registers its subcommands)
from ._app import app

__all__ = ["app", "main", "run"]

_stderr = Console(stderr=True, highlight=False)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` and return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:  # a global option, also accepted after the subcommand (archlab validate spec.yaml --debug)
        args = ["--debug", *(a for a in args if a != "--debug")]
    try:
        # usage errors exit 2 through SystemExit, as in Click; obj: commands that are interrupted
        # print the command line that continues them
        app(args=args, prog_name="archlab", obj={"argv": args})
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except (SpecError, FileNotFoundError, ValueError) as exc:
        if debug:
            raise
        _stderr.print(f"error: {exc}", markup=False, style="red", soft_wrap=True)
        return 2
    except ArchlabError as exc:
        if debug:
            raise
        _stderr.print(f"error: {exc}", markup=False, style="red", soft_wrap=True)
        return 1
    except Exception as exc:  # a failed run: one line, the traceback with --debug
        if debug:
            raise
        _stderr.print(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                      markup=False, style="red", soft_wrap=True)
        return 1


def main() -> None:
    sys.exit(run())
