"""The CPU container image of the bento, built and run with podman (``make test-container``).

``scripts/container.sh`` makes the Debian base from Debian's mirror, builds the wheel and a
bento whose Dockerfile starts from that base, and ``bentoml containerize --backend podman``
builds the image; the image is run with its port on 127.0.0.1 and answers ``/readyz``,
``/predict``, ``/explain`` and ``/ui/``; ``podman stop`` (SIGTERM) ends it. A small real
bundle is served (a fresh clone has no trained model). Not in ``make test``: the first build
takes several minutes. With ``FEROPS_CONTAINER_REPORT`` set, the figures (build time, image
size, first-answer time, stop time) are written there as JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from ferops.processes import free_port, wait_http
from tests.bundles import make_bundle
from tests.paths import ROOT

pytestmark = pytest.mark.container
IMAGE = "localhost/ferops-test:cpu"


def _podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, CONTAINERS_CONF=str(ROOT / "scripts" / "containers.conf"))
    return subprocess.run(
        ["podman", *args], env=env, capture_output=True, text=True, timeout=timeout, check=check
    )


def test_the_cpu_image_builds_runs_and_answers(tmp_path: Path, clear_frame: Path) -> None:
    home = tmp_path / "bentoml"
    env = dict(
        os.environ, BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="true", PYTHON=sys.executable
    )
    bundle, _ = make_bundle(tmp_path / "bundle", seed=5)
    store = (
        "from pathlib import Path; from ferops.packaging import store_bundle; "
        f"print(store_bundle(Path({str(bundle)!r}), {{'source': 'container test'}}))"
    )
    model = (
        subprocess.run(
            [sys.executable, "-c", store], env=env, capture_output=True, text=True, check=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )

    started = time.monotonic()
    build = subprocess.run(
        ["bash", str(ROOT / "scripts" / "container.sh"), IMAGE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=2400,
        check=False,
    )
    build_s = time.monotonic() - started
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-5000:]
    size = int(_podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip())

    port, name = free_port(), f"ferops-test-{os.getpid()}"
    started = time.monotonic()
    _podman("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:3000", IMAGE)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_http(f"{url}/readyz", timeout=300)
        except TimeoutError:
            logs = _podman("logs", name, check=False).stdout[-3000:]
            pytest.fail(f"the container did not start:\n{logs}")
        frame = clear_frame.read_bytes()
        answer = requests.post(f"{url}/predict", files={"image": ("f.webp", frame)}, timeout=120)
        first_answer_s = time.monotonic() - started
        assert answer.status_code == 200 and answer.json()["faces"], answer.text[:300]
        assert answer.json()["model"] == model
        explained = requests.post(
            f"{url}/explain", files={"image": ("f.webp", frame)}, timeout=120
        )
        assert explained.status_code == 200, explained.text[:300]
        assert explained.json()["faces"][0]["explanation"]["occlusion"]["cells"]
        page = requests.get(f"{url}/ui/", timeout=30)
        assert page.status_code == 200 and "<html" in page.text.lower()
        info = requests.post(f"{url}/info", json={}, timeout=30).json()
        assert info["providers"][-1] == "CPUExecutionProvider"
    finally:
        stopping = time.monotonic()
        _podman("stop", "-t", "30", name, check=False, timeout=60)  # SIGTERM, as Kubernetes sends
        stop_s = time.monotonic() - stopping
        status = _podman("inspect", "--format", "{{.State.ExitCode}}", name, check=False)
        logs = _podman("logs", name, check=False)
        _podman("rm", "-f", name, check=False)
    assert stop_s < 25, f"SIGTERM did not stop the server ({stop_s:.1f} s): {logs.stdout[-2000:]}"
    assert status.stdout.strip() == "0", (status.stdout, logs.stdout[-2000:])
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "image": IMAGE,
        "build_seconds": round(build_s, 1),
        "image_bytes": size,
        "image_mb": round(size / 1e6),
        "first_answer_seconds_after_run": round(first_answer_s, 1),
        "stop_seconds_after_sigterm": round(stop_s, 1),
        "providers": info["providers"],
        "base": "localhost/ferops-base:bookworm (mmdebstrap minbase + python3, pip, libgomp1)",
    }
    if os.environ.get("FEROPS_CONTAINER_REPORT"):
        Path(os.environ["FEROPS_CONTAINER_REPORT"]).write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(home, ignore_errors=True)
    _podman("rmi", IMAGE, check=False)
