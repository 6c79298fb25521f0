"""Events, event clips and the gap causes' histories in the database (issue 15), on
SQLite and PostgreSQL: the schema step, events keyed by camera, the event-to-segment
link as the timeline reads it, the clips a new clip may overlap, presence changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Column, DateTime, Float, MetaData, String, Table, insert, inspect, text

from devices import accounts, broadband_periods, presence
from devices.broadband_periods import InactivePeriod
from devices.models import DeviceKind, PresenceChange
from devices.presence import PresenceTracker
from replay import event_index, index_store
from replay.events import Clip
from replay.migrations import open_database
from replay.models import Segment, Subscription
from storage.db import Database

T = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
SEGMENTS = Segment.__table__  # type: ignore[attr-defined]


def t(seconds: float) -> datetime:
    return T + timedelta(seconds=seconds)


def segment(
    name: str,
    start: float,
    end: float,
    *,
    indexed: float,
    device_id: str = "cam-1",
    subscription_id: str = "sub-1",
    kind: str = "continuous",
    retention_days: int = 7,
) -> dict[str, Any]:
    return {
        "segment_id": name,
        "device_id": device_id,
        "account_id": "acc",
        "subscription_id": subscription_id,
        "kind": kind,
        "start": t(start),
        "end": t(end),
        "bytes": 1,
        "sha256": "0" * 64,
        "event_id": "ev" if kind == "event" else None,
        "object_key": f"rec/1d/{device_id}/{name}.ts",
        "retention_class": f"{retention_days}d",
        "expires_at": t(end) + timedelta(days=retention_days),
        "indexed_at": t(indexed),
    }


def event(event_id: str, at: float, device_id: str = "cam-1") -> dict[str, Any]:
    return {"event_id": event_id, "device_id": device_id, "type": "person", "at": t(at)}


SUBSCRIPTION = Subscription(
    subscription_id="sub-1",
    order_id="o-1",
    account_id="acc",
    device_id="cam-1",
    plan_id="continuous-1d",
    family="continuous",
    retention_days=1,
    monthly_fee="10.00",
    orderer_id="owner",
    channel="electronic",
    status="active",
    started_at=t(-3600),
    start_date=date(2026, 11, 30),
    term_end=date(2028, 11, 30),
)


async def _add(db: Database, segments: list[dict[str, Any]], events: list[dict[str, Any]]) -> int:
    async with db.writing() as session:
        if segments:
            await index_store.add_segments(session, segments)
        added = await event_index.add_events(session, events)
        await session.commit()
    return added


async def _links(db: Database, now: datetime) -> list[tuple[str, str]]:
    async with db.session() as session:
        shown = await event_index.shown_events(session, SUBSCRIPTION, t(-600), t(600), now)
    return [(e.event_id, e.segment.segment_id) for e in shown]


async def test_events_are_keyed_by_camera(database_url: str) -> None:
    """Issue 15: a camera's event id is its own: another camera's same id is stored too,
    and a camera's repeated event once."""
    async with open_database(database_url) as db:
        rows = [event("ev-1", 5), event("ev-1", 5, device_id="cam-2"), event("ev-1", 5)]
        assert await _add(db, [], rows) == 2
        assert await _add(db, [], [event("ev-1", 5, device_id="cam-2")]) == 0


async def test_an_event_links_to_the_first_indexed_segment_holding_its_instant(
    database_url: str,
) -> None:
    """The timeline's link (replay.events.link_event) through SQL: containment, the
    subscription's own unexpired segments only, and stable as later segments arrive."""
    async with open_database(database_url) as db:
        await _add(
            db,
            [
                segment("s0", 0, 10, indexed=10),
                segment("s1", 10, 20, indexed=20),
                segment("clip", 5, 65, indexed=70, kind="event"),
                segment("theirs", 90, 100, indexed=100, device_id="cam-2"),
                segment("older", 90, 100, indexed=100, subscription_id="sub-0"),
                segment("gone", 200, 210, indexed=210, retention_days=1),
            ],
            [
                event("at-5", 5),
                event("at-10", 10),
                event("at-30", 30),
                event("at-95", 95),  # only another camera's or subscription's video
                event("at-205", 205),
                event("at-300", 300),  # nothing recorded
                event("other", 5, device_id="cam-2"),
            ],
        )
        expected = [("at-5", "s0"), ("at-10", "s1"), ("at-30", "clip"), ("at-205", "gone")]
        assert await _links(db, t(300)) == expected
        assert await _links(db, t(300)) == expected, "the same on every read"
        # Later segments over the same instants (a late upload, another clip) take nothing.
        await _add(
            db, [segment("late", 0, 40, indexed=400), segment("s1b", 10, 20, indexed=401)], []
        )
        assert await _links(db, t(300)) == expected
        # Expired video shows no event (R5).
        assert await _links(db, t(210) + timedelta(days=1)) == expected[:3]


async def test_the_clips_a_new_clip_may_overlap(database_url: str) -> None:
    """R1: the indexed event clips near each camera's new clips, one camera catching up."""
    async with open_database(database_url) as db:
        await _add(
            db,
            [
                segment("c1", 0, 60, indexed=60, kind="event"),
                segment("c2", 120, 180, indexed=180, kind="event"),
                segment("cont", 30, 40, indexed=40),  # continuous: never a clip
                segment("b1", 0, 60, indexed=60, kind="event", device_id="cam-2"),
                segment("b0", -86400, -86340, indexed=0, kind="event", device_id="cam-3"),
            ],
            [],
        )
        async with db.session() as session:
            near = await event_index.event_clips_near(
                session,
                {
                    "cam-1": [(t(30), t(90))],
                    "cam-2": [(t(100), t(160))],
                    "cam-3": [(t(-86370), t(-86310))],  # a day old: read on its own
                    "cam-4": [],
                },
            )
    assert sorted(near["cam-1"]) == [Clip("c1", t(0), t(60)), Clip("c2", t(120), t(180))]
    assert near["cam-3"] == [Clip("b0", t(-86400), t(-86340))]
    assert "cam-4" not in near


async def test_schema_6_keys_events_by_camera_and_starts_the_histories(
    database_url: str,
) -> None:
    """A version-5 database (events keyed by id alone, no histories) is upgraded: its
    events are kept under the new key, an offline device and a stopped account start
    their histories."""
    async with open_database(database_url) as db:
        async with db.writing() as session:
            await accounts.upsert_account(
                session, account_id="acc", owner_id="o", star_level=3, name=None, now=T
            )
            await accounts.bind_device(
                session, account_id="acc", device_id="cam-1", kind=DeviceKind.CAMERA,
                name=None, now=T,
            )  # fmt: skip
            await session.commit()
        async with db.engine.begin() as conn:
            for table in ("camera_events", "presence_changes", "broadband_inactive_periods"):
                await conn.execute(text(f"DROP TABLE {table}"))
            old = Table(
                "camera_events",
                MetaData(),
                Column("event_id", String(80), primary_key=True),
                Column("device_id", String(64), nullable=False),
                Column("type", String(16), nullable=False),
                Column("at", DateTime(), nullable=False),
                Column("score", Float(), nullable=False),
            )
            await conn.run_sync(old.create)
            await conn.execute(
                text("CREATE INDEX events_by_device_time ON camera_events (device_id, at)")
            )
            await conn.execute(
                insert(old), [{**event("ev-1", 5), "at": T.replace(tzinfo=None), "score": 0.5}]
            )
            await conn.execute(
                text("UPDATE devices SET online_changed_at = :at, online = :no"),
                {"at": t(-60).replace(tzinfo=None), "no": False},
            )
            await conn.execute(text("UPDATE accounts SET broadband_state = 'stopped'"))
            await conn.execute(
                text(
                    "INSERT INTO broadband_states (account_id, document, inactive_since, "
                    "family_cloud, updated_at) VALUES ('acc', '{}', :at, 'open', :at)"
                ),
                {"at": t(-120).replace(tzinfo=None)},
            )
            await conn.execute(text("UPDATE kanjia_schema SET version = 5"))
    async with open_database(database_url) as db:
        async with db.engine.connect() as conn:
            key = await conn.run_sync(lambda c: inspect(c).get_pk_constraint("camera_events"))
            indexes = await conn.run_sync(lambda c: inspect(c).get_indexes("camera_events"))
        assert key["constrained_columns"] == ["device_id", "event_id"]
        assert "events_by_device_time" in {index["name"] for index in indexes}
        assert await _add(db, [], [event("ev-1", 5), event("ev-1", 5, device_id="cam-2")]) == 1
        async with db.session() as session:
            changes = await presence.presence_changes(session, "cam-1", t(0), t(10))
            stops = await broadband_periods.periods_since(session, ["acc"], t(0))
        assert changes == [(t(-60), False)]
        assert stops == {"acc": [InactivePeriod("stopped", t(-120))]}


async def test_presence_changes_are_kept_at_the_moment_they_happened(database_url: str) -> None:
    """Online at the first message, offline at the last message before a silence the sweep
    noticed (not at the sweep), offline at a Will."""
    async with open_database(database_url) as db:
        async with db.writing() as session:
            await accounts.upsert_account(
                session, account_id="acc", owner_id="o", star_level=3, name=None, now=T
            )
            for device_id in ("cam-1", "cam-2"):
                await accounts.bind_device(
                    session, account_id="acc", device_id=device_id, kind=DeviceKind.CAMERA,
                    name=None, now=T,
                )  # fmt: skip
            await session.commit()
        tracker = PresenceTracker(timeout=timedelta(seconds=60))
        tracker.seen("cam-1", t(0))
        tracker.seen("cam-2", t(0))
        async with db.writing() as session:
            await tracker.flush(session)
        tracker.seen("cam-1", t(30))
        tracker.state("cam-2", online=False, at=t(40), firmware=None)
        async with db.writing() as session:
            await tracker.flush(session)
        async with db.writing() as session:
            assert await tracker.sweep(session, t(200)) == 1
        async with db.session() as session:
            one = await presence.presence_changes(session, "cam-1", t(-10), t(300))
            two = await presence.presence_changes(session, "cam-2", t(10), t(300))
        assert one == [(t(0), True), (t(30), False)]
        assert two == [(t(0), True), (t(40), False)], "the last change before the start first"


async def test_old_history_is_pruned_but_each_ones_last_change_kept(database_url: str) -> None:
    """What happened before the cut is forgotten, except the last change of each device:
    it still says the device's state from then on (offline for 40 days stays offline)."""
    table = PresenceChange.__table__  # type: ignore[attr-defined]
    day = 86400
    rows = [
        ("cam-1", -100 * day, True),
        ("cam-1", -50 * day, True),
        ("cam-1", -40 * day, False),  # its last before the cut: kept
        ("cam-1", -1 * day, True),
        ("cam-2", -60 * day, True),
        ("cam-2", -60 * day, False),  # same instant, written later: the last
        ("cam-3", -1 * day, False),
    ]
    async with open_database(database_url) as db:
        async with db.writing() as session:
            await (await session.connection()).execute(
                insert(table), [{"device_id": d, "at": t(at), "online": o} for d, at, o in rows]
            )
            assert await presence.prune_changes(session, table, "device_id", t(-35 * day)) == 3
            await session.commit()
        async with db.session() as session:
            one = await presence.presence_changes(session, "cam-1", t(-45 * day), t(0))
            two = await presence.presence_changes(session, "cam-2", t(-45 * day), t(0))
        assert one == [(t(-40 * day), False), (t(-day), True)]
        assert two == [(t(-60 * day), False)]
