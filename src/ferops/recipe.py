"""The ``train`` section of params.yaml as a recipe, and the data it draws on besides SFEW (the
teacher's logits, FER2013 with its folder labels or FER+ votes) — shared by the pretrain, train
and crossval stages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferops.ferplus import NO_LABEL, load_votes, majority_labels, vote_targets
from ferops.training import INITS, FaceSet, TrainConfig


def train_recipe(section: dict[str, Any]) -> tuple[str, TrainConfig]:
    """Split the ``train`` section into its ``init`` (scratch | fer2013) and a ``TrainConfig``."""
    section = dict(section)
    init = section.pop("init", "fer2013")
    if init not in INITS:
        raise ValueError(f"train.init {init!r} is not one of {INITS}")
    return init, TrainConfig.from_section(section)


class TeacherLabels:
    """The ``teach`` stage's logits: FER2013 by position (``data/teacher/fer2013.npz``), SFEW by
    image id (``data/teacher/sfew.npz``); give the files a stage needs (pre-training reads only
    FER2013's, so nothing SFEW-derived is among its inputs)."""

    def __init__(self, *paths: Path) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        for path in paths:
            with np.load(path) as blob:
                self.arrays.update({key: blob[key] for key in blob.files})
        ids = self.arrays.get("sfew_ids", [])
        self.sfew_index = {str(i): n for n, i in enumerate(ids)}

    def fer2013(self, split: str) -> np.ndarray:
        """N×7 logits of the FER2013 ``split`` (train | publictest), in the array's order."""
        return self.arrays[f"fer2013_{split}"]

    def sfew(self, image_ids: Sequence[str]) -> np.ndarray:
        """N×7 logits of SFEW faces by ``image_id``; a missing id is an error, not a guess."""
        if "sfew" not in self.arrays:
            raise KeyError("no SFEW teacher logits given (data/teacher/sfew.npz)")
        missing = [i for i in image_ids if i not in self.sfew_index]
        if missing:
            raise KeyError(f"{len(missing)} faces have no teacher logits, e.g. {missing[:3]}")
        return self.arrays["sfew"][[self.sfew_index[i] for i in image_ids]]


@dataclass(frozen=True)
class Fer2013Faces:
    """FER2013 faces of one split chosen for a purpose: their rows in the ``fer2013`` stage's
    arrays, the images, labels and (FER+ learning) target distributions."""

    rows: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    targets: np.ndarray | None = None


def fer2013_learning(fer2013: Path, votes: Path, split: str, targets: str) -> Fer2013Faces:
    """What FER2013 ``split`` teaches under ``targets``: ``folder`` = every face with its folder
    label; ``ferplus`` = the faces :func:`~ferops.ferplus.vote_targets` keeps, with their vote
    distribution (label: its most-voted class, for counting accuracy)."""
    with np.load(fer2013) as blob:
        images, labels = blob[f"x_{split}"], blob[f"y_{split}"]
    if targets == "folder":
        return Fer2013Faces(np.arange(len(labels)), images, labels)
    distributions, learns = vote_targets(load_votes(votes, split))
    if len(learns) != len(labels):
        raise ValueError(f"{votes} has {len(learns)} {split} rows for {len(labels)} faces")
    rows = np.flatnonzero(learns)
    return Fer2013Faces(rows, images[rows], distributions[rows].argmax(1), distributions[rows])


def fer2013_measured(fer2013: Path, votes: Path, split: str, targets: str) -> Fer2013Faces:
    """The faces of FER2013 ``split`` that a measurement under ``targets`` counts: ``folder`` =
    every face, its folder label; ``ferplus`` = faces with a FER+ majority
    (:func:`~ferops.ferplus.majority_labels`), that label."""
    with np.load(fer2013) as blob:
        images, labels = blob[f"x_{split}"], blob[f"y_{split}"]
    if targets == "folder":
        return Fer2013Faces(np.arange(len(labels)), images, labels)
    majority = majority_labels(load_votes(votes, split))
    if len(majority) != len(labels):
        raise ValueError(f"{votes} has {len(majority)} {split} rows for {len(labels)} faces")
    rows = np.flatnonzero(majority != NO_LABEL)
    return Fer2013Faces(rows, images[rows], majority[rows])


def fer2013_extra(
    config: TrainConfig, fer2013: Path, votes: Path, teacher: TeacherLabels | None
) -> FaceSet | None:
    """FER2013 train as the set mixed into fine-tuning batches (``extra_share``), learning what
    ``config.fer2013_targets`` says, with the teacher's logits when distilling; ``None`` when
    the recipe mixes nothing in."""
    if config.extra_share == 0:
        return None
    faces = fer2013_learning(fer2013, votes, "train", config.fer2013_targets)
    soft = (
        teacher.fer2013("train")[faces.rows]
        if config.distill_weight > 0 and teacher is not None
        else None
    )
    return FaceSet(faces.images, faces.labels, config.resize, soft, faces.targets)
