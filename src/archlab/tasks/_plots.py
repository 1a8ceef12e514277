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


def roc_figure(y_true: np.ndarray, scores: np.ndarray, title: str) -> Any:
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    fpr, tpr, _ = roc_curve(y_true, scores)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, label=f"AUC {roc_auc_score(y_true, scores):.4f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def pr_figure(y_true: np.ndarray, scores: np.ndarray, title: str) -> Any:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    plt = _pyplot()
    precision, recall, _ = precision_recall_curve(y_true, scores)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(recall, precision, label=f"average precision {average_precision_score(y_true, scores):.4f}")
    ax.axhline(float(y_true.mean()), linestyle="--", color="grey", label="chance (positive rate)")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.legend(loc="lower left")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


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
