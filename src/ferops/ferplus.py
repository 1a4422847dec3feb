"""FER+ crowd votes (Barsoum et al., ICMI 2016) for our FER2013 faces: the join, and the two rules
that turn ten votes into something to learn from or to measure against.

``votes.csv`` (``../shared/data/ferplus.dvc``) gives, per FER2013 file that FER+ kept, the votes
of ten people over :data:`VOTE_COLUMNS`. Three columns have no class of ours: contempt, unknown
and NF (not a face).

* **Learning rule** (:func:`vote_targets`): the votes for our seven classes, renormalised to a
  distribution; contempt, unknown and NF votes are dropped. A face learns only when at least
  :data:`MIN_CLASS_SHARE` of its votes are on our classes (otherwise most voters saw no
  expression of ours in it). Faces FER+ dropped have no votes and do not learn.
* **Measuring rule** (:func:`majority_labels`): the unique most-voted of all ten columns. A tie,
  or a majority for contempt, unknown or NF, leaves the face out of the measurement.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from ferops.data import CLASSES

#: The ten vote columns of ``votes.csv``, in its order.
VOTE_COLUMNS: tuple[str, ...] = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
    "unknown",
    "NF",
)
#: For each of our classes (:data:`~ferops.data.CLASSES` order) its column in :data:`VOTE_COLUMNS`.
CLASS_COLUMNS: tuple[int, ...] = tuple(
    VOTE_COLUMNS.index(name)
    for name in ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
)
#: Share of a face's votes that must fall on our classes for the face to learn from them.
MIN_CLASS_SHARE = 0.5
#: Label of a face the measuring rule leaves out (tie, or a majority outside our classes).
NO_LABEL = -1
#: Where a measurement's labels come from (``fer2013_targets`` of pretrain and train).
TARGETS = ("folder", "ferplus")

assert len(CLASS_COLUMNS) == len(CLASSES)


def read_votes(path: Path) -> dict[str, np.ndarray]:
    """``votes.csv`` as {FER2013 relative path (``train/Angry/….jpg``): the 10 votes}."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("path", *VOTE_COLUMNS) if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} lacks the columns {missing}")
        return {
            row["path"]: np.array([int(row[c]) for c in VOTE_COLUMNS], dtype=np.int16)
            for row in reader
        }


def join_votes(
    votes: Mapping[str, np.ndarray], paths: Iterable[str], count: int | None = None
) -> np.ndarray:
    """Votes (N×10, int16) for faces given by relative path in array order; zeros where FER+
    has no votes. ``count`` checks that ``paths`` covers every row of the array it describes."""
    paths = list(paths)
    if count is not None and len(paths) != count:
        raise ValueError(f"{len(paths)} paths for {count} faces: the manifest does not match")
    joined = np.zeros((len(paths), len(VOTE_COLUMNS)), dtype=np.int16)
    for row, path in enumerate(paths):
        if path in votes:
            joined[row] = votes[path]
    return joined


def vote_targets(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The learning rule: (N×7 float32 distributions over our classes, N bool: learns)."""
    votes = np.asarray(votes, dtype=np.float64)
    ours = votes[:, list(CLASS_COLUMNS)]
    on_ours, total = ours.sum(1), votes.sum(1)
    learns = (total > 0) & (on_ours >= MIN_CLASS_SHARE * np.maximum(total, 1))
    targets = np.zeros_like(ours)
    targets[learns] = ours[learns] / on_ours[learns, None]
    return targets.astype(np.float32), learns


def majority_labels(votes: np.ndarray) -> np.ndarray:
    """The measuring rule: our class index of the unique most-voted column, else :data:`NO_LABEL`
    (no votes, a tie, or a majority for contempt, unknown or NF)."""
    votes = np.asarray(votes)
    top = votes.max(1, keepdims=True)
    unique = ((votes == top).sum(1) == 1) & (top[:, 0] > 0)
    column_to_class = np.full(len(VOTE_COLUMNS), NO_LABEL)
    column_to_class[list(CLASS_COLUMNS)] = np.arange(len(CLASSES))
    labels = column_to_class[votes.argmax(1)]
    return np.where(unique, labels, NO_LABEL)


def load_votes(path: Path, split: str) -> np.ndarray:
    """The ``ferplus`` stage's votes (N×10) of FER2013 ``split``, row-aligned with the
    ``fer2013`` stage's arrays."""
    with np.load(path) as blob:
        return blob[f"votes_{split}"]
