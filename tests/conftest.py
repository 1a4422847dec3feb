"""Fixtures of every layer: real SFEW / FER2013 files pulled by DVC, synthetic bad files, a real
PostgreSQL and ``mlflow server``. Tests outside ``tests/unit`` are marked ``slow``: they need
the DVC data, servers or seconds of CPU; ``pytest -m "not slow"`` runs the unit layer only."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from ferops.processes import free_port, stop_process_group, wait_http
from tests.paths import CLEAR_FRAMES, RAW_FER, RAW_SFEW, RAW_ZOO


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make setup` (it pulls the raw data with DVC)")
    return path


@pytest.fixture(scope="session")
def sfew_root() -> Path:
    return _require(RAW_SFEW)


@pytest.fixture(scope="session")
def fer_root() -> Path:
    return _require(RAW_FER)


@pytest.fixture(scope="session")
def yunet() -> Path:
    from ferops.faces import YUNET_FILE

    return _require(RAW_ZOO / YUNET_FILE)


@pytest.fixture(scope="session")
def clear_frame(sfew_root: Path) -> Path:
    return _require(sfew_root / CLEAR_FRAMES[0])


@pytest.fixture()
def bad_files(tmp_path: Path, clear_frame: Path) -> dict[str, Path]:
    """Files a data folder may hold that are not usable images, each with its expected reason."""
    folder = tmp_path / "bad"
    folder.mkdir()
    good = clear_frame.read_bytes()
    files = {
        "empty": b"",
        "corrupt": good[: len(good) // 3],  # truncated WebP
        "not_an_image": b"this is a text file, not a picture\n" * 20,
    }
    out = {}
    for reason, data in files.items():
        path = folder / f"{reason}.webp"
        path.write_bytes(data)
        out[reason] = path
    return out


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server (Debian's binaries, a throw-away cluster, run as the ``postgres``
    user when the tests run as root) on a free 127.0.0.1 port; yields the ``mlflow`` database's
    URI and removes the cluster after the session."""
    import shutil
    import tempfile

    from ferops import teamserver

    # Not under pytest's tmp_path: its parents are private to root, the postgres user needs in.
    data = Path(tempfile.mkdtemp(prefix="ferops-pg-")) / "data"
    data.parent.chmod(0o755)
    teamserver.init_database(data)
    port = free_port()
    log = open(data.parent / "postgres.log", "w")  # noqa: SIM115 - closed below
    proc = teamserver.start_database(data, port, log_file=log)
    try:
        teamserver.wait_database(port, timeout=60, proc=proc)
        teamserver.create_database(port)
        yield teamserver.postgres_uri(port)
    finally:
        teamserver.stop_database(proc)  # fast shutdown: SIGTERM would wait for every client
        log.close()
        shutil.rmtree(data.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, postgres: str):
    """A real ``mlflow server`` on 127.0.0.1 as a team runs it: PostgreSQL backend store,
    served artifacts in a folder; yields its URI."""
    import os
    import subprocess
    import sys

    home = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    log = open(home / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            postgres,
            "--artifacts-destination",
            str(home / "artifacts"),
        ],
        cwd=home,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", timeout=120, proc=proc)
        yield uri
    finally:
        stop_process_group(proc)
        log.close()


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a CI job's timeout, ``kill``) ends the session as Ctrl-C does: pytest raises
    KeyboardInterrupt, so fixtures tear down and the servers they started stop. pytest 9 only
    handles SIGINT, which a background job ignores."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test outside ``tests/unit`` ``slow`` (``make check`` runs the others)."""
    unit = Path(__file__).resolve().parent / "unit"
    for item in items:
        if unit not in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.slow)
