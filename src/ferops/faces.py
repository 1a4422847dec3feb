"""Face detection, principal-face choice, alignment and cropping (numpy + dlib + OpenCV).

One module for both the ``prepare`` stage and the service, so training and serving see faces the
same way. Detection runs a *cascade*: each step is a detector (``hog`` or ``cnn``) with its own
upsampling and contrast enhancement, and the first step that finds any face wins. Every candidate
is returned; :func:`choose_principal` picks the face the frame is about.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ferops.images import to_gray

log = logging.getLogger(__name__)

DETECTORS = ("hog", "cnn")
ENHANCEMENTS = ("none", "clahe")


@dataclass(frozen=True)
class DetectorStep:
    """One step of the detection cascade."""

    detector: str = "hog"
    upsample: int = 0
    enhance: str = "none"
    #: HOG only: added to dlib's decision threshold (negative finds more, weaker faces).
    adjust_threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"detector {self.detector!r} is not one of {DETECTORS}")
        if self.enhance not in ENHANCEMENTS:
            raise ValueError(f"enhance {self.enhance!r} is not one of {ENHANCEMENTS}")
        if not 0 <= self.upsample <= 3:
            raise ValueError(f"upsample must be 0..3, got {self.upsample}")


@dataclass(frozen=True)
class FaceConfig:
    """Everything that decides how a frame becomes a face crop (saved in the serving bundle)."""

    cascade: tuple[DetectorStep, ...] = (DetectorStep(),)
    #: Weights of the principal-face score: relative box area, closeness to the centre, detector
    #: confidence (rank within the frame).
    principal_area: float = 0.5
    principal_centrality: float = 0.3
    principal_score: float = 0.2
    #: A candidate whose box lies mostly (this share of its area) inside a bigger one is the same
    #: face found twice (the CNN detector does this on chins and mouths): it is dropped.
    max_overlap: float = 0.5
    align: bool = True
    #: Context kept around the face box, as a fraction of the box side on each side.
    margin: float = 0.25
    size: int = 256

    def __post_init__(self) -> None:
        if not self.cascade:
            raise ValueError("the detection cascade needs at least one step")
        if self.size < 8:
            raise ValueError(f"crop size must be >= 8, got {self.size}")
        if not 0 <= self.margin <= 2:
            raise ValueError(f"margin must be within 0..2, got {self.margin}")

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> FaceConfig:
        """Build from a ``params.yaml``-style mapping (cascade as a list of mappings)."""
        cfg = dict(cfg)
        known = set(cls.__dataclass_fields__)
        unknown = set(cfg) - known
        if unknown:
            raise ValueError(f"unknown face settings {sorted(unknown)}; valid: {sorted(known)}")
        steps = tuple(DetectorStep(**step) for step in cfg.pop("cascade", [{}]))
        return cls(cascade=steps, **cfg)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, the inverse of :meth:`from_dict`."""
        out = asdict(self)
        out["cascade"] = [asdict(step) for step in self.cascade]
        return out


@dataclass
class Face:
    """A detected face: box in pixel coordinates of the original image (right/bottom exclusive)."""

    left: int
    top: int
    right: int
    bottom: int
    score: float
    detector: str
    principal: bool = False
    landmarks: list[tuple[int, int]] = field(default_factory=list, repr=False)

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    def box(self) -> list[int]:
        return [self.left, self.top, self.right, self.bottom]

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": self.box(),
            "score": round(float(self.score), 4),
            "detector": self.detector,
            "principal": self.principal,
        }


def model_file(name: str) -> Path:
    """Path of a dlib model file shipped by ``face_recognition_models`` (no pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face_recognition_models is not installed; it ships dlib's models")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise RuntimeError(f"dlib model file {path} is missing")
    return path


class FaceDetector:
    """Runs the detection cascade and crops faces. Detectors load lazily, once per instance."""

    def __init__(self, config: FaceConfig) -> None:
        self.config = config
        self._hog = None
        self._cnn = None
        self._shape = None

    def _detector(self, name: str):
        import dlib

        if name == "hog":
            if self._hog is None:
                self._hog = dlib.get_frontal_face_detector()
            return self._hog
        if self._cnn is None:
            self._cnn = dlib.cnn_face_detection_model_v1(
                str(model_file("mmod_human_face_detector.dat"))
            )
        return self._cnn

    def _shape_predictor(self):
        import dlib

        if self._shape is None:
            self._shape = dlib.shape_predictor(
                str(model_file("shape_predictor_5_face_landmarks.dat"))
            )
        return self._shape

    def detect(self, rgb: np.ndarray) -> tuple[list[Face], int]:
        """Run the cascade on an RGB uint8 image.

        Returns every face of the first step that found any (the principal one flagged) and the
        index of that step (``-1`` when no step found a face).
        """
        gray = to_gray(rgb)
        for index, step in enumerate(self.config.cascade):
            faces = drop_nested(self._run_step(step, gray), self.config.max_overlap)
            if faces:
                principal = choose_principal(faces, gray.shape, self.config)
                faces[principal].principal = True
                return faces, index
        return [], -1

    def _run_step(self, step: DetectorStep, gray: np.ndarray) -> list[Face]:
        image = enhance(gray, step.enhance)
        height, width = gray.shape
        faces: list[Face] = []
        if step.detector == "hog":
            rects, scores, _ = self._detector("hog").run(
                image, step.upsample, step.adjust_threshold
            )
            found = list(zip(rects, scores, strict=True))
        else:
            found = [(d.rect, d.confidence) for d in self._detector("cnn")(image, step.upsample)]
        for rect, score in found:
            left, top = max(int(rect.left()), 0), max(int(rect.top()), 0)
            right, bottom = min(int(rect.right()) + 1, width), min(int(rect.bottom()) + 1, height)
            if right - left >= 4 and bottom - top >= 4:
                faces.append(Face(left, top, right, bottom, float(score), step.detector))
        return faces

    def crop(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        """Gray ``size×size`` crop of one face, aligned on the eyes when configured."""
        cfg = self.config
        gray = to_gray(rgb)
        if cfg.align:
            import dlib

            rect = dlib.rectangle(face.left, face.top, face.right - 1, face.bottom - 1)
            shape = self._shape_predictor()(gray, rect)
            face.landmarks = [(p.x, p.y) for p in shape.parts()]
            chip = dlib.get_face_chip(gray, shape, size=cfg.size, padding=cfg.margin)
            return np.ascontiguousarray(chip, dtype=np.uint8)
        return square_crop(gray, face.box(), cfg.margin, cfg.size)


def enhance(gray: np.ndarray, method: str) -> np.ndarray:
    """Contrast enhancement used for *detection only* (dark movie frames hide faces from HOG)."""
    if method == "none":
        return gray
    if method == "clahe":
        return cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8)).apply(gray)
    raise ValueError(f"enhance {method!r} is not one of {ENHANCEMENTS}")


def drop_nested(faces: list[Face], max_overlap: float) -> list[Face]:
    """Drop every face whose box overlaps a bigger kept box by more than ``max_overlap`` of its
    own area, biggest first: one person, one candidate."""
    kept: list[Face] = []
    for face in sorted(faces, key=lambda f: f.width * f.height, reverse=True):
        area = face.width * face.height
        if all(_intersection(face, other) <= max_overlap * area for other in kept):
            kept.append(face)
    return kept


def _intersection(a: Face, b: Face) -> int:
    width = min(a.right, b.right) - max(a.left, b.left)
    height = min(a.bottom, b.bottom) - max(a.top, b.top)
    return max(width, 0) * max(height, 0)


def choose_principal(faces: list[Face], shape: tuple[int, ...], config: FaceConfig) -> int:
    """Index of the face the frame is about: big, central and confidently detected.

    Each term is in 0..1: area relative to the largest candidate, 1 minus the distance of the box
    centre from the image centre over the half-diagonal, and the rank of the detector score.
    """
    if not faces:
        raise ValueError("no faces to choose from")
    height, width = shape[:2]
    half_diag = float(np.hypot(width, height)) / 2
    areas = np.array([f.width * f.height for f in faces], dtype=np.float64)
    area_term = areas / areas.max()
    centres = np.array([((f.left + f.right) / 2, (f.top + f.bottom) / 2) for f in faces])
    distance = np.hypot(centres[:, 0] - width / 2, centres[:, 1] - height / 2)
    centre_term = 1.0 - np.clip(distance / half_diag, 0, 1)
    order = np.argsort(np.argsort([f.score for f in faces]))
    score_term = order / max(len(faces) - 1, 1) if len(faces) > 1 else np.ones(1)
    total = (
        config.principal_area * area_term
        + config.principal_centrality * centre_term
        + config.principal_score * score_term
    )
    return int(np.argmax(total))


def square_crop(gray: np.ndarray, box: list[int], margin: float, size: int) -> np.ndarray:
    """Square crop around ``box`` grown by ``margin`` per side, edge-padded, resized to ``size``."""
    left, top, right, bottom = box
    side = max(right - left, bottom - top) * (1 + 2 * margin)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    x1, y1 = x0 + round(side), y0 + round(side)
    height, width = gray.shape
    pad = max(0, -x0, -y0, x1 - width, y1 - height)
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    patch = gray[y0:y1, x0:x1]
    interp = cv2.INTER_AREA if patch.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(patch, (size, size), interpolation=interp)


def centre_crop(gray: np.ndarray, size: int) -> np.ndarray:
    """Largest centred square of the whole frame, resized: the no-face fallback."""
    height, width = gray.shape
    side = min(height, width)
    y0, x0 = (height - side) // 2, (width - side) // 2
    return cv2.resize(gray[y0 : y0 + side, x0 : x0 + side], (size, size), cv2.INTER_AREA)
