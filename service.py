"""ferops BentoML service: where is the face, what expression, and why — over HTTP.

Two services, one bento:

* ``FerService`` (the API, ``/detect``, ``/predict``, ``/explain``): decodes uploads safely, runs
  the face cascade (YuNet), aligns and explains — CPU work;
* ``FerClassifier`` (internal): the ONNX network on ONNX Runtime (CUDA provider when a GPU is
  really there), with adaptive batching: crops of concurrent requests share one forward pass.

The model is ``ferops-resnet18:latest`` in the BentoML model store: the version that
``ferops-models import-bento`` last imported from the MLflow registry (the ``champion`` by
default; after ``ferops-models rollback N``, version N). Serving imports the inference core only
(``ferops.inference``, ``ferops.images``, ``ferops.api``), never training code; in a
built bento the package is the ferops wheel the bento installs (``bentofile.yaml``).

Run: ``bentoml serve`` (this folder) or ``bentoml serve ferops:latest`` (a built bento); the
web page is at ``/ui/``.
Settings (environment, read when a worker starts): ``FEROPS_PROVIDERS`` auto|cpu|cuda,
``FEROPS_PRECISION`` fp32|int8 (default: the bundle's ``export.precision``),
``FEROPS_BATCHING`` 1|0 (0: one forward pass per request), ``FEROPS_DETECT_STEPS`` (steps of
the bundle's detection cascade to use, 0 = all, the default), ``FEROPS_MAX_UPLOAD_BYTES``,
``FEROPS_MAX_PIXELS``, ``FEROPS_MAX_ASPECT``, ``FEROPS_MAX_QUEUE`` (requests per lane before
503 + ``Retry-After``), ``FEROPS_MAX_WAIT_S`` (see ``ferops.api.Limits``). Error answers
are documented in ``ferops.api``; the service's own metrics (answers per class, errors by
reason, lane depth, the model served) in ``ferops.api_metrics``, on ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import bentoml
import numpy as np

from ferops import MODEL_NAME
from ferops.api import (
    UI_ROUTE,
    DetectResponse,
    Door,
    Limits,
    PredictResponse,
    RequestError,
    RequestGuard,
    WorkLane,
    public_metadata,
    ui_app,
)
from ferops.api_metrics import ServiceMetrics
from ferops.faces import MAX_CROP_ASPECT
from ferops.inference import Located, Predictor, UploadRefused

log = logging.getLogger("ferops.service")

#: ``import-bento`` points ``latest`` at the version it imported (a rollback too).
MODEL = bentoml.models.BentoModel(f"{MODEL_NAME}:latest")
#: Adaptive batching of the classifier: at most this many faces per forward pass, and requests
#: are shed (503) only when the estimated wait exceeds the latency budget.
MAX_BATCH_SIZE = 32
MAX_LATENCY_MS = 10_000
#: Detection cascade steps used when serving (0 = all of the bundle's, as ``prepare`` ran them).
#: The shipped cascade is YuNet, then YuNet at 2× on a miss (~10 ms and ~40 ms a frame on 2 CPU
#: cores); a bundle trained on the paper's dlib cascade may cap its slow CNN steps with
#: ``FEROPS_DETECT_STEPS``.
DETECT_STEPS = 0
#: Admission before parsing (the request guard's), opened with the lanes when the worker starts.
DOOR = Door()


#: BentoML 1.4.40's client to a dependency replaces its connection pool every ``max_requests``
#: calls (default 100) or ``max_age`` seconds, closing requests still in flight on the old pool
#: ("Server disconnected" → 500s under concurrency, caught by tests/service/test_service.py):
#: recycle never. The classifier is local (a Unix socket), so nothing stale can pile up.
NEVER_RECYCLE = {"max_requests": 2**62, "max_age": 1e12}


@bentoml.service(
    name="ferops-classifier", workers=1, traffic={"timeout": 60}, runner_connection=NEVER_RECYCLE
)
class FerClassifier:
    """The ONNX network; input N×1×S×S float32 (the bundle's preprocessing), output N×(7+512):
    logits then features."""

    model = MODEL

    def __init__(self) -> None:
        logging.getLogger("ferops").setLevel(logging.INFO)  # BentoML's root logger is at WARNING
        self.predictor = Predictor(
            Path(self.model.path),
            os.environ.get("FEROPS_PROVIDERS", "auto"),
            precision=os.environ.get("FEROPS_PRECISION") or None,
        )
        log.info(
            "classifier %s (%s) on %s",
            self.model.tag,
            self.predictor.precision,
            self.predictor.providers,
        )

    @bentoml.api
    def providers(self) -> list[str]:
        """The ONNX Runtime providers really in use (first = where the network runs)."""
        return self.predictor.providers

    @bentoml.api
    def precision(self) -> str:
        """The network served: ``fp32`` or ``int8`` (the bundle's choice or
        ``FEROPS_PRECISION``)."""
        return self.predictor.precision

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        logits, features = self.predictor.run(np.ascontiguousarray(batch, dtype=np.float32))
        return np.concatenate([logits, features], axis=1)

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def classify(self, batch: np.ndarray) -> np.ndarray:
        """Adaptive batching path: faces of concurrent requests run together."""
        return self._forward(batch)

    @bentoml.api
    def classify_unbatched(self, batch: np.ndarray) -> np.ndarray:
        """One forward pass per request: a request alone in flight, or ``FEROPS_BATCHING=0``."""
        return self._forward(batch)


#: BentoML answers 429 past max_concurrency; below it the lanes decide (503 + Retry-After).
@bentoml.service(name="ferops", workers=1, traffic={"timeout": 120, "max_concurrency": 128})
class FerService:
    """Face detection, expression prediction and explanation for uploaded images."""

    model = MODEL
    classifier = bentoml.depends(FerClassifier)

    def __init__(self) -> None:
        logging.getLogger("ferops").setLevel(logging.INFO)
        steps = int(os.environ.get("FEROPS_DETECT_STEPS", DETECT_STEPS))
        self.predictor = Predictor(Path(self.model.path), load_model=False, cascade_steps=steps)
        self.limits = Limits.from_env()
        self.batching = os.environ.get("FEROPS_BATCHING", "1") != "0"
        self.tag = str(self.model.tag)
        # Decoding and detection run in two bounded lanes (one thread each, so each detector is
        # used by one thread): full frames, and crop=true crops, which never wait behind frames.
        self.lanes = {
            crop: WorkLane(
                "crops" if crop else "frames", self.limits.max_queue, self.limits.max_wait_s
            )
            for crop in (False, True)
        }
        self._in_flight = 0  # classifier calls of this worker now waiting (one event loop)
        self.metrics = ServiceMetrics(self.tag)
        DOOR.open(self.lanes, self.metrics)
        log.info("serving %s; batching %s; limits %s", self.tag, self.batching, self.limits)

    # -- plain methods shared by the endpoints (an API must not call another API) --

    def _locate(self, data: bytes, is_crop: bool) -> Located:
        """The inference core's upload → faces step (runs in a lane); its refusals as HTTP."""
        try:
            return self.predictor.locate_upload(data, is_crop, self.limits)
        except UploadRefused as exc:
            raise RequestError.from_upload(exc) from exc

    async def _find(self, image: Path, is_crop: bool):
        """:meth:`_locate` in the request's lane (a full lane answers 503 at once)."""
        return await self.lanes[is_crop].run(self._locate, image.read_bytes(), is_crop)

    async def _classify(self, batch: np.ndarray, attempts: int = 3) -> np.ndarray:
        """The classifier service's N×(7+512) answer. Pooled keep-alive connections to it can be
        closed by its server between calls (idle timeout) — a dropped connection is retried; a
        classifier that stays unreachable or overloaded is a 503, not a 500."""
        import aiohttp
        from bentoml.exceptions import BentoMLException

        # Alone in flight, a request skips the batcher: BentoML's dispatcher waits for company
        # (a wait it learns under load and keeps long after: +60 ms a request at 1 client).
        batched = self.batching and self._in_flight > 0
        call = (
            self.classifier.to_async.classify
            if batched
            else self.classifier.to_async.classify_unbatched
        )
        self._in_flight += 1
        try:
            for attempt in range(1, attempts + 1):
                try:
                    return np.asarray(await call(batch))
                except aiohttp.ClientConnectionError as exc:
                    log.warning(
                        "classifier connection dropped (%s), attempt %d/%d", exc, attempt, attempts
                    )
                    last = str(exc)
                except BentoMLException as exc:
                    raise RequestError(503, "classifier_unavailable", str(exc)) from exc
        finally:
            self._in_flight -= 1
        raise RequestError(
            503, "classifier_unavailable", f"connection failed {attempts} times: {last}"
        )

    def _refuse(self, route: str, exc: RequestError):
        self.metrics.error(route, exc)
        return exc.response()

    async def _analyse(self, image: Path, crop: bool, explain: bool):
        route = "/explain" if explain else "/predict"
        try:
            located = await self._find(image, crop)
        except RequestError as exc:
            return self._refuse(route, exc)
        out = []
        if located.crops:
            # with explain, the masked copies go in the same call (BentoML's batcher splits a
            # call over max_batch_size into chunks)
            batch = self.predictor.network_input(located.crops, explain)
            try:
                result = await self._classify(batch)
            except RequestError as exc:
                return self._refuse(route, exc)
            n = len(self.predictor.labels)
            out = await asyncio.to_thread(
                self.predictor.records, located, result[:, :n], result[:, n:], explain
            )
        self.metrics.answer(route, out, located.reason)
        return PredictResponse(faces=out, reason=located.reason, model=self.tag)

    @bentoml.api(route="/info")
    async def info(self) -> dict:
        """The model served, its provenance, ONNX Runtime providers, batching and upload limits."""
        return {
            "model": self.tag,
            "metadata": public_metadata(self.model.info.metadata),  # no URI credentials
            "labels": self.predictor.labels,
            "providers": await self.classifier.to_async.providers(),
            "precision": await self.classifier.to_async.precision(),
            "batching": self.batching,
            "max_batch_size": MAX_BATCH_SIZE,
            "max_latency_ms": MAX_LATENCY_MS,
            "max_upload_bytes": self.limits.max_upload_bytes,
            "max_pixels": self.limits.max_pixels,
            "max_aspect": {"image": self.limits.max_aspect, "crop": MAX_CROP_ASPECT},
            "max_queue_per_lane": self.limits.max_queue,
            "max_wait_s": self.limits.max_wait_s,
            "max_faces": self.predictor.face_config.max_faces,
            "detection_cascade": self.predictor.face_config.to_dict()["cascade"],
        }

    @bentoml.api(route="/detect")
    async def detect(self, image: Path) -> DetectResponse:
        """Faces in the image: box, detector score, the principal face flagged.
        No face: 200 with ``faces: []`` and ``reason: "no_face"`` (or ``"image_too_small"``).
        Bad uploads: 4xx ``{"error", "detail"}``."""
        try:
            located = await self._find(image, False)
        except RequestError as exc:
            return self._refuse("/detect", exc)
        self.metrics.answers.labels("/detect", located.reason or "faces").inc()
        width, height = located.size
        return DetectResponse(
            faces=located.faces, reason=located.reason, width=width, height=height
        )

    @bentoml.api(route="/predict")
    async def predict(self, image: Path, crop: bool = False) -> PredictResponse:
        """Per face: the expression and the 7 probabilities, the principal face flagged.
        ``crop=true``: the image is already a face crop (no detection)."""
        return await self._analyse(image, crop, explain=False)

    @bentoml.api(route="/explain")
    async def explain(self, image: Path, crop: bool = False) -> PredictResponse:
        """``/predict`` plus, per face, the four-part explanation: nearest characteristic pattern,
        important inputs (decision-path features with values), the rule fired, and the next most
        likely class with what its rule would have needed."""
        return await self._analyse(image, crop, explain=True)


FerService.add_asgi_middleware(RequestGuard, door=DOOR)
FerService.mount_asgi_app(ui_app(), path=UI_ROUTE)  # the web page, /ui/ (src/ferops/ui)
