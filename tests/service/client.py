"""HTTP and process helpers of the service tests: a real ``bentoml serve`` started on 127.0.0.1,
uploads posted to it."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from ferops.processes import free_port, stop_process_group, wait_http
from tests.paths import ROOT

BIN = Path(sys.executable).parent
MODEL_NAME = "ferops-service-test"


def _env(bento_home: Path, **extra: str) -> dict[str, str]:
    return dict(os.environ, BENTOML_HOME=str(bento_home), BENTOML_DO_NOT_TRACK="true", **extra)


def _serve(target: str, bento_home: Path, log: Path, cwd: Path = ROOT, **env: str):
    port = free_port()
    handle = open(log, "w")  # noqa: SIM115 - closed by the caller's fixture
    proc = subprocess.Popen(
        [str(BIN / "bentoml"), "serve", target, "--host", "127.0.0.1", "--port", str(port)],
        cwd=cwd,
        env=_env(bento_home, **env),
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/readyz", timeout=180, proc=proc)
    except (RuntimeError, TimeoutError):
        stop_process_group(proc)
        handle.close()
        pytest.fail(f"bentoml serve {target} did not start:\n{log.read_text()[-3000:]}")
    return proc, handle, url


def _own_home(bento_home: Path, folder: Path) -> Path:
    """A BentoML home holding the same models, for a second server running beside the first:
    `bentoml serve` (1.4.40, ``bentoml.serving.ensure_prometheus_dir``) empties
    ``$BENTOML_HOME/prometheus_multiproc_dir`` when it starts, which would reset the metrics
    of a server already running from that home."""
    shutil.copytree(bento_home / "models", folder / "models", symlinks=True)
    return folder


def _post(url: str, route: str, data: bytes, name: str = "image.png", **form: str):
    return requests.post(f"{url}/{route}", files={"image": (name, data)}, data=form, timeout=120)


def _encode(rgb: np.ndarray, fmt: str = "PNG", mode: str | None = None, **save) -> bytes:
    img = Image.fromarray(rgb)
    if mode:
        img = img.convert(mode)
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **save)
    return buffer.getvalue()
