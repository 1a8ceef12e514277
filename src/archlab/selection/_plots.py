"""capacity_curve.png and learning_curve.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_capacity", "plot_learning_curve"]


def plot_capacity(result: Any, path: Path, data: str) -> None:
    """Validation (mean +- std over folds) and training accuracy against parameters, log x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from archlab.training import save_figure

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
    ax.set_xlabel("parameters")
    ax.set_ylabel(result.metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"capacity curve on {data} ({rows[0]['folds']}-fold CV)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def plot_learning_curve(result: Any, path: Path, data: str) -> None:
    """Validation and training accuracy of the chosen configuration against training samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from archlab.training import save_figure

    rows = result.learning_curve
    samples = [r["train_samples"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(samples, [r["val_mean"] for r in rows], yerr=[r["val_std"] for r in rows], marker="o", capsize=3,
                label="validation")
    ax.plot(samples, [r["train_mean"] for r in rows], marker="s", linestyle="--", label="training")
    ax.set_xlabel("training samples")
    ax.set_ylabel(result.metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"learning curve on {data}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
