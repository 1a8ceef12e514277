"""The planner's one error: an input it cannot plan (a layout that does not divide the model, a
budget too small for any model), caught as ``archlab.ArchlabError`` or ``ValueError``."""

from __future__ import annotations

import math

from archlab.exceptions import ArchlabError

__all__ = ["PlanError", "check_positive"]


class PlanError(ArchlabError, ValueError):
    """A planning input that cannot be planned; the message names the option and a value that works."""


def check_positive(option: str, value: float, kind: str = "a positive number") -> None:
    """Refuse ``value`` unless it is a positive, finite int or float (a bool is neither), naming ``option``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or not math.isfinite(value):
        raise PlanError(f"{option} must be {kind}, got {value!r}")
