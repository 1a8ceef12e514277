"""Spec paths: one string names one place in a spec (``layers[3].conv2d.filters``).

Paths are used by errors, reports and sweeps. A path is a dotted sequence of keys with
``[i]`` indices; its first key may also be the ``name:`` of a layer item anywhere in the
spec (``stem.layers[0]``), as the spec format allows.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

from archlab.exceptions import SpecError, suggest

__all__ = ["format_path", "get_at", "iter_named_items", "parse_path", "set_at"]

# [i], and [i-j] after repeat: the row of an analysis that stands for identical iterations i..j
_TOKEN = re.compile(r"([^.\[\]]+)|\[(-?\d+)(-\d+)?\]")


def format_path(*parts: str | int) -> str:
    """Join keys and indices into a path string.

    Example:
        >>> format_path("layers", 3, "conv2d", "filters")
        'layers[3].conv2d.filters'
    """
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part:
            out += f".{part}" if out else part
    return out


def parse_path(path: str) -> list[str | int]:
    """Split a path string into keys and indices; the inverse of format_path.

    Example:
        >>> parse_path("layers[5].repeat.times")
        ['layers', 5, 'repeat', 'times']
    """
    parts: list[str | int] = []
    pos = 0
    text = path.strip()
    while pos < len(text):
        if text[pos] == "." and pos > 0:
            pos += 1
        match = _TOKEN.match(text, pos)
        if not match:
            raise SpecError(f"cannot read path {path!r} at character {pos}: write keys joined by '.' "
                            "and indices as [i], e.g. layers[3].conv2d.filters")
        if match.group(3) and parts[-1:] != ["repeat"]:
            raise SpecError(f"cannot read path {path!r} at character {pos}: a range [i-j] of iterations follows "
                            "'repeat' only; elsewhere write one index [i]")
        parts.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
        pos = match.end()
    if not parts:
        raise SpecError("empty path: write e.g. layers[3].conv2d.filters")
    return parts


def iter_named_items(data: Any, prefix: tuple[str | int, ...] = ()) -> Iterator[tuple[str, tuple]]:
    """Yield (name, path parts) for every mapping in the spec that carries a string ``name:``."""
    if isinstance(data, dict):
        name = data.get("name")
        if prefix and isinstance(name, str):
            yield name, prefix
        for key, value in data.items():
            yield from iter_named_items(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from iter_named_items(value, (*prefix, i))


def _drop_iterations(parts: list[str | int]) -> list[str | int]:
    """``repeat[2]`` in an analysis row names an iteration; every iteration has the same spec."""
    return [p for i, p in enumerate(parts) if not (isinstance(p, int) and i > 0 and parts[i - 1] == "repeat")]


def _resolve(data: dict, parts: list[str | int], path: str) -> list[str | int]:
    """Replace a leading item name by the path of that item (and drop repeat iteration indices)."""
    parts = _drop_iterations(parts)
    head = parts[0]
    if isinstance(head, int) or head in data:
        return parts
    named = dict(iter_named_items(data))
    if head not in named:
        known = [k for k in data] + sorted(named)
        raise SpecError(f"no key or named item '{head}' in this spec{suggest(str(head), known)} "
                        f"(top-level keys and names: {', '.join(map(str, known))})", path)
    item_path = list(named[head])
    # A named layer item is {type: {...}, name: ...}; a path below it goes into its params
    # (stem.layers[0] for {sequential: {name: stem, layers: [...]}}).
    item = _walk(data, item_path, path)
    if isinstance(item, dict) and len(parts) > 1 and parts[1] not in item:
        type_keys = [k for k in item if k not in ("name", "tie", "trainable")]
        if len(type_keys) == 1 and isinstance(item[type_keys[0]], dict):
            item_path.append(type_keys[0])
    return item_path + parts[1:]


def _walk(data: Any, parts: list[str | int], path: str) -> Any:
    node = data
    for i, part in enumerate(parts):
        where = format_path(*parts[:i]) or "the spec"
        if isinstance(part, int):
            if not isinstance(node, list):
                raise SpecError(f"[{part}] indexes {where}, which is not a list", path)
            if not -len(node) <= part < len(node):
                raise SpecError(f"index {part} is out of range: {where} has {len(node)} items", path)
            node = node[part]
        else:
            if isinstance(node, str) and i == len(parts) - 1:
                raise SpecError(f"{where} is the bare item '{node}', which has no key '{part}'", path)
            if not isinstance(node, dict):
                raise SpecError(f"'{part}' looks up a key in {where}, which is not a mapping", path)
            if part not in node:
                raise SpecError(f"{where} has no key '{part}'{suggest(part, node)} "
                                f"(keys: {', '.join(map(str, node))})", path)
            node = node[part]
    return node


def get_at(data: dict, path: str) -> Any:
    """Return the value at ``path`` in a spec dict.

    Example:
        >>> spec = {"layers": [{"conv2d": {"filters": 8, "kernel_size": 3}, "name": "c1"}]}
        >>> get_at(spec, "layers[0].conv2d.filters"), get_at(spec, "c1.filters")
        (8, 8)
    """
    parts = parse_path(path)
    return _walk(data, _resolve(data, parts, path), path)


def set_at(data: dict, path: str, value: Any) -> dict:
    """Return a copy of a spec dict with the value at ``path`` replaced (the key may be new
    when its parent mapping exists, e.g. a parameter left at its default)."""
    parts = parse_path(path)
    head = parts[0]
    # A new top-level key (``task`` on a spec without one) is set like a new parameter.
    if not (len(parts) == 1 and isinstance(head, str) and head not in data
            and head not in dict(iter_named_items(data))):
        parts = _resolve(data, parts, path)
    out = copy.deepcopy(data)
    parent = _walk(out, parts[:-1], path)
    last = parts[-1]
    if isinstance(last, int):
        _walk(out, parts, path)  # range and type check
        parent[last] = value
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        where = format_path(*parts[:-1]) or "the spec"
        raise SpecError(f"cannot set '{last}': {where} is not a mapping", path)
    return out
