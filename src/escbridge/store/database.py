"""Connecting to the store's database: SQLite tuned for several processes, or PostgreSQL.

SQLite runs in WAL mode (readers never block the writer) with a busy timeout and
``synchronous=FULL`` (a commit is on disk when it returns: power-loss durable), and every
transaction starts with ``BEGIN IMMEDIATE``: a transaction that reads then writes would
otherwise be refused outright ("database is locked") instead of waiting its turn, because
SQLite cannot upgrade a read lock while another writer holds the database.

Database trouble that a retry may cure (refused connection, lock timeout, dropped server)
becomes :class:`~escbridge.errors.StoreUnavailableError`, which callers answer with a 503.
A connection that met such trouble is discarded, not pooled again (:func:`_discard_failed`):
a SQLite connection opened while its file was read-only stays read-only for good, and one
to a PostgreSQL server that went away is dead; either would keep refusing writes after the
database is back. :func:`probe_write` tells whether the next write would get in (``/readyz``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from escbridge.errors import StoreUnavailableError, StoreUrlError
from escbridge.secrets import MASK, quote_userinfo, redact
from escbridge.secrets import safe_url as secrets_safe_url
from escbridge.wording import pip_install

DEFAULT_URL = "sqlite:///escbridge.db"


SUPPORTED = "sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST/DB"
"""The store URLs escbridge takes, as every message about a bad one names them."""

_BACKENDS = {"sqlite": ("pysqlite",), "postgresql": ("psycopg",), "postgres": ("psycopg",)}
_HOST_PORT = re.compile(r"^[\w.-]+:\d+(?:/|$)")
_AUTHORITY = re.compile(r"(\[[^\]]*\]|[^:/?#]*)(?::([^/?#]*))?")  # host[:port], after the "@"


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a store URL, with the fix; None when it can.

    The one check of a store URL, made before anything connects (escbridge.yaml's ``store``,
    every ``--store``, :func:`parse_url`), so a typo is one line naming the fix, never a
    traceback from the URL parser or the driver. A password never appears in the message,
    however broken the rest of the URL is.
    """
    text = url.strip()
    if not text:
        return f"is empty: write {SUPPORTED}"
    if "://" not in text:
        if "@" in text or _HOST_PORT.match(text):
            return "is not a URL: write postgresql+psycopg://USER:PASSWORD@HOST/DB"
        return (
            f'"{text}" is not a URL: for a SQLite file write sqlite:///{text} '
            "(or postgresql+psycopg://USER:PASSWORD@HOST/DB for PostgreSQL)"
        )
    scheme, _, rest = text.partition("://")
    userinfo, at, after = ("", "", rest) if rest.startswith("/") else rest.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    shown = secrets_safe_url(f"{scheme}://{user}{colon and ':' + MASK}{at}{after}")
    backend, plus, driver = scheme.lower().partition("+")
    if backend not in _BACKENDS:
        return f'unsupported store URL {shown} (scheme "{scheme}"): escbridge supports {SUPPORTED}'
    if plus and driver not in _BACKENDS[backend]:
        wanted = "sqlite:///PATH" if backend == "sqlite" else "postgresql+psycopg://…"
        return f'driver "{driver}" in {shown} is not supported: write {wanted}'
    authority = _AUTHORITY.match(after)
    host, port = (authority.group(1), authority.group(2)) if authority else ("", None)
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        return f'port "{port}" in {shown} is not a number from 1 to 65535 (PostgreSQL: 5432)'
    if backend == "sqlite" and host:
        return (
            f"{shown} names a host, but SQLite is a file: write sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    quoted = quote_userinfo(text)
    try:
        make_url(quoted)
    except (exc.ArgumentError, ValueError):
        return f"{shown} is not a valid URL: write {SUPPORTED}"
    return None


def parse_url(url: str | URL) -> URL:
    """The URL as SQLAlchemy sees it; ``postgresql://`` means the psycopg 3 driver.

    Raises StoreUrlError (an InvalidInputError and a ValueError) for a URL :func:`url_problem`
    refuses.
    """
    if isinstance(url, str):
        problem = url_problem(url)
        if problem is not None:
            raise StoreUrlError(problem)
    parsed = make_url(quote_userinfo(url) if isinstance(url, str) else url)  # raw p@ss/w:rd
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreUrlError(f"unsupported store URL {safe_url(parsed)}: use {SUPPORTED}")
    return parsed


def safe_url(url: str | URL) -> str:
    """The URL with its password hidden (whatever characters it holds), fit for logs."""
    text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    return secrets_safe_url(text)


def create_engine(url: str | URL, *, busy_timeout: float = 30.0) -> sa.Engine:
    """An engine for ``url``; no connection is made until first use."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, busy_timeout)
    try:
        import psycopg  # noqa: F401  (the driver SQLAlchemy loads for postgresql+psycopg)
    except ImportError:
        raise StoreUrlError(
            f"store {safe_url(parsed)} needs the PostgreSQL driver, escbridge's [postgres] extra: "
            f"{pip_install('escbridge[postgres]')}"
        ) from None
    engine = sa.create_engine(
        parsed,
        pool_size=10,
        max_overflow=20,
        pool_timeout=busy_timeout,
        # A webhook sender waits ~10 s for its answer: a 503 must come back before that.
        connect_args={"connect_timeout": max(1, min(10, int(busy_timeout)))},
    )
    _ping_when_idle(engine)
    _drop_read_only_sessions(engine)
    _commit_synchronously(engine)
    _discard_failed(engine)
    return engine


#: A pooled connection unused this long is checked before use (seconds).
IDLE_PING_AFTER = 10.0


def _ping_when_idle(engine: sa.Engine) -> None:
    """Check a pooled connection before use only when it sat idle.

    A restarted or failed-over server leaves dead connections in the pool. SQLAlchemy's
    ``pool_pre_ping`` checks on every checkout: a round trip per transaction, a fifth of a
    worker's time. A connection in steady use has just proved itself; one that sat idle (the
    usual victim of a restart) is pinged, and replaced if dead. A failure in between surfaces
    once as StoreUnavailableError, and SQLAlchemy then discards the whole pool.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(_dbapi_connection: Any, record: Any) -> None:
        record.info["escbridge_used_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        used = record.info.get("escbridge_used_at", 0.0)
        if time.monotonic() - used < IDLE_PING_AFTER:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.DisconnectionError("stale pooled connection") from error
        if not alive:
            raise exc.DisconnectionError("stale pooled connection")

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["escbridge_used_at"] = time.monotonic()


def _drop_read_only_sessions(engine: sa.Engine) -> None:
    """Never pool a PostgreSQL session that began read-only.

    A session opened on a hot standby, or while the database was set read-only
    (``default_transaction_read_only``), refuses every write for its whole life, while its
    reads succeed; pooled again, it would refuse writes after the primary is back. The
    server reports both settings when the session starts (PostgreSQL 14 and later), so such
    a session is marked then at no cost, used for what it is checked out for, and closed.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        status = dbapi_connection.info.parameter_status
        reported = (status("default_transaction_read_only"), status("in_hot_standby"))
        record.info["escbridge_read_only"] = "on" in reported

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is not None and record.info.get("escbridge_read_only"):
            record.invalidate()


def _commit_synchronously(engine: sa.Engine) -> None:
    """A COMMIT returns only once it is on disk: a 2xx for a webhook is a promise.

    escbridge never turns PostgreSQL's ``synchronous_commit`` off (nor sets it anywhere but
    here). A server, database or role configured with ``synchronous_commit = off`` would make
    a commit return before its WAL is flushed, and a crash would lose events already answered
    202; such a session is switched to ``on``. Every other value (``local``, ``remote_write``,
    ``on``, ``remote_apply``) waits at least for the local flush and is left as configured.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT current_setting('synchronous_commit')")
            row = cursor.fetchone()
            if row is not None and row[0] == "off":
                cursor.execute("SET synchronous_commit = on")
        finally:
            cursor.close()
        dbapi_connection.commit()  # a SET in a transaction rolled back would be undone


def _sqlite_engine(url: URL, busy_timeout: float) -> sa.Engine:
    memory = url.database in (None, "", ":memory:")
    kwargs: dict[str, Any] = {"connect_args": {"timeout": busy_timeout}}
    if memory:  # one connection, or every checkout would see a different empty database
        kwargs = {
            "connect_args": {"timeout": busy_timeout, "check_same_thread": False},
            "poolclass": StaticPool,
        }
    engine = sa.create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            if not memory:
                cursor.execute("PRAGMA journal_mode = WAL")
            # FULL: a commit is on disk (the WAL flushed) before it returns, so a 2xx survives
            # power loss and OS crashes, not only a killed process (NORMAL). Group commit at
            # the door (escbridge.store.enqueue) pays for the flush once per batch.
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    if not memory:  # (the one in-memory connection *is* the database: it is never discarded)
        _reopen_when_writable(engine, str(url.database))
        _discard_failed(engine)
    return engine


def _file_writable(path: str) -> bool:
    """Whether this process may open the database and its WAL for writing now, as SQLite
    tries to: when it may not, SQLite opens the connection read-only, silently.

    Asked with access(2), never by opening the file: closing any descriptor of a file drops
    every POSIX lock this process holds on it, SQLite's included. Without its shared lock on
    the database, another process closing its last connection deletes the WAL under this
    one, whose commits then go to a deleted file: answered 202, invisible to the workers,
    and lost if this process is killed.
    """
    for name in (path, f"{path}-wal"):
        if not os.path.exists(name):
            continue  # SQLite creates it: nothing read-only to remember
        if not os.access(
            name, os.R_OK | os.W_OK, effective_ids=os.access in os.supports_effective_ids
        ):
            return False
    return True


def _reopen_when_writable(engine: sa.Engine, path: str) -> None:
    """Never hand out a read-only SQLite connection once its file is writable again.

    SQLite opens a file it may not write read-only, silently, and the connection stays so
    after the file is writable again. Reads on it succeed (``/metrics``, reports), so it
    would go back to the pool and refuse the next write. Such a connection is marked when
    opened and replaced at its next checkout once the file can be written.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(_dbapi_connection: Any, record: Any) -> None:
        record.info["escbridge_read_only"] = not _file_writable(path)

    @event.listens_for(engine, "checkout")
    def _on_checkout(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if record.info.get("escbridge_read_only") and _file_writable(path):
            raise exc.DisconnectionError("opened read-only; the database file is writable now")


class SqliteWriterLock:
    """Serialises write transactions on one SQLite file across threads and processes.

    SQLite admits one writer at a time; a writer that finds the database locked waits in its
    busy handler, which polls with sleeps of up to 100 ms. Under several busy processes that
    costs most of the throughput. Queuing first on a POSIX file lock next to the database
    (and, within a process, on a thread lock) wakes the next writer the moment the previous
    one commits. Only escbridge's own writers take this lock; any other program writing the
    file is still covered by SQLite's busy timeout.

    A thread holding it may take it again (the receiver's group commit holds it while it
    gathers the waiting deliveries, then writes them): only the outermost holder locks the file.
    """

    def __init__(self, database: str | None) -> None:
        self._threads = threading.RLock()
        self._depth = 0  # how many times the thread holding _threads holds this lock
        self._path = None if database in (None, "", ":memory:") else f"{database}.writer-lock"
        self._fd: int | None = None
        self._pid = 0

    def _file(self) -> int:
        # A descriptor inherited through fork() shares the parent's lock: open our own.
        if self._fd is None or self._pid != os.getpid():
            assert self._path is not None
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            self._pid = os.getpid()
        return self._fd

    def __enter__(self) -> None:
        self._threads.acquire()
        self._depth += 1
        if self._path is None or self._depth > 1:
            return
        try:
            fcntl.flock(self._file(), fcntl.LOCK_EX)
        except OSError as error:
            self._depth -= 1
            self._threads.release()
            raise StoreUnavailableError(
                f"store unavailable: cannot lock {self._path}: {error.strerror}"
            ) from error

    def __exit__(self, *_exc: object) -> None:
        try:
            self._depth -= 1
            if self._depth == 0 and self._path is not None and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None


#: SQLite result codes (the primary code, low byte of the extended one) after which the
#: file itself is the trouble, so every pooled connection is suspect: READONLY, IOERR,
#: FULL, CANTOPEN, PROTOCOL.
_SQLITE_FILE_TROUBLE = frozenset({8, 10, 13, 14, 15})
#: ... and after which only the connection that met it is replaced: BUSY, LOCKED.
_SQLITE_LOCK_TROUBLE = frozenset({5, 6})
#: PostgreSQL SQLSTATE classes and codes after which the server (or which server) changed:
#: connection exceptions, insufficient resources (disk full, too many connections), system
#: errors (I/O), shut down or starting up, read-only transaction (failed over to a standby).
_PG_SERVER_CLASSES = ("08", "53", "58")
_PG_SERVER_CODES = frozenset({"57P01", "57P02", "57P03", "25006"})


def _trouble(error: BaseException, dbapi: Any) -> str | None:
    """``"store"`` when ``error`` says the database cannot take writes now (discard every
    pooled connection), ``"connection"`` when only this connection is suspect, else None
    (a wrong statement, a deadlock, a timeout: the connection is fine)."""
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        if code is None:
            return None
        if code & 0xFF in _SQLITE_FILE_TROUBLE:
            return "store"
        return "connection" if code & 0xFF in _SQLITE_LOCK_TROUBLE else None
    state = getattr(error, "sqlstate", None)
    if isinstance(state, str):
        if state in _PG_SERVER_CODES or state[:2] in _PG_SERVER_CLASSES:
            return "store"
        return None
    # A driver error with no SQLSTATE is the client's side of a broken connection.
    broken = isinstance(error, dbapi.OperationalError | dbapi.InterfaceError)
    return "connection" if broken else None


def _discard_failed(engine: sa.Engine) -> None:
    """Discard a connection that met database trouble instead of pooling it again.

    SQLAlchemy discards connections only for the disconnects it recognises; a read-only,
    full or locked database, or a failed-over server, leaves the connection in the pool, and
    every later write on it fails the same way after the database is back. Marking the error
    a disconnect makes SQLAlchemy close the connection (and, when the file or server is the
    trouble, every connection pooled before it); the next checkout opens a new one.
    """

    @event.listens_for(engine, "handle_error")
    def _on_error(context: sa.engine.ExceptionContext) -> None:
        if context.is_disconnect:
            return  # SQLAlchemy already discards it, and the pool with it
        trouble = _trouble(context.original_exception, context.dialect.loaded_dbapi)
        if trouble is None:
            return
        context.is_disconnect = True
        context.invalidate_pool_on_disconnect = trouble == "store"


#: How long ``/readyz``'s write probe waits for a lock before saying "not ready" (seconds).
PROBE_TIMEOUT = 2.0
#: The probe's write: one row of a table every current schema has, set to itself.
_PROBE = sa.text("UPDATE alembic_version SET version_num = version_num")


def probe_write(engine: sa.Engine, url: str | URL, *, timeout: float = PROBE_TIMEOUT) -> None:
    """Raise StoreUnavailableError unless a write would get in now; nothing is kept.

    A real write in a transaction that is rolled back, on a pooled connection (the one the
    next write would use): a read-only SQLite connection or file, a lock held past
    ``timeout``, a server gone or read-only all fail it; a connection that fails it is
    discarded like any other. The database must be at the current schema (``check_schema``).
    """
    millis = max(1, int(timeout * 1000))
    with unavailable_as_typed(url), engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            raw: Any = connection.connection.driver_connection
            try:  # the lock wait is the connection's busy timeout: shortened for the probe
                previous = int(raw.execute("PRAGMA busy_timeout").fetchone()[0])
                raw.execute(f"PRAGMA busy_timeout = {min(millis, previous)}")
            except sqlite3.Error as error:
                connection.invalidate(error)
                raise StoreUnavailableError(
                    f"store unavailable ({safe_url(url)}): {error}"
                ) from error
            try:
                _write_and_roll_back(connection)
            finally:
                if not connection.invalidated:
                    raw.execute(f"PRAGMA busy_timeout = {previous}")
            return
        with connection.begin() as transaction:
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = {millis}")
            connection.exec_driver_sql(f"SET LOCAL statement_timeout = {millis}")
            connection.execute(_PROBE)
            transaction.rollback()


def _write_and_roll_back(connection: sa.Connection) -> None:
    with connection.begin() as transaction:  # BEGIN IMMEDIATE: the write lock, at most `timeout`
        connection.execute(_PROBE)  # a read-only connection fails here, not at BEGIN
        transaction.rollback()


def is_unavailable(error: BaseException) -> bool:
    """Whether a database error means "not now" rather than "wrong": worth a retry or a 503."""
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(
        error,
        exc.OperationalError | exc.InterfaceError | exc.DisconnectionError | exc.TimeoutError,
    )


@contextlib.contextmanager
def unavailable_as_typed(url: str | URL) -> Iterator[None]:
    """Turn database outages into StoreUnavailableError, with the password kept out."""
    try:
        yield
    except exc.SQLAlchemyError as error:
        if not is_unavailable(error):
            raise
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()
        first = reason[0] if reason else type(error).__name__
        password = parse_url(url).password
        secrets = (str(password),) if password else ()
        raise StoreUnavailableError(
            f"store unavailable ({safe_url(url)}): {redact(first, secrets)}"
        ) from error
