"""Schema versions: Alembic migrations shipped inside the package, run by `escbridge db upgrade`.

No alembic.ini is needed: the configuration is built here and the migrations are found as
package data, so an installed escbridge can upgrade its own database. A store at another
version is refused with a message that says what to do (:class:`StoreSchemaError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from escbridge.errors import StoreSchemaError, StoreUnavailableError
from escbridge.store.database import create_engine, parse_url, safe_url, unavailable_as_typed
from escbridge.store.schema import metadata

SCRIPT_LOCATION = "escbridge.store:migrations"
#: Serialises concurrent `db upgrade` runs on PostgreSQL (an arbitrary, fixed 64-bit key).
_PG_LOCK_KEY = 0x65736362726467


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """The Alembic configuration for the shipped migrations, bound to ``connection``."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The schema revision this escbridge is written for."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def known_revisions() -> frozenset[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return frozenset(rev.revision for rev in script.walk_revisions())


def current_revision(connection: sa.Connection) -> str | None:
    """The revision the database is at, or None when escbridge never set it up."""
    return MigrationContext.configure(connection).get_current_revision()


@dataclass(frozen=True)
class UpgradeResult:
    url: str
    before: str | None
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


def upgrade(url: str, revision: str = "head") -> UpgradeResult:
    """Bring the database at ``url`` to ``revision`` (creating the SQLite file if needed)."""
    folder = sqlite_file(url)
    if folder is not None and not folder.parent.is_dir():
        raise StoreUnavailableError(
            f"store unavailable ({safe_url(url)}): the folder {folder.parent} does not exist — "
            "create it, or point store: (or --store) at a file in an existing folder"
        )
    engine = create_engine(url)
    try:
        with unavailable_as_typed(url), engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            before = current_revision(connection)
            command.upgrade(alembic_config(connection), revision)
            after = current_revision(connection)
    finally:
        engine.dispose()
    assert after is not None
    return UpgradeResult(url=safe_url(url), before=before, after=after)


def check_schema(engine: sa.Engine, url: str) -> None:
    """Raise StoreSchemaError unless the database is exactly at the head revision.

    A SQLite file that is not there is said so without connecting: connecting would leave an
    empty file behind (a mistyped path would litter the disk)."""
    missing = sqlite_file(url)
    if missing is not None and not missing.parent.is_dir():
        raise StoreUnavailableError(
            f"store unavailable ({safe_url(url)}): the folder {missing.parent} does not exist "
            "— create it, or point store: (or --store) at a file in an existing folder"
        )
    if missing is not None and not missing.exists():
        raise StoreSchemaError(
            f"store {safe_url(url)}: does not exist yet — run `escbridge db upgrade` to create "
            "it (or check the path)"
        )
    with unavailable_as_typed(url), engine.connect() as connection:
        current = current_revision(connection)
        tables = set(sa.inspect(connection).get_table_names()) if current is None else set()
    problem = schema_problem(current, tables)
    if problem is not None:
        raise StoreSchemaError(f"store {safe_url(url)}: {problem}")


def schema_problem(current: str | None, tables: set[str] | None = None) -> str | None:
    """What is wrong with a database at ``current``, in words an operator can act on."""
    head = head_revision()
    if current == head:
        return None
    if current is None:
        ours = set(metadata.tables) & (tables or set())
        if ours:
            return (
                f"has escbridge tables ({', '.join(sorted(ours))}) but no schema version; "
                "it was not created by `escbridge db upgrade`"
            )
        return "is not initialised; run `escbridge db upgrade` to create its tables"
    if current in known_revisions():
        return (
            f"schema is at revision {current}, this escbridge needs {head}; "
            "run `escbridge db upgrade`"
        )
    return (
        f"schema is at revision {current}, which this escbridge ({head}) does not know: "
        "it was upgraded by a newer escbridge; upgrade escbridge on this machine"
    )


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite store URL (None for any other store, or an in-memory one)."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    return None if database in ("", ":memory:") else Path(database)
