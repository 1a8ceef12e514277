"""The Spec object, and reading/writing specs as YAML or JSON.

A Spec holds the spec exactly as the person wrote it (a plain dict of lists, dicts and
scalars), after a top-level check. Layer items are checked against the layer registry by
the builder, which is where the layer types live; this module never imports torch.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from archlab.exceptions import SpecError, suggest
from archlab.tasks import get_task, list_tasks

from ._markers import Marker, find_markers

__all__ = ["FORMAT_VERSION", "Spec", "dump", "load"]

FORMAT_VERSION = 1
TOP_LEVEL_KEYS = ("archlab", "name", "description", "input", "inputs", "data_format", "task",
                  "layers", "graph", "outputs", "train")
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-5`` as a float (YAML 1.1 wants ``1.0e-5``)."""


class _Dumper(yaml.SafeDumper):
    """Writes small mappings and lists of scalars inline: ``- conv2d: {filters: 32, kernel_size: 3}``."""


_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X)
# The dumper needs the same rule, so that it quotes a string such as '1e5' that the loader would read as a float.
for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _is_flat(value: Any) -> bool:
    scalars = (str, int, float, bool, type(None))
    items = value.values() if isinstance(value, dict) else value
    return all(isinstance(v, scalars) or (isinstance(v, list) and all(isinstance(x, scalars) for x in v))
               for v in items)


def _represent_dict(dumper: yaml.SafeDumper, data: dict) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=_is_flat(data) or None)


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=_is_flat(data) or None)


_Dumper.add_representer(dict, _represent_dict)
_Dumper.add_representer(list, _represent_list)


def _plain(value: Any, path: str = "", _inside: frozenset[int] = frozenset()) -> Any:
    """Deep-copy into plain dicts/lists (tuples become lists) and refuse what YAML cannot hold."""
    if isinstance(value, (Mapping, list, tuple)):
        if id(value) in _inside:
            raise SpecError("this value contains itself (a recursive YAML alias such as a: &a [*a]); a spec is "
                            "a tree: write the value out", path)
        _inside = _inside | {id(value)}
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise SpecError(f"keys must be strings, got {k!r}", path)
            out[k] = _plain(v, f"{path}.{k}" if path else k, _inside)
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{path}[{i}]", _inside) for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars from a sweep
        return value.item()
    raise SpecError(f"a spec holds only strings, numbers, booleans, lists and mappings; got "
                    f"{type(value).__name__} {value!r}", path)


def _check_shape(value: Any, path: str) -> None:
    shape = value.get("shape") if isinstance(value, dict) else value
    if isinstance(value, dict):
        unknown = [k for k in value if k not in ("shape", "dtype", "pad_id")]
        if unknown:
            raise SpecError(f"unknown key '{unknown[0]}'{suggest(unknown[0], ['shape', 'dtype', 'pad_id'])}; "
                            "an input is [dims...] or {shape: [dims...], dtype: float|long, pad_id: ID}", path)
        if value.get("dtype", "float") not in ("float", "long"):
            raise SpecError(f"dtype must be 'float' or 'long' (token ids), got {value['dtype']!r}",
                            f"{path}.dtype")
        _check_pad_id(value, path)
    if (not isinstance(shape, list) or not shape
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
        raise SpecError(f"an input shape is a list of positive integers (at least one) without the batch "
                        f"dimension, e.g. [1, 28, 28], or [1] for one number per sample; got {shape!r}", path)


def _check_pad_id(value: dict, path: str) -> None:
    """``pad_id`` marks the id that pads a sequence of token ids: a padding mask follows it."""
    if "pad_id" not in value:
        return
    pad = value["pad_id"]
    if value.get("dtype", "float") != "long":
        raise SpecError("pad_id applies to token ids: add dtype: long, or remove pad_id", f"{path}.pad_id")
    if not isinstance(pad, int) or isinstance(pad, bool) or pad < 0:
        raise SpecError(f"pad_id is the id that pads the sequences, an integer >= 0 (0 by archlab's "
                        f"tokenizers), got {pad!r}", f"{path}.pad_id")


def check_top_level(data: dict) -> None:
    """Check the keys around the layers: format version, name, inputs, form, task."""
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise SpecError(f"unknown top-level key '{key}'{suggest(key, TOP_LEVEL_KEYS)} "
                            f"(known: {', '.join(TOP_LEVEL_KEYS)})", key)
    version = data.get("archlab", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise SpecError(f"this archlab reads spec format {FORMAT_VERSION}, got {version!r}", "archlab")
    if not isinstance(data.get("description", ""), str):
        raise SpecError(f"description is text, got {data['description']!r}", "description")
    name = data.get("name")
    if name is not None and (not isinstance(name, str) or not _NAME.match(name)):
        raise SpecError(f"a name uses letters, digits, '-' and '_' only, got {name!r}", "name")
    has_layers, has_graph = "layers" in data, "graph" in data
    if has_layers == has_graph:
        raise SpecError("a spec has either 'layers' (the sequential form) or 'graph' (the graph form), "
                        + ("not both" if has_layers else "and this one has neither"))
    if has_layers:
        if "inputs" in data or "outputs" in data:
            key = "inputs" if "inputs" in data else "outputs"
            raise SpecError(f"'{key}' belongs to the graph form; the sequential form takes one 'input'", key)
        if "input" not in data:
            raise SpecError("missing 'input': give the input shape without the batch dimension, "
                            "e.g. input: [1, 28, 28]")
        _check_shape(data["input"], "input")
        if not isinstance(data["layers"], list) or not data["layers"]:
            raise SpecError("'layers' must be a non-empty list of layer items", "layers")
    else:
        if "input" in data:
            raise SpecError("the graph form names its inputs: write inputs: {x: [dims...]} instead of input",
                            "input")
        if not isinstance(data.get("inputs"), dict) or not data["inputs"]:
            raise SpecError("the graph form needs 'inputs': a mapping of names to shapes, "
                            "e.g. inputs: {image: [1, 28, 28], meta: [8]}", "inputs")
        for key, value in data["inputs"].items():
            _check_shape(value, f"inputs.{key}")
        if not isinstance(data["graph"], dict) or not data["graph"]:
            raise SpecError("'graph' must be a mapping of node names to nodes", "graph")
        if "outputs" not in data:
            raise SpecError("the graph form needs 'outputs': a node name or a list of node names")
    if data.get("data_format", "channels_first") not in ("channels_first", "channels_last"):
        raise SpecError(f"data_format is channels_first or channels_last, got {data['data_format']!r}",
                        "data_format")
    task = data.get("task")
    if task is not None:
        if not isinstance(task, dict) or "kind" not in task:
            raise SpecError(f"task needs kind: one of {', '.join(list_tasks())}; got {task!r}", "task")
        get_task(task["kind"], "task.kind")  # unknown: a SpecError listing the registered ones
        classes = task.get("classes")
        if classes is not None and (not isinstance(classes, int) or isinstance(classes, bool) or classes < 2):
            raise SpecError(f"task.classes must be an integer >= 2, got {classes!r}", "task.classes")
    if "train" in data and not isinstance(data["train"], dict):
        raise SpecError("'train' is a mapping (the training recipe)", "train")


class Spec:
    """An architecture spec: the one description every archlab stage reads.

    Build one from a dict (``Spec.from_dict``) or a file or YAML/JSON text (``archlab.load``).
    Two specs are equal when their dicts are equal.

    Example:
        >>> spec = Spec.from_dict({"input": [4], "layers": [{"dense": {"units": 2}}]})
        >>> spec.to_dict()["layers"]
        [{'dense': {'units': 2}}]
        >>> Spec.from_dict(spec.to_dict()) == spec
        True
    """

    def __init__(self, data: Mapping[str, Any]) -> None:
        if isinstance(data, Spec):
            data = data.to_dict()
        if not isinstance(data, Mapping):
            raise SpecError(f"a spec is a mapping at the top level, got {type(data).__name__}")
        try:
            self._data: dict = _plain(data)
        except RecursionError:
            raise SpecError("the spec nests lists and mappings too deeply to read; a spec is a few dozen levels "
                            "deep at most") from None
        check_top_level(self._data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Spec:
        return cls(data)

    def to_dict(self) -> dict:
        """A deep copy of the spec as plain dicts and lists."""
        return copy.deepcopy(self._data)

    @property
    def name(self) -> str:
        return self._data.get("name", "model")

    @property
    def markers(self) -> list[tuple[str, Marker]]:
        """The search markers in this spec, with their paths; empty for a concrete spec."""
        return find_markers(self._data)

    @property
    def is_space(self) -> bool:
        return bool(self.markers)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Spec) and self._data == other._data

    def __hash__(self) -> int:
        return hash(json.dumps(self._data, sort_keys=True))

    def __repr__(self) -> str:
        return f"Spec(name={self.name!r}, form={'graph' if 'graph' in self._data else 'sequential'})"


#: More values than any architecture spec holds: aliases of aliases (a "billion laughs") are refused
#: before they are expanded into a tree that large.
MAX_VALUES = 1_000_000


def _check_nodes(root: yaml.Node, origin: str) -> None:
    """Refuse, with the spec path and line, what YAML would read silently or never finish reading:
    a key twice in one mapping (YAML keeps the last), an alias inside the node it names, and
    aliases that expand to more than MAX_VALUES values."""
    count = 0
    stack: list[tuple[yaml.Node, str, frozenset[int]]] = [(root, "", frozenset())]
    while stack:
        node, path, inside = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise SpecError(f"{origin} expands to more than {MAX_VALUES:,} values (aliases of aliases): write the "
                            "spec without nesting aliases")
        if not isinstance(node, yaml.CollectionNode):
            continue
        line = node.start_mark.line + 1
        if id(node) in inside:
            raise SpecError(f"this value contains itself ({origin} line {line}: a recursive alias such as "
                            "a: &a [*a]); a spec is a tree: write the value out", path)
        inside = inside | {id(node)}
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, f"{path}[{i}]", inside) for i, child in enumerate(node.value))
            continue
        seen: dict[tuple[str, str], tuple[int, int]] = {}
        for key, child in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            here = f"{path}.{name}" if path else name
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                at = (key.start_mark.line + 1, key.start_mark.column + 1)
                if (key.tag, key.value) in seen:
                    (l1, c1), (l2, c2) = seen[key.tag, key.value], at
                    where = f"line {l1}, columns {c1} and {c2}" if l1 == l2 else f"lines {l1} and {l2}"
                    raise SpecError(f"key '{name}' is given twice in one mapping of {origin} ({where}); YAML would "
                                    "keep only the last: remove one", here)
                seen[key.tag, key.value] = at
            stack.append((child, here, inside))


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object whose keys are all different (json keeps the last of a repeated key)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise SpecError(f"key '{key}' is given twice in one JSON object; JSON readers keep only the last: "
                            "remove one")
        out[key] = value
    return out


def _parse_text(text: str, origin: str) -> Any:
    try:
        return _parse_text_nested(text, origin)
    except RecursionError:
        raise SpecError(f"{origin} nests lists and mappings too deeply to read; a spec is a few dozen levels "
                        "deep at most") from None


def _parse_text_nested(text: str, origin: str) -> Any:
    if origin.endswith(".json") or text.lstrip().startswith(("{", "[")):
        try:  # JSON first: YAML refuses some valid JSON, e.g. tab indentation
            return json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError:
            pass  # a YAML flow mapping such as {input: [4], ...}, or broken JSON: YAML reports it
        except SpecError as exc:
            raise SpecError(f"{origin}: {exc}") from None
    try:
        loader = _Loader(text)  # the reader refuses control characters here
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_nodes(node, origin)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.reader.ReaderError as exc:
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise SpecError(f"{origin} is not valid YAML/JSON: the control character U+{code:04X} at position "
                        f"{exc.position} is not allowed in YAML text (is it a binary file?)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{origin} is not valid YAML/JSON{where}: {problem}") from None


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # one line of JSON longer than a file name may be, or a NUL byte
        return False


def _is_dir(text: str) -> bool:
    if not text.strip():
        return False  # Path("") is the current directory; "" is empty spec text
    try:
        return Path(text).is_dir()
    except (OSError, ValueError):
        return False


def _read(path: Path) -> str:
    """The text of a spec file, or a SpecError that names the file and says what it is instead."""
    if path.is_dir():
        raise SpecError(f"{str(path)!r} is a directory, not a spec file: give a .yaml, .yml or .json file"
                        + (" (a run directory's spec is its spec.yaml)" if (path / "spec.yaml").is_file() else ""))
    if not path.is_file():
        raise SpecError(f"spec file {str(path)!r} does not exist")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read spec file {str(path)!r}: {exc.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"spec file {str(path)!r} is not text (byte {exc.start} is not UTF-8): a spec is YAML or "
                        "JSON text") from None


def load(source: str | Path | Mapping | Spec) -> Spec:
    """Read a spec from a YAML/JSON file path, YAML/JSON text, a dict, or a Spec.

    Example:
        >>> load("input: [4]\\nlayers: [{dense: {units: 2}}]").to_dict()
        {'input': [4], 'layers': [{'dense': {'units': 2}}]}
    """
    if isinstance(source, Spec):
        return source
    if isinstance(source, Mapping):
        return Spec(source)
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source
                                    and (source.endswith((".yaml", ".yml", ".json")) or _is_file(source)
                                         or _is_dir(source))):
        data = _parse_text(_read(Path(source)), str(source))
    else:
        data = _parse_text(str(source), "the spec text")
    if not isinstance(data, dict):
        raise SpecError(f"a spec is a mapping at the top level, got {type(data).__name__}: {data!r}"[:200])
    return Spec(data)


def dump(spec: Spec | Mapping, path: str | Path | None = None, *, format: str | None = None) -> str:
    """Write a spec as YAML (default) or JSON; return the text, and write it to ``path`` if given.

    Example:
        >>> spec = load({"input": [4], "layers": [{"dense": {"units": 2}}]})
        >>> load(dump(spec)) == spec
        True
    """
    data = load(spec).to_dict()
    fmt = format or ("json" if path is not None and str(path).endswith(".json") else "yaml")
    if fmt == "json":
        text = json.dumps(data, indent=2) + "\n"
    elif fmt == "yaml":
        text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)
    else:
        raise SpecError(f"format is 'yaml' or 'json', got {fmt!r}")
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text
