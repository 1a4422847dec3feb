"""ferops.serving.WorkLane without a server: bounded queue, deadline, errors as answers."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ferops.serving import RequestError, WorkLane


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
