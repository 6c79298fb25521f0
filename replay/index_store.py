"""The recording index's statements: the home of the SQL on the segments, upload grants
and recorded ranges tables (:mod:`replay.models`); camera events and the event clips'
rules are :mod:`replay.event_index`.

Its callers keep the orchestration (object store, metrics, MQTT answers) and name what
they do here: indexing over MQTT (:mod:`gateway.recording`: :func:`known`,
:func:`add_grant`, :func:`index_granted`), the
app's playback routes (:func:`ranges_between`,
:func:`segments_between`, :func:`segment`), retention (:mod:`gateway.retention`:
:func:`expired_segments`, :func:`delete_segments`, :func:`drop_expired_ranges`,
:func:`owned_object_keys`, :func:`retention_classes`, :func:`grants_before`,
:func:`delete_grants`), schema steps (:mod:`replay.migrations`) and the benchmarks, which
seed through :func:`add_segments`. The write path was tuned
(``BENCHMARKS.md``): a batch is Core statements, no ORM object per row (granted segments
copied by one INSERT ... SELECT), its grants and segments found by one ``IN`` on the primary
key (the service's id of each camera's segment, :func:`replay.object_keys.service_segment_id`),
and its ranges read with one statement shape.

The recorded ranges (:class:`~replay.models.RecordedRange`) are kept with the segments.
The timeline of a day of continuous video is 8,640 segments but a handful of ranges, so
the timeline reads ranges. They stay true because every way a segment comes and goes
passes through here in the segment's own transaction:

- indexing (:func:`add_segments`) folds the rows it inserted: one read of the batch's
  cameras' recent ranges, then one statement each for the inserts, the updates and the
  deletes (:func:`replay.playback.fold_ranges` decides them). Two writers racing (gateways
  on a shared subscription) may leave two ranges overlapping; the next segment that
  touches them folds them into one, and the read path merges what it reads meanwhile;
- the retention sweeper calls :func:`drop_expired_ranges`: a range goes when its last
  segment has expired; until then the read path clips it at the retention cut-off
  (:func:`replay.playback.visible_ranges`);
- the schema step that introduced the table fills it from the segments already indexed
  (:func:`backfill_ranges`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Table, bindparam, delete, insert, update
from sqlalchemy import select as sa_select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from replay.models import RecordedRange, Segment, Subscription, UploadGrant
from replay.object_keys import object_key, service_segment_id
from replay.playback import DEFAULT_GAP_TOLERANCE_S, Range, RangeChanges, Recorded, fold_ranges
from replay.recording import EVENT_CLIP_TOLERANCE_S, MAX_CONTINUOUS_SECONDS, Accept, UploadRequest
from storage.db import UTCDateTime

__all__ = [
    "LONGEST",
    "CameraSegment",
    "Known",
    "Piece",
    "add_grant",
    "add_segments",
    "delete_grants",
    "delete_segments",
    "drop_expired_ranges",
    "expired_segments",
    "grants_before",
    "index_granted",
    "known",
    "owned_object_keys",
    "range_row",
    "ranges_between",
    "retention_classes",
    "segment",
    "segments_between",
]

_RANGES: Table = RecordedRange.__table__  # type: ignore[attr-defined]
_SEGMENTS: Table = Segment.__table__  # type: ignore[attr-defined]
_GRANTS: Table = UploadGrant.__table__  # type: ignore[attr-defined]
#: What an upload grant copies from the request it answers.
_REQUEST_FIELDS = ("device_id", "start", "end", "bytes", "sha256", "event_id")
#: What a segment row copies from its upload grant.
_GRANT_COLUMNS = tuple(c.name for c in _SEGMENTS.columns if c.name != "indexed_at")
_RANGE_KEYS = ("device_id", "subscription_id", "start", "end", "expires_at")  # _extend_ranges
_TOLERANCE = timedelta(seconds=DEFAULT_GAP_TOLERANCE_S)
#: Devices read per statement (bound parameters: asyncpg allows 32,767).
_DEVICES_PER_READ = 1000
#: A new segment older than this before the batch's newest is read on its own (_near).
_CATCH_UP = timedelta(hours=1)
#: Grants become segment rows inside the database, no datetime bound again (BENCHMARKS.md).
_INDEX_GRANTED = insert(_SEGMENTS).from_select([*_GRANT_COLUMNS, "indexed_at"], sa_select(
    *(_GRANTS.c[c] for c in _GRANT_COLUMNS), bindparam("now", type_=UTCDateTime())
).where(_GRANTS.c.segment_id.in_(bindparam("indexed", expanding=True))))  # fmt: skip

Pair = tuple[str, str]
#: A camera's segment: (device id, the camera's own ``segment_id``).
CameraSegment = tuple[str, str]


# Upload grants and indexing -------------------------------------------------------------


def add_grant(
    session: AsyncSession,
    request: UploadRequest,
    accepted: Accept,
    account_id: str,
    now: datetime,
) -> UploadGrant:
    """Record the upload the service allowed (``upload/res`` ok), which the ``segment``
    notice settles; written by the session's commit. The grant, and the segment it becomes,
    have the service's id of the camera's segment (:func:`service_segment_id`)."""
    grant = UploadGrant(
        **{name: getattr(request, name) for name in _REQUEST_FIELDS},
        segment_id=service_segment_id(request.device_id, request.segment_id),
        account_id=account_id,
        subscription_id=accepted.subscription_id,
        kind=request.kind.value,
        object_key=object_key(
            accepted.retention_class,
            request.device_id,
            request.end,
            request.segment_id,
            request.kind,
        ),
        retention_class=accepted.retention_class,
        expires_at=accepted.expires_at,
        granted_at=now,
    )
    session.add(grant)
    return grant


class Known(NamedTuple):
    """Of a batch's camera segments (:func:`known`): those indexed, and the pending grants."""

    indexed: set[CameraSegment]
    grants: dict[CameraSegment, UploadGrant]


async def known(session: AsyncSession, segments: Iterable[CameraSegment]) -> Known:
    """Which of these cameras' segments are indexed, and their pending upload grants.

    A grant lives until its segment is indexed (:func:`index_granted` settles it in the
    same transaction), so only the segments without one are looked up among the indexed:
    a batch of notices that settle their grants, the usual one, is a single statement.
    Each lookup is one ``IN`` on a primary key, whatever the batch.
    """
    wanted = {segment: service_segment_id(*segment) for segment in segments}
    of_id = {segment_id: segment for segment, segment_id in wanted.items()}
    result = await session.exec(
        select(UploadGrant).where(col(UploadGrant.segment_id).in_(list(of_id)))
    )
    grants = {
        of_id[grant.segment_id]: grant
        for grant in result.all()
        if grant.device_id == of_id[grant.segment_id][0]
    }
    rest = {segment: segment_id for segment, segment_id in wanted.items() if segment not in grants}
    return Known(await _indexed(session, rest) if rest else set(), grants)


async def _indexed(
    session: AsyncSession, wanted: Mapping[CameraSegment, str]
) -> set[CameraSegment]:
    """Which of these camera segments (by their service ids) are indexed. One indexed
    before schema 5 kept the camera's own id (URLs handed out keep their meaning), so the
    cameras' ids are looked up too, a row counting for its own camera only. That half finds
    nothing once the longest retention (30 days) has passed since the upgrade; a later
    step may drop it (~1 ms a batch of 200 upload requests on SQLite, BENCHMARKS.md)."""
    of_id = {segment_id: segment for segment, segment_id in wanted.items()}
    ids = list(of_id.keys() | {segment_id for _, segment_id in wanted})
    result = await session.exec(
        select(Segment.segment_id, Segment.device_id).where(col(Segment.segment_id).in_(ids))
    )
    indexed: set[CameraSegment] = set()
    for segment_id, device_id in result.all():
        mine = of_id.get(segment_id)
        if mine is not None and mine[0] == device_id:
            indexed.add(mine)
        if (device_id, segment_id) in wanted:  # indexed before schema 5
            indexed.add((device_id, segment_id))
    return indexed


async def index_granted(session: AsyncSession, grants: Sequence[UploadGrant], now: datetime) -> int:
    """Index the segments of these grants (their objects checked by the caller) and settle
    the grants, in the caller's transaction; return how many were indexed."""
    if not grants:
        return 0
    connection = await session.connection()
    indexed = [grant.segment_id for grant in grants]
    await connection.execute(_INDEX_GRANTED, {"indexed": indexed, "now": now})
    await _extend_ranges(connection, ({n: getattr(g, n) for n in _RANGE_KEYS} for g in grants))
    await connection.execute(delete(_GRANTS).where(_GRANTS.c.segment_id.in_(indexed)))
    return len(grants)


async def add_segments(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert segment rows (every column of :class:`~replay.models.Segment`) and fold them
    into the ranges, in the caller's transaction."""
    # Core executemany: one statement for the batch, no ORM object per row.
    connection = await session.connection()
    await connection.execute(insert(_SEGMENTS), rows)
    await _extend_ranges(connection, rows)


# Recorded ranges -----------------------------------------------------------------------


async def _extend_ranges(
    connection: AsyncConnection, segments: Iterable[Mapping[str, Any]]
) -> None:
    """Fold newly inserted segment rows (``device_id``, ``subscription_id``, ``start``,
    ``end``, ``expires_at``) into the stored ranges, in the caller's transaction."""
    new: dict[Pair, list[Recorded]] = defaultdict(list)
    for row in segments:
        new[(row["device_id"], row["subscription_id"])].append(
            Recorded(row["start"], row["end"], row["expires_at"])
        )
    if not new:
        return
    # A stored range is touched when it reaches within the tolerance of a new segment.
    low = {pair: min(r.start for r in rs) - _TOLERANCE for pair, rs in new.items()}
    high = {pair: max(r.end for r in rs) + _TOLERANCE for pair, rs in new.items()}
    stored: dict[Pair, dict[int, Recorded]] = defaultdict(dict)
    for range_id, device_id, subscription_id, start, end, expires_at in await _near(
        connection, low
    ):
        pair = (device_id, subscription_id)
        if pair in new and end >= low[pair] and start <= high[pair]:
            stored[pair][range_id] = Recorded(start, end, expires_at, range_id)
    changes = {pair: fold_ranges(stored[pair].values(), rs) for pair, rs in new.items()}
    await _apply(connection, changes)


async def _near(connection: AsyncConnection, low: Mapping[Pair, datetime]) -> list[Any]:
    """The stored ranges of the batch's devices that end at or after their pair's ``low``,
    and some more (the caller filters; a range may come twice): in the usual batch every
    camera sends what it just recorded, so one statement with one bound serves them all;
    a camera catching up on older video is read on its own, so that it cannot widen
    everyone's read."""
    recent = max(low.values()) - _CATCH_UP
    usual = sorted({device_id for (device_id, _), at in low.items() if at >= recent})
    bound = min(at for at in low.values() if at >= recent)
    reads = [
        {"devices": usual[first : first + _DEVICES_PER_READ], "low": bound}
        for first in range(0, len(usual), _DEVICES_PER_READ)
    ]
    reads += [{"devices": [pair[0]], "low": at} for pair, at in low.items() if at < recent]
    rows: list[Any] = []
    for parameters in reads:
        rows.extend(await connection.execute(_READ_DEVICES, parameters))
    return rows


_COLUMNS = (
    _RANGES.c.range_id,
    _RANGES.c.device_id,
    _RANGES.c.subscription_id,
    _RANGES.c.start,
    _RANGES.c.end,
    _RANGES.c.expires_at,
)
#: One statement shape whatever the batch (compiled once): the index on (device, end).
_READ_DEVICES = sa_select(*_COLUMNS).where(
    _RANGES.c.device_id.in_(bindparam("devices", expanding=True)),
    _RANGES.c.end >= bindparam("low", type_=UTCDateTime()),
)


async def _apply(connection: AsyncConnection, changes: Mapping[Pair, RangeChanges]) -> None:
    inserts = [range_row(pair, r) for pair, change in changes.items() for r in change.inserts]
    updates = [
        {"rid": r.range_id, "new_start": r.start, "new_end": r.end, "new_expiry": r.expires_at}
        for change in changes.values()
        for r in change.updates
    ]
    deletes = [rid for change in changes.values() for rid in change.deletes]
    if inserts:
        await connection.execute(insert(_RANGES), inserts)
    if updates:
        await connection.execute(_UPDATE, updates)
    if deletes:
        await connection.execute(delete(_RANGES).where(_RANGES.c.range_id.in_(deletes)))


def range_row(pair: Pair, r: Recorded) -> dict[str, Any]:
    device_id, subscription_id = pair
    return {
        "device_id": device_id,
        "subscription_id": subscription_id,
        "start": r.start,
        "end": r.end,
        "expires_at": r.expires_at,
    }


_UPDATE = (
    update(_RANGES)
    .where(_RANGES.c.range_id == bindparam("rid"))
    .values(
        start=bindparam("new_start", type_=UTCDateTime()),
        end=bindparam("new_end", type_=UTCDateTime()),
        expires_at=bindparam("new_expiry", type_=UTCDateTime()),
    )
)


# Reads for playback ----------------------------------------------------------------------


async def ranges_between(
    session: AsyncSession,
    device_id: str,
    subscription_id: str,
    start: datetime,
    end: datetime,
) -> list[Range]:
    """The stored ranges of a device/subscription that overlap ``[start, end)``, in order."""
    connection = await session.connection()
    result = await connection.execute(
        sa_select(_RANGES.c.start, _RANGES.c.end)
        .where(
            _RANGES.c.device_id == device_id,
            _RANGES.c.subscription_id == subscription_id,
            _RANGES.c.end > start,
            _RANGES.c.start < end,
        )
        .order_by(_RANGES.c.start)
    )
    return [(a, b) for a, b in result]


class Piece(NamedTuple):
    """The columns playback needs of an indexed segment (no ORM objects on this path)."""

    segment_id: str
    start: datetime
    end: datetime
    event_id: str | None
    object_key: str


_PIECE_COLUMNS = (
    col(Segment.segment_id),
    col(Segment.start),
    col(Segment.end),
    col(Segment.event_id),
    col(Segment.object_key),
)

#: No segment is longer than this (R1: continuous ≤ 60 s, event clips 60 s ± 2 s), so a
#: segment overlapping ``[start, end)`` began after ``start - LONGEST``: the index on
#: (device_id, start) then scans only the asked range, not the device's whole history.
LONGEST = timedelta(seconds=MAX_CONTINUOUS_SECONDS + EVENT_CLIP_TOLERANCE_S)


async def segments_between(
    session: AsyncSession,
    subscription: Subscription,
    start: datetime,
    end: datetime,
    now: datetime,
) -> list[Piece]:
    """The segments of the device recorded under ``subscription`` that overlap
    ``[start, end)`` and have not expired at ``now``, in order."""
    connection = await session.connection()
    result = await connection.execute(
        sa_select(*_PIECE_COLUMNS)
        .where(
            col(Segment.device_id) == subscription.device_id,
            col(Segment.start) > start - LONGEST,
            col(Segment.start) < end,
            col(Segment.end) > start,
            col(Segment.subscription_id) == subscription.subscription_id,
            col(Segment.expires_at) > now,  # the read path enforces the cut-off itself
        )
        .order_by(col(Segment.start))
    )
    return [Piece(*row) for row in result.all()]


async def segment(session: AsyncSession, segment_id: str) -> Segment | None:
    """One indexed segment, or ``None``."""
    return await session.get(Segment, segment_id)


# Retention -------------------------------------------------------------------------------


async def expired_segments(
    session: AsyncSession, now: datetime, limit: int
) -> list[tuple[str, str]]:
    """The id and object key of at most ``limit`` segments expired at ``now`` (R5)."""
    result = await session.exec(
        select(Segment.segment_id, Segment.object_key)
        .where(col(Segment.expires_at) <= now)
        .limit(limit)
    )
    return list(result.all())


async def delete_segments(session: AsyncSession, segment_ids: Sequence[str]) -> None:
    """Delete these segments' index rows (their objects are the caller's)."""
    await session.exec(delete(Segment).where(col(Segment.segment_id).in_(segment_ids)))


async def drop_expired_ranges(session: AsyncSession, now: datetime) -> int:
    """Delete the ranges whose every segment has expired (R5); return how many."""
    connection = await session.connection()
    result = await connection.execute(delete(_RANGES).where(_RANGES.c.expires_at <= now))
    return int(result.rowcount)


async def owned_object_keys(session: AsyncSession, among: Sequence[str] | None = None) -> set[str]:
    """The object keys an indexed segment or a pending upload grant owns; with ``among``,
    only those of these keys."""
    segments = select(Segment.object_key)
    grants = select(UploadGrant.object_key)
    if among is not None:
        segments = segments.where(col(Segment.object_key).in_(among))
        grants = grants.where(col(UploadGrant.object_key).in_(among))
    return set((await session.exec(segments)).all()) | set((await session.exec(grants)).all())


async def retention_classes(session: AsyncSession) -> set[str]:
    """The retention classes (``7d``...) of the indexed segments."""
    return set((await session.exec(select(Segment.retention_class).distinct())).all())


async def grants_before(
    session: AsyncSession, cutoff: datetime, limit: int = 5000
) -> list[UploadGrant]:
    """The upload grants given before ``cutoff``, oldest first, at most ``limit``."""
    statement = (
        select(UploadGrant)
        .where(col(UploadGrant.granted_at) < cutoff)
        .order_by(col(UploadGrant.granted_at))
        .limit(limit)
    )
    return list((await session.exec(statement)).all())


async def delete_grants(session: AsyncSession, object_keys: Sequence[str]) -> int:
    """Forget the upload grants of these object keys; return how many."""
    if not object_keys:
        return 0
    result = await session.exec(
        delete(UploadGrant).where(col(UploadGrant.object_key).in_(list(object_keys)))
    )
    return int(result.rowcount)
