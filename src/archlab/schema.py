"""The JSON Schema of the spec format, for editor completion and validation.

The per-layer parts come from each layer type's pydantic parameter model, so a registered
user layer appears in the schema like a built-in one.
"""

from __future__ import annotations

from typing import Any

from .builder._nodes import CONNECTIONS, MERGES
from .layers import get_layer, list_layers
from .tasks import list_tasks

__all__ = ["spec_schema"]

_SHAPE = {"type": "array", "items": {"type": "integer", "minimum": 1}}
_INPUT = {"oneOf": [_SHAPE, {"type": "object", "additionalProperties": False, "required": ["shape"],
                             "properties": {"shape": _SHAPE, "dtype": {"enum": ["float", "long"]},
                                            "pad_id": {"type": "integer", "minimum": 0,
                                                       "description": "the id that pads token ids (dtype long); "
                                                                      "padded positions are masked"}}}]}
_MARKER = {"type": "object", "description": "search marker",
           "properties": {"choice": {"type": "array", "minItems": 1}, "int": {"type": "array"},
                          "float": {"type": "array"}, "step": {"type": "number"}, "log": {"type": "boolean"}},
           "minProperties": 1, "additionalProperties": False}


def _allow_markers(schema: Any) -> Any:
    """Every parameter value may also be a search marker."""
    if isinstance(schema, dict) and "properties" in schema:
        schema = dict(schema)
        schema["properties"] = {k: {"anyOf": [v, {"$ref": "#/$defs/marker"}]} for k, v in schema["properties"].items()}
    return schema


def spec_schema() -> dict:
    """JSON Schema (draft 2020-12) of spec format 1 for the layer types registered now."""
    defs: dict[str, Any] = {"marker": _MARKER, "input": _INPUT}
    items: list[dict] = []
    bare: list[str] = []
    extras = {"name": {"type": "string"}, "tie": {"type": "string"}, "trainable": {"type": "boolean"}}
    for name in list_layers():
        layer_type = get_layer(name)
        params = _allow_markers(layer_type.Params.model_json_schema())
        defs.update(params.pop("$defs", {}))
        params["description"] = layer_type.summary
        required = params.get("required", [])
        if not required:
            bare.append(name)
        value = params if required else {"anyOf": [params, {"type": "null"}]}
        items.append({"type": "object", "required": [name], "additionalProperties": False,
                      "properties": {name: value, **extras}})
    layer_list = {"type": "array", "items": {"$ref": "#/$defs/item"}}
    connections = {
        "residual": {"layers": layer_list, "shortcut": {"enum": ["auto", "identity", "projection"]},
                     "post": layer_list, "drop_path": {"type": "number", "minimum": 0, "maximum": 1},
                     "name": {"type": "string"}},
        "parallel": {"branches": {"type": "array", "items": layer_list}, "merge": {"enum": list(MERGES)},
                     "axis": {"type": "integer"}, "name": {"type": "string"}},
        "repeat": {"times": {"type": "integer", "minimum": 1}, "share_weights": {"type": "boolean"},
                   "layers": layer_list, "name": {"type": "string"}},
        "sequential": {"layers": layer_list, "name": {"type": "string"}},
    }
    required = {"residual": ["layers"], "parallel": ["branches"], "repeat": ["times", "layers"],
                "sequential": ["layers"]}
    for kind in CONNECTIONS:
        items.append({"type": "object", "required": [kind], "additionalProperties": False,
                      "properties": {kind: _allow_markers({"type": "object", "additionalProperties": False,
                                                           "required": required[kind],
                                                           "properties": connections[kind]}),
                                     "name": {"type": "string"}}})
    defs["item"] = {"anyOf": [{"enum": bare}, *items, {"$ref": "#/$defs/marker"}]}
    node = {"type": "object", "additionalProperties": False, "required": ["from"],
            "properties": {"from": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                           "merge": {"enum": list(MERGES)}, "axis": {"type": "integer"}, "layers": layer_list}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "archlab spec, format 1",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "archlab": {"const": 1},
            "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"},
            "description": {"type": "string"},
            "input": {"$ref": "#/$defs/input"},
            "inputs": {"type": "object", "additionalProperties": {"$ref": "#/$defs/input"}},
            "data_format": {"enum": ["channels_first", "channels_last"]},
            "task": {"type": "object", "properties": {
                "kind": {"enum": list_tasks()},
                "classes": {"type": "integer", "minimum": 2}}},
            "layers": layer_list,
            "graph": {"type": "object", "additionalProperties": node},
            "outputs": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "train": {"type": "object"},
        },
        "oneOf": [{"required": ["input", "layers"]}, {"required": ["inputs", "graph", "outputs"]}],
        "$defs": defs,
    }
