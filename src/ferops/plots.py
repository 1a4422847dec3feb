"""Pictures of training and evaluation (matplotlib, Agg backend, no display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ferops.data import CLASSES


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(metrics: dict[str, Any], path: Path, title: str = "test") -> None:
    """Counts and row-normalised confusion matrices side by side (the diagonal of the right one
    is per-class recall, as in the paper's Fig. 5)."""
    plt = _pyplot()
    counts = np.array(metrics["confusion"])
    normalised = np.array(metrics["confusion_normalised"])
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, matrix, fmt, name in (
        (axes[0], counts, "d", "counts"),
        (axes[1], normalised, ".2f", "row-normalised (recall)"),
    ):
        ax.imshow(matrix, cmap="Blues", vmin=0)
        ax.set_xticks(range(len(CLASSES)), CLASSES, rotation=45, ha="right")
        ax.set_yticks(range(len(CLASSES)), CLASSES)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(name)
        top = matrix.max() or 1
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(
                j,
                i,
                format(value, fmt),
                ha="center",
                va="center",
                color="white" if value > top / 2 else "black",
                fontsize=8,
            )
    fig.suptitle(
        f"{title}: accuracy {metrics['accuracy']:.2%}, macro-F1 {metrics['macro_f1']:.3f}, "
        f"n={metrics['n']}"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_history(history: Sequence[dict[str, float]], path: Path, title: str = "training") -> None:
    """Loss and accuracy per epoch, train and validation."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in ((axes[0], "loss"), (axes[1], "acc")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], label=f"train {key}")
        if history and f"val_{key}" in history[0]:
            ax.plot(epochs, [h[f"val_{key}"] for h in history], label=f"val {key}")
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
