"""Recommendation layers: the factorization machine, reductions over fields, a bias.

With the ids of F categorical fields as input (``input: {shape: [F], dtype: long}``) and an
``embedding`` over all their ids, these build logistic regression (an embedding of width 1,
summed, plus a bias), factorization machines and DeepFM (``examples/recsys/``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from archlab._lazy import lazy_attributes
from archlab.exceptions import ShapeError

from ._registry import Cost, InputRule, LayerParams, LayerType, NoParams, TensorInfo, register_layer

if TYPE_CHECKING:
    from torch import nn

    from ._recsys_modules import Bias, FactorizationMachine, Reduce

# torch is heavy and validate/schema never build: the modules live in _recsys_modules, which each
# module() imports when called.
__getattr__, __dir__ = lazy_attributes(__name__, dict.fromkeys(("Bias", "FactorizationMachine", "Reduce"),
                                                                "archlab.layers._recsys_modules"))

__all__ = ["Bias", "FactorizationMachine", "Reduce"]


@register_layer("fm")
class FMLayer(LayerType):
    """Second-order factorization machine over field embeddings (Rendle 2010).

    Input shape: (fields, factors), e.g. an ``embedding`` of the F field ids.
    Output shape: (1,): the sum over field pairs of the dot products of their vectors.
    """

    Params = NoParams
    accepts = InputRule(ranks={2: "(fields, factors)"}, hints={1: "add 'embedding' before it"})
    summary = "(fields, k) -> (1,): 0.5 * sum_k((sum_f v)^2 - sum_f v^2), all pairwise interactions"

    def output(self, p: NoParams, x: TensorInfo) -> TensorInfo:
        return TensorInfo((1,))

    def cost(self, p: NoParams, x: TensorInfo, y: TensorInfo) -> Cost:
        fields, k = x.shape
        # sum over fields (F-1)k, its square k, squares Fk, their sum (F-1)k, difference k,
        # sum over k (k-1), halving 1: 3Fk + k in all
        return Cost(flops=3 * fields * k + k)

    def count_params(self, p: NoParams, x: TensorInfo) -> int:
        return 0

    def module(self, p: NoParams, x: TensorInfo) -> nn.Module:
        from ._recsys_modules import FactorizationMachine

        return FactorizationMachine()


class ReduceParams(LayerParams):
    op: Literal["sum", "mean", "max"] = "sum"
    #: the axis after the batch: 0 is the first (the fields of an embedding's (fields, k) output)
    axis: int = 0


@register_layer("reduce")
class ReduceLayer(LayerType):
    """Sum, mean or max over one axis.

    Input shape: any float shape.
    Output shape: the input without ``axis``; a vector (n,) reduces to (1,).
    """

    Params = ReduceParams
    accepts = InputRule(dtype="float")
    reads_mask = True  # over axis 0 of a padded sequence: the real steps only
    summary = "sum, mean or max over one axis: (F, k) -> (k,) for axis 0; (n,) -> (1,)"

    def _axis(self, p: ReduceParams, x: TensorInfo) -> int:
        if not -x.rank <= p.axis < x.rank:
            raise ShapeError(f"axis {p.axis} is out of range for {x.described} (rank {x.rank}): give an axis in "
                             f"{-x.rank}..{x.rank - 1} (0 is the first axis after the batch)")
        return p.axis % x.rank

    def output(self, p: ReduceParams, x: TensorInfo) -> TensorInfo:
        axis = self._axis(p, x)
        return TensorInfo(tuple(d for i, d in enumerate(x.shape) if i != axis) or (1,))

    def cost(self, p: ReduceParams, x: TensorInfo, y: TensorInfo) -> Cost:
        n = x.shape[self._axis(p, x)]
        # n - 1 additions or comparisons per output value; a mean divides once more
        return Cost(flops=y.numel * (n if p.op == "mean" else n - 1))

    def count_params(self, p: ReduceParams, x: TensorInfo) -> int:
        return 0

    def saved_elements(self, p: ReduceParams, x: TensorInfo, y: TensorInfo) -> int:
        return x.numel if p.op == "max" else 0  # a sum's gradient needs no saved tensor; max keeps its argmax input

    def module(self, p: ReduceParams, x: TensorInfo) -> nn.Module:
        from ._recsys_modules import Reduce

        return Reduce(p.op, self._axis(p, x))


@register_layer("bias")
class BiasLayer(LayerType):
    """A learned offset per feature of the last axis: logistic regression's intercept.

    Input shape: (..., features).
    Output shape: as the input.
    """

    Params = NoParams
    accepts = InputRule(dtype="float")
    summary = "y = x + b, one learned offset per feature of the last axis (zero at start)"

    def output(self, p: NoParams, x: TensorInfo) -> TensorInfo:
        if not x.rank:
            raise ShapeError(f"needs at least one axis but receives {x.described}: add 'reshape: {{shape: [1]}}' "
                             "before it")
        return TensorInfo(x.shape)

    def cost(self, p: NoParams, x: TensorInfo, y: TensorInfo) -> Cost:
        return Cost(flops=x.numel)

    def count_params(self, p: NoParams, x: TensorInfo) -> int:
        return x.shape[-1]

    def saved_elements(self, p, x, y) -> int:
        return 0  # the gradient of an addition needs no saved tensor

    def module(self, p: NoParams, x: TensorInfo) -> nn.Module:
        from ._recsys_modules import Bias

        return Bias(x.shape[-1])
