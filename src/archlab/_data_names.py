"""The data set sources as help texts and messages name them, in one place.

``archlab --help`` must not import numpy (tests/cli/test_startup.py) and the data package does,
so the built-in sources are also listed here (tests/data/test_registry.py keeps the list equal to
the registry's). Once the data package is loaded, its registry is asked instead, so that a source
registered by a plugin or a program is named too.
"""

from __future__ import annotations

import sys

__all__ = ["BUILTIN_SOURCES", "data_sources", "no_data_message"]

#: The built-in sources as the data registry shows them (``archlab.data.registry.usages()``).
BUILTIN_SOURCES = ("audio:DIR", "criteo-sample", "csv:PATH", "digits", "fsdd", "mnist", "movielens-100k", "multi30k",
                   "npy:DIR", "npz:PATH", "text:PATH[,PATH]")


def data_sources() -> str:
    """Every registered source as one phrase.

    Example:
        >>> data_sources()[:57]
        'audio:DIR, criteo-sample, csv:PATH, digits, fsdd, mnist, '
        >>> data_sources()[57:]
        'movielens-100k, multi30k, npy:DIR, npz:PATH or text:PATH[,PATH]'
    """
    registry = getattr(sys.modules.get("archlab.data"), "registry", None)
    *head, last = registry.usages() if registry is not None else BUILTIN_SOURCES
    return f"{', '.join(head)} or {last}" if head else last


def no_data_message() -> str:
    """What a command says when neither ``--data`` nor the spec's ``train.data`` names a data set."""
    return f"no data set: pass --data NAME ({data_sources()}) or set train.data"
