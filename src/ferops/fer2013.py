"""FER2013 import: 48×48 gray faces in class folders → arrays ready for pre-training."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from ferops.data import CLASSES
from ferops.images import ImageDecodeError, read_image, to_gray

log = logging.getLogger(__name__)

SPLITS = ("train", "publictest")
SIZE = 48


def load_split(
    root: Path, split: str, size: int = SIZE
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Decode ``root/<split>/<Class>/*`` into (images N×size×size uint8, labels, manifest rows).

    Unreadable files are reported in the rows (status ``quarantined``) and left out of the arrays;
    images of another size are resized (and counted) rather than dropped.
    """
    folder = Path(root) / split
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist; FER2013 splits are {list(SPLITS)}")
    paths = [
        (label, path)
        for label in CLASSES
        if (folder / label).is_dir()
        for path in sorted((folder / label).iterdir())
        if path.is_file()
    ]
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
        images.append(gray)
        labels.append(CLASSES.index(label))
        rows.append({**row, "status": status, "reason": "", "index": len(images) - 1})
    if not images:
        raise ValueError(f"no readable images under {folder}")
    return np.stack(images), np.array(labels, dtype=np.int64), rows
