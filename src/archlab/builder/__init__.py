"""Spec -> checked node tree with shapes -> torch module."""

from typing import TYPE_CHECKING

from archlab._lazy import lazy_attributes

from ._nodes import (
    CONNECTIONS,
    Connection,
    GraphBlock,
    LayerNode,
    Merge,
    Node,
    ParallelNode,
    ParsedSpec,
    RepeatNode,
    ResidualNode,
    SequenceNode,
    parse,
)

if TYPE_CHECKING:
    from ._build import build, build_parsed
    from ._modules import ArchlabModel

# Parsing is pure; building imports torch, which is heavy and validate/schema never build.
__getattr__, __dir__ = lazy_attributes(__name__, {"ArchlabModel": "archlab.builder._modules",
                                                  "build": "archlab.builder._build",
                                                  "build_parsed": "archlab.builder._build"})

__all__ = ["CONNECTIONS", "ArchlabModel", "Connection", "GraphBlock", "LayerNode", "Merge", "Node", "ParallelNode",
           "ParsedSpec", "RepeatNode", "ResidualNode", "SequenceNode", "build", "build_parsed", "parse"]
