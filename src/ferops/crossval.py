"""One fold of grouped cross-validation: augment the training faces in memory, fine-tune the
recipe from its start weights, score the held-out faces (the ``crossval`` stage and the
learning-curve benchmark)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferops.augment import AugmentConfig, augment_image
from ferops.config import load_section
from ferops.data import load_faces
from ferops.metrics import classification_metrics
from ferops.model import FerResNet, load_checkpoint
from ferops.recipe import train_recipe
from ferops.training import FaceSet, TrainConfig, fit, predict, seed_everything


@dataclass(frozen=True)
class FoldInputs:
    """What every fold needs: the recipe, the faces with their split rows and fold numbers, and
    the start weights (``None`` when the recipe trains from scratch)."""

    init: str
    config: TrainConfig
    augment: AugmentConfig
    images: list[np.ndarray]
    labels: list[int]
    rows: list[dict[str, str]]
    folds: np.ndarray
    start_state: dict[str, torch.Tensor] | None


def load_fold_inputs(params: str | Path, split: Path, crops: Path, pretrained: Path) -> FoldInputs:
    """The ``train`` and ``augment`` sections of ``params``, every face of ``split``, and the
    pre-trained weights when ``train.init`` is ``fer2013``."""
    init, config = train_recipe(load_section(params, "train"))
    section = load_section(params, "augment")
    augment = AugmentConfig(ops=tuple(section["ops"]), factor=section["factor"])
    images, labels, rows = load_faces(split, crops)
    start_state = load_checkpoint(pretrained)[0].state_dict() if init == "fer2013" else None
    folds = np.array([int(r["fold"]) for r in rows])
    return FoldInputs(init, config, augment, images, labels, rows, folds, start_state)


def run_fold(
    images: Sequence[np.ndarray],
    labels: Sequence[int],
    train_rows: np.ndarray,
    held_rows: np.ndarray,
    config: TrainConfig,
    augment: AugmentConfig,
    start_state: dict[str, torch.Tensor] | None,
    seed: int,
    desc: str = "fold",
) -> dict[str, Any]:
    """Fine-tune on ``train_rows`` (boolean mask, each face with the augment stage's offline
    versions) from ``start_state`` (``None``: from scratch), seeded with ``seed``; the
    :func:`~ferops.metrics.classification_metrics` of ``held_rows`` (centre crops)."""
    if not np.any(train_rows) or not np.any(held_rows):
        raise ValueError("a fold needs at least one training and one held-out face")
    if np.any(train_rows & held_rows):
        raise ValueError("a face cannot be both trained on and held out")
    train_images, train_labels = [], []
    for i in np.flatnonzero(train_rows):
        for version in augment_image(images[i], augment).values():
            train_images.append(version)
            train_labels.append(labels[i])
    seed_everything(seed)
    model = FerResNet()
    if start_state is not None:
        model.load_state_dict(start_state)
    train = FaceSet(train_images, train_labels, config.resize)
    model, _ = fit(model, train, None, config, desc=desc)
    held = np.flatnonzero(held_rows)
    test = FaceSet([images[i] for i in held], [labels[i] for i in held], config.resize)
    logits, _ = predict(model, test, config.input_size, device=config.device)
    return classification_metrics(test.labels, logits.argmax(1))
