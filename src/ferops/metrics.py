"""Classification metrics the paper reports (confusion matrix, recall, accuracy) and a few more."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ferops.data import CLASSES
from ferops.sections import SectionConfig


@dataclass(frozen=True)
class EvaluateConfig(SectionConfig):
    """The ``evaluate`` section of params.yaml."""

    device: str = "auto"  # where the network runs: auto | cpu | cuda
    sheet_size: int = 40  # faces on the misclassified contact sheet


def confusion_matrix(
    y_true: Sequence[int], y_pred: Sequence[int], n: int = len(CLASSES)
) -> np.ndarray:
    """Counts: row = true class, column = predicted class."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{y_true.shape} true labels vs {y_pred.shape} predictions")
    if len(y_true) and (
        min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= n
    ):
        raise ValueError(f"labels must lie in 0..{n - 1}")
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str] = CLASSES
) -> dict[str, Any]:
    """Accuracy, per-class recall / precision / F1, macro-F1, confusion matrix (counts and
    row-normalised, so its diagonal is the recall the paper reads off its Fig. 5)."""
    matrix = confusion_matrix(y_true, y_pred, len(classes))
    tp = np.diag(matrix).astype(np.float64)
    support = matrix.sum(1).astype(np.float64)
    predicted = matrix.sum(0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, 0.0)
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        normalised = np.where(support[:, None] > 0, matrix / support[:, None], 0.0)
    total = matrix.sum()
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(f1.mean()),
        "macro_recall": float(recall.mean()),
        "recall": {c: round(float(v), 4) for c, v in zip(classes, recall, strict=True)},
        "precision": {c: round(float(v), 4) for c, v in zip(classes, precision, strict=True)},
        "f1": {c: round(float(v), 4) for c, v in zip(classes, f1, strict=True)},
        "support": {c: int(v) for c, v in zip(classes, support, strict=True)},
        "confusion": matrix.tolist(),
        "confusion_normalised": np.round(normalised, 4).tolist(),
        "n": int(total),
    }
