"""Reading a capacity curve: the one-standard-error choice and a plain-words diagnosis."""

from __future__ import annotations

from typing import Any

__all__ = ["diagnose", "learning_curve_answer", "one_standard_error"]

#: Differences below this (accuracy, 0..1) are noise even when the folds agree closely.
MIN_STEP = 0.005


def one_standard_error(configs: list[dict[str, Any]]) -> int:
    """Index of the smallest configuration (by ``params``) whose ``val_mean`` is within one standard
    error (``val_se``) of the best mean (Breiman et al.'s one-SE rule).

    Example:
        >>> rows = [{"params": 10, "val_mean": 0.90, "val_se": 0.01},
        ...         {"params": 100, "val_mean": 0.95, "val_se": 0.01},
        ...         {"params": 1000, "val_mean": 0.955, "val_se": 0.01}]
        >>> one_standard_error(rows)
        1
    """
    best = max(range(len(configs)), key=lambda i: configs[i]["val_mean"])
    threshold = configs[best]["val_mean"] - configs[best]["val_se"]
    within = [i for i, c in enumerate(configs) if c["val_mean"] >= threshold]
    return min(within, key=lambda i: (configs[i]["params"], -configs[i]["val_mean"]))


def diagnose(configs: list[dict[str, Any]]) -> str:
    """Under-fitting, over-fitting or balanced, from validation/training accuracy against parameters.

    Rules, with the curve ordered by parameters and ``tol`` = max(standard error of the best, 0.005):
    under-fitting when the largest model is (about) the best and validation still rose by more than
    ``tol`` from the next smaller one; over-fitting when validation at the largest model is more than
    ``tol`` below the best and the train-validation gap there is wider than at the best;
    inconclusive when it falls that way without a wider gap (under-trained large models); otherwise
    balanced.
    """
    rows = sorted(configs, key=lambda c: c["params"])
    if len(rows) < 2:
        row = rows[0]
        return (f"one configuration only: no capacity curve to read (training {row['train_mean']:.3f}, "
                f"validation {row['val_mean']:.3f}, gap {row['gap']:+.3f}); sweep a width or depth to diagnose")
    val = [r["val_mean"] for r in rows]
    train = [r["train_mean"] for r in rows]
    gap = [r["gap"] for r in rows]
    best = max(range(len(rows)), key=lambda i: val[i])
    tol = max(rows[best]["val_se"], MIN_STEP)
    top = len(rows) - 1
    if val[top] >= val[best] - tol and val[top] - val[top - 1] > tol:
        return (f"under-fitting: training ({train[top]:.3f}) and validation ({val[top]:.3f}) accuracy are still "
                f"rising at the largest model (validation +{val[top] - val[top - 1]:.3f} over the next smaller "
                f"one). Next move: more capacity (wider or deeper layers), or train longer.")
    falling = val[top] < val[best] - tol
    if falling and gap[top] > gap[best] + MIN_STEP:
        return (f"over-fitting: validation accuracy falls from {val[best]:.3f} at {rows[best]['params']:,} "
                f"parameters to {val[top]:.3f} at the largest model while the train-validation gap widens "
                f"({gap[best]:+.3f} -> {gap[top]:+.3f}). Next move: more regularisation (dropout, weight decay, "
                f"augmentation) or more data, or stay at the smaller size.")
    if falling:
        return (f"inconclusive: validation accuracy falls from {val[best]:.3f} at {rows[best]['params']:,} "
                f"parameters to {val[top]:.3f} at the largest model, but the train-validation gap does not widen "
                f"({gap[best]:+.3f} -> {gap[top]:+.3f}), so this is not over-fitting: the larger models are "
                f"probably under-trained. Next move: train longer or tune the learning rate, then sweep again.")
    return (f"balanced: validation accuracy has flattened (best {val[best]:.3f}; the last step in size changed it "
            f"by {val[top] - val[top - 1]:+.3f}, within noise of {tol:.3f}) while the train-validation gap went from "
            f"{gap[0]:+.3f} to {gap[top]:+.3f}. Next move: stop here; take the one-standard-error model "
            f"(the smallest that is as good).")


def learning_curve_answer(rows: list[dict[str, Any]]) -> str:
    """Would more data help? Yes when validation still rises over the last doubling of the data."""
    if len(rows) < 2:
        return "one training-set fraction only: no learning curve to read"
    last, prev = rows[-1], rows[-2]
    tol = max(last.get("val_se", 0.0), MIN_STEP)
    rise = last["val_mean"] - prev["val_mean"]
    if rise > tol:
        return (f"yes, more data would likely help: validation accuracy still rises from {prev['val_mean']:.3f} at "
                f"{prev['train_samples']} to {last['val_mean']:.3f} at {last['train_samples']} training samples")
    return (f"probably not: validation accuracy is flat at the end of the curve ({prev['val_mean']:.3f} at "
            f"{prev['train_samples']}, {last['val_mean']:.3f} at {last['train_samples']} samples, change within "
            f"{tol:.3f}); more capacity or a better architecture is the lever")
