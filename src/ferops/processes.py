"""Local server processes for tests and benchmarks: a free port, wait until one answers, stop
one with everything it spawned. Not used by the pipeline or the service."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float, proc=None) -> None:
    """Poll ``url`` until it answers 200, the process dies, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop_process_group(proc) -> None:
    """Stop a server started with ``start_new_session=True`` and everything it spawned: SIGTERM
    to its process group (the signal servers stop on: ``mlflow server``, ``bentoml serve``),
    SIGKILL after 20 s. Never SIGINT: a CI started as a background job of a non-interactive shell
    has it ignored, and its children inherit that. Not for PostgreSQL: to it SIGTERM is a smart
    shutdown that waits for every client (:func:`ferops.teamserver.stop_database`)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
