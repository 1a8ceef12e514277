"""Search markers: ``{choice: [...]}``, ``{int: [lo, hi]}``, ``{float: [lo, hi], log: true}``.

A spec holding markers is a search space. Markers are recognised (and checked) here so that
``build``/``summary`` can refuse a space with the marker's path and ``search`` can sample it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from archlab.exceptions import SpecError, suggest

from ._paths import format_path

__all__ = ["Marker", "find_markers", "first_point", "is_marker", "parse_marker"]

_KINDS = ("choice", "int", "float")
_OPTIONS = {"choice": set(), "int": {"step", "log"}, "float": {"step", "log"}}


@dataclass(frozen=True)
class Marker:
    """One search dimension: its kind, its bounds or choices, and its options."""

    kind: str
    values: tuple
    step: int | float | None = None
    log: bool = False

    def describe(self) -> str:
        if self.kind == "choice":
            return "{choice: [" + ", ".join(map(repr, self.values)) + "]}"
        extra = (f", step: {self.step}" if self.step is not None else "") + (", log: true" if self.log else "")
        return f"{{{self.kind}: [{self.values[0]}, {self.values[1]}]{extra}}}"


def is_marker(value: Any) -> bool:
    """A mapping whose keys include choice/int/float is a marker (no layer type has these names)."""
    return isinstance(value, dict) and any(k in value for k in _KINDS)


def parse_marker(value: dict, path: str = "") -> Marker:
    """Check a marker and return it; a malformed one is a SpecError at ``path``.

    Example:
        >>> parse_marker({"int": [1, 6], "step": 1})
        Marker(kind='int', values=(1, 6), step=1, log=False)
    """
    kinds = [k for k in _KINDS if k in value]
    if len(kinds) > 1:
        raise SpecError(f"a search marker has one of choice/int/float, found {', '.join(kinds)}", path)
    kind = kinds[0]
    a_kind = f"an {kind}" if kind == "int" else f"a {kind}"
    for key in value:
        if key != kind and key not in _OPTIONS[kind]:
            allowed = sorted(_OPTIONS[kind]) or ["no options"]
            raise SpecError(f"unknown key '{key}' in {a_kind} marker{suggest(key, _OPTIONS[kind])} "
                            f"(allowed beside '{kind}': {', '.join(allowed)})", path)
    raw = value[kind]
    if kind == "choice":
        if not isinstance(raw, list) or not raw:
            raise SpecError(f"{{choice: ...}} needs a non-empty list of options, got {raw!r}", path)
        return Marker("choice", tuple(raw))
    number = int if kind == "int" else (int, float)
    if (not isinstance(raw, list) or len(raw) != 2
            or not all(isinstance(v, number) and not isinstance(v, bool) for v in raw)):
        raise SpecError(f"{{{kind}: [low, high]}} needs two {kind} bounds, got {raw!r}", path)
    low, high = raw
    if low > high:
        raise SpecError(f"{{{kind}: [{low}, {high}]}} has low > high: write [{high}, {low}]", path)
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise SpecError(f"'log' in {a_kind} marker must be true or false, got {log!r}", path)
    if log and low <= 0:
        raise SpecError(f"a log-scaled {kind} marker needs low > 0, got {low}", path)
    step = value.get("step")
    if step is not None and (not isinstance(step, number) or isinstance(step, bool) or step <= 0):
        raise SpecError(f"'step' in {a_kind} marker must be a positive {kind}, got {step!r}", path)
    if step is not None and log:
        raise SpecError(f"{a_kind} marker cannot have both 'step' and 'log: true'", path)
    return Marker(kind, (low, high), step, log)


def find_markers(data: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str, Marker]]:
    """Every marker in a spec (including markers nested inside choice options), with its path.

    Example:
        >>> find_markers({"layers": [{"dense": {"units": {"choice": [16, 32]}}}]})[0][0]
        'layers[0].dense.units'
    """
    found: list[tuple[str, Marker]] = []
    if is_marker(data):
        path = format_path(*prefix)
        marker = parse_marker(data, path)
        found.append((path, marker))
        if marker.kind == "choice":
            for i, option in enumerate(marker.values):
                found.extend(find_markers(option, (*prefix, "choice", i)))
    elif isinstance(data, dict):
        for key, value in data.items():
            found.extend(find_markers(value, (*prefix, key)))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found.extend(find_markers(value, (*prefix, i)))
    return found


def first_point(data: Any) -> Any:
    """The spec with every marker replaced by its first value (first choice, low bound):
    one concrete point of a space, used to check a space's structure before any search.

    Example:
        >>> first_point({"units": {"choice": [16, 32]}, "rate": {"float": [0.1, 0.5]}})
        {'units': 16, 'rate': 0.1}
    """
    if is_marker(data):
        marker = parse_marker(data)
        return first_point(marker.values[0])
    if isinstance(data, dict):
        return {k: first_point(v) for k, v in data.items()}
    if isinstance(data, list):
        return [first_point(v) for v in data]
    return data
