"""The ``prepare`` stage's work: movie frames → principal-face crops, a manifest and metrics."""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from ferops.data import CLASSES, Frame, label_conflicts
from ferops.faces import FaceConfig, FaceDetector, centre_crop
from ferops.images import ImageDecodeError, read_image, to_gray
from ferops.sections import SectionConfig

log = logging.getLogger(__name__)

NO_FACE_POLICIES = ("skip", "centre")

#: Row status values. ``face`` and ``centre`` rows have a crop and are usable downstream.
USABLE = ("face", "centre")

MANIFEST_FIELDS = [
    "image_id",
    "path",
    "label",
    "label_index",
    "movie",
    "clip",
    "frame",
    "status",
    "reason",
    "faces_found",
    "detector_step",
    "detector",
    "box",
    "score",
    "candidates",
    "mean_luma",
    "crop",
]
QUARANTINE_FIELDS = ["image_id", "path", "reason", "detail"]


@dataclass(frozen=True)
class PrepareConfig(SectionConfig):
    """``prepare`` section of params.yaml."""

    faces: FaceConfig
    no_face: str = "skip"
    workers: int = 2

    def __post_init__(self) -> None:
        if self.no_face not in NO_FACE_POLICIES:
            raise ValueError(f"no_face {self.no_face!r} is not one of {NO_FACE_POLICIES}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")

    @classmethod
    def convert(cls, values: dict[str, Any]) -> dict[str, Any]:
        return {**values, "faces": FaceConfig.from_section(values.get("faces", {}))}


_worker_detector: FaceDetector | None = None


def _init_worker(config: FaceConfig, yunet: Path | None) -> None:
    global _worker_detector
    cv2.setNumThreads(1)
    _worker_detector = FaceDetector(config, yunet)


def process_frame(
    detector: FaceDetector, frame: Frame, root: Path, out_dir: Path, no_face: str
) -> dict[str, Any]:
    """Detect, choose, crop and save one frame; never raises for a bad frame."""
    row = _base_row(frame, root)
    try:
        rgb = read_image(frame.path)
    except ImageDecodeError as exc:
        row.update(status="quarantined", reason=exc.reason, detail=exc.detail)
        return row
    try:
        faces, step = detector.detect(rgb)
        row["mean_luma"] = round(float(to_gray(rgb).mean()), 2)
        row["faces_found"] = len(faces)
        row["detector_step"] = step
        row["candidates"] = json.dumps([f.to_dict() for f in faces])
        crop_path = out_dir / frame.label / f"{frame.path.stem}.png"
        if faces:
            principal = next(f for f in faces if f.principal)
            crop = detector.crop(rgb, principal)
            row.update(
                status="face",
                detector=principal.detector,
                box=" ".join(map(str, principal.box())),
                score=round(principal.score, 4),
            )
        elif no_face == "centre":
            crop = centre_crop(to_gray(rgb), detector.config.size)
            row.update(status="centre", reason="no_face")
        else:
            row.update(status="no_face", reason="no_face")
            return row
        crop_path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(crop_path), crop):
            raise OSError(f"could not write {crop_path}")
        row["crop"] = crop_path.relative_to(out_dir).as_posix()
    except Exception as exc:
        log.exception("frame %s failed", frame.image_id)
        row.update(status="quarantined", reason="error", detail=f"{type(exc).__name__}: {exc}")
    return row


def _process_in_worker(args: tuple[Frame, Path, Path, str]) -> dict[str, Any]:
    assert _worker_detector is not None
    return process_frame(_worker_detector, *args)


def prepare_frames(
    frames: list[Frame],
    root: Path,
    out_dir: Path,
    config: PrepareConfig,
    yunet: Path | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Turn frames into crops under ``out_dir/<Class>/``; return (manifest rows, quarantine rows).
    ``yunet`` is the YuNet model file (:data:`~ferops.faces.YUNET_FILE`).

    Unreadable files and byte-identical frames filed under two classes are reported, not fatal.
    """
    conflicts = label_conflicts(frames)
    todo = [f for f in frames if f.image_id not in conflicts]
    jobs = [(f, Path(root), Path(out_dir), config.no_face) for f in todo]
    rows: list[dict[str, Any]] = []
    for frame in frames:
        if frame.image_id in conflicts:
            log.warning(
                "%s is byte-identical to %s: excluded", frame.image_id, conflicts[frame.image_id]
            )
            rows.append(_conflict_row(frame, root, conflicts[frame.image_id]))
    for row in tqdm(_run(jobs, config, yunet), total=len(jobs), desc="prepare", unit="frame"):
        rows.append(row)
        if row["status"] == "quarantined":
            tqdm.write(f"quarantined {row['path']}: {row['reason']} ({row.get('detail', '')})")
    order = {f.image_id: i for i, f in enumerate(frames)}
    rows.sort(key=lambda r: order[r["image_id"]])
    quarantine = [
        {k: r.get(k, "") for k in QUARANTINE_FIELDS}
        for r in rows
        if r["status"] in ("quarantined", "label_conflict")
    ]
    return rows, quarantine


def _run(
    jobs: list[tuple[Frame, Path, Path, str]], config: PrepareConfig, yunet: Path | None
) -> Iterator[dict]:
    if config.workers == 1 or len(jobs) < 2:
        _init_worker(config.faces, yunet)
        yield from map(_process_in_worker, jobs)
        return
    # spawn, not fork: a forked child inherits OpenCV/OpenMP thread pools mid-state and hangs.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        config.workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(config.faces, yunet),
    ) as pool:
        yield from pool.map(_process_in_worker, jobs, chunksize=1)


def _base_row(frame: Frame, root: Path) -> dict[str, Any]:
    """The manifest fields every frame has, before any decoding."""
    return {
        "image_id": frame.image_id,
        "path": frame.path.relative_to(root).as_posix(),
        "label": frame.label,
        "label_index": frame.label_index,
        "movie": frame.movie,
        "clip": frame.clip,
        "frame": frame.frame,
        "faces_found": 0,
        "detector_step": -1,
        "reason": "",
    }


def _conflict_row(frame: Frame, root: Path, others: list[str]) -> dict[str, Any]:
    return {
        **_base_row(frame, root),
        "status": "label_conflict",
        "reason": "label_conflict",
        "detail": f"byte-identical to {', '.join(others)}",
    }


def prepare_metrics(rows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Detection rate overall and per class, multi-face rate and what was set aside."""
    status = Counter(r["status"] for r in rows)
    decoded = [r for r in rows if r["status"] not in ("quarantined", "label_conflict")]
    found = [r for r in decoded if int(r["faces_found"]) > 0]
    per_class = {}
    for label in CLASSES:
        of_class = [r for r in decoded if r["label"] == label]
        hits = sum(1 for r in of_class if int(r["faces_found"]) > 0)
        per_class[label] = round(hits / len(of_class), 4) if of_class else None
    steps = Counter(int(r["detector_step"]) for r in found)
    return {
        "frames": len(rows),
        "decoded": len(decoded),
        "faces_found": len(found),
        "detection_rate": round(len(found) / len(decoded), 4) if decoded else 0.0,
        "detection_rate_per_class": per_class,
        "multi_face_frames": sum(1 for r in found if int(r["faces_found"]) > 1),
        "multi_face_rate": (
            round(sum(1 for r in found if int(r["faces_found"]) > 1) / len(found), 4)
            if found
            else 0.0
        ),
        "found_by_step": {str(k): steps[k] for k in sorted(steps)},
        "no_face": sum(1 for r in decoded if int(r["faces_found"]) == 0),
        "centre_crops": status["centre"],
        "usable": sum(status[s] for s in USABLE),
        "quarantined": status["quarantined"],
        "label_conflicts": status["label_conflict"],
        "seconds": round(seconds, 1),
    }


def timed_prepare(
    frames: list[Frame],
    root: Path,
    out_dir: Path,
    config: PrepareConfig,
    yunet: Path | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """:func:`prepare_frames` plus its metrics, wall time included."""
    start = time.perf_counter()
    rows, quarantine = prepare_frames(frames, root, out_dir, config, yunet)
    return rows, quarantine, prepare_metrics(rows, time.perf_counter() - start)


def rng_sample(items: list, count: int, seed: int) -> list:
    """Reproducible sample of up to ``count`` items, in their original order."""
    if len(items) <= count:
        return list(items)
    picks = np.random.default_rng(seed).choice(len(items), size=count, replace=False)
    return [items[i] for i in sorted(picks)]
