"""Train/val/test splits and cross-validation folds, grouped by clip so no clip leaks."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from ferops.data import CLASSES
from ferops.sections import SectionConfig

GROUP_BY = ("clip", "movie")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitConfig(SectionConfig):
    """``split`` section of params.yaml."""

    seed: int = 42
    test_size: float = 0.2
    val_size: float = 0.15
    folds: int = 5
    group_by: str = "clip"

    def __post_init__(self) -> None:
        if self.group_by not in GROUP_BY:
            raise ValueError(f"group_by {self.group_by!r} is not one of {GROUP_BY}")
        if not 0 < self.test_size < 0.5 or not 0 < self.val_size < 0.5:
            raise ValueError("test_size and val_size must lie in (0, 0.5)")
        if self.test_size + self.val_size >= 0.8:
            raise ValueError("test_size + val_size leaves too little to train on")
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2, got {self.folds}")


def _one_fold(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of one stratified grouped fold holding about ``fraction`` of the rows."""
    n_splits = max(2, round(1 / fraction))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, held = next(splitter.split(np.zeros(len(labels)), labels, groups))
    mask = np.zeros(len(labels), dtype=bool)
    mask[held] = True
    return mask


def assign_splits(rows: list[dict[str, Any]], config: SplitConfig) -> list[dict[str, Any]]:
    """Give each row a ``split`` (train/val/test) and a cross-validation ``fold``.

    Rows are grouped by ``clip`` (or ``movie``): every frame of a group lands in the same split
    and the same fold, stratified by class as far as the groups allow. Seeded, so reproducible.

    The selection protocol: folds ``0..k-1`` partition the train + val rows only; test rows get
    fold ``-1`` and are never in a fold, so choosing a recipe by cross-validation cannot look at
    the test faces (scored once, for the release).
    """
    if not rows:
        raise ValueError("no usable rows to split")
    labels = np.array([int(r["label_index"]) for r in rows])
    groups = np.array([r[config.group_by] for r in rows])
    test = _one_fold(labels, groups, config.test_size, config.seed)
    rest = np.flatnonzero(~test)
    val_rest = _one_fold(
        labels[rest], groups[rest], config.val_size / (1 - config.test_size), config.seed + 1
    )
    split = np.full(len(rows), "train", dtype=object)
    split[test] = "test"
    split[rest[val_rest]] = "val"

    folds = np.full(len(rows), -1)
    splitter = StratifiedGroupKFold(n_splits=config.folds, shuffle=True, random_state=config.seed)
    for fold, (_, held) in enumerate(
        splitter.split(np.zeros(len(rest)), labels[rest], groups[rest])
    ):
        folds[rest[held]] = fold
    out = []
    for row, name, fold in zip(rows, split, folds, strict=True):
        out.append({**row, "split": name, "fold": int(fold)})
    check_no_leak(out, config.group_by)
    return out


def check_no_leak(rows: list[dict[str, Any]], group_by: str = "clip") -> None:
    """Raise if one group sits in two splits or in two folds."""
    where: dict[str, set[str]] = defaultdict(set)
    fold_of: dict[str, set[int]] = defaultdict(set)
    for row in rows:
        where[row[group_by]].add(row["split"])
        fold_of[row[group_by]].add(int(row["fold"]))
    leaked = sorted(g for g, s in where.items() if len(s) > 1)
    if leaked:
        raise AssertionError(f"{len(leaked)} {group_by}s in more than one split: {leaked[:5]}")
    leaked = sorted(g for g, f in fold_of.items() if len(f) > 1)
    if leaked:
        raise AssertionError(f"{len(leaked)} {group_by}s in more than one fold: {leaked[:5]}")
    in_folds = [r["image_id"] for r in rows if r["split"] == "test" and int(r["fold"]) >= 0]
    if in_folds:
        raise AssertionError(f"{len(in_folds)} test faces in a selection fold: {in_folds[:5]}")


def split_metrics(rows: list[dict[str, Any]], group_by: str = "clip") -> dict[str, Any]:
    """Images per split and class, groups per split, fold sizes."""
    sizes = {}
    for name in SPLITS:
        of_split = [r for r in rows if r["split"] == name]
        counts = Counter(r["label"] for r in of_split)
        sizes[name] = {
            "images": len(of_split),
            f"{group_by}s": len({r[group_by] for r in of_split}),
            "per_class": {label: counts.get(label, 0) for label in CLASSES},
        }
    folds = Counter(int(r["fold"]) for r in rows if int(r["fold"]) >= 0)
    return {"splits": sizes, "fold_sizes": {str(k): folds[k] for k in sorted(folds)}}
