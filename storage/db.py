"""Database engine, sessions and schema versions (SQLite by default, PostgreSQL in production).

One URL chooses the dialect: ``sqlite:///path`` (WAL journal, foreign keys, busy timeout)
or ``postgresql://...`` (asyncpg). Sessions are SQLAlchemy ``AsyncSession`` objects from
SQLModel, one per unit of work, never shared between tasks.

Schema versions: a fresh database gets every table of the current code and is stamped
with :data:`SCHEMA_VERSION`; a database stamped with an older version is upgraded by the
pending :class:`Migration` steps in order, each in its own transaction, never dropped.
A database newer than the code is refused rather than guessed at.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, DateTime, event, inspect, text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

log = logging.getLogger(__name__)


class DatabaseError(Exception):
    """Root of database set-up errors."""


class SchemaTooNew(DatabaseError):
    def __init__(self, found: int, supported: int) -> None:
        super().__init__(
            f"the database has schema version {found}, newer than this code's {supported}; "
            "upgrade Kanjia instead"
        )
        self.found = found
        self.supported = supported


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every dialect (stored as naive UTC, returned aware)."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; give a timezone")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: ``upgrade`` runs on a sync connection inside a transaction."""

    version: int
    description: str
    upgrade: Callable[[Connection], None]


def _add_recorded_ranges(conn: Connection) -> None:
    # The step needs the service's models, which import this module: imported late.
    from replay.index_store import backfill_ranges
    from replay.models import RecordedRange, Segment

    RecordedRange.__table__.create(conn)  # type: ignore[attr-defined]
    for index in Segment.__table__.indexes:  # type: ignore[attr-defined]
        if index.name == "segments_by_event":
            index.create(conn)
    log.info("recorded ranges built from the indexed segments: %d", backfill_ranges(conn))


#: Schema steps after version 1 (the first release's tables), in order.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(2, "recorded ranges and event clips for the timeline", _add_recorded_ranges),
)
SCHEMA_VERSION = 1 + len(MIGRATIONS)

_VERSION_TABLE = "kanjia_schema"


def async_url(url: str) -> str:
    """Map a configured URL to its async driver (``aiosqlite`` or ``asyncpg``)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return str(parsed.set(drivername="sqlite+aiosqlite"))
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise DatabaseError(f"unsupported database URL scheme {parsed.drivername!r}")


def _sqlite_pragmas(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _read_version(conn: Connection) -> int | None:
    if not inspect(conn).has_table(_VERSION_TABLE):
        return None
    row = conn.execute(text(f"SELECT version FROM {_VERSION_TABLE}")).first()  # noqa: S608
    return None if row is None else int(row[0])


def _stamp(conn: Connection, version: int) -> None:
    conn.execute(text(f"DELETE FROM {_VERSION_TABLE}"))  # noqa: S608
    conn.execute(
        text(f"INSERT INTO {_VERSION_TABLE} (version) VALUES (:v)"),  # noqa: S608
        {"v": version},
    )


def migrate(
    conn: Connection, *, metadata: Any, migrations: Sequence[Migration], latest: int
) -> tuple[int | None, int]:
    """Bring the schema on ``conn`` to ``latest``; return (version found, version now)."""
    if conn.dialect.name == "postgresql":
        # Several gateways may start at once: one migrates, the others wait.
        conn.execute(text("SELECT pg_advisory_xact_lock(4242424242)"))
    found = _read_version(conn)
    if found is None:
        existing = set(inspect(conn).get_table_names())
        if existing:
            raise DatabaseError(
                f"the database has tables {sorted(existing)[:5]} but no {_VERSION_TABLE} "
                "table: it is not a Kanjia database"
            )
        metadata.create_all(conn)
        conn.execute(text(f"CREATE TABLE {_VERSION_TABLE} (version INTEGER NOT NULL)"))
        _stamp(conn, latest)
        return None, latest
    if found > latest:
        raise SchemaTooNew(found, latest)
    for step in migrations:
        if found < step.version <= latest:
            log.info("schema upgrade to %d: %s", step.version, step.description)
            step.upgrade(conn)
            _stamp(conn, step.version)
    # Tables introduced without a dedicated step (new tables only) are created here.
    metadata.create_all(conn)
    return found, latest


class Database:
    """The engine and its sessions; ``async with Database.open(url) as db``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        url: str,
        *,
        metadata: Any = None,
        migrations: Sequence[Migration] = MIGRATIONS,
        latest: int | None = None,
    ) -> AsyncIterator[Database]:
        parsed = make_url(url)
        kwargs: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs["pool_size"] = 10
            kwargs["max_overflow"] = 20
            kwargs["pool_pre_ping"] = True
        engine = create_async_engine(async_url(url), **kwargs)
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        try:
            target = SQLModel.metadata if metadata is None else metadata
            version = SCHEMA_VERSION if latest is None else latest
            async with engine.begin() as conn:
                found, now = await conn.run_sync(
                    lambda c: migrate(c, metadata=target, migrations=migrations, latest=version)
                )
            log.info("database %s: schema %s -> %d", engine.dialect.name, found, now)
            yield cls(engine)
        finally:
            await engine.dispose()

    def session(self) -> AsyncSession:
        """A new session; use as ``async with db.session() as s``."""
        return AsyncSession(self.engine, expire_on_commit=False)
