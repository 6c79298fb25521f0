"""Storage: engine, sessions and schema versions on SQLite and PostgreSQL (issue 2, #4)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlmodel
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    event,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy import column as sa_column
from sqlalchemy import table as sa_table
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from devices import accounts
from replay import index_store
from replay.migrations import SCHEMA_VERSION, open_database
from replay.models import (
    ChargeLine,
    FamilyCloudItem,
    FamilyCloudMembership,
    RecordedRange,
    Segment,
    UploadGrant,
)
from replay.object_keys import service_segment_id
from storage.db import Database, DatabaseError, Migration, SchemaTooNew, UTCDateTime


async def test_a_fresh_database_gets_every_table_and_the_current_version(
    database_url: str,
) -> None:
    async with open_database(database_url) as db, db.engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        version = (await conn.execute(text("SELECT version FROM kanjia_schema"))).scalar()
    assert {"accounts", "devices", "app_tokens", "kanjia_schema"} <= names
    assert {"segments", "device_commands", "broadband_states", "router_access"} <= names
    assert version == SCHEMA_VERSION


async def test_data_survives_a_restart_and_datetimes_stay_aware_utc(database_url: str) -> None:
    at = datetime(2026, 11, 30, 16, 30, tzinfo=UTC)
    async with open_database(database_url) as db, db.session() as s:
        await accounts.upsert_account(
            s,
            account_id="a1",
            owner_id="o",
            star_level=3,
            name=None,
            now=at.astimezone(timezone(timedelta(hours=8))),
        )
    async with open_database(database_url) as db, db.session() as s:
        account = await accounts.get_account(s, "a1")
    assert account.created_at == at
    assert account.created_at.tzinfo is not None
    assert account.created_at.utcoffset() == timedelta(0)


def _old_schema(conn: Connection) -> None:
    conn.execute(text("CREATE TABLE kanjia_schema (version INTEGER NOT NULL)"))
    conn.execute(text("INSERT INTO kanjia_schema (version) VALUES (1)"))
    conn.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body VARCHAR(50))"))
    conn.execute(text("INSERT INTO notes (id, body) VALUES (1, 'kept')"))


async def test_an_older_schema_is_upgraded_not_dropped(database_url: str) -> None:
    """A v1 database meets code at v2: the step runs once, the rows stay."""
    metadata = MetaData()
    Table(
        "notes",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("body", String(50)),
        Column("colour", String(10)),
    )

    def add_colour(conn: Connection) -> None:
        conn.execute(text("ALTER TABLE notes ADD COLUMN colour VARCHAR(10)"))
        conn.execute(text("UPDATE notes SET colour = 'blue'"))

    steps = (Migration(2, "notes get a colour", add_colour),)
    # Build the old database with the engine alone (no migration yet).
    async with (
        Database.open(database_url, metadata=MetaData(), migrations=(), latest=0) as db,
        db.engine.begin() as conn,
    ):
        await conn.exec_driver_sql("DROP TABLE kanjia_schema")
        await conn.run_sync(_old_schema)
    async with (
        Database.open(database_url, metadata=metadata, migrations=steps, latest=2) as db,
        db.engine.connect() as conn,
    ):
        rows = (await conn.execute(text("SELECT id, body, colour FROM notes"))).all()
        version = (await conn.execute(text("SELECT version FROM kanjia_schema"))).scalar()
    assert [tuple(r) for r in rows] == [(1, "kept", "blue")]
    assert version == 2
    # Opening again runs nothing more (the step would fail on a second ALTER).
    async with Database.open(database_url, metadata=metadata, migrations=steps, latest=2):
        pass


async def test_a_newer_schema_is_refused(database_url: str) -> None:
    async with open_database(database_url) as db, db.engine.begin() as conn:
        await conn.execute(text("UPDATE kanjia_schema SET version = 999"))
    with pytest.raises(SchemaTooNew) as caught:
        async with open_database(database_url):
            pass
    assert caught.value.found == 999


async def test_a_database_of_something_else_is_refused(database_url: str) -> None:
    async with (
        Database.open(database_url, metadata=MetaData(), migrations=(), latest=0) as db,
        db.engine.begin() as conn,
    ):
        await conn.exec_driver_sql("DROP TABLE kanjia_schema")
        await conn.exec_driver_sql("CREATE TABLE other_app (id INTEGER)")
    with pytest.raises(DatabaseError, match="not a Kanjia database"):
        async with open_database(database_url):
            pass


async def test_sqlite_runs_in_wal_mode(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/wal.db"
    async with open_database(url) as db, db.engine.connect() as conn:
        mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
    assert mode == "wal"


def _segment(
    device_id: str, start: datetime, seconds: int = 10, subscription_id: str = ""
) -> dict[str, object]:
    end = start + timedelta(seconds=seconds)
    subscription_id = subscription_id or f"sub-{device_id}"
    return {
        "segment_id": f"{device_id}-{subscription_id}-{start:%H%M%S}",
        "device_id": device_id,
        "account_id": "acc",
        "subscription_id": subscription_id,
        "kind": "continuous",
        "start": start,
        "end": end,
        "bytes": 1,
        "sha256": "0" * 64,
        "event_id": None,
        "object_key": f"rec/1d/{device_id}/{subscription_id}-{start:%H%M%S}.ts",
        "retention_class": "1d",
        "expires_at": end + timedelta(days=1),
        "indexed_at": end,
    }


T = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


async def _ranges(db: Database, device_ids: list[str] | None = None) -> list[tuple[Any, ...]]:
    """(device, start, end) of the kept ranges; with ``device_ids``, of those devices, with
    the subscription after the device."""
    table = RecordedRange.__table__  # type: ignore[attr-defined]
    columns = [table.c.device_id, table.c.start, table.c.end]
    query = select(*columns).order_by(*columns)
    if device_ids is not None:
        columns.insert(1, table.c.subscription_id)
        query = select(*columns).where(table.c.device_id.in_(device_ids)).order_by(*columns)
    async with db.engine.connect() as conn:
        return [tuple(row) for row in await conn.execute(query)]


async def test_schema_2_builds_the_kept_ranges_of_the_segments_already_indexed(
    database_url: str,
) -> None:
    """The step that adds the timeline's ranges fills them from a version-1 database."""
    async with open_database(database_url) as db, db.engine.begin() as conn:
        await conn.execute(text("DROP TABLE recorded_ranges"))
        # Version 1 had this index (step 2 once made it; step 12 drops it).
        await conn.execute(text("CREATE INDEX segments_by_event ON segments (event_id)"))
        await conn.execute(text("UPDATE kanjia_schema SET version = 1"))
        segments = [_segment("cam-1", T + timedelta(seconds=10 * i)) for i in (0, 1, 3)]
        await conn.execute(insert(Segment.__table__), segments)  # type: ignore[attr-defined]
    async with open_database(database_url) as db:
        assert await _ranges(db) == [
            ("cam-1", T, T + timedelta(seconds=20)),
            ("cam-1", T + timedelta(seconds=30), T + timedelta(seconds=40)),
        ]
        async with db.engine.connect() as conn:
            indexes = await conn.run_sync(lambda c: inspect(c).get_indexes("segments"))
    assert "segments_by_event" not in {index["name"] for index in indexes}


async def test_schema_5_scopes_segment_ids_to_their_camera(database_url: str) -> None:
    """Issue 14: a version-4 database, its segments and pending grants keyed by the camera's
    own id, is upgraded: the indexed segment keeps its id (URLs handed out keep their
    meaning) and stays its camera's alone; the pending grant is found by its camera's
    segment, so the notice arriving after the upgrade still indexes it."""
    old = _segment("cam-1", T)
    waiting = _segment("cam-1", T + timedelta(seconds=10))
    grant = {k: v for k, v in waiting.items() if k != "indexed_at"} | {"granted_at": T}
    async with open_database(database_url) as db, db.engine.begin() as conn:
        await conn.execute(insert(Segment.__table__), [old])  # type: ignore[attr-defined]
        await conn.execute(insert(UploadGrant.__table__), [grant])  # type: ignore[attr-defined]
        await conn.execute(text("UPDATE kanjia_schema SET version = 4"))
    mine, theirs = ("cam-1", str(old["segment_id"])), ("cam-2", str(old["segment_id"]))
    pending = ("cam-1", str(waiting["segment_id"]))
    async with open_database(database_url) as db, db.session() as session:
        assert await index_store.segment(session, mine[1]) is not None, "its id is kept"
        known = await index_store.known(session, [mine, theirs, pending])
        assert known.indexed == {mine}
        assert known.grants[pending].segment_id == service_segment_id(*pending)
        assert await index_store.index_granted(session, [known.grants[pending]], T) == 1
        await session.commit()
        assert await index_store.known(session, [pending, mine]) == ({pending, mine}, {})


def _family_items_before_8() -> Table:
    """``family_cloud_items`` as schema 7 had it: one segment per item, no range."""
    return Table(
        "family_cloud_items",
        MetaData(),
        Column("item_id", Integer, primary_key=True),
        Column("account_id", String(64), nullable=False, index=True),
        Column("segment_id", String(80), nullable=False),
        Column("device_id", String(64), nullable=False),
        Column("object_key", String(512), nullable=False, unique=True),
        Column("bytes", Integer, nullable=False),
        Column("saved_at", UTCDateTime, nullable=False),
    )


async def test_schema_8_gives_family_cloud_items_a_range(database_url: str) -> None:
    """Issue 15: a version-7 database's saved segments keep their ids and get their
    segment's range (``None`` once the segment is gone); an item may then be a range's MP4
    (no segment), and takes an id after the old ones."""
    kept = _segment("cam-1", T)
    old = _family_items_before_8()
    rows: list[dict[str, object]] = [
        {"segment_id": kept["segment_id"], "object_key": "family/acc/a.ts"},
        {"segment_id": "swept-long-ago", "object_key": "family/acc/b.ts"},
    ]
    common: dict[str, object] = {
        "account_id": "acc",
        "device_id": "cam-1",
        "bytes": 5,
        "saved_at": T,
    }
    async with open_database(database_url) as db, db.engine.begin() as conn:
        await conn.execute(text("DROP TABLE family_cloud_items"))
        await conn.run_sync(old.create)
        await conn.execute(insert(old), [row | common for row in rows])
        await conn.execute(insert(Segment.__table__), [kept])  # type: ignore[attr-defined]
        await conn.execute(text("UPDATE kanjia_schema SET version = 7"))
    async with open_database(database_url) as db, db.session() as session:
        query = sqlmodel.select(FamilyCloudItem).order_by(sqlmodel.col(FamilyCloudItem.item_id))
        items = (await session.exec(query)).all()
        assert [(i.item_id, i.segment_id, i.start, i.end) for i in items] == [
            (1, kept["segment_id"], T, T + timedelta(seconds=10)),
            (2, "swept-long-ago", None, None),
        ]
        clip = FamilyCloudItem(
            account_id="acc",
            device_id="cam-1",
            start=T,
            end=T + timedelta(minutes=10),
            object_key="family/acc/c.mp4",
            bytes=6,
            saved_at=T,
        )
        session.add(clip)
        await session.commit()
        assert (clip.item_id, clip.segment_id) == (3, None)
        async with db.engine.connect() as conn:
            indexes = await conn.run_sync(lambda c: inspect(c).get_indexes("family_cloud_items"))
    assert "ix_family_cloud_items_account_id" in {index["name"] for index in indexes}


async def test_ranges_follow_batches_of_many_cameras(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More cameras in one batch than one read of the ranges takes (chunked statements)."""
    monkeypatch.setattr(index_store, "_DEVICES_PER_READ", 200)  # 450 cameras: three reads
    cameras = [f"cam-{i:03d}" for i in range(450)]
    async with open_database(database_url) as db:
        for offset in (0, 20, 10):  # the last batch joins the first two
            batch = [_segment(c, T + timedelta(seconds=offset)) for c in cameras]
            async with db.session() as session:
                await index_store.add_segments(session, batch)
                await session.commit()
        assert await _ranges(db) == [(c, T, T + timedelta(seconds=30)) for c in cameras]

        # One camera catches up on video two hours old while it also records now, under
        # its subscription and a second one: its ranges are read twice, folded once.
        late = T - timedelta(hours=2)
        batch = [
            _segment("cam-000", late),
            _segment("cam-000", T + timedelta(seconds=30)),
            _segment("cam-000", T + timedelta(seconds=30), subscription_id="sub-x"),
            _segment("cam-001", T + timedelta(seconds=30)),
        ]
        async with db.session() as session:
            await index_store.add_segments(session, batch)
            await session.commit()
        s = timedelta(seconds=1)
        assert await _ranges(db, ["cam-000", "cam-001"]) == [
            ("cam-000", "sub-cam-000", late, late + 10 * s),
            ("cam-000", "sub-cam-000", T, T + 40 * s),
            ("cam-000", "sub-x", T + 30 * s, T + 40 * s),
            ("cam-001", "sub-cam-001", T, T + 40 * s),
        ]


async def _hold_the_write_lock(db: Database, writes: list[int], i: int, *, writer: bool) -> None:
    """A unit of work that holds SQLite's write lock a while (a big batch, a slow job)."""
    session_of = db.writing() if writer else db.session()
    async with session_of as session:
        connection = await session.connection()
        await connection.execute(text("UPDATE kanjia_schema SET version = version"))
        await asyncio.sleep(0.2)
        await session.commit()
        writes.append(i)


def _short_busy_timeout(dbapi_connection: Any, *_: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=50")  # 10 s in production: scaled down for the test
    cursor.close()


@pytest.mark.parametrize("writer", [True, False], ids=["writing", "plain-session"])
async def test_sqlite_writers_take_turns_so_none_fails_on_a_locked_database(
    tmp_path: Path, writer: bool
) -> None:
    """Issue 14, item 2: SQLite has one writer; writers that wait for it longer than the
    busy timeout fail with "database is locked" (a 4,000-camera fleet's presence job did).
    :meth:`Database.writing` makes the process's writers take turns instead; the plain
    session (kept for reads) shows what happens without it."""
    async with open_database(f"sqlite:///{tmp_path / 'k.db'}") as db:
        await db.engine.dispose()  # new connections, with the short busy timeout
        event.listen(db.engine.sync_engine, "connect", _short_busy_timeout)
        writes: list[int] = []
        results = await asyncio.gather(
            *(_hold_the_write_lock(db, writes, i, writer=writer) for i in range(4)),
            return_exceptions=True,
        )
    failures = [r for r in results if isinstance(r, BaseException)]
    if writer:
        assert failures == []
        assert sorted(writes) == list(range(4))
    else:
        assert failures
        assert all("database is locked" in str(f) for f in failures)


async def test_schema_10_adds_family_cloud_memberships(database_url: str) -> None:
    """Issue 18: a version-8 database gets the memberships table, whose partial unique
    index holds one membership per account (R18) and lets an ended one stand beside."""
    async with open_database(database_url) as db, db.engine.begin() as conn:
        await conn.execute(text("DROP TABLE family_cloud_memberships"))
        await conn.execute(text("UPDATE kanjia_schema SET version = 8"))
    async with open_database(database_url) as db:
        async with db.session() as s:
            await accounts.upsert_account(
                s, account_id="a1", owner_id="o", star_level=3, name=None, now=T
            )

        def membership(n: int, status: str) -> FamilyCloudMembership:
            return FamilyCloudMembership(
                membership_id=f"fcm_{n}",
                order_id=f"m-{n}",
                account_id="a1",
                tier="gold",
                quota_bytes=4 * 1024**4,  # past 32 bits: a BIGINT
                monthly_fee="20.00",
                validity_months=12,
                orderer_id="o",
                channel="physical",
                status=status,
                started_at=T,
                start_date=T.date(),
                valid_until=T.date(),
            )

        async with db.session() as s:
            s.add(membership(1, "ended"))
            s.add(membership(2, "active"))
            await s.commit()
        async with db.session() as s:
            s.add(membership(3, "unsubscribed"))
            with pytest.raises(IntegrityError):
                await s.commit()
        async with db.session() as s:
            found = await s.get(FamilyCloudMembership, "fcm_2")
            assert found is not None
            assert found.quota_bytes == 4 * 1024**4


async def test_schema_11_keeps_ledger_lines_as_cloud_replay(database_url: str) -> None:
    """Issue 18: a version-10 ledger (no ``kind``, no ``day``) is upgraded in place: its
    lines are ``cloud_replay``, and a package's refund can be written beside them."""
    line = {
        "month": "2026-11",
        "account_id": "a1",
        "subscription_id": "sub_1",
        "device_id": "cam-1",
        "plan": "continuous-7d",
        "line_no": 0,
        "days": 11,
        "amount_cents": 367,
        "recorded_at": T,
    }
    async with open_database(database_url) as db, db.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE charge_lines DROP COLUMN kind"))
        await conn.execute(text("ALTER TABLE charge_lines DROP COLUMN day"))
        columns = await conn.run_sync(lambda c: inspect(c).get_columns("charge_lines"))
        assert not {"kind", "day"} & {column["name"] for column in columns}
        before_11 = sa_table(
            "charge_lines",
            *(sa_column(name) for name in line if name != "recorded_at"),
            sa_column("recorded_at", UTCDateTime),
        )
        await conn.execute(insert(before_11), [line])
        await conn.execute(text("UPDATE kanjia_schema SET version = 10"))
    async with open_database(database_url) as db:
        async with db.session() as s:
            s.add(
                ChargeLine(
                    month="2026-11",
                    account_id="a1",
                    subscription_id="hn_1",
                    device_id="",
                    plan="wifi-gift-299",
                    line_no=1,
                    days=0,
                    amount_cents=-29900,
                    recorded_at=T,
                    kind="home_network_refund",
                    day=T.date(),
                )
            )
            await s.commit()
        async with db.session() as s:
            query = sqlmodel.select(ChargeLine).order_by(sqlmodel.col(ChargeLine.line_id))
            found = (await s.exec(query)).all()
        assert [(c.subscription_id, c.kind, c.day, c.amount_cents) for c in found] == [
            ("sub_1", "cloud_replay", None, 367),
            ("hn_1", "home_network_refund", T.date(), -29900),
        ]
        async with db.engine.connect() as conn:
            version = (await conn.execute(text("SELECT version FROM kanjia_schema"))).scalar()
    assert version == SCHEMA_VERSION == 12
