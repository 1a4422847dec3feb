"""ferops.api.WorkLane without a server: bounded queue, deadline, errors as answers."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from ferops.api import Door, RequestError, RequestGuard, WorkLane, crop_flag


def test_a_full_lane_answers_503_with_retry_after_and_runs_nothing_more() -> None:
    release = threading.Event()
    ran: list[int] = []

    def job(i: int) -> int:
        release.wait(5)
        ran.append(i)
        return i

    async def scenario() -> list:
        lane = WorkLane("frames", max_queue=2, max_wait_s=10)
        first = [asyncio.ensure_future(lane.run(job, i)) for i in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(RequestError) as refused:
            await lane.run(job, 99)
        release.set()
        return [refused.value, await asyncio.gather(*first), lane.waiting]

    refused, done, waiting = asyncio.run(scenario())
    assert refused.status == 503 and refused.error == "overloaded" and refused.retry_after >= 1
    assert refused.response().headers["Retry-After"] == str(refused.retry_after)
    assert done == [0, 1] and 99 not in ran and waiting == 0


def test_a_job_queued_past_its_deadline_is_dropped_unrun() -> None:
    ran: list[str] = []

    def slow() -> None:
        time.sleep(0.3)
        ran.append("slow")

    def late() -> None:
        ran.append("late")

    async def scenario() -> RequestError:
        lane = WorkLane("crops", max_queue=4, max_wait_s=0.1)
        busy = asyncio.ensure_future(lane.run(slow))
        await asyncio.sleep(0.01)
        with pytest.raises(RequestError) as dropped:
            await lane.run(late)
        await busy
        return dropped.value

    dropped = asyncio.run(scenario())
    assert dropped.status == 503 and dropped.error == "timeout" and ran == ["slow"]


def test_unexpected_errors_become_422_and_client_errors_pass_through() -> None:
    def broken() -> None:
        raise KeyError("what OpenCV said")

    def refused() -> None:
        raise RequestError(415, "not_an_image", "no known image format")

    async def scenario() -> tuple[RequestError, RequestError]:
        lane = WorkLane("frames", max_queue=2, max_wait_s=10)
        with pytest.raises(RequestError) as first:
            await lane.run(broken)
        with pytest.raises(RequestError) as second:
            await lane.run(refused)
        assert lane.waiting == 0
        return first.value, second.value

    first, second = asyncio.run(scenario())
    assert (first.status, first.error) == (422, "unprocessable") and "KeyError" in first.detail
    assert (second.status, second.error) == (415, "not_an_image")


def _multipart(image: bytes, crop: str | None) -> tuple[bytes, bytes]:
    """A multipart body as `requests` writes it (image first, then the crop text field)."""
    boundary = b"b0undary"
    parts = [
        b'--b0undary\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + image + b"\r\n"
    ]
    if crop is not None:
        parts.append(
            b'--b0undary\r\nContent-Disposition: form-data; name="crop"\r\n\r\n'
            + crop.encode()
            + b"\r\n"
        )
    return b"".join(parts) + b"--b0undary--\r\n", b"multipart/form-data; boundary=" + boundary


def test_crop_flag_is_read_from_the_raw_body() -> None:
    image = bytes(range(256)) * 100
    for value, expected in [
        ("true", True),
        ("1", True),
        ("True", True),
        ("false", False),
        ("0", False),
        (None, False),
    ]:
        assert crop_flag(_multipart(image, value)[0]) is expected, value


def test_the_door_refuses_a_full_lane_before_the_app_parses_anything() -> None:
    """A lane of 1 held by a request in the app: the next request of that lane gets a JSON 503
    with Retry-After from the guard itself (the app never sees it), a request of the other lane
    is admitted, and once the first is answered its lane admits again."""
    release = asyncio.Event()
    seen: list[bytes] = []

    async def app(scope: dict, receive, send) -> None:
        body = await receive()
        seen.append(body["body"])
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def call(guard: RequestGuard, body: bytes, content_type: bytes) -> dict:
        sent: list[dict] = []
        chunks = [body[:100_000], body[100_000:]]

        async def receive() -> dict:
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/predict",
            "headers": [(b"content-type", content_type)],
        }
        await guard(scope, receive, send)
        return {
            "status": sent[0]["status"],
            "headers": dict(sent[0]["headers"]),
            "body": sent[1]["body"],
        }

    async def scenario() -> list:
        door = Door()
        door.open(
            {crop: WorkLane(name, 1, 10) for crop, name in ((False, "frames"), (True, "crops"))}
        )
        guard = RequestGuard(app, door=door)
        frame = _multipart(b"\xff\xd8" + bytes(230_000), None)
        crop = _multipart(b"\xff\xd8" + bytes(5_000), "true")
        first = asyncio.ensure_future(call(guard, *frame))
        await asyncio.sleep(0.05)
        refused = await call(guard, *frame)
        other = asyncio.ensure_future(call(guard, *crop))
        await asyncio.sleep(0.05)
        apps_seen = len(seen)
        release.set()
        done = await asyncio.gather(first, other)
        again = await call(guard, *frame)
        return [refused, apps_seen, done, again, dict(door.inside)]

    refused, apps_seen, done, again, inside = asyncio.run(scenario())
    assert refused["status"] == 503 and int(refused["headers"][b"retry-after"]) >= 1
    assert json.loads(refused["body"])["error"] == "overloaded"
    assert apps_seen == 2, "the refused request never reached the app; the crop did"
    assert [d["status"] for d in done] == [200, 200] and again["status"] == 200
    assert inside == {False: 0, True: 0}
