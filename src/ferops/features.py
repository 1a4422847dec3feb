"""``features.csv``: the paper's export of the 512 penultimate features of every face, with its
split, clip, true and predicted class — written by the ``evaluate`` stage and read by
``explain``, here only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ferops.data import CLASSES, read_csv, write_csv
from ferops.model import FEATURES

FEATURE_COLUMNS = [f"feature{i + 1}" for i in range(FEATURES)]
ID_COLUMNS = ["image_id", "split", "clip", "true_label", "predicted_label"]


def write_features(
    path: Path,
    rows: Sequence[dict[str, str]],
    labels: Sequence[int],
    predicted: Sequence[int],
    features: np.ndarray,
) -> None:
    """One line per face of ``rows`` (split rows): ids, classes and its features (6 decimals)."""
    out = []
    for row, label, pred, feats in zip(rows, labels, predicted, features, strict=True):
        line = {
            "image_id": row["image_id"],
            "split": row["split"],
            "clip": row["clip"],
            "true_label": CLASSES[label],
            "predicted_label": CLASSES[pred],
        }
        line.update(zip(FEATURE_COLUMNS, np.round(feats, 6).tolist(), strict=True))
        out.append(line)
    write_csv(path, out, [*ID_COLUMNS, *FEATURE_COLUMNS])


def read_features(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``split -> (features N×512, the network's predicted class index N)``."""
    rows = read_csv(path)
    out = {}
    for split in ("train", "val", "test"):
        part = [r for r in rows if r["split"] == split]
        x = np.array([[float(r[c]) for c in FEATURE_COLUMNS] for r in part], dtype=np.float64)
        y = np.array([CLASSES.index(r["predicted_label"]) for r in part], dtype=np.int64)
        out[split] = (x.reshape(-1, FEATURES), y)
    return out
