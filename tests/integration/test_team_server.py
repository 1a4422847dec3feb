"""The team tracking server: MLflow's stores really live in PostgreSQL (the session's
`mlflow server` fixture runs on it, so the tiny pipeline run, the registry, the gate, the
`ferops-models` CLI and `import-bento` of the other test modules all use it), and a sqlite
history moves over with its runs, metrics, registered versions and aliases."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.bundles import register_tiny


def _database(uri: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    from ferops.teamserver import create_database

    url = make_url(uri)
    create_database(url.port, name)
    return url.set(database=name).render_as_string(hide_password=False)


def test_the_server_keeps_runs_and_versions_in_postgres(
    mlflow_server: str, postgres: str, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy as sa

    from ferops import models_cli

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    name = "ferops-test-team"
    _, run_id, _ = register_tiny(
        mlflow_server, tmp_path / "a", 41, name, "team-server-tests", {"team": "yes"}
    )
    assert models_cli.main(["--name", name, "list"]) == 0
    assert "champion" in capsys.readouterr().out

    engine = sa.create_engine(postgres)  # the server's own database, read directly
    try:
        with engine.connect() as db:
            assert db.execute(sa.text("SELECT version()")).scalar().startswith("PostgreSQL")
            query = "SELECT value FROM params WHERE run_uuid = :r AND key = 'team'"
            params = db.execute(sa.text(query), {"r": run_id}).scalars().all()
            query = "SELECT version FROM registered_model_aliases WHERE name = :n AND alias = :a"
            alias = db.execute(sa.text(query), {"n": name, "a": "champion"}).scalar()
    finally:
        engine.dispose()
    assert params == ["yes"] and alias == 1


def test_a_sqlite_history_moves_to_postgres(postgres: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from ferops.teamserver import copy_history

    sqlite = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlruns = tmp_path / "mlruns"
    old = MlflowClient(tracking_uri=sqlite, registry_uri=sqlite)
    experiment = old.create_experiment("ferops", artifact_location=str(mlruns / "1"))
    run = old.create_run(experiment, tags={"stage": "train"})
    old.log_param(run.info.run_id, "train.lr", "0.002")
    for step, value in enumerate((0.30, 0.35, 0.41), start=1):
        old.log_metric(run.info.run_id, "val_acc", value, step=step)
    old.set_terminated(run.info.run_id)
    old.create_registered_model("ferops-resnet18")
    source = f"{run.info.artifact_uri}/bundle"
    old.create_model_version(
        "ferops-resnet18", source, run.info.run_id, tags={"test_accuracy": "0.410448"}
    )
    old.set_registered_model_alias("ferops-resnet18", "champion", 1)

    target = _database(postgres, "migrated")
    counts = copy_history(sqlite, target, artifacts=(str(mlruns), "mlflow-artifacts:"))
    assert counts["runs"] == 1 and counts["metrics"] == 3 and counts["model_versions"] == 1

    new = MlflowClient(tracking_uri=target, registry_uri=target)
    moved = new.get_run(run.info.run_id)
    assert moved.data.params == {"train.lr": "0.002"} and moved.data.tags["stage"] == "train"
    history = new.get_metric_history(run.info.run_id, "val_acc")
    assert [m.value for m in history] == [0.30, 0.35, 0.41]
    assert moved.info.artifact_uri == f"mlflow-artifacts:/1/{run.info.run_id}/artifacts"
    champion = new.get_model_version_by_alias("ferops-resnet18", "champion")
    assert (str(champion.version), champion.tags["test_accuracy"]) == ("1", "0.410448")
    assert new.get_experiment_by_name("ferops").artifact_location == "mlflow-artifacts:/1"
    assert int(new.create_experiment("after-the-move")) > int(experiment)  # ids continue
    with pytest.raises(ValueError, match="not empty"):
        copy_history(sqlite, target)


def _cluster_pids(data: Path) -> set[int]:
    """The postmaster of the cluster in ``data`` (its ``postmaster.pid``) and its children."""
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process exited meanwhile
            continue
        if int(fields[1]) == postmaster:
            children.add(int(stat.parent.name))
    return {postmaster, *children}


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie no longer does: its sockets and memory are gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _refused(host: str, port: int) -> bool:
    """Whether nothing listens on ``host:port`` any more."""
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@contextmanager
def _db_command(
    preexec_fn: Callable[[], None] | None = None, password: str | None = None
) -> Iterator[tuple[subprocess.Popen, Path, int]]:
    """Run `python -m ferops.teamserver db` in a new session on a free port until it is ready;
    yields the process, its data folder and its port. Afterwards it is stopped with SIGTERM
    (never SIGINT: a CI started as a background job ignores it, and so do its children), then
    SIGKILL, and any postgres of the cluster left behind is killed."""
    from ferops.processes import free_port

    root = Path(tempfile.mkdtemp(prefix="ferops-pg-"))  # the postgres user must reach it
    root.chmod(0o755)
    data, port = root / "data", free_port()
    cmd = [sys.executable, "-m", "ferops.teamserver", "db", str(data), "--port", str(port)]
    if password is not None:
        (root / "password").write_text(f"{password}\n")
        cmd += ["--host", "127.0.0.2", "--password-file", str(root / "password")]
    log = open(root / "db.log", "w+")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=preexec_fn,  # noqa: PLW1509 - sets signal dispositions only
    )
    cluster: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while "tracking database ready" not in (root / "db.log").read_text():
            assert proc.poll() is None, (root / "db.log").read_text()
            assert time.monotonic() < deadline, (root / "db.log").read_text()
            time.sleep(0.3)
        cluster = _cluster_pids(data)
        yield proc, data, port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for pid in cluster:  # the old `db` left postgres running: do not leak it
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def _ignore_stop_signals() -> None:
    """What a child of a background job (or of `nohup`) inherits: SIGINT and SIGTERM ignored."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def test_the_db_command_on_another_address_gets_ready_and_takes_passwords() -> None:
    """`python -m ferops.teamserver db --host 127.0.0.2` (one address that is not 127.0.0.1, as
    a team's interface would be): it waits for the server where it listens, creates the mlflow
    database, and the role needs its password there."""
    import psycopg

    from ferops.teamserver import DB_NAME, DB_USER, probe_host

    assert probe_host("0.0.0.0") == probe_host("*") == "127.0.0.1"
    assert probe_host("10.1.2.3, 127.0.0.1") == "10.1.2.3"
    with _db_command(password="team-s3cret") as (_, _, port):
        where = {"host": "127.0.0.2", "port": port, "dbname": DB_NAME, "connect_timeout": 5}
        with psycopg.connect(user=DB_USER, password="team-s3cret", **where) as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == DB_NAME
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(user=DB_USER, password="wrong", **where).close()


@pytest.mark.parametrize(
    ("signum", "inherited"),
    [
        (signal.SIGTERM, None),
        (signal.SIGTERM, _ignore_stop_signals),
        (signal.SIGINT, _ignore_stop_signals),
    ],
    ids=["SIGTERM", "SIGTERM-inherited-ignored", "SIGINT-inherited-ignored"],
)
def test_the_db_command_stops_postgres_on_a_stop_signal(
    signum: signal.Signals, inherited: Callable[[], None] | None
) -> None:
    """SIGTERM (systemd, Docker, Kubernetes) or SIGINT (Ctrl-C) to the `db` process alone, even
    when it inherited them ignored (a background job's children): PostgreSQL shuts down cleanly
    (its postmaster.pid removed, no process of the cluster left), the port is free, exit 0."""
    with _db_command(preexec_fn=inherited) as (proc, data, port):
        cluster = _cluster_pids(data)
        proc.send_signal(signum)
        assert proc.wait(timeout=30) == 0  # TimeoutExpired: the signal did not stop it
        assert _refused("127.0.0.1", port)
        assert not {pid for pid in cluster if _alive(pid)}
        assert not (data / "postmaster.pid").exists()  # a clean shutdown, not a kill


def test_postgres_dies_with_the_db_command() -> None:
    """SIGKILL of the `db` process (the OOM killer, `kill -9`, a container runtime's timeout):
    PostgreSQL goes too (the kernel's parent-death signal), no orphan holds the port."""
    with _db_command() as (proc, data, port):
        cluster = _cluster_pids(data)
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while {pid for pid in cluster if _alive(pid)} or not _refused("127.0.0.1", port):
            assert time.monotonic() < deadline, f"left running: {cluster}"
            time.sleep(0.2)
