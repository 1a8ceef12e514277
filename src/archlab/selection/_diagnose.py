"""Reading a capacity curve: the one-standard-error choice and a plain-words diagnosis."""

from __future__ import annotations

from typing import Any

__all__ = ["diagnose", "learning_curve_answer", "one_standard_error"]

#: Differences below this (accuracy, 0..1) are noise even when the folds agree closely.
MIN_STEP = 0.005


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


def diagnose(configs: list[dict[str, Any]], direction: str = "max", metric: str = "accuracy") -> str:
    """Under-fitting, over-fitting or balanced, from validation/training ``metric`` against parameters
    (read with its ``direction``: for a minimised metric, lower is better and the gap is negated).

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
                f"one). Next move: more capacity (wider or deeper layers), or train longer.")
    falling = val[top] < val[best] - tol
    if falling and gap[top] > gap[best] + MIN_STEP:
        return (f"over-fitting: validation {metric} falls from {v[best]:.3f} at {rows[best]['params']:,} "
                f"parameters to {v[top]:.3f} at the largest model while the train-validation gap widens "
                f"({g[best]:+.3f} -> {g[top]:+.3f}). Next move: more regularisation (dropout, weight decay, "
                f"augmentation) or more data, or stay at the smaller size.")
    if falling:
        return (f"inconclusive: validation {metric} falls from {v[best]:.3f} at {rows[best]['params']:,} "
                f"parameters to {v[top]:.3f} at the largest model, but the train-validation gap does not widen "
                f"({g[best]:+.3f} -> {g[top]:+.3f}), so this is not over-fitting: the larger models are "
                f"probably under-trained. Next move: train longer or tune the learning rate, then sweep again.")
    return (f"balanced: validation {metric} has flattened (best {v[best]:.3f}; the last step in size changed it "
            f"by {v[top] - v[top - 1]:+.3f}, within noise of {tol:.3f}) while the train-validation gap went from "
            f"{g[0]:+.3f} to {g[top]:+.3f}. Next move: stop here; take the one-standard-error model "
            f"(the smallest that is as good).")


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
