"""Shared fixtures: the store's two databases, real ones, for every test that asks.

``store_url`` (and ``store``, ``empty_database_url``) are parametrised over ``sqlite`` and
``postgresql``: a test written once runs against both. PostgreSQL is a throw-away server
started for the session in a temporary directory, listening on 127.0.0.1 and a private unix
socket, with durability switched off (it is thrown away anyway). When its binaries are
missing, the PostgreSQL half is skipped with a loud reason, except under CI=true, where it
fails: CI must prove both databases. `make test` installs them first (scripts/ensure-postgres.sh).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgserver import PostgresServer, PostgresUnavailable, start_postgres

from escbridge.store import Store, head_revision, upgrade
from escbridge.store.schema import metadata

# every helpdesk request and emulator answer of the suite is checked against the kept contracts
pytest_plugins = ("contract.plugin",)

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


# --- the session's PostgreSQL server ------------------------------------------------------


def empty_tables(server: PostgresServer, database: str) -> None:
    """Delete every row of escbridge's tables and reset the schema version, ending any
    connection a test left open (faster than a new database per test)."""
    import psycopg

    with psycopg.connect(
        host="127.0.0.1", port=server.port, user="postgres", dbname=database, autocommit=True
    ) as connection:
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        tables = ", ".join(f'"{t}"' for t in metadata.tables)
        connection.execute(f"TRUNCATE {tables} RESTART IDENTITY".encode())
        connection.execute("UPDATE alembic_version SET version_num = %s", (head_revision(),))


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
    with contextlib.suppress(Exception):
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
    empty_tables(server, name)
    yield server.url(name)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """An open Store on a fresh database of the backend under test."""
    with Store(store_url) as opened:
        yield opened
