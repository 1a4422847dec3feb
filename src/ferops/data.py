"""The SFEW data set on disk: classes, file names, clips, label conflicts and manifests."""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ferops.digests import file_digest

log = logging.getLogger(__name__)

#: Class folder names, sorted: their index is the class index in SFEW and FER2013 alike.
CLASSES: tuple[str, ...] = ("Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")

IMAGE_SUFFIXES = frozenset({".webp", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif"})


@dataclass(frozen=True)
class Frame:
    """One labelled SFEW frame. ``image_id`` is ``<Class>/<stem>``, unique across classes."""

    path: Path
    label: str
    movie: str
    clip: str
    frame: str

    @property
    def image_id(self) -> str:
        return f"{self.label}/{self.path.stem}"

    @property
    def label_index(self) -> int:
        return CLASSES.index(self.label)


def parse_frame_name(stem: str) -> tuple[str, str, str]:
    """Split ``<movie>_<timestamp>_<frame>`` into (movie, clip, frame); clip = movie_timestamp.

    Movie names may hold underscores themselves (``HarryPotter_Deathly_Hallows_1``), so the two
    numeric fields are taken from the right. A name without them is its own clip.
    """
    parts = stem.rsplit("_", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        movie, timestamp, frame = parts
        return movie, f"{movie}_{timestamp}", frame
    log.warning("file name %r is not <movie>_<timestamp>_<frame>: it is its own clip", stem)
    return stem, stem, "0"


def scan_frames(root: Path) -> list[Frame]:
    """List the labelled images under ``root/<Class>/``, sorted; other folders are an error."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist (did `dvc pull` run?)")
    frames: list[Frame] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name not in CLASSES:
            raise ValueError(f"folder {folder} is not a class; valid classes: {list(CLASSES)}")
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    log.warning("%s has an unusual suffix; decoding it anyway", path)
                movie, clip, frame = parse_frame_name(path.stem)
                frames.append(Frame(path, folder.name, movie, clip, frame))
    if not frames:
        raise ValueError(f"no images under {root}/<Class>/ (classes: {list(CLASSES)})")
    return frames


def label_conflicts(frames: Iterable[Frame]) -> dict[str, list[str]]:
    """Byte-identical files filed under more than one class: ``image_id -> the other ids``.

    Such a frame has no single truth (SFEW's official lists hold one, in Fear and Surprise), so
    the data stages keep it out of every split rather than train or score on a coin toss.
    """
    by_digest: dict[str, list[Frame]] = defaultdict(list)
    for frame in frames:
        try:
            by_digest[file_digest(frame.path, "md5")].append(frame)
        except OSError:
            continue  # unreadable files are quarantined by the caller
    conflicts: dict[str, list[str]] = {}
    for group in by_digest.values():
        if len({f.label for f in group}) > 1:
            for frame in group:
                conflicts[frame.image_id] = [g.image_id for g in group if g is not frame]
    return conflicts


def write_csv(path: Path, rows: list[dict[str, Any]], fields: list[str] | None = None) -> None:
    """Write dict rows as CSV with a fixed column order (the first row's keys by default)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = fields or (list(rows[0]) if rows else [])
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict[str, str]]:
    """Read a CSV written by :func:`write_csv`."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def load_gray(path: Path) -> np.ndarray:
    """Read a crop written by the data stages (gray PNG); a clear error if it is unreadable."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise OSError(f"cannot read face crop {path}")
    return image


def load_faces(
    split_csv: Path, crops: Path, splits: Iterable[str] | None = None
) -> tuple[list[np.ndarray], list[int], list[dict[str, str]]]:
    """Crops, labels and split rows of the given splits (all when ``None``), in file order."""
    wanted = set(splits) if splits is not None else None
    rows = [r for r in read_csv(split_csv) if wanted is None or r["split"] in wanted]
    if not rows:
        raise ValueError(f"{split_csv} has no rows for splits {sorted(wanted or [])}")
    images = [load_gray(Path(crops) / r["crop"]) for r in rows]
    return images, [int(r["label_index"]) for r in rows], rows


#: The augment stage's index of its images (in the same folder) and its columns.
AUGMENTED_INDEX = "augmented.csv"
AUGMENTED_FIELDS = [
    "image_id",
    "source_id",
    "op",
    "label",
    "label_index",
    "clip",
    "path",
    "height",
    "width",
]


def write_augmented(folder: Path, rows: list[dict[str, Any]]) -> None:
    """Write the augment stage's index (:data:`AUGMENTED_INDEX`) of the images in ``folder``."""
    write_csv(Path(folder) / AUGMENTED_INDEX, rows, AUGMENTED_FIELDS)


def load_augmented(folder: Path) -> tuple[list[np.ndarray], list[int], list[dict[str, str]]]:
    """The augment stage's training images (:data:`AUGMENTED_INDEX` beside them)."""
    rows = read_csv(Path(folder) / AUGMENTED_INDEX)
    if not rows:
        raise ValueError(f"{folder}/{AUGMENTED_INDEX} lists no images")
    images = [load_gray(Path(folder) / r["path"]) for r in rows]
    return images, [int(r["label_index"]) for r in rows], rows
