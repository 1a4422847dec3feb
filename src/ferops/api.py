"""HTTP-side helpers of the BentoML service: limits, error answers, response schemas.

Serving code: imports the inference core (:mod:`ferops.inference`, :mod:`ferops.images`) and
web libraries only — never training code. ``service.py`` wires these into BentoML.

Error answers are JSON ``{"error": <code>, "detail": <text>}`` with a 4xx status:

============== ====== ==========================================================
code           status meaning
============== ====== ==========================================================
too_large      413    upload body over the byte limit (``FEROPS_MAX_UPLOAD_BYTES``)
bad_form       400    malformed multipart body, missing ``image``, unknown or misplaced fields
too_many_pixels 413   image over the pixel limit (``FEROPS_MAX_PIXELS``), checked before decoding
bad_aspect     422    long side over ``FEROPS_MAX_ASPECT`` (8) × the short side, or over
                      :data:`~ferops.faces.MAX_CROP_ASPECT` (4) × for ``crop=true``; checked
                      on the header, before decoding
empty          400    zero-byte upload
not_an_image   415    no image format Pillow knows (text, HTML, PDF, SVG …)
corrupt        422    an image format, but truncated or damaged
bad_size       422    an image with a zero width or height
unprocessable  422    decoding or detection failed in a way no check above names (logged)
overloaded     503    the request's work lane is full; ``Retry-After`` says when to retry. Refused
                      at the door (:class:`Door`) before the upload is parsed
timeout        503    the request waited longer than its lane's deadline and was dropped unrun
classifier_unavailable 503 the network's process is unreachable (restarting); retry
============== ====== ==========================================================

An image without a face is not an error: 200 with ``faces: []`` and ``reason: "no_face"``
(a ``crop=true`` upload too small or too plain to hold one included).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from ferops.inference import UploadLimits, UploadRefused

if TYPE_CHECKING:
    from starlette.staticfiles import StaticFiles

#: HTTP status per :class:`~ferops.images.ImageDecodeError` reason.
STATUS = {
    "empty": 400,
    "not_an_image": 415,
    "corrupt": 422,
    "bad_size": 422,
    "too_many_pixels": 413,
    "unreadable": 422,
    "bad_aspect": 422,
    "too_large": 413,
}

log = logging.getLogger(__name__)

#: Where the web page is served: ``GET /ui/`` (``/ui`` redirects there; BentoML's own OpenAPI
#: page keeps ``/``). The page is plain HTML, JS and CSS in :data:`UI_DIR`, packed into the bento
#: by ``bentofile.yaml``, and calls ``/explain`` like any other client.
UI_ROUTE = "/ui"
UI_DIR = Path(__file__).resolve().parent / "ui"


def ui_app() -> StaticFiles:
    """The web page as an ASGI app to mount at :data:`UI_ROUTE`: the files of :data:`UI_DIR`,
    ``index.html`` for the folder itself."""
    from starlette.staticfiles import StaticFiles

    return StaticFiles(directory=UI_DIR, html=True)


def redact_uri(uri: str) -> str:
    """``uri`` without credentials: user and password, query string and fragment are dropped
    (``https://me:pw@host/x?token=t`` → ``https://host/x``); a string that is not a URI with a
    scheme comes back unchanged, one that cannot be parsed as ``<redacted>``."""
    try:
        parts = urlsplit(uri)
        if not parts.scheme or (
            "@" not in parts.netloc and not parts.query and not parts.fragment
        ):
            return uri  # rebuilt, "sqlite:///x" would lose a slash
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    except ValueError:
        return "<redacted>"


def public_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Model metadata safe to show a client: every value that looks like a URI is redacted."""
    return {
        key: redact_uri(value) if isinstance(value, str) and "://" in value else value
        for key, value in metadata.items()
    }


@dataclass(frozen=True)
class Limits(UploadLimits):
    """The service's limits: the upload bounds every front end shares
    (:class:`~ferops.inference.UploadLimits`) and its lanes'; from the environment at service
    start (not at import).

    ``ferops analyse`` and the MLflow pyfunc read the same environment variables for the upload
    bounds (:meth:`UploadLimits.from_env`)."""

    #: Requests queued or running per work lane (frames, crops) before new ones get a 503.
    max_queue: int = 32
    #: Seconds a request may wait in its lane; one still queued after that is dropped unrun.
    max_wait_s: float = 10.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Limits:
        env = os.environ if environ is None else environ
        upload = UploadLimits.from_env(env)
        limits = cls(
            max_upload_bytes=upload.max_upload_bytes,
            max_pixels=upload.max_pixels,
            max_aspect=upload.max_aspect,
            max_queue=int(env.get("FEROPS_MAX_QUEUE", cls.max_queue)),
            max_wait_s=float(env.get("FEROPS_MAX_WAIT_S", cls.max_wait_s)),
        )
        if limits.max_queue <= 0 or limits.max_wait_s <= 0:
            raise ValueError(f"lane limits must be positive, got {limits}")
        return limits


class RequestError(Exception):
    """An error answer: HTTP status (4xx for the client's input, 503 when the classifier is
    unreachable), a machine-readable code and a human reason, sent as JSON."""

    def __init__(
        self, status: int, error: str, detail: str, retry_after: int | None = None
    ) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status, self.error, self.detail = status, error, detail
        self.retry_after = retry_after  # seconds, sent as ``Retry-After`` (503s)

    @classmethod
    def from_upload(cls, exc: UploadRefused) -> RequestError:
        """The HTTP answer for bytes the inference core refused (:data:`STATUS`)."""
        return cls(STATUS.get(exc.reason, 422), exc.reason, exc.detail)

    def response(self):
        from starlette.responses import JSONResponse

        headers = None if self.retry_after is None else {"Retry-After": str(self.retry_after)}
        return JSONResponse(
            {"error": self.error, "detail": self.detail}, status_code=self.status, headers=headers
        )


class WorkLane:
    """One worker thread and a bounded queue for one kind of CPU work (decode + detection).

    The service keeps one lane for full frames and one for ``crop=true`` crops, so a crop never
    waits behind frames. :meth:`run` answers at once with a 503 ``overloaded`` (and a
    ``Retry-After`` estimated from the recent time per job) when ``max_queue`` requests are
    already queued or running; a job still queued ``max_wait_s`` after it arrived is dropped
    unrun (503 ``timeout``), and one whose request was cancelled (BentoML's request timeout)
    is never started — a client that gave up costs no CPU. An unexpected exception in the job
    becomes a 422 ``unprocessable`` (logged with its traceback), never a 500.

    Used from one event loop (a BentoML worker), which is the only writer of the counters.
    """

    def __init__(self, name: str, max_queue: int, max_wait_s: float) -> None:
        self.name, self.max_queue, self.max_wait_s = name, max_queue, max_wait_s
        self.waiting = 0  # requests queued or running
        self.seconds_per_job = 0.05  # running mean (exponential), seeds Retry-After
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"ferops-{name}")

    def retry_after(self) -> int:
        """Seconds after which the current backlog should have drained (at least 1)."""
        return max(1, math.ceil(self.waiting * self.seconds_per_job))

    async def run(self, job: Callable[..., Any], *args: Any) -> Any:
        """``job(*args)`` on this lane's thread; see the class for the error answers."""
        if self.waiting >= self.max_queue:
            raise RequestError(
                503,
                "overloaded",
                f"{self.waiting} {self.name} requests in progress "
                f"(at most {self.max_queue}); retry later",
                self.retry_after(),
            )
        arrived = time.monotonic()

        def timed() -> Any:
            started = time.monotonic()
            if started - arrived > self.max_wait_s:
                raise RequestError(
                    503,
                    "timeout",
                    f"waited {started - arrived:.1f} s for the "
                    f"{self.name} lane (at most {self.max_wait_s:g} s)",
                    1,
                )
            try:
                return job(*args)
            finally:
                self.seconds_per_job = 0.8 * self.seconds_per_job + 0.2 * (
                    time.monotonic() - started
                )

        self.waiting += 1
        try:
            return await asyncio.wrap_future(self._executor.submit(timed))
        except (RequestError, asyncio.CancelledError):
            raise
        except MemoryError as exc:
            raise RequestError(
                503, "overloaded", "not enough memory for this image now", self.retry_after()
            ) from exc
        except Exception as exc:  # any failure is an answer, never a 500
            log.exception("%s lane: %s failed", self.name, getattr(job, "__name__", job))
            raise RequestError(422, "unprocessable", f"{type(exc).__name__}: {exc}") from exc
        finally:
            self.waiting -= 1


#: Seconds the door holds its 503 before sending it (at most the ``Retry-After`` it carries).
#: A client that honours ``Retry-After`` loses nothing (it would not come back sooner); one
#: that ignores it can no longer turn each refusal straight into another upload, so the
#: refusals stop taking the CPU the admitted requests need. The held requests are idle
#: coroutines without their bodies, bounded by BentoML's ``max_concurrency``.
DOOR_HOLD_S = 1.0

#: Values of a multipart text field that BentoML (pydantic) reads as ``True``.
TRUE_VALUES = frozenset({b"1", b"true", b"yes", b"on", b"t", b"y"})


def crop_flag(body: bytes) -> bool:
    """Whether a raw multipart body sets its ``crop`` field to true, read without parsing the
    body: one byte search for the part's header (RFC 7578 quotes the name), then its value.

    Used only to choose the lane a request is admitted to (:class:`Door`); the service's own
    parse decides what the request is. Bytes of an image that happen to spell the part header
    can only make an overloaded service refuse that request, never answer it wrongly.
    """
    start = body.find(b'name="crop"')
    if start < 0:
        return False
    value = body.find(b"\r\n\r\n", start)
    if value < 0:
        return False
    return body[value + 4 : value + 20].split(b"\r\n", 1)[0].strip().lower() in TRUE_VALUES


class Door:
    """Admission in front of the lanes: at most ``lane.max_queue`` requests of each lane are
    inside the service (from admission to answer) at once; the others are answered 503
    ``overloaded`` with the lane's ``Retry-After`` by :class:`RequestGuard` as soon as their
    body has arrived, before anything parses it (no multipart parse, no temporary file, no
    BentoML request handling).

    A flood of clients that ignore ``Retry-After`` then costs each refused request little more
    than receiving its bytes, and the refusal is held :data:`DOOR_HOLD_S` before it is sent, so
    the lanes keep their CPU for the requests they answer (``benchmarks/service_load.py``, the
    ``overload_frames_ignore_retry_after`` cell). The service opens the
    door with its lanes when its worker starts; until then every request is admitted. Used from
    one event loop (a BentoML worker), which is the only writer of the counts.
    """

    def __init__(self) -> None:
        self.lanes: dict[bool, WorkLane] = {}
        self.inside = {False: 0, True: 0}
        self.metrics: Any = None

    def open(self, lanes: dict[bool, WorkLane], metrics: Any = None) -> None:
        """Admit requests to these lanes (keyed by the ``crop`` flag); count in ``metrics``."""
        self.lanes, self.metrics = lanes, metrics

    def enter(self, crop: bool) -> RequestError | None:
        """Admit a request of the ``crop`` lane (then :meth:`leave` it), or the 503 to send."""
        lane = self.lanes.get(crop)
        if lane is not None and self.inside[crop] >= lane.max_queue:
            return RequestError(
                503,
                "overloaded",
                f"{self.inside[crop]} {lane.name} requests in progress (at most "
                f"{lane.max_queue}); retry later",
                lane.retry_after(),
            )
        self._count(crop, +1)
        return None

    def leave(self, crop: bool) -> None:
        """The admitted request of the ``crop`` lane has been answered."""
        self._count(crop, -1)

    def _count(self, crop: bool, step: int) -> None:
        self.inside[crop] += step
        if self.metrics is not None and crop in self.lanes:
            self.metrics.lane_depth.labels(self.lanes[crop].name).set(self.inside[crop])


#: Multipart fields each upload route accepts: (file fields, text fields).
FORM_FIELDS = {
    "/detect": ({"image"}, set()),
    "/predict": ({"image"}, {"crop"}),
    "/explain": ({"image"}, {"crop"}),
}


class RequestGuard:
    """ASGI middleware in front of the BentoML app.

    * refuses request bodies over ``max_bytes`` with a JSON 413 before anything parses them
      (with and without ``Content-Length``);
    * parses multipart uploads of the upload routes first and answers malformed ones (no
      boundary, garbage, a file where a text field belongs, unknown fields) with a JSON 400
      naming the valid fields — BentoML's own parser answers those with a 500;
    * admits upload requests through ``door`` (:class:`Door`): a full lane's requests get their
      503 here, before any parsing.

    Every answer it gives itself is counted in ``door.metrics`` (once the service opened it).
    """

    def __init__(
        self,
        app: Any,
        max_bytes: int | None = None,
        form_fields: dict[str, tuple[set[str], set[str]]] | None = None,
        door: Door | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes or Limits.from_env().max_upload_bytes
        self.form_fields = FORM_FIELDS if form_fields is None else form_fields
        self.door = door if door is not None else Door()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._drain(receive)
            detail = f"request body of {declared.decode('latin-1')} bytes exceeds {self.max_bytes}"
            await self._refuse(send, scope.get("path", ""), RequestError(413, "too_large", detail))
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
                detail = f"request body of more than {total} bytes exceeds {self.max_bytes}"
                await self._refuse(
                    send, scope.get("path", ""), RequestError(413, "too_large", detail)
                )
                return
            if not message.get("more_body"):
                break
        path = scope.get("path", "")
        fields = self.form_fields.get(path)
        if fields is None:  # not an upload route: BentoML answers as it does
            await self._forward(scope, buffered, receive, send)
            return
        crop = "crop" in fields[1] and crop_flag(b"".join(m.get("body", b"") for m in buffered))
        refused = self.door.enter(crop)
        if refused is not None:
            buffered.clear()  # nothing of the body is kept while the answer is held
            await asyncio.sleep(min(refused.retry_after or 0, DOOR_HOLD_S))
            await self._refuse(send, path, refused)
            return
        try:
            content_type = headers.get(b"content-type", b"").decode("latin-1").lower()
            if content_type.startswith("multipart/"):
                problem = await _form_problem(scope, list(buffered), *fields)
                if problem is not None:
                    await self._refuse(send, path, RequestError(400, "bad_form", problem))
                    return
            await self._forward(scope, buffered, receive, send)
        finally:
            self.door.leave(crop)

    async def _forward(self, scope: dict, buffered: list[dict], receive: Any, send: Any) -> None:
        """The request to the app, its body replayed from ``buffered``."""

        async def replay() -> dict:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any, path: str, error: RequestError) -> None:
        if self.door.metrics is not None:
            self.door.metrics.error(path, error)
        await _send_json(send, error.status, error.error, error.detail, error.retry_after)

    @staticmethod
    async def _drain(receive: Any, last: dict | None = None, cap: int = 256 * 1024 * 1024) -> None:
        """Read (and drop) the rest of the body so the client sees our answer, not a reset."""
        seen = 0
        while (last is None or last.get("more_body")) and seen < cap:
            last = await receive()
            if last["type"] != "http.request":
                return
            seen += len(last.get("body", b""))


async def _form_problem(
    scope: dict, messages: list[dict], files: set[str], texts: set[str]
) -> str | None:
    """Why this buffered multipart body would not make the route's inputs, or ``None``."""
    from starlette.datastructures import UploadFile
    from starlette.requests import Request

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.request", "body": b""}

    valid = f"valid fields: {sorted(files)} (files) and {sorted(texts)} (text)"
    try:
        form = await Request(scope, receive).form(max_files=len(files), max_fields=len(texts) + 1)
    except Exception as exc:  # noqa: BLE001 - starlette raises several types for bad bodies
        return f"malformed multipart body ({type(exc).__name__}: {exc}); {valid}"
    try:
        for key, value in form.multi_items():
            if key in files and not isinstance(value, UploadFile):
                return f"field {key!r} must be a file upload; {valid}"
            if key in texts and isinstance(value, UploadFile):
                return f"field {key!r} must be a text value, not a file; {valid}"
            if key not in files and key not in texts:
                return f"unknown field {key!r}; {valid}"
        missing = sorted(files - set(form.keys()))
        if missing:
            return f"missing file field(s) {missing}; {valid}"
        return None
    finally:
        await form.close()


async def _send_json(
    send: Any, status: int, error: str, detail: str, retry_after: int | None = None
) -> None:
    body = json.dumps({"error": error, "detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ---- response schemas (OpenAPI) -----------------------------------------------------------


class DetectedFace(BaseModel):
    box: list[int] = Field(description="left, top, right, bottom in pixels of the uploaded image")
    score: float = Field(
        description="detector score (YuNet confidence, HOG margin or CNN confidence)"
    )
    detector: str = Field(description="yunet | hog | cnn: the cascade step that found it")
    principal: bool = Field(description="the face the image is about (one per image)")


class DetectResponse(BaseModel):
    faces: list[DetectedFace]
    reason: str | None = Field(None, description="no_face | image_too_small when faces is empty")
    width: int
    height: int


class Explanation(BaseModel):
    """The paper's four answers to "why": see :meth:`ferops.explanation.Explainer.explain`.

    Extra fields are kept. ``/explain`` adds ``occlusion``, where the network looked
    (:meth:`ferops.occlusion.OcclusionMap.to_dict`): ``grid`` (cells per side), ``cells`` (rows
    top to bottom of the network's input, each cell in [0, 1]: how much hiding it lowers the
    predicted class's probability, over the largest such drop), ``max_drop`` (that largest drop),
    ``fill`` (what a hidden cell is painted with) and ``corners``: where that square lies in the
    uploaded image (its top-left, top-right, bottom-right and bottom-left corners in pixels; a
    tilted face gives a tilted square, since every face is aligned before it is classified)."""

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
