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
from ferops.recipe import TeacherLabels, fer2013_extra, train_recipe
from ferops.sections import SectionConfig
from ferops.training import FaceSet, TrainConfig, fit, predict, seed_everything


@dataclass(frozen=True)
class CrossvalConfig(SectionConfig):
    """The ``crossval`` section of params.yaml."""

    max_folds: int = 0  # folds run (0 = all the split's folds)


@dataclass(frozen=True)
class FoldInputs:
    """What every fold needs: the recipe, the train + val faces with their split rows and fold
    numbers (test faces are never loaded), the start weights (``None`` when the recipe trains
    from scratch), the teacher's logits per face and the set mixed into batches (or ``None``)."""

    init: str
    config: TrainConfig
    augment: AugmentConfig
    images: list[np.ndarray]
    labels: list[int]
    rows: list[dict[str, str]]
    folds: np.ndarray
    start_state: dict[str, torch.Tensor] | None
    soft: np.ndarray | None = None
    extra: FaceSet | None = None


def load_fold_inputs(
    params: str | Path,
    split: Path,
    crops: Path,
    pretrained: Path,
    fer2013: Path,
    votes: Path,
    teacher: Sequence[Path],
) -> FoldInputs:
    """The ``train`` and ``augment`` sections of ``params``, the train + val faces of ``split``
    (the selection protocol: the test split stays unseen), the pre-trained weights when
    ``train.init`` is ``fer2013``, and what the recipe mixes in or distils from."""
    init, config = train_recipe(load_section(params, "train"))
    augment = AugmentConfig.from_section(load_section(params, "augment"))
    images, labels, rows = load_faces(split, crops, ["train", "val"])
    start_state = load_checkpoint(pretrained)[0].state_dict() if init == "fer2013" else None
    folds = np.array([int(r["fold"]) for r in rows])
    if np.any(folds < 0):
        raise ValueError("a train/val face has no fold: rerun the split stage")
    labels_of_teacher = TeacherLabels(*teacher) if config.distill_weight > 0 else None
    soft = labels_of_teacher.sfew([r["image_id"] for r in rows]) if labels_of_teacher else None
    extra = fer2013_extra(config, fer2013, votes, labels_of_teacher)
    return FoldInputs(init, config, augment, images, labels, rows, folds, start_state, soft, extra)


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
    soft: np.ndarray | None = None,
    extra: FaceSet | None = None,
) -> tuple[dict[str, Any], FerResNet]:
    """Fine-tune on ``train_rows`` (boolean mask, each face with the augment stage's offline
    versions) from ``start_state`` (``None``: from scratch), seeded with ``seed``; the
    :func:`~ferops.metrics.classification_metrics` of ``held_rows`` (centre crops) and the model.

    ``soft`` (N×7 teacher logits, one row per face; its versions share it) and ``extra`` (mixed
    into every batch) are passed to :func:`~ferops.training.fit` as the recipe asks."""
    if not np.any(train_rows) or not np.any(held_rows):
        raise ValueError("a fold needs at least one training and one held-out face")
    if np.any(train_rows & held_rows):
        raise ValueError("a face cannot be both trained on and held out")
    train_images, train_labels, train_soft = [], [], []
    for i in np.flatnonzero(train_rows):
        for version in augment_image(images[i], augment).values():
            train_images.append(version)
            train_labels.append(labels[i])
            train_soft.append(i)
    seed_everything(seed)
    model = FerResNet()
    if start_state is not None:
        model.load_state_dict(start_state)
    soft_rows = None if soft is None else np.asarray(soft)[train_soft]
    train = FaceSet(train_images, train_labels, config.resize, soft_rows)
    model, _ = fit(model, train, None, config, desc=desc, extra=extra)
    held = np.flatnonzero(held_rows)
    test = FaceSet([images[i] for i in held], [labels[i] for i in held], config.resize)
    logits, _ = predict(model, test, config.input_size, device=config.device)
    return classification_metrics(test.labels, logits.argmax(1)), model


def paired_difference(candidate: Sequence[float], baseline: Sequence[float]) -> dict[str, Any]:
    """Fold-by-fold comparison of two recipes scored on the same folds: mean and std of the
    differences, the paired t statistic and whether the candidate wins beyond the fold noise
    (one-sided paired t-test at 5 %)."""
    from scipy import stats

    diff = np.asarray(candidate, float) - np.asarray(baseline, float)
    if diff.shape != (len(baseline),) or len(diff) < 2:
        raise ValueError("a paired comparison needs two equally long lists of >= 2 fold scores")
    std = float(diff.std(ddof=1))
    if std > 0:
        t = float(diff.mean() / (std / np.sqrt(len(diff))))
    else:  # identical differences on every fold: no noise to beat, the sign decides
        t = 0.0 if diff.mean() == 0 else float(np.copysign(np.inf, diff.mean()))
    critical = float(stats.t.ppf(0.95, len(diff) - 1))
    return {
        "mean": round(float(diff.mean()), 4),
        "std": round(std, 4),
        "t": round(t, 3),
        "critical_t": round(critical, 3),
        "wins": bool(t > critical),
    }
