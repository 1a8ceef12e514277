"""Capacity analysis: parameters, FLOPs, model size and training memory, without weights."""

from ._analyze import SCHEMA_VERSION, Analysis, LayerStats, analyze
from ._memory import available_memory
from ._report import human_bytes, human_count, render

__all__ = ["SCHEMA_VERSION", "Analysis", "LayerStats", "analyze", "available_memory", "human_bytes", "human_count",
           "render"]
