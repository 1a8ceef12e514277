"""Names a module offers but imports on first use (PEP 562).

torch takes about a second to import, and ``archlab validate``, ``schema``, ``layers`` and
``--help`` never build a module: the names whose modules import torch (or numpy, optuna...)
are resolved when a program first reads them, so the light commands start in a fraction of that.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(module: str, sources: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module-level ``__getattr__`` and ``__dir__`` for ``module``: reading ``name`` imports
    ``sources[name]`` (an absolute module name) and returns its attribute of that name (or the module
    itself when it is the subpackage ``module.name``); ``dir()``
    lists the names before they are loaded, for completion in editors and shells.

    Used as, in a package's ``__init__.py`` (with the same names imported under TYPE_CHECKING
    for type checkers)::

        __getattr__, __dir__ = lazy_attributes(__name__, {"build": "archlab.builder._build"})
    """

    def __getattr__(name: str) -> Any:
        if name not in sources:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        source = importlib.import_module(sources[name])
        # a subpackage offered by its own name ({"plan": "archlab.plan"}) is that module itself
        value = source if sources[name] == f"{module}.{name}" else getattr(source, name)
        setattr(sys.modules[module], name, value)  # later reads find it without this hook
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[module]), *sources})

    return __getattr__, __dir__
