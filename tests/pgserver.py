"""A throw-away PostgreSQL server, for the test-suite and the benchmarks (test support: it is
not part of the escbridge distribution).

Started in a temporary directory, listening on 127.0.0.1 (a free port) and a unix socket in
that directory, with durability off (fsync, synchronous commit, full-page writes): it is
deleted afterwards, so nothing needs to survive a crash. PostgreSQL refuses to run as root;
as root, the server runs as the ``postgres`` system user (Debian's package creates it), or
as a system user made for it.

Needs the server binaries (``initdb``, ``pg_ctl``): on PATH, or in Debian's
``/usr/lib/postgresql/<version>/bin``. ``scripts/ensure-postgres.sh`` installs them.
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
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PostgresServer", "PostgresUnavailable", "find_postgres_bin", "start_postgres"]


class PostgresUnavailable(RuntimeError):
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
    """A running throw-away server; ``url(database)`` gives SQLAlchemy URLs for it."""

    bin_dir: Path
    root: Path
    port: int
    run_as: str | None
    _names: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _run(self, *args: str) -> None:
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

    def start(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--locale=C", "--no-sync",
        )  # fmt: skip
        self.resume()

    def resume(self) -> None:
        """Start the server on its data directory and port (again, after :meth:`pause`)."""
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
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "-t", "60", "start"
        )

    def pause(self) -> None:
        """Stop the server, keeping its data: an outage that :meth:`resume` ends.

        ``fast`` shutdown: the server ends every session (its clients see the connection
        dropped), as when an operator restarts it."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def stop(self) -> None:
        """Stop the server and delete its directory (safe to call twice)."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(PostgresUnavailable, OSError, subprocess.SubprocessError):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        """Run one administrative statement (outside a transaction)."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=database, autocommit=True
        ) as connection:
            connection.execute(sql.encode())

    def create_database(self, template: str = "template0") -> str:
        """A new empty database; returns its name."""
        if not re.fullmatch(r"\w+", template):
            raise ValueError(f"not a database name: {template!r}")
        name = f"escbridge_test_{next(self._names)}"
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def drop_database(self, name: str) -> None:
        if not re.fullmatch(r"\w+", name):
            raise ValueError(f"not a database name: {name!r}")
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_postgres() -> PostgresServer:
    """Start a throw-away server; PostgresUnavailable says why when it cannot."""
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        raise PostgresUnavailable(
            "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in "
            "/usr/lib/postgresql/*/bin"
        )
    try:
        run_as = _server_user()
    except (OSError, subprocess.SubprocessError) as error:
        raise PostgresUnavailable(f"no unprivileged user to run PostgreSQL as: {error}") from error
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
    atexit.register(server.stop)  # also when the caller is interrupted
    return server
