"""Evaluation figures of the built-in tasks; each function returns a matplotlib figure (the caller
saves it). matplotlib is imported inside: it is heavy and only evaluations draw."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # type hints only (see _registry.py)
    import numpy as np

__all__ = ["confusion_figure", "per_label_figure", "pr_figure", "residuals_figure", "roc_figure"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_figure(cm: np.ndarray, classes: list[str], title: str) -> Any:
    """Rows are true classes, columns predictions (scikit-learn's layout); counts when they fit."""
    plt = _pyplot()
    size = max(4.0, 0.45 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(classes) <= 20:
        threshold = cm.max() / 2
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > threshold else "black")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def _curve_figure(display: Any, y_true: np.ndarray, scores: np.ndarray, title: str) -> Any:
    """One scikit-learn curve display (its own axes labels, AUC/AP label and chance line) on a figure."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    display.from_predictions(y_true, scores, ax=ax, name="model", plot_chance_level=True)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def roc_figure(y_true: np.ndarray, scores: np.ndarray, title: str) -> Any:
    from sklearn.metrics import RocCurveDisplay

    return _curve_figure(RocCurveDisplay, y_true, scores, title)


def pr_figure(y_true: np.ndarray, scores: np.ndarray, title: str) -> Any:
    from sklearn.metrics import PrecisionRecallDisplay

    return _curve_figure(PrecisionRecallDisplay, y_true, scores, title)


def residuals_figure(y_true: np.ndarray, predicted: np.ndarray, title: str) -> Any:
    """Residual (true - predicted) against the prediction: structure in it is what the model missed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(predicted.ravel(), (y_true - predicted).ravel(), s=6, alpha=0.5)
    ax.axhline(0.0, color="grey", linestyle="--")
    ax.set_xlabel("predicted")
    ax.set_ylabel("residual (true - predicted)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def per_label_figure(f1: np.ndarray, labels: list[str], title: str) -> Any:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(labels) + 2), 3.6))
    ax.bar(range(len(labels)), f1)
    ax.set_xticks(range(len(labels)), labels, rotation=90 if len(labels) > 12 else 0)
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
