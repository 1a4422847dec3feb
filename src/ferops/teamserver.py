"""The team's tracking server: MLflow on a PostgreSQL database, and moving a sqlite history there.

A team shares one ``mlflow server`` whose backend store is PostgreSQL (runs, metrics, the model
registry) and whose artifact store is a folder or a bucket; every machine then sets the same
``MLFLOW_TRACKING_URI=http://host:port``. This module runs the database (Debian's ``postgresql``
binaries, a data folder of its own, no system service needed; the test fixtures start it the same
way) and copies an existing ``mlflow.db`` into it (:func:`copy_history`). The server itself is
MLflow's: ``mlflow server --backend-store-uri postgresql://…``.

``python -m ferops.teamserver db DATA``: initialise ``DATA`` when empty, create the ``mlflow``
database and run PostgreSQL in the foreground. It stops as servers do: SIGTERM (systemd, Docker,
Kubernetes), SIGINT (Ctrl-C) or SIGHUP (unless run under ``nohup``) shut PostgreSQL down (fast
shutdown), then it exits 0, even when it inherited SIGTERM and SIGINT ignored (a background
job); and PostgreSQL stops when this process dies of anything else (``kill -9``, Linux): no
orphan keeps the port.
``python -m ferops.teamserver migrate SQLITE_URI POSTGRES_URI``: copy a sqlite history.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import IO, Any

log = logging.getLogger(__name__)

#: The database role and database the tracking server uses.
DB_USER = "mlflow"
DB_NAME = "mlflow"
DEFAULT_DB_PORT = 5432
#: PostgreSQL refuses to run as root; as root the database runs as this system user (created by
#: Debian's ``postgresql`` package).
SYSTEM_USER = "postgres"
#: Where Debian installs the server binaries (one folder per major version).
DEBIAN_POSTGRES = Path("/usr/lib/postgresql")
#: Columns of MLflow's schema that hold artifact locations (rewritten by ``artifacts``).
ARTIFACT_COLUMNS = frozenset({"artifact_location", "artifact_uri", "source", "storage_location"})
#: Signals that stop ``teamserver db``: a service manager's, Ctrl-C's, a closed terminal's.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: How long a fast shutdown of PostgreSQL may take before its processes are killed.
STOP_TIMEOUT = 30.0
#: ``prctl(2)`` option: the signal the kernel sends a process when its parent exits (Linux).
PR_SET_PDEATHSIG = 1


def postgres_binary(program: str) -> Path:
    """The PostgreSQL server program ``program`` (``initdb``, ``postgres``): Debian's newest
    version folder first (``initdb`` is not on Debian's PATH), else the PATH."""
    versions = sorted(
        DEBIAN_POSTGRES.glob(f"*/bin/{program}"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if versions:
        return versions[-1]
    found = shutil.which(program)
    if found is None:
        raise FileNotFoundError(
            f"PostgreSQL's {program} not found: `apt-get install postgresql` "
            "(scripts/setup.sh does it as root)"
        )
    return Path(found)


def postgres_uri(
    port: int,
    host: str = "127.0.0.1",
    user: str = DB_USER,
    database: str = DB_NAME,
    password: str | None = None,
) -> str:
    """The SQLAlchemy URI MLflow takes as ``--backend-store-uri`` (driver: psycopg 3)."""
    secret = f":{password}" if password else ""
    return f"postgresql://{user}{secret}@{host}:{port}/{database}"


def _as_system_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", SYSTEM_USER, "--", *cmd] if os.geteuid() == 0 else cmd


def init_database(data: Path, password: str | None = None, user: str = DB_USER) -> None:
    """``initdb`` a new cluster in ``data`` (no-op when it already holds one) whose superuser is
    ``user``. Without ``password`` it trusts connections from this machine only (tests, one
    person); with one, TCP connections from anywhere need it (scram-sha-256)."""
    data = Path(data)
    if (data / "PG_VERSION").exists():
        return
    data.mkdir(parents=True, exist_ok=True)
    cmd = [str(postgres_binary("initdb")), "-D", str(data), "-U", user, "-E", "UTF8"]
    cmd += ["--no-locale", "--auth-local=trust"]
    secret = None
    if password:
        secret = data.parent / f".{data.name}.pw"
        secret.unlink(missing_ok=True)  # created owner-only: never readable by others
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password)
        cmd += ["--auth-host=scram-sha-256", f"--pwfile={secret}"]
    else:
        cmd += ["--auth-host=trust"]
    if os.geteuid() == 0:
        shutil.chown(data, SYSTEM_USER, SYSTEM_USER)
        if secret is not None:
            shutil.chown(secret, SYSTEM_USER, SYSTEM_USER)
    try:
        done = subprocess.run(_as_system_user(cmd), capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"initdb failed in {data}: {done.stderr.strip()[-2000:]}")
    finally:
        if secret is not None:
            secret.unlink()
    if password:  # initdb lets in 127.0.0.1 only: the team connects from its own machines
        with open(data / "pg_hba.conf", "a", encoding="utf-8") as hba:
            hba.write("host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n")
    log.info("initialised a PostgreSQL cluster in %s (superuser %s)", data, user)


def _system_user_options() -> dict[str, Any]:
    """:class:`subprocess.Popen` options that run a program as :data:`SYSTEM_USER` when this
    process is root (PostgreSQL refuses root), with its groups and the variables ``runuser``
    sets; none otherwise. The program is then this process's own child, not ``runuser``'s."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam(SYSTEM_USER)
    env = dict(os.environ, HOME=user.pw_dir, USER=SYSTEM_USER, LOGNAME=SYSTEM_USER)
    return {
        "user": user.pw_uid,
        "group": user.pw_gid,
        "extra_groups": os.getgrouplist(SYSTEM_USER, user.pw_gid),
        "env": env,
    }


def _stop_with_parent(signum: int) -> Callable[[], None]:
    """A ``preexec_fn`` that has the kernel send the child ``signum`` when this process dies,
    however it dies (``prctl(PR_SET_PDEATHSIG)``, Linux only).

    The signal follows the *thread* that forks, not the process: start the child from a thread
    that lives as long as it should (the main thread). CPython (3.9+) calls ``preexec_fn`` after
    it switched to ``user=`` / ``group=``, so the setting survives: the kernel clears it on a
    change of credentials, and on the exec of a set-user-ID program (postgres is none). That is
    why postgres is not started through ``runuser`` any more: runuser forks, and its child, the
    postgres that holds the port, would not have it."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded here: no dlopen after the fork
    parent = os.getpid()

    def preexec() -> None:
        if prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before the setting: do not start
            raise RuntimeError("the parent exited while postgres was starting")

    return preexec


def start_database(
    data: Path,
    port: int,
    host: str = "127.0.0.1",
    log_file: IO | None = None,
    stop_with_parent: bool = True,
) -> subprocess.Popen:
    """Start ``postgres`` on ``host:port`` for the cluster in ``data`` (its Unix socket in
    ``data``) as a new process group (Ctrl-C in a terminal reaches this process, which stops
    postgres, not postgres itself); returns the postmaster's process (stop it with
    :func:`stop_database`).

    With ``stop_with_parent`` (Linux), postgres gets SIGINT (its fast shutdown) when the thread
    that calls this exits, even by ``kill -9``: call it from the main thread."""
    program = str(postgres_binary("postgres"))
    cmd = [program, "-D", str(data), "-p", str(port), "-h", host, "-k", str(data)]
    preexec = None
    if stop_with_parent and sys.platform == "linux":
        preexec = _stop_with_parent(signal.SIGINT)
    return subprocess.Popen(
        cmd,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=preexec,  # noqa: PLW1509 - one prctl call, no lock taken, no Python import
        **_system_user_options(),
    )


def stop_database(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> None:
    """Stop the postmaster ``proc`` (started by :func:`start_database`) as PostgreSQL asks:
    SIGINT, its fast shutdown (ends the sessions, writes a checkpoint, frees the port); after
    ``timeout`` seconds SIGQUIT, its immediate shutdown (the next start recovers from the WAL);
    10 s later SIGKILL.

    Not SIGTERM (:func:`ferops.processes.stop_process_group`): to PostgreSQL that is a smart
    shutdown, which waits until every client has disconnected. Nor a signal to its process
    group: each backend runs in a group of its own (postmaster children call ``setsid``)."""
    for signum, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 10.0)):
        if proc.poll() is not None:
            return
        proc.send_signal(signum)
        try:
            proc.wait(timeout=wait)
            log.info("PostgreSQL stopped (%s)", signal.Signals(signum).name)
            return
        except subprocess.TimeoutExpired:
            log.warning("PostgreSQL still runs %s s after %s", wait, signal.Signals(signum).name)
    proc.kill()
    proc.wait(timeout=10)


def probe_host(listen: str) -> str:
    """Where this machine reaches a server started with ``-h listen`` (postgres' comma-separated
    list of addresses): its first address, or 127.0.0.1 for a wildcard (``*``, 0.0.0.0, ::)."""
    first = listen.split(",")[0].strip()
    return "127.0.0.1" if first in ("", "*", "0.0.0.0", "::") else first


def wait_database(
    port: int,
    timeout: float,
    proc=None,
    user: str = DB_USER,
    password: str | None = None,
    host: str = "127.0.0.1",
) -> None:
    """Poll until the server on ``host:port`` accepts a connection, the process dies, or
    ``timeout`` passes."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {proc.returncode} before it answered")
        try:
            psycopg.connect(
                host=host,
                port=port,
                user=user,
                password=password,
                dbname="postgres",
                connect_timeout=2,
            ).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def create_database(
    port: int,
    name: str = DB_NAME,
    user: str = DB_USER,
    password: str | None = None,
    host: str = "127.0.0.1",
) -> None:
    """Create database ``name`` owned by ``user`` unless it exists."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=host, port=port, user=user, password=password, dbname="postgres", autocommit=True
    ) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(user)
            )
        )
        log.info("created database %s", name)


def _rewrite(value, artifacts: tuple[str, str] | None):
    """``value`` with the location prefix ``artifacts[0]`` (a whole path part) replaced."""
    if not artifacts or not isinstance(value, str) or not value.startswith(artifacts[0]):
        return value
    rest = value[len(artifacts[0]) :]
    if rest and not artifacts[0].endswith("/") and not rest.startswith("/"):
        return value  # /x/mlruns-old is not under /x/mlruns
    return artifacts[1] + rest


def _revision(engine) -> str:
    """The Alembic schema revision of an MLflow store."""
    import sqlalchemy as sa

    with engine.connect() as conn:
        return str(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar())


def copy_history(
    source_uri: str, target_uri: str, artifacts: tuple[str, str] | None = None
) -> dict[str, int]:
    """Copy every row of an MLflow sqlite store (``sqlite:///mlflow.db``) into an empty
    PostgreSQL store; returns rows copied per table.

    The target is brought to this MLflow's schema (``mlflow db upgrade``); the source is only
    read and must be at the same schema revision (else it is refused), so their tables are the
    same; rows are copied in foreign-key order, then PostgreSQL's id sequences
    are moved past the copied ids. A target holding anything but MLflow's empty ``Default``
    experiment is refused. ``artifacts=(old, new)`` rewrites artifact locations that start with
    ``old`` (e.g. ``/home/me/ferops/mlruns`` → ``mlflow-artifacts:`` once the folder is copied
    to the server's ``--artifacts-destination``); other locations are copied as they are.
    """
    import sqlalchemy as sa
    from mlflow.store.db.utils import _initialize_tables, _is_empty_database, _upgrade_db

    source, target = sa.create_engine(source_uri), sa.create_engine(target_uri)
    try:
        # The source is only read: a mistyped SQLite path must not become a new empty history
        # (SQLite creates the file on connect), nor is the user's own file upgraded in place.
        database = source.url.database
        if source.url.get_backend_name() == "sqlite" and database and not Path(database).is_file():
            raise FileNotFoundError(f"no MLflow history at {source_uri}")
        if _is_empty_database(source):
            raise ValueError(f"{source_uri} holds no MLflow tables")
        # MLflow's own schema code brings the target to this MLflow's tables
        (_initialize_tables if _is_empty_database(target) else _upgrade_db)(target)
        revisions = [_revision(engine) for engine in (source, target)]
        if revisions[0] != revisions[1]:
            raise ValueError(
                f"the source's schema is at {revisions[0]}, this MLflow's at "
                f"{revisions[1]}: run `mlflow db upgrade` on a copy of the source "
                "and migrate that copy"
            )
        src_meta, dst_meta = sa.MetaData(), sa.MetaData()
        src_meta.reflect(source)
        dst_meta.reflect(target)
        tables = [t for t in dst_meta.sorted_tables if t.name != "alembic_version"]
        counts: dict[str, int] = {}
        with source.connect() as src, target.begin() as dst:
            _empty_target(dst, dst_meta)
            for table in tables:
                if table.name not in src_meta.tables:
                    continue
                rows = src.execute(sa.select(src_meta.tables[table.name])).mappings()
                counts[table.name] = 0
                while chunk := rows.fetchmany(5000):
                    dst.execute(table.insert(), [_row(r, artifacts) for r in chunk])
                    counts[table.name] += len(chunk)
            _advance_sequences(dst, tables)
    finally:
        source.dispose()
        target.dispose()
    log.info("copied %s", ", ".join(f"{n} {t}" for t, n in counts.items() if n))
    return counts


def _row(row: Mapping, artifacts: tuple[str, str] | None) -> dict:
    return {k: _rewrite(v, artifacts) if k in ARTIFACT_COLUMNS else v for k, v in row.items()}


#: Tables MLflow's schema fills by itself (the ``Default`` experiment, the default workspace):
#: the source has the same rows, so the target's are replaced.
SEEDED_TABLES = ("experiments", "experiment_tags", "workspaces")


def _empty_target(conn, meta) -> None:
    """Refuse a target with history; clear the rows MLflow seeds a new store with."""
    import sqlalchemy as sa

    for table in meta.sorted_tables:
        if table.name in ("alembic_version", *SEEDED_TABLES):
            continue
        if conn.execute(sa.select(sa.func.count()).select_from(table)).scalar():
            raise ValueError(
                f"the target store is not empty (table {table.name}): copy into a new database"
            )
    names = conn.execute(sa.select(meta.tables["experiments"].c.name)).scalars().all()
    if set(names) - {"Default"}:
        raise ValueError(
            f"the target store is not empty (experiments {names}): copy into a new database"
        )
    for table in reversed(meta.sorted_tables):
        if table.name in SEEDED_TABLES:
            conn.execute(table.delete())


def _advance_sequences(conn, tables) -> None:
    import sqlalchemy as sa

    for table in tables:
        for column in table.primary_key.columns:
            sequence = conn.execute(
                sa.text("SELECT pg_get_serial_sequence(:t, :c)"),
                {"t": table.name, "c": column.name},
            ).scalar()
            if sequence:
                top = conn.execute(sa.select(sa.func.max(column))).scalar()
                if top is not None:
                    conn.execute(sa.text("SELECT setval(:s, :v)"), {"s": sequence, "v": top})


class Stopped(BaseException):
    """A stop signal arrived (raised in the main thread by :func:`_stopped`). A
    :class:`BaseException`, as :class:`KeyboardInterrupt`: ``except Exception`` in the code it
    interrupts does not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stopped(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


def serve_database(data: Path, port: int, host: str, password: str | None) -> int:
    """Initialise, start and run the database until a stop signal (see the module docstring);
    returns 0 once stopped by a signal, else PostgreSQL's own exit status.

    SIGTERM and SIGINT stop it whatever this process inherited: :func:`signal.signal` replaces
    an inherited ``SIG_IGN`` (a non-interactive shell starts background jobs with SIGINT
    ignored, and Python keeps that as it is). SIGHUP stops it too, unless inherited ignored:
    ``nohup`` asks to outlive the terminal. Exit status 0, not 128 + the signal: stopping when
    asked is a server's success (systemd, Docker, Kubernetes count it so)."""
    for signum in STOP_SIGNALS:
        if signum != signal.SIGHUP or signal.getsignal(signum) != signal.SIG_IGN:
            signal.signal(signum, _stopped)
    proc = None
    try:
        init_database(data, password)
        proc = start_database(data, port, host)
        probe = probe_host(host)  # --host may be one interface that is not 127.0.0.1
        wait_database(port, 60, proc, password=password, host=probe)
        create_database(port, password=password, host=probe)
        shown = postgres_uri(
            port,
            "127.0.0.1" if host == "127.0.0.1" else "HOST",
            password="…" if password else None,
        )
        log.info("tracking database ready: mlflow server --backend-store-uri %s", shown)
        return proc.wait()
    except Stopped as stop:
        log.info("%s: stopping PostgreSQL", stop)
        return 0
    finally:
        for signum in STOP_SIGNALS:  # a second signal must not interrupt the shutdown
            signal.signal(signum, signal.SIG_IGN)
        if proc is not None:
            stop_database(proc)


def main(argv: list[str] | None = None) -> int:
    """``python -m ferops.teamserver db|migrate``: see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m ferops.teamserver",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    db = sub.add_parser("db", help="run the tracking database (initialised when new)")
    db.add_argument("data", type=Path, help="the database's data folder")
    db.add_argument("--port", type=int, default=DEFAULT_DB_PORT)
    db.add_argument("--host", default="127.0.0.1", help="listen address (0.0.0.0: the team)")
    db.add_argument(
        "--password-file",
        type=Path,
        default=None,
        help="the mlflow role's password (required unless --host is 127.0.0.1)",
    )
    copy = sub.add_parser("migrate", help="copy a sqlite MLflow history into PostgreSQL")
    copy.add_argument("source", help="sqlite:///mlflow.db")
    copy.add_argument("target", help="postgresql://mlflow@host:5432/mlflow")
    copy.add_argument(
        "--artifacts",
        nargs=2,
        metavar=("OLD", "NEW"),
        default=None,
        help="rewrite artifact locations starting with OLD to start with NEW",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "migrate":
        artifacts = tuple(args.artifacts) if args.artifacts else None
        copy_history(args.source, args.target, artifacts)
        return 0
    password = args.password_file.read_text().strip() if args.password_file else None
    if args.host != "127.0.0.1" and not password:
        parser.error("a database other machines reach needs --password-file")
    return serve_database(args.data, args.port, args.host, password)


if __name__ == "__main__":
    sys.exit(main())
