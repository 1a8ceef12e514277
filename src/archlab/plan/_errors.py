"""The planner's one error: an input it cannot plan (a layout that does not divide the model, a
budget too small for any model), caught as ``archlab.ArchlabError`` or ``ValueError``."""

from __future__ import annotations

from archlab.exceptions import ArchlabError

__all__ = ["PlanError"]


class PlanError(ArchlabError, ValueError):
    """A planning input that cannot be planned; the message names the option and a value that works."""
