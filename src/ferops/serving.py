"""HTTP-side helpers of the BentoML service: limits, error answers, response schemas.

Serving code: imports the inference core (:mod:`ferops.inference`, :mod:`ferops.images`) and
web libraries only — never training code. ``service.py`` wires these into BentoML.

Error answers are JSON ``{"error": <code>, "detail": <text>}`` with a 4xx status:

============== ====== ==========================================================
code           status meaning
============== ====== ==========================================================
too_large      413    upload body over the byte limit (``FEROPS_MAX_UPLOAD_BYTES``)
too_many_pixels 413   image over the pixel limit (``FEROPS_MAX_PIXELS``), checked before decoding
empty          400    zero-byte upload
not_an_image   415    no image format Pillow knows (text, HTML, PDF, SVG …)
corrupt        422    an image format, but truncated or damaged
bad_size       422    an image with a zero width or height
============== ====== ==========================================================

An image without a face is not an error: 200 with ``faces: []`` and ``reason: "no_face"``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ferops.images import ImageDecodeError, decode_image

log = logging.getLogger(__name__)

#: HTTP status per :class:`~ferops.images.ImageDecodeError` reason.
STATUS = {"empty": 400, "not_an_image": 415, "corrupt": 422, "bad_size": 422,
          "too_many_pixels": 413, "too_large": 413, "unreadable": 422}  # fmt: skip

#: Smallest side (pixels) on which face detection is attempted.
MIN_DETECT_SIDE = 16


@dataclass(frozen=True)
class Limits:
    """Upload limits; from the environment at service start (not at import)."""

    max_upload_bytes: int = 16 * 1024 * 1024
    max_pixels: int = 25_000_000

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Limits:
        env = os.environ if environ is None else environ
        limits = cls(
            max_upload_bytes=int(env.get("FEROPS_MAX_UPLOAD_BYTES", cls.max_upload_bytes)),
            max_pixels=int(env.get("FEROPS_MAX_PIXELS", cls.max_pixels)),
        )
        if limits.max_upload_bytes <= 0 or limits.max_pixels <= 0:
            raise ValueError(f"upload limits must be positive, got {limits}")
        return limits


class RequestError(Exception):
    """A client error with a status, a machine-readable code and a human reason."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status, self.error, self.detail = status, error, detail

    @classmethod
    def from_decode(cls, exc: ImageDecodeError) -> RequestError:
        return cls(STATUS.get(exc.reason, 422), exc.reason, exc.detail)

    def response(self):
        from starlette.responses import JSONResponse

        return JSONResponse({"error": self.error, "detail": self.detail}, status_code=self.status)


def decode_upload(data: bytes, limits: Limits):
    """Upload bytes → RGB array, or :class:`RequestError` with the reason."""
    if len(data) > limits.max_upload_bytes:
        raise RequestError(413, "too_large", f"{len(data)} bytes exceeds {limits.max_upload_bytes}")
    try:
        return decode_image(data, max_pixels=limits.max_pixels)
    except ImageDecodeError as exc:
        raise RequestError.from_decode(exc) from exc


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with a JSON 413, before the app
    (and its multipart parser) ever sees them. Works with and without ``Content-Length``."""

    def __init__(self, app: Any, max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes or Limits.from_env().max_upload_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._drain(receive)
            await self._reject(send, declared.decode("latin-1"))
            return
        buffered, total = [], 0
        while True:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break
            total += len(message.get("body", b""))
            if total > self.max_bytes:
                await self._drain(receive, message)
                await self._reject(send, f"more than {total}")
                return
            if not message.get("more_body"):
                break

        async def replay() -> dict:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _drain(receive: Any, last: dict | None = None, cap: int = 256 * 1024 * 1024) -> None:
        """Read (and drop) the rest of the body so the client sees our answer, not a reset."""
        seen = 0
        while (last is None or last.get("more_body")) and seen < cap:
            last = await receive()
            if last["type"] != "http.request":
                return
            seen += len(last.get("body", b""))

    async def _reject(self, send: Any, size: str) -> None:
        body = json.dumps({"error": "too_large",
                           "detail": f"request body of {size} bytes exceeds {self.max_bytes}"}).encode()  # fmt: skip
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})


# ---- response schemas (OpenAPI) -----------------------------------------------------------


class DetectedFace(BaseModel):
    box: list[int] = Field(description="left, top, right, bottom in pixels of the uploaded image")
    score: float = Field(description="detector score (HOG margin or CNN confidence)")
    detector: str = Field(description="hog | cnn: the cascade step that found it")
    principal: bool = Field(description="the face the image is about (one per image)")


class DetectResponse(BaseModel):
    faces: list[DetectedFace]
    reason: str | None = Field(None, description="no_face | image_too_small when faces is empty")
    width: int
    height: int


class Explanation(BaseModel):
    """The paper's four answers to "why": see :meth:`ferops.explanation.Explainer.explain`."""

    model_config = ConfigDict(extra="allow")
    predicted: str
    probability: float
    nearest_pattern: dict[str, Any]
    important_inputs: list[dict[str, Any]]
    rules_fired: dict[str, Any]
    next_most_likely: dict[str, Any]


class FacePrediction(BaseModel):
    box: list[int] | None = Field(description="null when the upload was a face crop")
    score: float | None
    principal: bool
    expression: str
    probabilities: dict[str, float] = Field(description="the 7 class probabilities (sum 1)")
    explanation: Explanation | None = None


class PredictResponse(BaseModel):
    faces: list[FacePrediction]
    reason: str | None = Field(None, description="no_face | image_too_small when faces is empty")
    model: str = Field(description="BentoML model tag serving this answer")


class ErrorResponse(BaseModel):
    error: str
    detail: str
