"""Shared fixtures: the store's two databases, real ones, for every test that asks.

``store_url`` (and ``store``, ``empty_database_url``) are parametrised over ``sqlite`` and
``postgresql``: a test written once runs against both. PostgreSQL is a throw-away server
started for the session in a temporary directory, listening on 127.0.0.1 and a private unix
socket, with durability switched off (it is thrown away anyway). When its binaries are
missing, the PostgreSQL half is skipped with a loud reason, except under CI=true, where it
fails: CI must prove both databases. `make test` installs them first (scripts/ensure-postgres.sh).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from escbridge.store import Store, head_revision, upgrade
from escbridge.store.schema import metadata

BACKENDS = ("sqlite", "postgresql")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_postgres_problem: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "postgresql: runs against the throw-away PostgreSQL server of the session"
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _postgres_problem:
        terminalreporter.write_sep("!", "PostgreSQL tests did not run", red=True, bold=True)
        terminalreporter.write_line(_postgres_problem[0], red=True)
        terminalreporter.write_line(
            "Install the server binaries (`sudo apt-get install postgresql`, or run "
            "`scripts/ensure-postgres.sh` as root) to run the store tests on PostgreSQL too.",
            red=True,
        )


# --- a throw-away PostgreSQL server ------------------------------------------------------


class PostgresUnavailable(Exception):
    """The PostgreSQL server binaries are missing or the server would not start."""


def find_postgres_bin() -> Path | None:
    """The directory holding initdb and pg_ctl: on PATH, else the newest Debian install."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for candidate in candidates:
        if (candidate / "pg_ctl").exists() and (candidate / "initdb").exists():
            return candidate
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_user() -> str | None:
    """PostgreSQL refuses to run as root: pick (or make) an unprivileged user for it."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "escbridge-pg"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "escbridge-pg"],
        check=True,
        capture_output=True,
    )
    return "escbridge-pg"


@dataclass
class PostgresServer:
    bin_dir: Path
    root: Path
    port: int
    run_as: str | None
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PostgresUnavailable(
                f"{' '.join(args[:2])} failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}\n{tail}"
            )
        return result

    def start(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--locale=C", "--no-sync",
        )  # fmt: skip
        options = " ".join(
            [
                f"-p {self.port}",
                f"-k {self.root}",
                "-c listen_addresses=127.0.0.1",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=300",
                "-c shared_buffers=128MB",
            ]
        )
        log = str(self.root / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(sql)

    def create_database(self, template: str = "template0") -> str:
        name = f"escbridge_test_{next(self._names)}"
        assert re.fullmatch(r"\w+", template)
        self.admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def empty_tables(self, name: str) -> None:
        """Delete every row of escbridge's tables, ending any connection a test left open."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=name, autocommit=True
        ) as connection:
            connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            tables = ", ".join(f'"{t}"' for t in metadata.tables)
            connection.execute(f"TRUNCATE {tables} RESTART IDENTITY")
            connection.execute("UPDATE alembic_version SET version_num = %s", (head_revision(),))

    def drop_database(self, name: str) -> None:
        with contextlib.suppress(Exception):
            self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_postgres() -> PostgresServer:
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        raise PostgresUnavailable(
            "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in "
            "/usr/lib/postgresql/*/bin"
        )
    run_as = _server_user()
    root = Path(tempfile.mkdtemp(prefix="escbridge-pg-"))
    if run_as is not None:
        account = pwd.getpwnam(run_as)
        os.chown(root, account.pw_uid, account.pw_gid)
    server = PostgresServer(bin_dir=bin_dir, root=root, port=_free_port(), run_as=run_as)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    atexit.register(server.stop)  # also when the session is interrupted
    return server


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[PostgresServer]:
    """The session's throw-away PostgreSQL server (skipped loudly, or failed under CI)."""
    try:
        server = start_postgres()
    except (PostgresUnavailable, OSError, subprocess.SubprocessError) as error:
        message = f"PostgreSQL unavailable: {error}"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: the PostgreSQL tests must run)", pytrace=False)
        _postgres_problem.append(message)
        pytest.skip(message)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _postgres_shared(postgresql_server: PostgresServer) -> str:
    """One database at the schema head, emptied before each test (much faster than a new
    database per test; tests do not run in parallel)."""
    name = postgresql_server.create_database()
    upgrade(postgresql_server.url(name))
    return name


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "escbridge.db"
    upgrade(f"sqlite:///{path}")
    return path


# --- the fixtures tests use ---------------------------------------------------------------


@pytest.fixture(params=BACKENDS, ids=BACKENDS)
def db_backend(request: pytest.FixtureRequest) -> str:
    """``sqlite`` or ``postgresql``: a test using it runs once on each."""
    backend: str = request.param
    if backend == "postgresql":
        request.applymarker(pytest.mark.postgresql)
    return backend


@pytest.fixture
def empty_database_url(
    db_backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[str]:
    """A new, empty database (no tables) on the backend under test."""
    if db_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgresql_server")
    name = server.create_database()
    yield server.url(name)
    server.drop_database(name)


@pytest.fixture
def store_url(db_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new database at the current schema, on the backend under test."""
    if db_backend == "sqlite":
        template: Path = request.getfixturevalue("_sqlite_template")
        path = tmp_path / "escbridge.db"
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    server: PostgresServer = request.getfixturevalue("postgresql_server")
    name: str = request.getfixturevalue("_postgres_shared")
    server.empty_tables(name)
    yield server.url(name)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """An open Store on a fresh database of the backend under test."""
    with Store(store_url) as opened:
        yield opened
