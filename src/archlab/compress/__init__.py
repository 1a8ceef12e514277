"""Compression as spec -> smaller spec transforms (never inside layers): structured pruning."""

from ._shrink import ShrinkResult, shrink
from ._structured import (
    BlockRef,
    block_candidates,
    bypass,
    channel_scores,
    prunable_layers,
    prune_channels,
    remove_blocks,
)

__all__ = ["BlockRef", "ShrinkResult", "block_candidates", "bypass", "channel_scores", "prunable_layers",
           "prune_channels", "remove_blocks", "shrink"]
