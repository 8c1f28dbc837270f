"""Outages of the store's database for the recovery tests: it stops taking writes, then comes
back, while the process using it keeps running (test support, not part of escbridge).

SQLite: the database file is made read-only (mode 0444), then writable again. Root ignores
permission bits, so when the tests run as root the store-using side of the test acts as an
unprivileged user (effective uid and gid switched in this process, and switched back: the
real uid stays root), with the database in a directory that user owns. A connection SQLite
opens then really is read-only, as it is for an escbridge process under its service account.

Two things to know. SQLite gives a WAL file it opens while it is *empty* the mode of the
database file: a database nobody wrote to since its last checkpoint gets a read-only -wal
during the outage, and new connections stay read-only after the database file is writable
again, until the -wal is too (escbridge's /readyz then rightly says "not ready"). A busy
database's -wal is not empty, so the tests write before the outage, as escbridge would have.
And while acting as the unprivileged user, this process cannot import a module it has not
imported yet from a root-only directory (such as a pyenv Python under /root): every such
import fails loudly (ModuleNotFoundError), never silently.

PostgreSQL: the throw-away server is stopped and started again, same data directory and port
(:meth:`pgserver.PostgresServer.pause`, ``resume``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pgserver import PostgresServer

__all__ = ["PostgresOutage", "SqliteOutage"]

#: The unprivileged account the SQLite side acts as when the tests run as root.
UNPRIVILEGED = "nobody"


class SqliteOutage:
    """A SQLite store in a directory of its own whose file can be made unwritable."""

    def __init__(self, template: Path) -> None:
        self._account = pwd.getpwnam(UNPRIVILEGED) if os.geteuid() == 0 else None
        self.directory = Path(tempfile.mkdtemp(prefix="escbridge-outage-"))
        self.path = self.directory / "escbridge.db"
        shutil.copyfile(template, self.path)
        if self._account is not None:
            for path in (self.directory, self.path):
                os.chown(path, self._account.pw_uid, self._account.pw_gid)
        self.url = f"sqlite:///{self.path}"

    @contextlib.contextmanager
    def acting(self) -> Iterator[None]:
        """Run the block as the store's unprivileged owner (nothing changes for a non-root run).

        Everything that opens the store's connections must run inside: a connection opened
        as root would be writable whatever the file's mode.
        """
        if self._account is None:
            yield
            return
        os.setegid(self._account.pw_gid)
        os.seteuid(self._account.pw_uid)
        try:
            yield
        finally:
            os.seteuid(0)
            os.setegid(0)

    def begin(self) -> None:
        """The database file stops taking writes (to connections opened from now on)."""
        self.path.chmod(0o444)
        assert not os.access(self.path, os.W_OK, effective_ids=True), (
            "the file is still writable to this user"
        )

    def end(self) -> None:
        self.path.chmod(0o644)
        assert os.access(self.path, os.W_OK, effective_ids=True)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class PostgresOutage:
    """The throw-away PostgreSQL server stopped, then started again."""

    def __init__(self, server: PostgresServer, url: str) -> None:
        self.server = server
        self.url = url
        self._down = False

    @contextlib.contextmanager
    def acting(self) -> Iterator[None]:
        yield

    def begin(self) -> None:
        self.server.pause()
        self._down = True

    def end(self) -> None:
        self.server.resume()
        self._down = False

    def remove(self) -> None:
        """Never leave the session's server stopped, whatever the test did."""
        if self._down:
            self.end()
