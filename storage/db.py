"""Database engine, sessions and schema versions (SQLite by default, PostgreSQL in production).

One URL chooses the dialect: ``sqlite:///path`` (WAL journal, foreign keys, busy timeout)
or ``postgresql://...`` (asyncpg). Sessions are SQLAlchemy ``AsyncSession`` objects from
SQLModel, one per unit of work, never shared between tasks.

Schema versions: the caller hands :meth:`Database.open` its tables (a ``MetaData``) and its
:class:`Migration` steps (the service's are ``replay.migrations``). A fresh database gets
every table and is stamped with the latest version; a database stamped with an older
version is upgraded by the pending steps in order, each in its own transaction, never
dropped. A database newer than the code is refused rather than guessed at.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    DateTime,
    MetaData,
    Table,
    bindparam,
    event,
    insert,
    inspect,
    text,
    update,
)
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.transient import DEFAULT_BACKOFF, Backoff, retrying

log = logging.getLogger(__name__)

T = TypeVar("T")


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

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """On SQLite, one step to the text SQLAlchemy's ``DATETIME`` stores
        (``YYYY-MM-DD HH:MM:SS.ffffff``, the same string, so comparisons hold) instead of
        two chained processors: a batch of segment rows binds five times each, and the two
        steps were ~7 % of the gateway's ingest CPU (BENCHMARKS.md, ingest)."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        return _sqlite_utc_text

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _sqlite_utc_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetimes are not stored; give a timezone")
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: ``upgrade`` runs on a sync connection inside a transaction."""

    version: int
    description: str
    upgrade: Callable[[Connection], None]


def schema_version(migrations: Sequence[Migration]) -> int:
    """The version ``migrations`` bring a database to: 1 (the first tables) without steps."""
    return max((step.version for step in migrations), default=1)


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
    conn: Connection, *, metadata: MetaData, migrations: Sequence[Migration], latest: int
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


async def insert_many(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """One multi-row ``INSERT`` (executemany) of ``rows`` into ``table``, in ``session``'s
    transaction; the columns' types bind the values (JSON, aware datetimes)."""
    if rows:
        connection = await session.connection()
        await connection.execute(insert(table), list(rows))


async def update_many(
    session: AsyncSession, table: Table, key: str, rows: Sequence[dict[str, Any]]
) -> None:
    """``UPDATE table SET ... WHERE key = ...`` once per row, one executemany: every row
    names ``key`` and the same other columns."""
    if not rows:
        return
    columns = [name for name in rows[0] if name != key]
    statement = (
        update(table)
        .where(table.c[key] == bindparam(f"k_{key}"))
        .values({name: bindparam(f"v_{name}") for name in columns})
    )
    params = [
        {f"k_{key}": row[key], **{f"v_{name}": row[name] for name in columns}} for row in rows
    ]
    connection = await session.connection()
    await connection.execute(statement, params)


class Database:
    """The engine and its sessions;
    ``async with Database.open(url, metadata=..., migrations=...) as db``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # SQLite has one writer: in this process they take turns here instead of
        # competing for its file lock past the busy timeout ("database is locked").
        self._writer: contextlib.AbstractAsyncContextManager[object] = (
            asyncio.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        url: str,
        *,
        metadata: MetaData,
        migrations: Sequence[Migration],
        latest: int | None = None,
    ) -> AsyncIterator[Database]:
        """Open the engine and bring the schema to ``latest`` (by default the last step's
        version): ``metadata`` has every table, ``migrations`` the steps after version 1."""
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
            version = schema_version(migrations) if latest is None else latest
            async with engine.begin() as conn:
                found, now = await conn.run_sync(
                    lambda c: migrate(c, metadata=metadata, migrations=migrations, latest=version)
                )
            log.info("database %s: schema %s -> %d", engine.dialect.name, found, now)
            yield cls(engine)
        finally:
            await engine.dispose()

    def session(self) -> AsyncSession:
        """A new session for reading; use as ``async with db.session() as s``. A unit of
        work that writes uses :meth:`writing` or :meth:`write` instead."""
        return AsyncSession(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncSession]:
        """A session for a unit of work that writes (and commits inside the block).

        On SQLite the process's writers take turns (one block at a time), so none fails on
        the file lock; on PostgreSQL they run side by side. A block must not open another
        :meth:`writing` block: it would wait for itself.
        """
        async with self._writer, self.session() as session:
            yield session

    async def write(
        self,
        work: Callable[[AsyncSession], Awaitable[T]],
        *,
        name: str = "write",
        attempts: int = 8,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> T:
        """``work(session)`` in a :meth:`writing` block, committed; tried again with backoff
        while it fails for a transient reason (:func:`storage.transient.retrying`). ``work``
        must be safe to run again after a rollback."""

        async def once() -> T:
            async with self.writing() as session:
                result = await work(session)
                await session.commit()
                return result

        return await retrying(once, name=name, attempts=attempts, backoff=backoff)
