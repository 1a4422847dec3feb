"""Fixtures of the service layer: a small real bundle registered as champion in a real
``mlflow server``, imported into a BentoML store and served by a real ``bentoml serve``
(module-scoped: each test module gets its own server)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ferops.processes import stop_process_group
from tests.bundles import make_bundle
from tests.service.client import MODEL_NAME, _env, _serve


@pytest.fixture(scope="module")
def bento_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bentoml")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_bundle(tmp_path_factory.mktemp("service") / "b", seed=11)


@pytest.fixture(scope="module")
def model_tag(mlflow_server: str, bundle: tuple[Path, Path], bento_home: Path) -> str:
    """Register the bundle as champion in a real MLflow server, then import it with the CLI."""
    import mlflow

    from ferops.registry import register_bundle

    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("service-tests")
    with mlflow.start_run() as run:
        run_id = run.info.run_id
    decision = register_bundle(*bundle, run_id, {"split_definition": "t"}, 0.5, name=MODEL_NAME)
    # another test module of the session may have registered this same (deterministic) bundle
    assert "champion" in ([decision["alias"]] if "alias" in decision else decision["aliases"])
    cmd = [sys.executable, "-m", "ferops.models_cli", "--name", MODEL_NAME, "import-bento"]
    env = _env(bento_home, MLFLOW_TRACKING_URI=mlflow_server)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=True)
    tag = out.stdout.strip().splitlines()[-1]
    assert tag.startswith("ferops-resnet18:")
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=True)
    assert again.stdout.strip().splitlines()[-1] == tag, (
        "the same bundle imported twice is one model"
    )
    return tag


@pytest.fixture(scope="module")
def service(model_tag: str, bento_home: Path):
    proc, handle, url = _serve("service:FerService", bento_home, bento_home / "serve.log")
    try:
        yield url
    finally:
        stop_process_group(proc)
        handle.close()
