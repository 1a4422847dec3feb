"""The serving core: a verified bundle → ONNX Runtime session → faces, expressions, explanations.

numpy + onnxruntime + dlib (through :mod:`ferops.faces`) only — no torch, no sklearn, no mlflow.
The same code scores the exported model in the ``export`` stage and answers the service.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ferops.explanation import Explainer, softmax
from ferops.faces import MAX_CROP_ASPECT, YUNET_FILE, Face, FaceConfig, FaceDetector
from ferops.images import to_gray

log = logging.getLogger(__name__)

#: The classifier files a bundle may carry, by precision. Every bundle carries the fp32 network;
#: the manifest's ``precision`` (default fp32) names the one that serves.
MODEL_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
BUNDLE_FILES = (MODEL_FILES["fp32"], "labels.json", "preprocess.json", "rules.json", YUNET_FILE)
PROVIDERS = ("auto", "cpu", "cuda")


class BundleError(RuntimeError):
    """A serving bundle that is incomplete or does not match its manifest."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
        if sha256(path) != expected:
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
    """ORT providers for ``auto`` (CUDA when a GPU and the CUDA provider exist), ``cpu``, ``cuda``."""
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
    session = ort.InferenceSession(str(model), sess_options=options,
                                   providers=choose_providers(requested))  # fmt: skip
    log.info("onnxruntime session on %s", session.get_providers())
    return session


@dataclass(frozen=True)
class Preprocess:
    """How a gray face crop becomes the network's input (saved as ``preprocess.json``)."""

    input_size: int
    resize: int
    mean: float
    std: float

    def __call__(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Gray uint8 crops (any size) → N×1×S×S float32: short side to ``resize``, centre
        ``input_size`` square, ``(x − mean) / std`` — the training stage's evaluation path."""
        out = np.empty((len(crops), 1, self.input_size, self.input_size), dtype=np.float32)
        for i, crop in enumerate(crops):
            height, width = crop.shape[:2]
            scale = self.resize / min(height, width)
            if scale != 1:
                size = (max(self.resize, round(width * scale)), max(self.resize, round(height * scale)))
                interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
                crop = cv2.resize(crop, size, interpolation=interp)
            height, width = crop.shape[:2]
            y0, x0 = (height - self.input_size) // 2, (width - self.input_size) // 2
            window = crop[y0 : y0 + self.input_size, x0 : x0 + self.input_size]
            out[i, 0] = (window.astype(np.float32) - self.mean) / self.std
        return out


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

    def __init__(self, bundle: Path, providers: str = "auto", load_model: bool = True,
                 max_side: int = DEFAULT_MAX_SIDE, cascade_steps: int = 0,
                 precision: str | None = None) -> None:  # fmt: skip
        bundle = Path(bundle)
        self.manifest = verify_bundle(bundle)
        self.labels: list[str] = json.loads((bundle / "labels.json").read_text())
        spec = json.loads((bundle / "preprocess.json").read_text())
        self.preprocess = Preprocess(spec["input_size"], spec["resize"], spec["mean"], spec["std"])
        self.face_config = FaceConfig.from_dict(spec["faces"])
        if cascade_steps < 0:
            raise ValueError(f"cascade_steps must be >= 0 (0 = all), got {cascade_steps}")
        if cascade_steps:  # serving may stop the cascade early: its last steps cost seconds a frame
            cascade = self.face_config.cascade[:cascade_steps]
            self.face_config = replace(self.face_config, cascade=cascade)
        self.detector = FaceDetector(self.face_config, bundle / YUNET_FILE)
        # crop=true crops get their own detector: a server may run them beside frames, in
        # another thread (a detector is used by one thread at a time)
        self.crop_detector = FaceDetector(self.face_config, bundle / YUNET_FILE)
        self.explainer = Explainer.load(bundle / "rules.json")
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

    def locate(self, rgb: np.ndarray, is_crop: bool = False) -> tuple[list[dict | None], list[np.ndarray]]:
        """Face records and gray face chips of an RGB image. With ``is_crop`` the image is one
        face crop of any tightness: its landmarks are found inside it and it is aligned like
        every other face (record ``None``); a crop with no face in it gives no chip. A crop
        is shrunk to ``max_side`` first, like a frame (its face is aligned to a 64 px chip)."""
        if is_crop:
            height, width = rgb.shape[:2]
            if max(height, width) > MAX_CROP_ASPECT * min(height, width):
                return [], []  # a sliver holds no face: refused before any pixel work
            work, _ = fit_within(rgb, self.max_side)
            chip = self.crop_detector.chip_from_crop(to_gray(work))
            return ([], []) if chip is None else ([None], [chip])
        faces, work, scale = self.detect(rgb)
        crops = [self.detector.crop(work, face) for face in faces]
        return [face_record(face, scale) for face in faces], crops

    def describe(self, faces: Sequence[dict | None], logits: np.ndarray, features: np.ndarray,
                 explain: bool = False) -> list[dict[str, Any]]:  # fmt: skip
        """Per face: expression, the probabilities, box / score / principal flag, and with
        ``explain`` the four-part explanation."""
        results = []
        for face, logit, feats in zip(faces, logits, features, strict=True):
            probs = softmax(logit)
            item: dict[str, Any] = {
                "expression": self.labels[int(np.argmax(probs))],
                "probabilities": {c: round(float(p), 6) for c, p in zip(self.labels, probs, strict=True)},
            }
            if face is not None:
                item.update(box=face["box"], score=face["score"], principal=face["principal"])
            else:
                item.update(box=None, score=None, principal=True)
            if explain:
                item["explanation"] = self.explainer.explain(feats, logit)
            results.append(item)
        return results

    def analyse(self, rgb: np.ndarray, explain: bool = False, is_crop: bool = False) -> list[dict[str, Any]]:
        """Detect → crop → classify (→ explain) every face of an RGB image; with ``is_crop`` the
        whole image is taken as one face crop."""
        faces, crops = self.locate(rgb, is_crop)
        logits, features = self.classify(crops)
        return self.describe(faces, logits, features, explain)
