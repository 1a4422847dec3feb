"""Face detection, principal-face choice, alignment and cropping (numpy + OpenCV + dlib).

One module for the ``prepare`` and ``fer2013`` stages and the service, so training and serving see
faces the same way. Detection runs a *cascade*: each step is a detector (``yunet``, OpenCV's ONNX
face detector with 5 landmarks, or dlib's ``hog`` / ``cnn``) with its own upsampling and contrast
enhancement, and the first step that finds any face wins. Every candidate is returned;
:func:`choose_principal` picks the face the frame is about.

**The framing contract.** Whatever reaches the network — a face found in a frame, a FER2013 face,
a user's ``crop=true`` crop of any tightness — becomes a face *chip* the same way: 5 landmarks
(eyes, nose tip, mouth corners; YuNet's, or YuNet run inside the given crop) are mapped by a
least-squares similarity transform onto :data:`TEMPLATE`, the median FER2013 landmark layout.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ferops.digests import file_digest
from ferops.images import to_gray
from ferops.sections import SectionConfig

log = logging.getLogger(__name__)

DETECTORS = ("yunet", "hog", "cnn")
ENHANCEMENTS = ("none", "clahe")

#: The file of OpenCV-zoo's YuNet detector in the ``zoo`` data (and its name in a serving bundle)
#: and its sha256 (``data/raw/zoo/LICENSES.md``), checked before the file is used.
YUNET_FILE = "face_detection_yunet_2023mar.onnx"
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"

#: Where the 5 landmarks land in a face chip, as fractions of its side (margin 0), in YuNet's
#: order: the eye on the image's left, the other eye, nose tip, mouth corner on the image's left,
#: the other corner. Measured: YuNet on every 4th FER2013 public-test face (834 of 898 found),
#: median position, mirrored to be left-right symmetric, so a FER2013 face is almost unchanged by
#: alignment and a flipped chip is a chip.
TEMPLATE = np.array(
    [[0.309, 0.391], [0.691, 0.391], [0.500, 0.585], [0.342, 0.746], [0.658, 0.746]], np.float64
)

#: A given crop is searched for landmarks after padding each side by this share of its long side
#: (a tight crop cuts the face edge YuNet needs) and scaling its long side to
#: :data:`CROP_SEARCH_SIDE`.
CROP_PAD = 0.25
CROP_SEARCH_SIDE = 160
#: Longest side YuNet's input is upsampled to by a cascade step's ``upsample``.
MAX_YUNET_SIDE = 1600
#: Crops thinner than this aspect ratio (long side / short side) hold no face: refused unsearched.
MAX_CROP_ASPECT = 4.0


@dataclass(frozen=True)
class DetectorStep:
    """One step of the detection cascade (``upsample``: dlib's pyramid steps, or YuNet's input
    scaled by 2**upsample)."""

    detector: str = "yunet"
    upsample: int = 0
    enhance: str = "none"
    #: HOG only: added to dlib's decision threshold (negative finds more, weaker faces).
    adjust_threshold: float = 0.0
    #: YuNet only: the lowest face score kept.
    score_threshold: float = 0.6

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"detector {self.detector!r} is not one of {DETECTORS}")
        if self.enhance not in ENHANCEMENTS:
            raise ValueError(f"enhance {self.enhance!r} is not one of {ENHANCEMENTS}")
        if not 0 <= self.upsample <= 3:
            raise ValueError(f"upsample must be 0..3, got {self.upsample}")
        if not 0 < self.score_threshold < 1:
            raise ValueError(f"score_threshold must lie in (0, 1), got {self.score_threshold}")


@dataclass(frozen=True)
class FaceConfig(SectionConfig):
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
    #: Align the 5 landmarks onto :data:`TEMPLATE` (else: a square crop of the box).
    align: bool = True
    #: Context around the face: with ``align``, added to the template framing (fraction of its
    #: side, each side); without, around the detector's box.
    margin: float = 0.0
    size: int = 64
    #: Lowest YuNet score that counts as a face inside a given crop (``crop=true``, FER2013).
    crop_score_threshold: float = 0.3
    #: At most this many faces per image are kept (the largest), so one image bounds its work.
    max_faces: int = 16

    def __post_init__(self) -> None:
        if not self.cascade:
            raise ValueError("the detection cascade needs at least one step")
        if self.size < 8:
            raise ValueError(f"crop size must be >= 8, got {self.size}")
        if not 0 <= self.margin <= 2:
            raise ValueError(f"margin must be within 0..2, got {self.margin}")
        if not 0 < self.crop_score_threshold < 1 or self.max_faces < 1:
            raise ValueError("crop_score_threshold must lie in (0, 1) and max_faces be >= 1")

    @classmethod
    def convert(cls, values: dict[str, Any]) -> dict[str, Any]:
        """The cascade as a list of mappings → its steps (one default step when absent)."""
        return {**values, "cascade": tuple(DetectorStep(**s) for s in values.get("cascade", [{}]))}

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, the inverse of :meth:`from_section`."""
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
    #: 5 landmarks (x, y) in the same coordinates as the box, in :data:`TEMPLATE`'s order.
    landmarks: list[tuple[float, float]] = field(default_factory=list, repr=False)

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


def verify_sha256(path: Path, expected: str) -> None:
    """Raise if the file's sha256 is not ``expected`` (a model file swapped or damaged)."""
    digest = file_digest(Path(path))
    if digest != expected:
        raise RuntimeError(f"{path} has sha256 {digest}, expected {expected}")


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
    """Runs the detection cascade and makes face chips. Models load lazily, once per instance.

    ``yunet`` is the YuNet ONNX file (:data:`YUNET_FILE`): needed by ``yunet`` steps, by
    alignment and by :meth:`chip_from_crop`. One instance is not thread-safe (YuNet keeps its
    input size between calls); use one per thread or a lock.
    """

    def __init__(self, config: FaceConfig, yunet: Path | None = None) -> None:
        self.config = config
        self.yunet_path = Path(yunet) if yunet is not None else None
        self._hog = None
        self._cnn = None
        self._yunet = None

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

    def _run_yunet(self, gray: np.ndarray, threshold: float) -> np.ndarray:
        """YuNet rows (x, y, w, h, 10 landmark coordinates, score) of a gray image."""
        if self._yunet is None:
            if self.yunet_path is None or not self.yunet_path.is_file():
                raise RuntimeError(f"YuNet model {self.yunet_path} is missing ({YUNET_FILE})")
            verify_sha256(self.yunet_path, YUNET_SHA256)
            self._yunet = cv2.FaceDetectorYN.create(
                str(self.yunet_path), "", (320, 320), threshold, 0.3, 5000
            )
        height, width = gray.shape
        self._yunet.setInputSize((width, height))
        self._yunet.setScoreThreshold(threshold)
        _, rows = self._yunet.detect(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
        return np.zeros((0, 15), np.float32) if rows is None else rows

    def detect(self, rgb: np.ndarray) -> tuple[list[Face], int]:
        """Run the cascade on an RGB uint8 image.

        Returns the faces of the first step that found any (at most ``max_faces``, the largest;
        the principal one flagged) and the index of that step (``-1`` when no step found a face).
        """
        gray = to_gray(rgb)
        for index, step in enumerate(self.config.cascade):
            faces = drop_nested(self._run_step(step, gray), self.config.max_overlap)
            faces = faces[: self.config.max_faces]  # drop_nested sorts biggest first
            if faces:
                principal = choose_principal(faces, gray.shape, self.config)
                faces[principal].principal = True
                return faces, index
        return [], -1

    def _run_step(self, step: DetectorStep, gray: np.ndarray) -> list[Face]:
        image = enhance(gray, step.enhance)
        height, width = gray.shape
        if step.detector == "yunet":
            # upsampling finds small faces in small frames; a large image is not blown up past
            # MAX_YUNET_SIDE (a 1600 px upload at 2x would cost ~1 s for nothing new)
            scale = min(2**step.upsample, max(1.0, MAX_YUNET_SIDE / max(height, width)))
            if step.upsample and scale <= 1.25:
                return []  # the same search as an earlier step at (nearly) the same scale
            if scale != 1:
                image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
            found = [
                (row[:4] / scale, float(row[14]), row[4:14].reshape(5, 2) / scale)
                for row in self._run_yunet(image, step.score_threshold)
            ]
            boxes = [((x, y, x + w, y + h), score, lm) for (x, y, w, h), score, lm in found]
        elif step.detector == "hog":
            rects, scores, _ = self._detector("hog").run(
                image, step.upsample, step.adjust_threshold
            )
            boxes = [
                ((r.left(), r.top(), r.right() + 1, r.bottom() + 1), float(s), None)
                for r, s in zip(rects, scores, strict=True)
            ]
        else:
            boxes = [
                (
                    (d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1),
                    float(d.confidence),
                    None,
                )
                for d in self._detector("cnn")(image, step.upsample)
            ]
        faces: list[Face] = []
        for (x0, y0, x1, y1), score, landmarks in boxes:
            left, top = max(round(float(x0)), 0), max(round(float(y0)), 0)
            right, bottom = min(round(float(x1)), width), min(round(float(y1)), height)
            if right - left >= 4 and bottom - top >= 4:
                face = Face(left, top, right, bottom, score, step.detector)
                if landmarks is not None:
                    face.landmarks = [(float(x), float(y)) for x, y in landmarks]
                faces.append(face)
        return faces

    def crop_landmarks(self, gray: np.ndarray) -> np.ndarray | None:
        """The 5 landmarks (5×2, pixels of ``gray``) of the most confident face inside a crop that
        is meant to hold one face, or ``None`` when there is none (or the crop is too thin)."""
        height, width = gray.shape
        if min(height, width) < 8 or max(height, width) > MAX_CROP_ASPECT * min(height, width):
            return None
        pad = max(1, round(CROP_PAD * max(height, width)))
        padded = cv2.copyMakeBorder(
            gray, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=int(np.median(gray))
        )
        scale = CROP_SEARCH_SIDE / max(height, width)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        search = cv2.resize(padded, None, fx=scale, fy=scale, interpolation=interp)
        rows = self._run_yunet(search, self.config.crop_score_threshold)
        if not len(rows):
            return None
        best = rows[int(np.argmax(rows[:, 14]))]
        return best[4:14].reshape(5, 2).astype(np.float64) / scale - pad

    def chip_from_crop(self, gray: np.ndarray) -> np.ndarray | None:
        """A given face crop (any tightness) → the face chip, or ``None`` when no face is in it."""
        landmarks = self.crop_landmarks(gray)
        return None if landmarks is None else align_face(gray, landmarks, self.config)

    def crop(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        """Gray ``size×size`` chip of one detected face (aligned when configured).

        A face without landmarks (dlib's detectors) gets them from YuNet inside its box grown by
        half; where YuNet finds none there, from the box itself (:data:`TEMPLATE` fitted into it).
        """
        cfg = self.config
        gray = to_gray(rgb)
        if not cfg.align:
            return square_crop(gray, face.box(), cfg.margin, cfg.size)
        if not face.landmarks:
            face.landmarks = [tuple(p) for p in self._landmarks_in_box(gray, face)]
        return align_face(gray, np.asarray(face.landmarks, np.float64), cfg)

    def _landmarks_in_box(self, gray: np.ndarray, face: Face) -> np.ndarray:
        grow = max(face.width, face.height) // 2
        height, width = gray.shape
        x0, y0 = max(face.left - grow, 0), max(face.top - grow, 0)
        x1, y1 = min(face.right + grow, width), min(face.bottom + grow, height)
        found = self.crop_landmarks(gray[y0:y1, x0:x1])
        if found is not None:
            return found + (x0, y0)
        return TEMPLATE * (face.width, face.height) + (face.left, face.top)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2×3 least-squares similarity (rotation, uniform scale, shift) taking ``src`` points onto
    ``dst`` points (Umeyama 1991, no reflection)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    var = (s**2).sum() / len(src)
    scale = (sig * sign).sum() / var if var > 0 else 1.0
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = mu_d - scale * rot @ mu_s
    return matrix


def template_points(size: int, margin: float) -> np.ndarray:
    """:data:`TEMPLATE` in pixels of a ``size`` chip with ``margin`` extra context per side."""
    return ((TEMPLATE - 0.5) / (1 + 2 * margin) + 0.5) * size


def align_face(gray: np.ndarray, landmarks: np.ndarray, config: FaceConfig) -> np.ndarray:
    """The ``size×size`` gray chip whose landmarks sit on the template (edges replicated).

    A face much larger than the chip is shrunk with area averaging first, so the warp does not
    alias."""
    matrix = similarity(landmarks, template_points(config.size, config.margin))
    scale = float(np.hypot(*matrix[:, 0]))
    if scale < 0.5:
        shrink = 2 * scale
        gray = cv2.resize(gray, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
        matrix = similarity(
            np.asarray(landmarks) * shrink, template_points(config.size, config.margin)
        )
    chip = cv2.warpAffine(
        gray,
        matrix,
        (config.size, config.size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return np.ascontiguousarray(chip, dtype=np.uint8)


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
    """Square crop around ``box`` grown by ``margin`` per side, edge-padded, resized to
    ``size``."""
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
