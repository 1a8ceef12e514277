"""Reading a sweep: the one-standard-error choice and a plain-words diagnosis, of a capacity curve
(parameters against validation) or of a regularization sweep (one knob's strength against
validation and the train-validation gap), each ending in the spec path to set next."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from archlab.layers import registry as layer_types

__all__ = ["REGULARIZERS", "Regularizer", "diagnose", "diagnose_regularization", "learning_curve_answer",
           "one_standard_error", "regularize_advice", "regularizer_of"]

#: Differences below this (accuracy, 0..1) are noise even when the folds agree closely.
MIN_STEP = 0.005


def _decoupled_decay(optimizer: str | None) -> str:
    """What weight-decay advice adds for ``optimizer``: adam's and sgd's weight_decay is an L2 term
    added to the gradient (for adam, scaled by its adaptive step), not the decoupled decay of AdamW
    (Loshchilov & Hutter 2019), so the advice switches to adamw with it; nothing for adamw or an
    optimizer not known."""
    if optimizer is None or optimizer == "adamw":
        return ""
    return (f" with train.optimizer.name: adamw (under {optimizer}, weight_decay is an L2 term in the gradient, "
            "not decoupled decay)")


def regularize_advice(optimizer: str | None = None, augment: str | None = "train.augment") -> str:
    """What the capacity diagnosis suggests for over-fitting: weight decay (decoupled: ``_decoupled_decay``),
    a dropout rate, and ``augment`` (augmentation that fits the spec's inputs; None: none fits).

    Example:
        >>> regularize_advice("adamw", None)
        "train.weight_decay (e.g. 1e-4), a dropout layer's rate"
    """
    return ", ".join([f"train.weight_decay (e.g. 1e-4){_decoupled_decay(optimizer)}", "a dropout layer's rate",
                      *([augment] if augment else [])])


#: What the capacity diagnosis suggests for over-fitting, when the caller has nothing closer to the spec.
REGULARIZE = regularize_advice()


def _off(value: Any) -> bool:
    return value in (None, False, "none", 0, 0.0) or value == [] or value == {}


def _augment_strength(value: Any) -> float:
    """Augmentation entries switched on: 0 for none, one per list entry, the value of a number."""
    if _off(value):
        return 0.0
    if isinstance(value, list | tuple | dict):
        return float(len(value))
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 1.0


def _raise_rate(value: Any) -> Any:
    return min(round(float(value or 0) + 0.1, 2), 0.9)


@dataclass(frozen=True)
class Regularizer:
    """A knob a regularization sweep turns, read off the swept path.

    Attributes:
        label: what it is, in words.
        pattern: the paths that set it (a regex matched against the end of the path).
        strength: how strongly a value regularizes (0: not at all); the sweep is read in this order.
        further: a stronger value than ``value`` to try next; None: none to name.
        weaker: the side of a value where the knob regularizes less (``below``; ``above`` for a bound).
    """

    label: str
    pattern: str
    strength: Callable[[Any], float]
    further: Callable[[Any], Any] | None = None
    weaker: str = "below"

    def matches(self, path: str) -> bool:
        return re.search(f"(^|\\.)(?:{self.pattern})$", path) is not None


#: The knobs the diagnosis reads as regularization (and in which direction).
REGULARIZERS = (
    Regularizer("weight decay", r"weight_decay", lambda v: float(v or 0), lambda v: 10 * v if v else 1e-4),
    Regularizer("label smoothing", r"label_smoothing", lambda v: float(v or 0), _raise_rate),
    # a smaller max-norm bound constrains more; none is no constraint
    Regularizer("max-norm", r"max_norm", lambda v: 0.0 if v is None else 1 / float(v),
                lambda v: 4.0 if v is None else v / 2, weaker="above"),
    Regularizer("stochastic depth", r"drop_path", lambda v: float(v or 0), _raise_rate),
    Regularizer("modality dropout", r"train\.modality_dropout\.p", lambda v: float(v or 0), _raise_rate),
    # whole sections only: the audio fields go both ways (a higher noise_snr_db is less noise)
    Regularizer("augmentation", r"train\.augment(?:\..+)?|train\.augment_audio", _augment_strength),
)


def regularizer_of(path: str) -> Regularizer | None:
    """The knob a swept path turns, or None when it is not one the diagnosis reads as regularization.

    A layer's parameter is one when its type's ``regularization`` trait names it
    (``layers[3].dropout.rate``, ``layers[1].multi_head_attention.dropout``); by an item's name
    (``drop1.rate``) it is not recognised, as the path does not say the type.

    Example:
        >>> regularizer_of("train.weight_decay").label, regularizer_of("layers[3].dropout.rate").label
        ('weight decay', 'dropout rate')
        >>> regularizer_of("layers[0].conv2d.filters") is None
        True
    """
    found = next((r for r in REGULARIZERS if r.matches(path)), None)
    if found is not None:
        return found
    *_, type_name, field = [""] + path.split(".")
    layer_type = layer_types.find(type_name) if type_name else None
    if layer_type is None or layer_type.regularization != field:
        return None
    return Regularizer(f"{type_name} {field}", re.escape(f"{type_name}.{field}"), lambda v: float(v or 0), _raise_rate)


def one_standard_error(configs: list[dict[str, Any]], direction: str = "max") -> int:
    """Index of the smallest configuration (by ``params``) whose ``val_mean`` is within one standard
    error (``val_se``) of the best mean (Breiman et al.'s one-SE rule); the best is the highest
    mean, or the lowest for a metric whose ``direction`` is ``min`` (an error such as RMSE).

    Example:
        >>> rows = [{"params": 10, "val_mean": 0.90, "val_se": 0.01},
        ...         {"params": 100, "val_mean": 0.95, "val_se": 0.01},
        ...         {"params": 1000, "val_mean": 0.955, "val_se": 0.01}]
        >>> one_standard_error(rows)
        1
    """
    sign = 1 if direction == "max" else -1
    best = max(range(len(configs)), key=lambda i: sign * configs[i]["val_mean"])
    threshold = sign * configs[best]["val_mean"] - configs[best]["val_se"]
    within = [i for i, c in enumerate(configs) if sign * c["val_mean"] >= threshold]
    return min(within, key=lambda i: (configs[i]["params"], -sign * configs[i]["val_mean"]))


def _oriented(rows: list[dict[str, Any]], direction: str) -> list[dict[str, Any]]:
    """Rows whose scores grow when the model gets better: a minimised metric is negated (and so is
    the train-validation gap), so that one set of rules reads both."""
    if direction == "max":
        return rows
    return [{**r, "val_mean": -r["val_mean"], "train_mean": -r["train_mean"], "gap": -r["gap"]} for r in rows]


def diagnose(configs: list[dict[str, Any]], direction: str = "max", metric: str = "accuracy", *,
             capacity: str = "wider or deeper layers", regularize: str = REGULARIZE) -> str:
    """Under-fitting, over-fitting or balanced, from validation/training ``metric`` against parameters
    (read with its ``direction``: for a minimised metric, lower is better and the gap is negated).
    ``capacity`` and ``regularize`` name what to set next (spec paths, from the caller, who has the spec).

    Rules, with the curve ordered by parameters and ``tol`` = max(standard error of the best, 0.005):
    under-fitting when the largest model is (about) the best and validation still rose by more than
    ``tol`` from the next smaller one; over-fitting when validation at the largest model is more than
    ``tol`` below the best and the train-validation gap there is wider than at the best;
    inconclusive when it falls that way without a wider gap (under-trained large models); otherwise
    balanced.
    """
    shown = sorted(configs, key=lambda c: c["params"])
    rows = _oriented(shown, direction)
    if len(rows) < 2:
        row = shown[0]
        return (f"one configuration only: no capacity curve to read (training {row['train_mean']:.3f}, "
                f"validation {row['val_mean']:.3f}, gap {row['gap']:+.3f}); sweep a width or depth to diagnose")
    val = [r["val_mean"] for r in rows]
    gap = [r["gap"] for r in rows]
    best = max(range(len(rows)), key=lambda i: val[i])
    tol = max(rows[best]["val_se"], MIN_STEP)
    top = len(rows) - 1
    # the decisions read the oriented values; the messages show the metric's own
    v = [r["val_mean"] for r in shown]
    train = [r["train_mean"] for r in shown]
    g = [r["gap"] for r in shown]
    if val[top] >= val[best] - tol and val[top] - val[top - 1] > tol:
        return (f"under-fitting: training ({train[top]:.3f}) and validation ({v[top]:.3f}) {metric} are still "
                f"rising at the largest model (validation +{v[top] - v[top - 1]:.3f} over the next smaller "
                f"one). Next move: more capacity ({capacity}), or train longer.")
    falling = val[top] < val[best] - tol
    if falling and gap[top] > gap[best] + MIN_STEP:
        return (f"over-fitting: validation {metric} falls from {v[best]:.3f} at {rows[best]['params']:,} "
                f"parameters to {v[top]:.3f} at the largest model while the train-validation gap widens "
                f"({g[best]:+.3f} -> {g[top]:+.3f}). Next move: more regularisation ({regularize}) or more data, "
                f"or stay at the smaller size.")
    if falling:
        return (f"inconclusive: validation {metric} falls from {v[best]:.3f} at {rows[best]['params']:,} "
                f"parameters to {v[top]:.3f} at the largest model, but the train-validation gap does not widen "
                f"({g[best]:+.3f} -> {g[top]:+.3f}), so this is not over-fitting: the larger models are "
                f"probably under-trained. Next move: train longer or tune the learning rate, then sweep again.")
    return (f"balanced: validation {metric} has flattened (best {v[best]:.3f}; the last step in size changed it "
            f"by {v[top] - v[top - 1]:+.3f}, within noise of {tol:.3f}) while the train-validation gap went from "
            f"{g[0]:+.3f} to {g[top]:+.3f}. Next move: stop here; take the one-standard-error model "
            f"(the smallest that is as good).")


def _fmt(value: Any) -> str:
    return "none" if value is None else (f"{value:g}" if isinstance(value, float) else str(value))


def diagnose_regularization(configs: list[dict[str, Any]], path: str, direction: str = "max",
                            metric: str = "accuracy", *, capacity: str = "wider or deeper layers",
                            augment: str | None = None, optimizer: str | None = None) -> str:
    """Over- or under-fitting from a sweep of one regularization knob (``path``; ``regularizer_of``),
    configurations in order of its strength, with the concrete next step.

    Rules, with ``tol`` = max(standard error of the best, 0.005) and the gap read at the weakest value:
    over-fitting when more regularization than the weakest is the best by more than ``tol`` (raise
    the knob to the best; past the strongest tried when that is the best, or add ``augment``);
    under-fitting when the weakest is the best and the strongest falls more than ``tol`` below it
    (less regularization, or more ``capacity``); when the knob moves validation within noise, balanced
    if it narrowed the gap (more capacity), else no effect (stronger values). Within one standard
    error: the values whose mean is within the best's ``val_se``. Advice to raise weight decay says
    to switch to adamw when ``optimizer`` (the spec's) is another.
    """
    knob = regularizer_of(path)
    if knob is None:
        raise ValueError(f"{path} is not a regularization path ({', '.join(r.label for r in REGULARIZERS)})")
    shown = sorted(configs, key=lambda c: knob.strength(c["values"][path]))
    rows = _oriented(shown, direction)
    value = [_fmt(c["values"][path]) for c in shown]
    if len(rows) < 2:
        more = _fmt(knob.further(shown[0]["values"][path])) if knob.further else "..."
        return (f"one value of {path} only ({value[0]}): no regularization curve to read (gap {shown[0]['gap']:+.3f}); "
                f"sweep several, e.g. {path}={value[0]},{more}")
    val, gap = [r["val_mean"] for r in rows], [r["gap"] for r in rows]
    best = max(range(len(rows)), key=lambda i: val[i])
    tol = max(rows[best]["val_se"], MIN_STEP)
    strong = len(rows) - 1
    v, g = [r["val_mean"] for r in shown], [r["gap"] for r in shown]
    within = [value[i] for i in range(len(rows)) if i != best and val[i] >= val[best] - rows[best]["val_se"]]
    as_good = f"; as good within one standard error: {', '.join(within)}" if within else ""
    gap_went = f"the gap went {g[0]:+.3f} -> {g[best]:+.3f}" + (" (it shrank)" if gap[0] - gap[best] > MIN_STEP else "")
    augmentation = f", or add augmentation: {augment}" if augment else ", or more data"
    decay = _decoupled_decay(optimizer) if knob.label == "weight decay" else ""
    if best > 0 and val[best] - val[0] > tol:
        head = (f"over-fitting: the gap is {g[0]:+.3f} at {path} {value[0]}; {knob.label} helps: validation {metric} "
                f"{v[0]:.3f} -> {v[best]:.3f} at {value[best]} (the best{as_good}), and {gap_went}.")
        if best == strong and knob.further is not None:
            stronger = _fmt(knob.further(shown[strong]["values"][path]))
            return (f"{head} Next move: set {path} to {value[best]}{decay}; it is the strongest tried, so sweep "
                    f"further ({path}={value[best]},{stronger}){augmentation}.")
        return f"{head} Next move: set {path} to {value[best]}{decay}{augmentation if gap[best] > tol else ''}."
    if best == 0 and val[strong] < val[0] - tol:
        weaker = f" or {knob.weaker}" if knob.strength(shown[0]["values"][path]) else ""  # none: nothing weaker
        return (f"under-fitting: more {knob.label} only lowers validation {metric} ({v[0]:.3f} at {path} {value[0]} "
                f"-> {v[strong]:.3f} at {value[strong]}) and the gap is {g[0]:+.3f}. Next move: less regularization "
                f"({path} {value[0]}{weaker}), or more "
                f"capacity: {capacity}.")
    if gap[0] - gap[strong] > MIN_STEP:
        return (f"balanced: {knob.label} narrows the gap ({g[0]:+.3f} at {path} {value[0]} -> {g[strong]:+.3f} at "
                f"{value[strong]}) but moves validation {metric} only within noise ({tol:.3f}; best {v[best]:.3f} at "
                f"{value[best]}): over-fitting is not what limits this model. Next move: more capacity: {capacity}, or "
                f"keep {path} at {value[best]}.")
    stronger = (f"sweep stronger values ({path}={value[strong]},{_fmt(knob.further(shown[strong]['values'][path]))})"
                if knob.further is not None else f"sweep stronger values of {path}") + decay
    return (f"no effect: over {path} {value[0]} .. {value[strong]} validation {metric} stays within noise ({tol:.3f}; "
            f"best {v[best]:.3f}) and the gap stays {g[0]:+.3f} -> {g[strong]:+.3f}: the values tried are too weak to "
            f"matter. Next move: {stronger}; or, if training {metric} ({shown[best]['train_mean']:.3f}) is still short "
            f"of what the task allows, more capacity: {capacity}, or train longer.")


def learning_curve_answer(rows: list[dict[str, Any]], direction: str = "max", metric: str = "accuracy") -> str:
    """Would more data help? Yes when validation still improves over the last doubling of the data."""
    if len(rows) < 2:
        return "one training-set fraction only: no learning curve to read"
    last, prev = rows[-1], rows[-2]
    tol = max(last.get("val_se", 0.0), MIN_STEP)
    rise = (last["val_mean"] - prev["val_mean"]) * (1 if direction == "max" else -1)
    if rise > tol:
        return (f"yes, more data would likely help: validation {metric} still improves from {prev['val_mean']:.3f} at "
                f"{prev['train_samples']} to {last['val_mean']:.3f} at {last['train_samples']} training samples")
    return (f"probably not: validation {metric} is flat at the end of the curve ({prev['val_mean']:.3f} at "
            f"{prev['train_samples']}, {last['val_mean']:.3f} at {last['train_samples']} samples, change within "
            f"{tol:.3f}); more capacity or a better architecture is the lever")
