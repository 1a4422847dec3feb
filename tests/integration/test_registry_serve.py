"""The registered model serves itself: ``mlflow models serve -m models:/ferops-resnet18@champion``
in an environment that MLflow builds from the model's own requirements (``--env-manager uv``:
no ferops installed, no PYTHONPATH, no checkout on ``sys.path``) answers images with the record
:class:`ferops.registry.BundleModel` answers in-process — ``/predict``'s record.

It needs PyPI (or the index uv is configured with): building the environment installs
``requirements-serving.txt`` and ``mlflow``; with a cold uv cache that is a few minutes.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from ferops.images import read_image
from ferops.inference import Predictor
from ferops.processes import free_port, stop_process_group, wait_http
from tests.bundles import register_tiny

log = logging.getLogger(__name__)

#: Building the environment from a cold uv cache downloads ~100 packages (onnxruntime-gpu,
#: pyarrow, mlflow's own dependencies): minutes; a warm cache takes under a minute.
SERVE_TIMEOUT = 900


def _served_env(tmp_path: Path, tracking_uri: str) -> dict[str, str]:
    """The environment of ``mlflow models serve``: the registry, an empty environment root (a
    fresh environment every run), this venv's ``bin`` first on PATH (MLflow runs ``uv`` by
    name) and no PYTHONPATH, so the served process can only import the model's own code."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(MLFLOW_TRACKING_URI=tracking_uri, MLFLOW_ENV_ROOT=str(tmp_path / "envs"))
    return env


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:]


def _import(python: Path, module: str, cwd: Path, env: dict[str, str]):
    """``import module`` with ``python`` in ``cwd``: the completed process (stderr as text)."""
    cmd = [str(python), "-c", f"import {module}"]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def test_registered_champion_serves_itself_in_an_env_from_its_requirements(
    mlflow_server: str,
    tmp_path: Path,
    clear_frame: Path,
    bad_files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow
    import pandas as pd
    import requests
    from mlflow.tracking import MlflowClient

    from ferops.registry import (
        BUNDLE_ARTIFACT,
        CHAMPION,
        BundleModel,
        serving_requirements,
    )

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    # its own name in the session's shared server: the pipeline test registers ferops-resnet18
    name = "ferops-registry-serve-test"
    bin_dir = Path(sys.executable).parent
    assert shutil.which("uv", path=str(bin_dir)), "uv is missing: pip install -e '.[dev]'"
    bundle, _, decision = register_tiny(
        mlflow_server, tmp_path / "model", 51, name, "registry-serve-tests"
    )
    client = MlflowClient(tracking_uri=mlflow_server)
    client.set_registered_model_alias(name, CHAMPION, decision["version"])
    uri = f"models:/{name}@{CHAMPION}"
    champion = client.get_model_version_by_alias(name, CHAMPION)
    assert champion.version == str(decision["version"])

    # The model's requirements: MLflow's own pin, then requirements-serving.txt, nothing else.
    logged = Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text().split()
    assert logged == [f"mlflow=={mlflow.__version__}", *serving_requirements()]

    rows = [(clear_frame, False), (clear_frame, True), (bad_files["corrupt"], False)]
    data = [[base64.b64encode(path.read_bytes()).decode(), crop] for path, crop in rows]
    body = {"dataframe_split": {"columns": ["image", "crop"], "data": data}}

    port, server_log = free_port(), tmp_path / "serve.log"
    env = _served_env(tmp_path, mlflow_server)
    cmd = [str(bin_dir / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "uv"]
    cmd += ["--host", "127.0.0.1", "-p", str(port)]
    started = time.monotonic()
    # cwd: uvicorn puts its working directory on sys.path; the checkout must not be there.
    with open(server_log, "w") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        try:
            wait_http(f"http://127.0.0.1:{port}/ping", timeout=SERVE_TIMEOUT, proc=proc)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"{exc}; mlflow models serve said:\n{_tail(server_log)}")
        ready = time.monotonic() - started
        answer = requests.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=120)
        first = time.monotonic() - started
        assert answer.status_code == 200, answer.text[-2000:]
        served = answer.json()["predictions"]

        # The environment MLflow built has no ferops and no torch of its own: what answered
        # is the model's logged code (code_paths) on the serving requirements alone.
        (built,) = (tmp_path / "envs").glob("mlflow-*")
        python = built / "bin" / "python"
        probe = _import(python, "ferops", tmp_path, env)
        assert probe.returncode != 0 and "No module named 'ferops'" in probe.stderr, probe
        assert _import(python, "torch", tmp_path, env).returncode != 0, "torch got in the env"
    finally:
        stop_process_group(proc)
    log.info(
        "mlflow models serve --env-manager uv: /ping after %.0f s, first answer after %.0f s",
        ready,
        first,
    )

    # In-process BundleModel.predict on the same bundle and rows: the served records, as JSON.
    model = BundleModel()
    model.load_context(SimpleNamespace(artifacts={BUNDLE_ARTIFACT: str(bundle)}))
    frame = pd.DataFrame(
        [(path.read_bytes(), crop) for path, crop in rows], columns=["image", "crop"]
    )
    expected = json.loads(json.dumps(model.predict(None, frame)))
    assert served == expected
    whole, crop, corrupt = served
    predictor, rgb = Predictor(bundle), read_image(clear_frame)
    assert whole["faces"] == json.loads(json.dumps(predictor.analyse(rgb))) and whole["faces"]
    assert crop["faces"] == json.loads(json.dumps(predictor.analyse(rgb, is_crop=True)))
    assert whole["reason"] is None and whole["model"].startswith("bundle:")
    assert (corrupt["faces"], corrupt["error"]) == ([], "corrupt")
