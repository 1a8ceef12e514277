"""Compression: structured pruning and low-rank factorization as spec -> smaller spec transforms
(never inside layers), unstructured magnitude pruning of a built model, and distillation."""

from ._distill import distill, distillation_loss
from ._lowrank import FactoredLayer, LowRankReport, lowrank
from ._pipeline import STEP_KINDS, CompressResult, CompressStep, compress
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
from ._unstructured import SparsityReport, TensorSparsity, prune_unstructured

__all__ = ["STEP_KINDS", "BlockRef", "CompressResult", "CompressStep", "FactoredLayer", "LowRankReport",
           "ShrinkResult", "SparsityReport", "TensorSparsity", "block_candidates", "bypass", "channel_scores",
           "compress", "distill", "distillation_loss", "lowrank", "prunable_layers", "prune_channels",
           "prune_unstructured", "remove_blocks", "shrink"]
