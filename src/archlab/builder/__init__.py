"""Spec -> checked node tree with shapes -> torch module."""

from ._build import build, build_parsed
from ._modules import ArchlabModel
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

__all__ = ["CONNECTIONS", "ArchlabModel", "Connection", "GraphBlock", "LayerNode", "Merge", "Node", "ParallelNode",
           "ParsedSpec", "RepeatNode", "ResidualNode", "SequenceNode", "build", "build_parsed", "parse"]
