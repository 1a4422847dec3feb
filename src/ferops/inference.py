"""The serving core: a verified bundle → ONNX Runtime session → faces, expressions, explanations.

numpy + onnxruntime + dlib (through :mod:`ferops.faces`) only — no torch, no sklearn, no mlflow.
The same code scores the exported model in the ``export`` stage and answers the service.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ferops.digests import file_digest
from ferops.explanation import RULES_FILE, Explainer, softmax
from ferops.faces import (
    MAX_CROP_ASPECT,
    YUNET_FILE,
    Face,
    FaceConfig,
    FaceDetector,
    align_face,
    similarity,
    template_points,
)
from ferops.images import ImageDecodeError, decode_image, to_gray
from ferops.occlusion import attach, maps_from_logits, masked_batch

log = logging.getLogger(__name__)

#: The classifier files a bundle may carry, by precision. Every bundle carries the fp32 network;
#: the manifest's ``precision`` (default fp32) names the one that serves.
MODEL_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
BUNDLE_FILES = (MODEL_FILES["fp32"], "labels.json", "preprocess.json", RULES_FILE, YUNET_FILE)
PROVIDERS = ("auto", "cpu", "cuda")


#: Smallest side (pixels) on which face detection is attempted.
MIN_DETECT_SIDE = 16


class BundleError(RuntimeError):
    """A serving bundle that is incomplete or does not match its manifest."""


@dataclass(frozen=True)
class UploadLimits:
    """Bounds checked on image bytes before any pixel work (every front end uses the same)."""

    max_upload_bytes: int = 16 * 1024 * 1024
    max_pixels: int = 25_000_000  # decompression bombs never decode
    #: Long side / short side of a whole image (a 32:9 panorama is 3.6); crops: MAX_CROP_ASPECT.
    max_aspect: float = 8.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> UploadLimits:
        """``FEROPS_MAX_UPLOAD_BYTES``, ``FEROPS_MAX_PIXELS``, ``FEROPS_MAX_ASPECT`` (defaults
        above); read when a front end starts, never at import."""
        env = os.environ if environ is None else environ
        limits = cls(
            max_upload_bytes=int(env.get("FEROPS_MAX_UPLOAD_BYTES", cls.max_upload_bytes)),
            max_pixels=int(env.get("FEROPS_MAX_PIXELS", cls.max_pixels)),
            max_aspect=float(env.get("FEROPS_MAX_ASPECT", cls.max_aspect)),
        )
        if min(limits.max_upload_bytes, limits.max_pixels) <= 0 or limits.max_aspect < 1:
            raise ValueError(f"upload limits must be positive (aspect >= 1), got {limits}")
        return limits


class UploadRefused(ValueError):
    """Bytes that are not a usable image. ``reason`` is the code every front end answers with
    (the service maps it to an HTTP status in :mod:`ferops.api`): ``too_large`` or one of
    :class:`~ferops.images.ImageDecodeError`'s reasons."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass
class Located:
    """What :meth:`Predictor.locate_upload` found: face records, their gray chips, ``reason``
    (``no_face`` / ``image_too_small`` when there are none, else ``None``) and the image's
    (width, height)."""

    faces: list[dict]
    crops: list[np.ndarray]
    reason: str | None
    size: tuple[int, int]


def verify_bundle(folder: Path) -> dict[str, Any]:
    """Check every file the manifest lists is there with its sha256; return the manifest."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{folder}/manifest.json is missing or unreadable: {exc}") from exc
    missing = [name for name in BUNDLE_FILES if name not in manifest.get("files", {})]
    if missing:
        raise BundleError(f"manifest of {folder} does not list {missing}")
    for name, expected in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise BundleError(f"bundle file {path} is missing")
        if file_digest(path) != expected:
            raise BundleError(f"bundle file {path} does not match its sha256 in the manifest")
    return manifest


def serving_precision(manifest: dict[str, Any], requested: str | None = None) -> str:
    """The precision to serve: ``requested`` if given, else the manifest's (fp32 for bundles
    written before int8 existed); raises if the bundle does not carry that model."""
    precision = requested or manifest.get("precision", "fp32")
    if precision not in MODEL_FILES:
        raise ValueError(f"precision {precision!r} is not one of {sorted(MODEL_FILES)}")
    if MODEL_FILES[precision] not in manifest.get("files", {}):
        raise BundleError(f"the bundle carries no {precision} model ({MODEL_FILES[precision]})")
    return precision


def cuda_device_count() -> int:
    """GPUs the CUDA driver sees (0 without a driver): onnxruntime-gpu *lists* the CUDA provider
    even on machines without one, so this asks the driver itself."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if libcuda.cuInit(0) != 0 or libcuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def choose_providers(requested: str = "auto") -> list[str]:
    """ORT providers for ``auto`` (CUDA when a GPU and the CUDA provider exist), ``cpu``,
    ``cuda``."""
    import onnxruntime as ort

    if requested not in PROVIDERS:
        raise ValueError(f"providers {requested!r} is not one of {PROVIDERS}")
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers() and cuda_device_count() > 0
    if requested == "cuda" and not has_cuda:
        raise RuntimeError("CUDA was asked for but no GPU / CUDA provider is usable here")
    if requested != "cpu" and has_cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def make_session(model: Path, requested: str = "auto"):
    """An ONNX Runtime session on the providers that really work here; logs the active ones."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(model), sess_options=options, providers=choose_providers(requested)
    )
    log.info("onnxruntime session on %s", session.get_providers())
    return session


@dataclass(frozen=True)
class Preprocess:
    """How a gray face crop becomes the network's input (saved as ``preprocess.json``)."""

    input_size: int
    resize: int
    mean: float
    std: float

    def resized(self, height: int, width: int) -> tuple[int, int]:
        """(width, height) of a ``height × width`` crop once its short side is ``resize``."""
        scale = self.resize / min(height, width)
        if scale == 1:
            return width, height
        return max(self.resize, round(width * scale)), max(self.resize, round(height * scale))

    def window(self, height: int, width: int) -> tuple[int, int]:
        """Top-left (x0, y0) of the centre ``input_size`` square in the resized crop."""
        new_width, new_height = self.resized(height, width)
        return (new_width - self.input_size) // 2, (new_height - self.input_size) // 2

    def __call__(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Gray uint8 crops (any size) → N×1×S×S float32: short side to ``resize``, centre
        ``input_size`` square, ``(x − mean) / std`` — the training stage's evaluation path."""
        out = np.empty((len(crops), 1, self.input_size, self.input_size), dtype=np.float32)
        for i, crop in enumerate(crops):
            height, width = crop.shape[:2]
            size = self.resized(height, width)
            if size != (width, height):
                interp = cv2.INTER_AREA if self.resize < min(height, width) else cv2.INTER_LINEAR
                crop = cv2.resize(crop, size, interpolation=interp)
            x0, y0 = self.window(height, width)
            window = crop[y0 : y0 + self.input_size, x0 : x0 + self.input_size]
            out[i, 0] = (window.astype(np.float32) - self.mean) / self.std
        return out

    def input_corners(
        self, landmarks: np.ndarray, faces: FaceConfig, scale: float = 1.0
    ) -> list[list[float]]:
        """Where the network's input lies in the image: the corners (top-left, top-right,
        bottom-right, bottom-left; pixel edges, in the coordinates of the image the face was
        found on divided by ``scale``) of the ``input_size`` square this object cuts from the
        aligned chip (``faces.size`` pixels a side) of a face with these 5 ``landmarks``
        (:func:`ferops.faces.align_face`'s similarity transform, inverted). A tilted head gives a
        tilted square; an occlusion map's cells are drawn in it."""
        chip = faces.size
        x0, y0 = self.window(chip, chip)
        new_width, new_height = self.resized(chip, chip)
        sx, sy = chip / new_width, chip / new_height  # resized pixels → chip pixels
        edges = np.array(
            [
                [x0, y0],
                [x0 + self.input_size, y0],
                [x0 + self.input_size, y0 + self.input_size],
                [x0, y0 + self.input_size],
            ],
            np.float64,
        ) * (sx, sy)
        matrix = similarity(landmarks, template_points(faces.size, faces.margin))
        # warpAffine maps pixel centres (integer coordinates): edges are centres − 0.5
        image = np.linalg.solve(matrix[:, :2], (edges - 0.5 - matrix[:, 2]).T).T + 0.5
        return np.round(image / scale, 1).tolist()


#: Images larger than this (longest side, pixels) are shrunk before detection: a 24 MP photo
#: costs dlib seconds and finds nothing a 1600 px copy would miss at the crop sizes we use.
DEFAULT_MAX_SIDE = 1600


def fit_within(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """``rgb`` shrunk so its longest side is at most ``max_side``; returns (image, scale)."""
    height, width = rgb.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale == 1.0:
        return rgb, 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), scale


def face_record(face: Face, scale: float = 1.0) -> dict[str, Any]:
    """JSON form of a detected face, its box in the coordinates of the original image."""
    record = face.to_dict()
    if scale != 1.0:
        record["box"] = [round(v / scale) for v in face.box()]
    return record


class Predictor:
    """Everything the service needs, loaded from one verified bundle folder.

    The steps are separate so a server can run them in different processes: :meth:`locate`
    (decode-side: detect + crop), :attr:`preprocess`, :meth:`run` (the ONNX network; skipped with
    ``load_model=False``) and :meth:`describe` (probabilities, explanation). :meth:`analyse`
    chains them. ``cascade_steps`` > 0 keeps only the first steps of the bundle's detection
    cascade (a server's latency budget); 0 keeps all.
    """

    def __init__(
        self,
        bundle: Path,
        providers: str = "auto",
        load_model: bool = True,
        max_side: int = DEFAULT_MAX_SIDE,
        cascade_steps: int = 0,
        precision: str | None = None,
    ) -> None:
        bundle = Path(bundle)
        self.manifest = verify_bundle(bundle)
        self.labels: list[str] = json.loads((bundle / "labels.json").read_text())
        spec = json.loads((bundle / "preprocess.json").read_text())
        self.preprocess = Preprocess(spec["input_size"], spec["resize"], spec["mean"], spec["std"])
        self.face_config = FaceConfig.from_section(spec["faces"])
        if cascade_steps < 0:
            raise ValueError(f"cascade_steps must be >= 0 (0 = all), got {cascade_steps}")
        if (
            cascade_steps
        ):  # serving may stop the cascade early: its last steps cost seconds a frame
            cascade = self.face_config.cascade[:cascade_steps]
            self.face_config = replace(self.face_config, cascade=cascade)
        self.detector = FaceDetector(self.face_config, bundle / YUNET_FILE)
        # crop=true crops get their own detector: a server may run them beside frames, in
        # another thread (a detector is used by one thread at a time)
        self.crop_detector = FaceDetector(self.face_config, bundle / YUNET_FILE)
        self.explainer = Explainer.load(bundle / RULES_FILE)
        self.max_side = max_side
        self.precision = serving_precision(self.manifest, precision)
        model = bundle / MODEL_FILES[self.precision]
        self.session = make_session(model, providers) if load_model else None

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers()) if self.session is not None else []

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits N×7, features N×512) for a preprocessed N×1×S×S float32 batch."""
        if self.session is None:
            raise RuntimeError("this Predictor was loaded without its model (load_model=False)")
        if not len(batch):
            return np.zeros((0, len(self.labels)), np.float32), np.zeros((0, 512), np.float32)
        logits, features = self.session.run(["logits", "features"], {"input": batch})
        return logits, features

    def classify(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(logits N×7, features N×512) for gray face crops."""
        return self.run(self.preprocess(crops))

    def detect(self, rgb: np.ndarray) -> tuple[list[Face], np.ndarray, float]:
        """Faces of an RGB image (shrunk first when larger than ``max_side``); returns the faces,
        the image they were found on and its scale relative to ``rgb``."""
        work, scale = fit_within(rgb, self.max_side)
        faces, _ = self.detector.detect(work)
        return faces, work, scale

    def locate(
        self, rgb: np.ndarray, is_crop: bool = False
    ) -> tuple[list[dict], list[np.ndarray]]:
        """Face records and gray face chips of an RGB image. With ``is_crop`` the image is one
        face crop of any tightness: its landmarks are found inside it and it is aligned like
        every other face (a record with ``box`` ``None``); a crop with no face in it gives no
        chip. A crop is shrunk to ``max_side`` first, like a frame (its face is aligned to a
        64 px chip). A record's ``corners`` are where the network's input lies in ``rgb``
        (:meth:`Preprocess.input_corners`; not for frames when the bundle does not align)."""
        cfg = self.face_config
        if is_crop:
            height, width = rgb.shape[:2]
            if max(height, width) > MAX_CROP_ASPECT * min(height, width):
                return [], []  # a sliver holds no face: refused before any pixel work
            work, scale = fit_within(rgb, self.max_side)
            gray = to_gray(work)
            # = FaceDetector.chip_from_crop, keeping the landmarks for the corners
            landmarks = self.crop_detector.crop_landmarks(gray)
            if landmarks is None:
                return [], []
            corners = self.preprocess.input_corners(landmarks, cfg, scale)
            record = {"box": None, "score": None, "principal": True, "corners": corners}
            return [record], [align_face(gray, landmarks, cfg)]
        faces, work, scale = self.detect(rgb)
        crops = [self.detector.crop(work, face) for face in faces]  # sets missing landmarks
        records = [face_record(face, scale) for face in faces]
        if cfg.align:
            for record, face in zip(records, faces, strict=True):
                landmarks = np.asarray(face.landmarks, np.float64)
                record["corners"] = self.preprocess.input_corners(landmarks, cfg, scale)
        return records, crops

    def describe(
        self,
        faces: Sequence[dict],
        logits: np.ndarray,
        features: np.ndarray,
        explain: bool = False,
    ) -> list[dict[str, Any]]:
        """Per face: expression, the probabilities, box / score / principal flag, and with
        ``explain`` the four-part explanation."""
        results = []
        for face, logit, feats in zip(faces, logits, features, strict=True):
            probs = softmax(logit)
            item: dict[str, Any] = {
                "expression": self.labels[int(np.argmax(probs))],
                "probabilities": {
                    c: round(float(p), 6) for c, p in zip(self.labels, probs, strict=True)
                },
            }
            item.update(box=face["box"], score=face["score"], principal=face["principal"])
            if explain:
                item["explanation"] = self.explainer.explain(feats, logit)
            results.append(item)
        return results

    # -- the one request path: bytes + crop flag → records (service, MLflow pyfunc, analyse) --

    def decode_upload(
        self, data: bytes, is_crop: bool = False, limits: UploadLimits = UploadLimits()
    ) -> np.ndarray:
        """Upload bytes → RGB, bounded before decoding (bytes, then pixels and aspect read from
        the header; a crop's aspect at most :data:`~ferops.faces.MAX_CROP_ASPECT`); raises
        :class:`UploadRefused`."""
        if len(data) > limits.max_upload_bytes:
            raise UploadRefused(
                "too_large", f"{len(data)} bytes exceeds {limits.max_upload_bytes}"
            )
        aspect = MAX_CROP_ASPECT if is_crop else limits.max_aspect
        try:
            return decode_image(data, max_pixels=limits.max_pixels, max_aspect=aspect)
        except ImageDecodeError as exc:
            raise UploadRefused(exc.reason, exc.detail) from exc

    def locate_decoded(self, rgb: np.ndarray, is_crop: bool = False) -> Located:
        """Faces of a decoded image; an image under :data:`MIN_DETECT_SIDE` pixels is not
        searched (``image_too_small``; a crop that small: ``no_face``)."""
        height, width = rgb.shape[:2]
        if min(height, width) < MIN_DETECT_SIDE:
            return Located([], [], "no_face" if is_crop else "image_too_small", (width, height))
        faces, crops = self.locate(rgb, is_crop)
        return Located(faces, crops, None if faces else "no_face", (width, height))

    def locate_upload(
        self, data: bytes, is_crop: bool = False, limits: UploadLimits = UploadLimits()
    ) -> Located:
        """:meth:`decode_upload` then :meth:`locate_decoded`: the CPU half of a request."""
        return self.locate_decoded(self.decode_upload(data, is_crop, limits), is_crop)

    def network_input(self, crops: Sequence[np.ndarray], explain: bool = False) -> np.ndarray:
        """The batch for the network: the preprocessed chips, and with ``explain`` their
        :data:`~ferops.occlusion.GRID`² masked copies after them (where the network looked)."""
        batch = self.preprocess(crops)
        return np.concatenate([batch, masked_batch(batch)]) if explain and len(crops) else batch

    def records(
        self, located: Located, logits: np.ndarray, features: np.ndarray, explain: bool = False
    ) -> list[dict[str, Any]]:
        """Per face the answer record, from the network's outputs on :meth:`network_input`
        (with ``explain``: the explanation and its occlusion map)."""
        n = len(located.crops)
        out = self.describe(located.faces, logits[:n], features[:n], explain)
        if explain and n:
            attach(out, maps_from_logits(logits[:n], logits[n:]), located.faces)
        return out

    def answer(
        self,
        data: bytes,
        is_crop: bool = False,
        explain: bool = False,
        limits: UploadLimits = UploadLimits(),
    ) -> dict[str, Any]:
        """Image bytes → ``{"faces": records, "reason": …}``, what ``/predict`` (``/explain``
        with ``explain``) answers; raises :class:`UploadRefused` for bytes that are no usable
        image. The service runs the same steps split across its lanes and classifier."""
        located = self.locate_upload(data, is_crop, limits)
        faces: list[dict[str, Any]] = []
        if located.crops:
            logits, features = self.run(self.network_input(located.crops, explain))
            faces = self.records(located, logits, features, explain)
        return {"faces": faces, "reason": located.reason}

    def analyse(
        self, rgb: np.ndarray, explain: bool = False, is_crop: bool = False
    ) -> list[dict[str, Any]]:
        """Detect → crop → classify (→ explain) every face of an RGB image; with ``is_crop`` the
        whole image is taken as one face crop."""
        faces, crops = self.locate(rgb, is_crop)
        logits, features = self.classify(crops)
        return self.describe(faces, logits, features, explain)
