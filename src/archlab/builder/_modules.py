"""The torch modules that join layers: serial, residual, parallel, repeat, and the graph."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from archlab.layers._masking import MaskScope, holding

from ._nodes import Merge

__all__ = ["ArchlabModel", "GraphNet", "MergeModule", "Parallel", "Permute", "Repeat", "Residual", "drop_path"]


class MergeModule(nn.Module):
    """Joins several (batch, ...) tensors: concat along a spec axis, or add/mean/max/mul."""

    def __init__(self, merge: Merge) -> None:
        super().__init__()
        self.kind, self.axis = merge.kind, merge.axis

    def forward(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        if self.kind == "concat":
            return torch.cat(tensors, dim=self.axis + 1 if self.axis >= 0 else self.axis)  # skip the batch axis
        stacked = torch.stack(tensors)  # (N, B, ...)
        if self.kind == "add":
            return stacked.sum(0)
        if self.kind == "mean":
            return stacked.mean(0)
        if self.kind == "max":
            return stacked.amax(0)
        return stacked.prod(0)

    def extra_repr(self) -> str:
        return self.kind + (f", axis={self.axis}" if self.kind == "concat" else "")


def drop_path(branch: torch.Tensor, p: float) -> torch.Tensor:
    """Stochastic depth (Huang et al. 2016), per sample as timm's ``drop_path`` and torchvision's
    ``stochastic_depth(mode="row")``: each sample's branch is zeroed with probability ``p`` and the
    kept ones are scaled by 1/(1-p), so the expected output is the branch. Draws come from torch's
    global RNG, as dropout's (a run seeds it; resume is exact on the CPU; on CUDA the masks come
    from the CUDA generator, which the checkpoint does not keep)."""
    keep = 1.0 - p
    mask = branch.new_empty((branch.shape[0],) + (1,) * (branch.dim() - 1)).bernoulli_(keep)  # (B, 1, ...)
    return branch * (mask / keep if keep > 0 else mask)


class Residual(nn.Module):
    """y = post(layers(x) + shortcut(x)); while training, ``layers(x)`` is dropped per sample with
    probability ``drop_path`` (stochastic depth; the identity in eval)."""

    def __init__(self, layers: nn.Module, shortcut: nn.Module | None, post: nn.Module | None,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.layers = layers
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.post = post if post is not None else nn.Identity()
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.layers(x)
        if self.training and self.drop_path > 0:
            branch = drop_path(branch, self.drop_path)
        return self.post(branch + self.shortcut(x))

    def extra_repr(self) -> str:
        return f"drop_path={self.drop_path}" if self.drop_path else ""


class Parallel(nn.Module):
    """Branches that read the same input, joined by a merge."""

    def __init__(self, branches: list[nn.Module], merge: MergeModule) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.merge = merge

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge([branch(x) for branch in self.branches])


class Repeat(nn.Module):
    """A block applied ``times`` times: ``times`` blocks, or one shared block (ALBERT-style)."""

    def __init__(self, blocks: list[nn.Module], times: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.times = times

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.times):
            x = self.blocks[i % len(self.blocks)](x)
        return x

    def extra_repr(self) -> str:
        return f"times={self.times}, shared={len(self.blocks) == 1 and self.times > 1}"


class GraphNode(nn.Module):
    """One node of the graph form: merge its sources (or hand them all to a multi-input first layer)."""

    def __init__(self, sources: list[str], merge: MergeModule | None, layers: nn.Sequential) -> None:
        super().__init__()
        self.sources = sources
        self.merge = merge
        self.layers = layers

    def forward(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        if self.merge is not None:
            return self.layers(self.merge(tensors))
        if len(tensors) == 1:
            return self.layers(tensors[0])
        first, *rest = list(self.layers)
        x = first(*tensors)  # a layer that reads several tensors, e.g. transformer_decoder(x, memory)
        for layer in rest:
            x = layer(x)
        return x


class GraphNet(nn.Module):
    """Runs the graph form's nodes in dependency order."""

    def __init__(self, input_names: list[str], nodes: dict[str, GraphNode], outputs: list[str]) -> None:
        super().__init__()
        self.input_names = input_names
        self.nodes = nn.ModuleDict(nodes)
        self.outputs = outputs

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        values = dict(zip(self.input_names, args, strict=False)) | kwargs
        missing = [n for n in self.input_names if n not in values]
        if missing or len(args) > len(self.input_names):
            raise TypeError(f"this model takes the inputs ({', '.join(self.input_names)}), positionally or by name; "
                            f"missing: {', '.join(missing) or 'none'}, received {len(args)} positional")
        self.run(values, self.nodes)
        results = tuple(values[name] for name in self.outputs)
        return results[0] if len(results) == 1 else results


    def run(self, values: dict[str, torch.Tensor], names: Iterable[str]) -> dict[str, torch.Tensor]:
        """Runs the named nodes in the order given, each on the ``values`` of its sources, adding
        its output to ``values``: the whole graph (``forward``), or a part of it that decoding or
        export runs alone (the encoder once, the decoder per step)."""
        for name in names:
            node = self.nodes[name]
            values[name] = node([values[s] for s in node.sources])
        return values


class Permute(nn.Module):
    """Moves the channel axis from last to first once at the entry (data_format: channels_last)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.movedim(-1, 1) if x.dim() >= 3 else x


class ArchlabModel(nn.Module):
    """The module built from a spec. ``spec`` is the spec it was built from; ``net`` does the work."""

    def __init__(self, spec, net: nn.Module, channels_last: bool, input_names: list[str],
                 masks: MaskScope | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.net = net
        self.channels_last = channels_last
        self.input_names = input_names
        self.permute = Permute() if channels_last else None
        #: the padding masks of the inputs with a pad_id, for the modules that mix time steps
        #: (archlab.layers._masking says why this way); None: no input declares one
        self.masks = masks

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor):
        if self.permute is not None:
            args = tuple(self.permute(a) for a in args)
            kwargs = {k: self.permute(v) for k, v in kwargs.items()}
        if self.masks is None:
            return self.net(*args, **kwargs)
        given = dict(zip(self.input_names, args, strict=False)) | kwargs
        with holding(self.masks, self.masks.of(given)):
            return self.net(*args, **kwargs)

    def num_params(self, trainable_only: bool = False) -> int:
        """Parameters counted once each, however often they are shared or tied."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
