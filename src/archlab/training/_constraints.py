"""Max-norm constraints (Srivastava et al. 2014; Keras ``kernel_constraint=MaxNorm(c)``):
``train.max_norm: c`` renorms each unit's incoming-weight vector to an L2 norm of at most ``c``
after every optimizer step. A unit is a row of a dense layer's (out, in) weight or one filter of a
convolution's (out, in, *kernel) weight, so torch's layout puts it on axis 0 for both (and for
the (3E, E) query/key/value projection of nn.MultiheadAttention, one output unit per row)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["apply_max_norm", "max_norm_weights"]

#: the modules whose weight is a kernel with one unit per slice of axis 0 (dense, conv1d, conv2d,
#: and the linear projections inside attention and MLP blocks)
_KERNELS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: nn.MultiheadAttention keeps its query/key/value projections as bare (out, in) parameters, not
#: Linear modules: one stacked in_proj_weight (3E, E), or one each when the key/value widths differ
_ATTENTION_KERNELS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def max_norm_weights(model: nn.Module) -> list[nn.Parameter]:
    """The trainable kernels a max-norm constraint applies to, each once (a tied weight is one).
    Biases, norms and embedding tables are not constrained, as Keras' kernel_constraint is not."""
    found: dict[int, nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, _KERNELS):
            names = ("weight",)
        elif isinstance(module, nn.MultiheadAttention):  # its out_proj is an nn.Linear, found as one
            names = _ATTENTION_KERNELS
        else:
            continue
        for name in names:
            weight = getattr(module, name, None)
            if isinstance(weight, nn.Parameter) and weight.requires_grad:
                found.setdefault(id(weight), weight)
    return list(found.values())


@torch.no_grad()
def apply_max_norm(weights: list[nn.Parameter], max_norm: float | None) -> None:
    """Scale down, in place, every unit (slice of axis 0) whose L2 norm exceeds ``max_norm``.

    Example:
        >>> w = nn.Parameter(torch.tensor([[3.0, 4.0], [0.3, 0.4]]))
        >>> apply_max_norm([w], 1.0); w.data
        tensor([[0.6000, 0.8000],
                [0.3000, 0.4000]])
    """
    for weight in weights:
        weight.copy_(torch.renorm(weight, p=2, dim=0, maxnorm=max_norm))
