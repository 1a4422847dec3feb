"""FER2013 import: 48×48 gray faces in class folders → face chips ready for pre-training.

Every face goes through the framing contract of :mod:`ferops.faces` (YuNet landmarks inside the
crop → the template), exactly as a ``crop=true`` upload does when served. A face where YuNet
finds no landmarks is kept as it is, resized to the chip size (status ``unaligned``): FER2013's
own framing is the template's source, so it differs little.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from ferops.data import CLASSES
from ferops.faces import FaceDetector
from ferops.images import ImageDecodeError, read_image, to_gray
from ferops.sections import SectionConfig

log = logging.getLogger(__name__)

SPLITS = ("train", "publictest")
SIZE = 48


@dataclass(frozen=True)
class Fer2013Config(SectionConfig):
    """The ``fer2013`` section of params.yaml."""

    size: int = 48  # side of the stored faces (pixels)


def _labelled_paths(root: Path, split: str) -> list[tuple[str, Path]]:
    folder = Path(root) / split
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist; FER2013 splits are {list(SPLITS)}")
    return [
        (label, path)
        for label in CLASSES
        if (folder / label).is_dir()
        for path in sorted((folder / label).iterdir())
        if path.is_file()
    ]


def load_paths(root: Path, split: str) -> tuple[list[Path], list[int]]:
    """The image files of ``root/<split>/<Class>/`` and their class indices, in class order."""
    pairs = _labelled_paths(root, split)
    return [path for _, path in pairs], [CLASSES.index(label) for label, _ in pairs]


def load_split(
    root: Path, split: str, size: int = SIZE, detector: FaceDetector | None = None
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Decode ``root/<split>/<Class>/*`` into (images N×S×S uint8, labels, manifest rows).

    Unreadable files are reported in the rows (status ``quarantined``) and left out of the arrays;
    images of another size are resized (and counted) rather than dropped. With ``detector`` each
    face becomes its chip (S = the detector's chip size; ``unaligned`` when no landmarks).
    """
    paths = _labelled_paths(root, split)
    images, labels, rows = [], [], []
    for label, path in tqdm(paths, desc=f"fer2013 {split}", unit="img", mininterval=2):
        row = {"split": split, "path": path.relative_to(root).as_posix(), "label": label}
        try:
            gray = to_gray(read_image(path))
        except ImageDecodeError as exc:
            tqdm.write(f"quarantined {path}: {exc}")
            rows.append({**row, "status": "quarantined", "reason": exc.reason})
            continue
        status = "ok"
        if gray.shape != (size, size):
            gray = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)
            status = "resized"
        if detector is not None:
            chip = detector.chip_from_crop(gray)
            side = detector.config.size
            if chip is None:
                chip, status = (
                    cv2.resize(gray, (side, side), interpolation=cv2.INTER_LINEAR),
                    "unaligned",
                )
            gray = chip
        images.append(gray)
        labels.append(CLASSES.index(label))
        rows.append({**row, "status": status, "reason": "", "index": len(images) - 1})
    if not images:
        raise ValueError(f"no readable images under {Path(root) / split}")
    return np.stack(images), np.array(labels, dtype=np.int64), rows
