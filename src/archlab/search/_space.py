"""A spec with search markers as an Optuna search space.

Each marker becomes one Optuna distribution named by its spec path. A ``choice`` between
structures (layer items, lists) is a categorical over readable labels; the markers inside an
option are named ``PATH.choice[i]....`` and are only suggested when that option is picked, so
the space is conditional (define-by-run), as Optuna's samplers expect.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from archlab.exceptions import SpecError
from archlab.spec import Marker, find_markers, format_path, is_marker, parse_marker

__all__ = ["Dimension", "choice_labels", "dimensions", "grid_space", "sample", "space_differences"]

_PRIMITIVE = (str, int, float, bool, type(None))


def choice_labels(options: tuple) -> list:
    """The categorical values Optuna stores for a choice: the options themselves when they are
    plain values, else readable labels (a layer item's type or name), made unique.

    Example:
        >>> choice_labels(({"conv2d": {"filters": 8}}, {"dense": {"units": 4}}, {"conv2d": {"filters": 16}}))
        ['conv2d', 'dense', 'conv2d#2']
    """
    if all(isinstance(o, _PRIMITIVE) for o in options):
        return list(options)
    labels: list[str] = []
    for i, option in enumerate(options):
        if isinstance(option, dict) and option.get("name"):
            label = str(option["name"])
        elif isinstance(option, dict) and len([k for k in option if k != "name"]) == 1:
            label = next(k for k in option if k != "name")
        else:
            label = json.dumps(option, sort_keys=True, separators=(",", ":"))
        labels.append(label if label not in labels else f"{label}#{i}")
    return labels


def sample(trial: Any, data: Any, prefix: tuple[str | int, ...] = ()) -> Any:
    """One point of the space: every reachable marker replaced by the trial's suggestion.

    ``trial`` is an ``optuna.Trial`` (anything with ``suggest_int/float/categorical``).
    """
    if is_marker(data):
        path = format_path(*prefix)
        marker = parse_marker(data, path)
        low, high = marker.values if marker.kind != "choice" else (None, None)
        if marker.kind == "int":
            return trial.suggest_int(path, low, high, step=marker.step or 1, log=marker.log)
        if marker.kind == "float":
            return trial.suggest_float(path, float(low), float(high), step=marker.step, log=marker.log)
        labels = choice_labels(marker.values)
        index = labels.index(trial.suggest_categorical(path, labels))
        return sample(trial, marker.values[index], (*prefix, "choice", index))
    if isinstance(data, dict):
        return {key: sample(trial, value, (*prefix, key)) for key, value in data.items()}
    if isinstance(data, list):
        return [sample(trial, value, (*prefix, i)) for i, value in enumerate(data)]
    return data


@dataclass(frozen=True)
class Dimension:
    """One searched value: its path, its marker and, for enumerable markers, how many values it has."""

    path: str
    marker: Marker

    @property
    def conditional(self) -> bool:
        return ".choice[" in self.path

    @property
    def size(self) -> int | None:
        m = self.marker
        if m.kind == "choice":
            return len(m.values)
        if m.kind == "int":
            return (m.values[1] - m.values[0]) // (m.step or 1) + 1
        if m.step is not None:
            return int(round((m.values[1] - m.values[0]) / m.step)) + 1
        return None


def dimensions(space: dict) -> list[Dimension]:
    """Every dimension of a space; malformed markers are SpecErrors naming their path.

    Example:
        >>> [d.path for d in dimensions({"layers": [{"dense": {"units": {"int": [8, 64], "step": 8}}}]})]
        ['layers[0].dense.units']
    """
    found = [Dimension(path, marker) for path, marker in find_markers(space)]
    if not found:
        raise SpecError("the spec has no search markers, so there is nothing to search: write a value as "
                        "{choice: [16, 32, 64]}, {int: [1, 6]} or {float: [1e-4, 1e-1], log: true}")
    return found


def grid_space(space: dict) -> dict[str, list]:
    """The value lists of Optuna's GridSampler; every marker must be enumerable.

    Example:
        >>> grid_space({"units": {"choice": [8, 16]}, "rate": {"float": [0.0, 0.5], "step": 0.25}})
        {'units': [8, 16], 'rate': [0.0, 0.25, 0.5]}
    """
    grid: dict[str, list] = {}
    for dim in dimensions(space):
        m = dim.marker
        if m.kind == "choice":
            grid[dim.path] = choice_labels(m.values)
        elif dim.size is None:
            raise SpecError(f"grid search needs every float marker to have a step, e.g. "
                            f"{{float: [{m.values[0]}, {m.values[1]}], step: ...}}; or use --sampler tpe/random",
                            dim.path)
        elif m.kind == "int":
            grid[dim.path] = list(range(m.values[0], m.values[1] + 1, m.step or 1))
        else:
            grid[dim.path] = [round(m.values[0] + i * m.step, 12) for i in range(dim.size)]
    return grid


def space_differences(old: Any, new: Any, prefix: tuple[str | int, ...] = (), limit: int = 5) -> list[str]:
    """Paths where two spaces differ, each with both values (at most ``limit``), to explain why a
    stored study does not match.

    Example:
        >>> space_differences({"a": {"choice": [1, 2]}, "b": 3}, {"a": {"choice": [1, 4]}, "b": 3})
        ['a: {choice: [1, 2]} -> {choice: [1, 4]}']
    """
    def show(value: Any) -> str:
        return parse_marker(value).describe() if is_marker(value) else json.dumps(value)

    if old == new:
        return []
    path = format_path(*prefix) or "(the whole spec)"
    if is_marker(old) or is_marker(new) or type(old) is not type(new):
        return [f"{path}: {show(old)} -> {show(new)}"]
    if isinstance(old, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            if key not in new:
                out.append(f"{format_path(*prefix, key)}: removed")
            elif key not in old:
                out.append(f"{format_path(*prefix, key)}: added")
            else:
                out.extend(space_differences(old[key], new[key], (*prefix, key), limit))
        return out[:limit]
    if isinstance(old, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            out.extend(space_differences(a, b, (*prefix, i), limit))
        return out[:limit]
    return [f"{path}: {show(old)} -> {show(new)}"]
