"""Exceptions raised by archlab.

Every error about a spec says where (the spec path), what was expected, what was received
and how to fix it. Each one also inherits a builtin so that callers who do not know archlab
can still catch it (as scikit-learn's NotFittedError subclasses ValueError).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["ArchlabError", "Interrupted", "MemoryLimitError", "RegistryError", "ShapeError", "SpecError", "suggest"]


class ArchlabError(Exception):
    """Base class of every error archlab raises on purpose."""


class SpecError(ArchlabError, ValueError):
    """A spec is malformed: unknown type, wrong parameter, bad shape, broken graph.

    Attributes:
        path: the spec path of what is wrong (``layers[3].conv2d.filters``), or ``""`` for the top level.
    """

    def __init__(self, message: str, path: str = "") -> None:
        self.path = path
        self.bare_message = message
        # "layers[5] (dense) needs ..." reads better than "layers[5]: (dense) needs ..."
        separator = " " if message.startswith("(") else ": "
        super().__init__(f"{path}{separator}{message}" if path else message)


class ShapeError(SpecError):
    """A layer cannot take the shape (or dtype) that reaches it."""


class MemoryLimitError(SpecError):
    """A model (or its training) needs more memory than the device has available: refused before
    allocating it.

    Attributes:
        needed, available: bytes (None when the raiser did not say).
    """

    def __init__(self, message: str, path: str = "", *, needed: int | None = None,
                 available: int | None = None) -> None:
        super().__init__(message, path)
        self.needed, self.available = needed, available


class RegistryError(ArchlabError, LookupError):
    """A layer type is unknown, or registered twice in a way that cannot be right."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a long command; the message says what was kept and the command that continues.

    A KeyboardInterrupt still, so code that does not know archlab stops as it would on Ctrl-C.
    """


def suggest(name: str, known: Iterable[str]) -> str:
    """Return "; did you mean 'x'?" for the closest known name, or "" when nothing is close.

    Example:
        >>> suggest("conv2", ["conv1d", "conv2d", "dense"])
        "; did you mean 'conv2d'?"
    """
    match = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""
