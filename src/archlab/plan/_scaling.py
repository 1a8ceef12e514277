"""Compute-optimal sizing: the parameters N and tokens D that a training budget of C FLOPs should buy
(C = 6·N·D), by Hoffmann et al. 2022's approach 1 or a fitted loss law, and a spec of that size scaled
from a template. Formulas and sources are in docs/plan.md (section "Compute-optimal size").
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

from archlab.analysis import analyze
from archlab.builder import LayerNode, Node, RepeatNode, parse
from archlab.exceptions import SpecError, suggest
from archlab.layers import TransformerShape
from archlab.spec import Spec, load, set_at

from ._errors import PlanError, check_positive

__all__ = ["APPROACH1_ROWS", "LAWS", "METHODS", "UNIFORM_LOSS", "ComputeOptimal", "LossLaw", "budget_for",
           "compute_optimal", "scale_spec", "smallest_budget"]

Method = Literal["approach1", "hoffmann", "besiroglu"]
METHODS: tuple[str, ...] = ("approach1", "hoffmann", "besiroglu")

#: Training FLOPs per parameter and token: forward 2, backward 4 (Kaplan et al. 2020; Hoffmann et al. 2022).
FLOPS_PER_PARAM_TOKEN = 6


@dataclass(frozen=True)
class LossLaw:
    """Hoffmann et al.'s parametric loss L(N, D) = E + A / N^alpha + B / D^beta (nats per token), with
    its compute-optimal frontier under C = 6·N·D (their eq. 4): N_opt = G · (C/6)^a, D_opt = (C/6) / N_opt,
    a = beta / (alpha + beta), G = (alpha·A / (beta·B))^(1 / (alpha + beta))."""

    name: str
    source: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, params: float, tokens: float) -> float:
        return self.E + self.A / params**self.alpha + self.B / tokens**self.beta

    @property
    def a(self) -> float:
        return self.beta / (self.alpha + self.beta)

    @property
    def G(self) -> float:  # noqa: N802 (the paper's name)
        return (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))

    def optimal_params(self, budget_flops: float) -> float:
        return self.G * (budget_flops / FLOPS_PER_PARAM_TOKEN) ** self.a

    def budget_for(self, params: float) -> float:
        """The budget whose optimum is ``params``: the inverse of ``optimal_params``."""
        return FLOPS_PER_PARAM_TOKEN * (params / self.G) ** (1 / self.a)


LAWS: dict[str, LossLaw] = {
    "hoffmann": LossLaw("hoffmann", "Hoffmann et al. 2022, approach 3 (eq. 10)", E=1.69, A=406.4, B=410.7,
                        alpha=0.34, beta=0.28),
    "besiroglu": LossLaw("besiroglu", "Besiroglu et al. 2024, 'Chinchilla Scaling: A replication attempt', table 1",
                         E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658),
}

#: Hoffmann et al.'s table 3 (approach 1) rows printed to four digits: (parameters, tokens). The paper
#: gives approach 1's exponent (a = 0.50) but not its constant, so N_opt = G·C^a is the power law
#: through these two rows, with C = 6·N·D; it reproduces the table's other rows (docs/plan.md).
APPROACH1_ROWS: tuple[tuple[float, float], tuple[float, float]] = ((10e9, 205.1e9), (10e12, 216.2e12))


def _approach1_fit() -> tuple[float, float]:
    (n1, d1), (n2, d2) = APPROACH1_ROWS
    c1, c2 = FLOPS_PER_PARAM_TOKEN * n1 * d1, FLOPS_PER_PARAM_TOKEN * n2 * d2
    a = math.log(n2 / n1) / math.log(c2 / c1)
    return n1 / c1**a, a


_A1_G, _A1_EXPONENT = _approach1_fit()

#: Chinchilla's vocabulary (SentencePiece, 32,000 tokens): a model that guesses uniformly among them
#: has a loss of ln 32000 = 10.37 nats. A budget whose optimum the law predicts no better than that
#: is below every model the law describes (``smallest_budget``).
CHINCHILLA_VOCAB = 32_000
UNIFORM_LOSS = math.log(CHINCHILLA_VOCAB)


@dataclass(frozen=True)
class ComputeOptimal:
    """The compute-optimal size for a budget.

    Attributes:
        method: "approach1", "hoffmann" or "besiroglu".
        budget_flops: the training budget C, FLOPs.
        params: N, parameters.
        tokens: D, training tokens (C = 6·N·D).
        loss: the loss the method's law predicts at (N, D), nats per token; None for approach 1,
            which fits no loss.
        source: the paper the method's constants come from.
    """

    method: str
    budget_flops: float
    params: float
    tokens: float
    loss: float | None
    source: str

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.params

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tokens_per_param": self.tokens_per_param}


def _method(method: str) -> str:
    if method not in METHODS:
        raise PlanError(f"--method {method!r}: unknown compute-optimal method{suggest(method, METHODS)}; "
                        f"choose one of {', '.join(METHODS)}")
    return method


def _optimal_params(budget_flops: float, method: str) -> float:
    return _A1_G * budget_flops**_A1_EXPONENT if method == "approach1" else LAWS[method].optimal_params(budget_flops)


def _law_of(method: str) -> LossLaw:
    """The loss law that judges a method's answers: its own, or Hoffmann's for approach 1 (same data)."""
    return LAWS["hoffmann" if method == "approach1" else method]


@functools.cache
def smallest_budget(method: Method = "approach1") -> float:
    """The smallest budget (FLOPs) for which ``method`` gives a meaningful size: the one at which the
    loss law predicts its optimum no better than a uniform guess over Chinchilla's vocabulary
    (``UNIFORM_LOSS``). The predicted loss falls as the budget grows, so a bisection on log C finds it.

    Example:
        >>> f"{smallest_budget('hoffmann'):.2e}"
        '4.16e+13'
    """
    law = _law_of(_method(method))

    def excess(log_c: float) -> float:
        c = 10**log_c
        n = _optimal_params(c, method)
        return law.loss(n, c / (FLOPS_PER_PARAM_TOKEN * n)) - UNIFORM_LOSS

    low, high = 0.0, 30.0  # 1 FLOP: far worse than guessing; 1e30: far better
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if excess(mid) > 0 else (low, mid)
    return 10**high


def _result(method: str, budget: float, params: float) -> ComputeOptimal:
    tokens = budget / (FLOPS_PER_PARAM_TOKEN * params)
    law = None if method == "approach1" else LAWS[method]
    source = law.source if law else "Hoffmann et al. 2022, approach 1 (table 3)"
    return ComputeOptimal(method, budget, params, tokens, law.loss(params, tokens) if law else None, source)


def _check_budget(budget: float, method: str, option: str, value: float) -> None:
    floor = smallest_budget(method)  # type: ignore[arg-type]
    if budget < floor:
        n = _optimal_params(floor, method)
        raise PlanError(
            f"{option} {value:.3g}: too small for any model by the {method} method, which needs a budget of at "
            f"least {floor:.2e} FLOPs ({n:.3g} parameters on {floor / (FLOPS_PER_PARAM_TOKEN * n):.3g} tokens); "
            f"below it the fitted loss law predicts no better than {UNIFORM_LOSS:.2f} nats per token, a uniform "
            f"guess among {CHINCHILLA_VOCAB:,} tokens. Raise the budget to at least {floor:.2e}")


def compute_optimal(budget_flops: float, method: Method = "approach1") -> ComputeOptimal:
    """The compute-optimal parameters N and tokens D for a training budget of ``budget_flops`` FLOPs.

    ``approach1``: Hoffmann et al.'s approach 1 fit (N_opt = G·C^0.498, about 20 tokens per
    parameter); ``hoffmann``/``besiroglu``: the closed-form optimum of the loss law with that paper's
    constants (``LAWS``), which also predicts the loss. D = C / (6·N).

    Raises:
        ValueError: an unknown method, or a budget below ``smallest_budget(method)``.

    Example (Gopher's budget):
        >>> opt = compute_optimal(5.76e23)
        >>> f"{opt.params:.3g} parameters, {opt.tokens:.3g} tokens"
        '6.79e+10 parameters, 1.41e+12 tokens'
    """
    _method(method)
    check_positive("--budget-flops", budget_flops, "a positive, finite number of FLOPs")
    _check_budget(budget_flops, method, "--budget-flops", budget_flops)
    return _result(method, float(budget_flops), _optimal_params(budget_flops, method))


def budget_for(params: float, method: Method = "approach1") -> ComputeOptimal:
    """The budget for which a model of ``params`` parameters is compute-optimal, and its tokens: the
    inverse of ``compute_optimal`` (how Hoffmann et al.'s table 3 is laid out).

    Example (table 3's 1-billion-parameter row: 1.21e+20 FLOPs, 20.2 billion tokens):
        >>> opt = budget_for(1e9)
        >>> f"{opt.budget_flops:.2e} FLOPs, {opt.tokens / 1e9:.1f} billion tokens"
        '1.21e+20 FLOPs, 20.2 billion tokens'
    """
    _method(method)
    check_positive("params", params, "a positive, finite number")
    budget = (params / _A1_G) ** (1 / _A1_EXPONENT) if method == "approach1" else LAWS[method].budget_for(params)
    _check_budget(budget, method, "params", params)
    return _result(method, budget, float(params))


# -- a spec of a given size, scaled from a template ------------------------------------------------

#: Layer parameters that hold a feature width; those equal to the template's width follow it.
_WIDTH_KEYS = ("units", "output_dim", "filters")
#: Widths are multiples of this (and of head_dim · query heads per KV head), as GPU kernels like.
_WIDTH_MULTIPLE = 64
#: The chosen size is within this of the target where the integers allow; the aspect ratio decides among those.
_TOLERANCE = 0.03


@dataclass(frozen=True)
class _Template:
    """The dimensions scale_spec changes: the width h with what follows it, and the depth."""

    spec: Spec
    shape: TransformerShape  # the first block's
    repeats: tuple[tuple[str, int, int], ...]  # (spec path of a repeat over blocks, times, blocks per iteration)
    fixed_blocks: int  # blocks outside any repeat

    @property
    def depth(self) -> int:
        return self.fixed_blocks + sum(times * per for _, times, per in self.repeats)

    @property
    def group(self) -> int:
        """Query heads per key/value head (1: multi-head attention)."""
        return self.shape.heads // self.shape.kv_heads

    @property
    def multiple(self) -> int:
        return math.lcm(_WIDTH_MULTIPLE, self.shape.head_dim * self.group)


def _blocks(node: Node, repeat: RepeatNode | None) -> Iterator[tuple[LayerNode, RepeatNode | None]]:
    """Every layer that is one Transformer block, with the innermost repeat it runs in."""
    if isinstance(node, LayerNode):
        if node.layer_type.transformer(node.params, node.input) is not None:
            yield node, repeat
        return
    inner = node if isinstance(node, RepeatNode) else repeat
    for child in node.children()[:1] if isinstance(node, RepeatNode) else node.children():
        yield from _blocks(child, inner)


def _template(spec: Spec) -> _Template:
    parsed = parse(spec)
    found = [pair for top in parsed.top_nodes() for pair in _blocks(top, None)]
    if not found:
        raise SpecError("scale_spec scales Transformer stacks, and this template has no Transformer block "
                        "(transformer_encoder, transformer_decoder, transformer_block)")
    first = found[0][0]
    shape = first.layer_type.transformer(first.params, first.input)
    for node, _ in found:
        other = node.layer_type.transformer(node.params, node.input)
        if (other.hidden, other.head_dim, other.heads, other.kv_heads, other.ff_dim) != (
                shape.hidden, shape.head_dim, shape.heads, shape.kv_heads, shape.ff_dim):
            raise SpecError(f"its blocks differ from {first.path}'s (width {shape.hidden}, {shape.heads} heads, "
                            f"MLP {shape.ff_dim}); scale_spec scales a stack of one block shape", node.path)
    per_repeat: dict[str, list[Any]] = {}
    fixed = 0
    for _node, repeat in found:
        if repeat is None:
            fixed += 1
        else:
            per_repeat.setdefault(repeat.path, [repeat.times, 0])[1] += 1
    if not per_repeat:
        raise SpecError(f"scale_spec changes the depth through a repeat's times, and {first.path} is not in one: "
                        "write the blocks as 'repeat: {times: L, layers: [...]}'", first.path)
    repeats = tuple((path, times, per) for path, (times, per) in per_repeat.items())
    return _Template(spec, shape, repeats, fixed)


def _replace(data: Any, mapping: dict[tuple[str, int], int]) -> Any:
    """``data`` with every ``key: value`` pair found in ``mapping`` set to the mapped value, at any depth."""
    if isinstance(data, dict):
        return {k: (mapping[(k, v)] if isinstance(v, int) and not isinstance(v, bool) and (k, v) in mapping
                    else _replace(v, mapping)) for k, v in data.items()}
    if isinstance(data, list):
        return [_replace(v, mapping) for v in data]
    return data


@dataclass(frozen=True)
class _Sized:
    """The template at one depth and width, with its exact parameter count."""

    data: dict
    depth: int
    width: int
    params: int


def _sized(t: _Template, depth: int, width: int) -> _Sized:
    """The template at about ``depth`` blocks (the repeats scaled alike) and width ``width``."""
    s = t.shape
    heads = width // s.head_dim
    ff = max(_WIDTH_MULTIPLE, round(s.ff_dim * width / s.hidden / _WIDTH_MULTIPLE) * _WIDTH_MULTIPLE)
    mapping = {(key, s.hidden): width for key in _WIDTH_KEYS}
    mapping |= {("ff_dim", s.ff_dim): ff, ("num_heads", s.heads): heads, ("num_kv_heads", s.kv_heads): heads // t.group}
    data = _replace(t.spec.to_dict(), mapping)
    true_depth = t.fixed_blocks
    for path, times, per in t.repeats:
        new_times = max(1, round(times * depth / t.depth))
        data = set_at(data, f"{path}.repeat.times", new_times)
        true_depth += new_times * per
    data["name"] = f"{t.spec.name}-{true_depth}x{width}"
    return _Sized(data, true_depth, width, analyze(data).total_params)


def _smallest_at_least(count: Callable[[int], int], target: float, low: int = 1) -> int:
    """The smallest k >= low with count(k) >= target (count grows with k): doubling, then bisection."""
    high = low
    while count(high) < target:
        if high > 1 << 20:
            break
        low, high = high, high * 2
    while low < high:
        mid = (low + high) // 2
        low, high = (mid + 1, high) if count(mid) < target else (low, mid)
    return high


def scale_spec(template_spec: Spec | dict | str, target_params: float) -> tuple[Spec, int]:
    """A spec of about ``target_params`` parameters made from a template Transformer stack, and its
    exact parameter count (``archlab.analyze``).

    Depth (the ``times`` of the repeats over the blocks) and width h change together, keeping the
    template's h / L as far as integers allow. Every width equal to the template's h follows it
    (embedding ``output_dim``, ``units``, ``filters``); the blocks' ``ff_dim`` scales with h,
    ``num_heads`` is h / head_dim (head_dim kept), ``num_kv_heads`` keeps the template's heads per KV
    head; widths are multiples of lcm(64, head_dim · heads per KV head). Among the depths near the
    template's aspect ratio (each at the widths whose counts bracket the target) and the widths near it
    (each at the depths that bracket it), the result is the one nearest the aspect ratio among those
    within 3 % of the target (else the closest count).

    Raises:
        SpecError: the template has no Transformer blocks in a repeat, or blocks of several shapes.
        ValueError: the target is below the template's smallest size (one block per repeat, the
            narrowest width).

    Example (GPT-2 small, 124M, scaled to 350M: 18 blocks of width 1152, 18 heads of 64):
        >>> spec, n = scale_spec("examples/gpt2-small.yaml", 350e6)
        >>> spec.name, n
        ('gpt2-small-18x1152', 346002048)
    """
    check_positive("target_params", target_params, "a positive, finite number")
    t = _template(load(template_spec))
    m, aspect = t.multiple, t.shape.hidden / t.depth

    at = functools.cache(functools.partial(_sized, t))

    def width_for(depth: int) -> int:
        return m * max(1, round(aspect * depth / m))

    smallest = at(1, m)
    if smallest.params > target_params * (1 + _TOLERANCE):
        raise PlanError(f"target_params {target_params:.3g}: below the smallest model scale_spec makes from "
                        f"{t.spec.name!r}, {smallest.params:,} parameters ({smallest.depth} block(s) of width {m}); "
                        f"ask for at least {smallest.params:.3g}, or start from a smaller template")
    # the depth at the template's aspect ratio; then each depth near it at the widths bracketing the
    # target, and each width near it at the depths bracketing the target (coarse width steps, as
    # LLaMA-2 70B's 1024, need the depth to get near the target, and few blocks the width)
    depth = _smallest_at_least(lambda d: at(d, width_for(d)).params, target_params)
    candidates = []
    for d in range(max(1, depth - 3), depth + 4):
        k = _smallest_at_least(lambda k, d=d: at(d, k * m).params, target_params)
        candidates += [at(d, k * m), at(d, max(1, k - 1) * m)]
    k0 = width_for(depth) // m
    for k in range(max(1, k0 - 3), k0 + 4):
        d = _smallest_at_least(lambda d, k=k: at(d, k * m).params, target_params)
        candidates += [at(d, k * m), at(max(1, d - 1), k * m)]

    def error(c: _Sized) -> float:
        return abs(math.log(c.params / target_params))

    close = [c for c in candidates if error(c) <= math.log(1 + _TOLERANCE)]
    if close:
        best = min(close, key=lambda c: (abs(math.log(c.width / c.depth / aspect)), error(c)))
    else:
        best = min(candidates, key=error)
    return Spec.from_dict(best.data), best.params

