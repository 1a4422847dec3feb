"""The team tracking server: MLflow's stores really live in PostgreSQL (the session's
`mlflow server` fixture runs on it, so the tiny pipeline run, the registry, the gate, the
`ferops-models` CLI and `import-bento` of the other test modules all use it), and a sqlite
history moves over with its runs, metrics, registered versions and aliases."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.bundles import register_tiny


def _database(uri: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    from ferops.teamserver import create_database

    url = make_url(uri)
    create_database(url.port, name)
    return url.set(database=name).render_as_string(hide_password=False)


def test_the_server_keeps_runs_and_versions_in_postgres(mlflow_server: str, postgres: str,
                                                        tmp_path: Path, capsys,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import sqlalchemy as sa

    from ferops import cli

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    name = "ferops-test-team"
    _, run_id, _ = register_tiny(mlflow_server, tmp_path / "a", 41, name, "team-server-tests",
                                 {"team": "yes"})  # fmt: skip
    assert cli.main(["--name", name, "list"]) == 0
    assert "champion" in capsys.readouterr().out

    engine = sa.create_engine(postgres)  # the server's own database, read directly
    try:
        with engine.connect() as db:
            assert db.execute(sa.text("SELECT version()")).scalar().startswith("PostgreSQL")
            params = db.execute(sa.text("SELECT value FROM params WHERE run_uuid = :r AND "
                                        "key = 'team'"), {"r": run_id}).scalars().all()  # fmt: skip
            alias = db.execute(sa.text("SELECT version FROM registered_model_aliases WHERE "
                                       "name = :n AND alias = 'champion'"), {"n": name}).scalar()  # fmt: skip
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
    old.create_model_version("ferops-resnet18", source, run.info.run_id,
                             tags={"test_accuracy": "0.410448"})  # fmt: skip
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


def test_the_db_command_on_another_address_gets_ready_and_takes_passwords(tmp_path: Path) -> None:
    """`python -m ferops.teamserver db --host 127.0.0.2` (one address that is not 127.0.0.1, as
    a team's interface would be): it waits for the server where it listens, creates the mlflow
    database, and the role needs its password there."""
    import shutil
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    import psycopg

    from ferops.processes import free_port
    from ferops.teamserver import DB_NAME, DB_USER, probe_host

    assert probe_host("0.0.0.0") == probe_host("*") == "127.0.0.1"
    assert probe_host("10.1.2.3, 127.0.0.1") == "10.1.2.3"
    root = Path(tempfile.mkdtemp(prefix="ferops-pg-"))  # the postgres user must reach it
    root.chmod(0o755)
    secret = root / "password"
    secret.write_text("team-s3cret\n")
    port = free_port()
    log = open(root / "db.log", "w+")  # noqa: SIM115 - closed below
    cmd = [sys.executable, "-m", "ferops.teamserver", "db", str(root / "data"),
           "--host", "127.0.0.2", "--port", str(port), "--password-file", str(secret)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "tracking database ready" not in (root / "db.log").read_text():
            assert proc.poll() is None, (root / "db.log").read_text()
            assert time.monotonic() < deadline, (root / "db.log").read_text()
            time.sleep(0.5)
        with psycopg.connect(host="127.0.0.2", port=port, user=DB_USER, password="team-s3cret",
                             dbname=DB_NAME, connect_timeout=5) as conn:  # fmt: skip
            assert conn.execute("SELECT current_database()").fetchone()[0] == DB_NAME
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(host="127.0.0.2", port=port, user=DB_USER, password="wrong",
                            dbname=DB_NAME, connect_timeout=5).close()  # fmt: skip
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
        log.close()
        shutil.rmtree(root, ignore_errors=True)
