"""capacity_curve.png (against parameters, or a regularization knob's values) and learning_curve.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_capacity", "plot_learning_curve", "plot_regularization"]


def plot_capacity(result: Any, path: Path, data: str) -> None:
    """Validation (mean +- std over folds) and training accuracy against parameters, log x; against
    the knob's values, weakest first, for a sweep of one regularization knob (the parameters stay)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ._diagnose import regularizer_of

    swept = list(result.configs[0]["values"]) if result.configs else []
    knob = regularizer_of(swept[0]) if len(swept) == 1 else None
    if knob is not None:
        plot_regularization(result, path, data, swept[0], knob.strength)
        return
    rows = sorted(result.configs, key=lambda c: c["params"])
    params = [r["params"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(params, [r["val_mean"] for r in rows], yerr=[r["val_std"] for r in rows], marker="o",
                capsize=3, label="validation (mean ± std over folds)")
    ax.plot(params, [r["train_mean"] for r in rows], marker="s", linestyle="--", label="training")
    chosen, best = result.chosen, result.configs[result.best_index]
    ax.axvline(chosen["params"], color="green", alpha=0.4, label="one-SE choice")
    if best["params"] != chosen["params"]:
        ax.axvline(best["params"], color="grey", alpha=0.4, linestyle=":", label="best mean")
    if len(set(params)) > 1:
        ax.set_xscale("log")
    _finish(fig, ax, path, "parameters", result.metric, f"capacity curve on {data} ({rows[0]['folds']}-fold CV)")


def plot_regularization(result: Any, path: Path, data: str, knob: str, strength: Any) -> None:
    """Validation (mean +- std) and training against one regularization knob's values, weakest first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    rows = sorted(result.configs, key=lambda c: strength(c["values"][knob]))
    at = list(range(len(rows)))  # evenly spaced: the values (0, 1e-4, 1e-3) have no common scale
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(at, [r["val_mean"] for r in rows], yerr=[r["val_std"] for r in rows], marker="o", capsize=3,
                label="validation (mean ± std over folds)")
    ax.plot(at, [r["train_mean"] for r in rows], marker="s", linestyle="--", label="training")
    best = next(i for i, r in enumerate(rows) if r["index"] == result.configs[result.best_index]["index"])
    ax.axvline(best, color="green", alpha=0.4, label="best mean")
    ax.set_xticks(at, [str(r["values"][knob]) for r in rows])
    _finish(fig, ax, path, f"{knob} (weakest to strongest)", result.metric,
            f"regularization sweep on {data} ({rows[0]['folds']}-fold CV)")


def _finish(fig: Any, ax: Any, path: Path, xlabel: str, ylabel: str, title: str) -> None:
    """The labels, grid, legend and title every curve of a sweep has; then the file."""
    from archlab.training import save_figure

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def plot_learning_curve(result: Any, path: Path, data: str) -> None:
    """Validation and training accuracy of the chosen configuration against training samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.learning_curve
    samples = [r["train_samples"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(samples, [r["val_mean"] for r in rows], yerr=[r["val_std"] for r in rows], marker="o", capsize=3,
                label="validation")
    ax.plot(samples, [r["train_mean"] for r in rows], marker="s", linestyle="--", label="training")
    _finish(fig, ax, path, "training samples", result.metric, f"learning curve on {data}")
