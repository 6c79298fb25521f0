"""The statements on camera events and on event clips (:mod:`replay.models`), beside
:mod:`replay.index_store`: storing events (:func:`add_events`), the timeline's events
each with the segment that shows it (:func:`shown_events`), and the indexed event clips
a new clip must not overlap (:func:`event_clips_near`, R1). The rules are
:mod:`replay.events`; here the SQL only fetches their candidates.

Candidates are read by windows, never by walking a range's segments: a segment is at most
:data:`~replay.index_store.LONGEST` long, so one that holds an instant (or overlaps a
clip) started at most that long before it. The windows of a range's events, merged where
they touch (:func:`replay.events.windows`), are a few index seeks on (device, start).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Table, and_, insert, or_, tuple_
from sqlalchemy import select as sa_select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from replay.events import Clip, link_event, windows
from replay.index_store import LONGEST, Piece
from replay.models import CameraEvent, Segment, Subscription
from replay.recording import SegmentKind

__all__ = ["ShownEvent", "add_events", "event_clips_near", "shown_events"]

_EVENTS: Table = CameraEvent.__table__  # type: ignore[attr-defined]
_SEGMENTS: Table = Segment.__table__  # type: ignore[attr-defined]
#: Windows per statement (each is two bound parameters).
_WINDOWS_PER_READ = 200
#: Keys looked up per statement (bound parameters: asyncpg allows 32,767).
_KEYS_PER_READ = 1000
#: A device whose clips start this long before the batch's latest is read on its own.
_CATCH_UP = timedelta(hours=1)


async def add_events(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> int:
    """Add the camera events (``event_id``, ``device_id``, ``type``, ``at``, ``score``) that
    are not stored yet, each once by (device, event id), in the caller's transaction;
    return how many."""
    if not rows:
        return 0
    keys = list({(row["device_id"], row["event_id"]) for row in rows})
    connection = await session.connection()
    seen: set[tuple[str, str]] = set()
    for first in range(0, len(keys), _KEYS_PER_READ):
        chunk = keys[first : first + _KEYS_PER_READ]
        found = await connection.execute(
            sa_select(_EVENTS.c.device_id, _EVENTS.c.event_id).where(
                tuple_(_EVENTS.c.device_id, _EVENTS.c.event_id).in_(chunk)
            )
        )
        seen.update((device_id, event_id) for device_id, event_id in found)
    new: list[Mapping[str, Any]] = []
    for row in rows:
        key = (row["device_id"], row["event_id"])
        if key not in seen:
            seen.add(key)
            new.append(row)
    if new:
        await connection.execute(insert(_EVENTS), new)
    return len(new)


class ShownEvent(NamedTuple):
    """An event of the timeline with the segment that shows it."""

    event_id: str
    type: str
    at: datetime
    segment: Piece


class _Candidate(NamedTuple):
    """A segment an event may link to (a :class:`replay.events.Candidate`), and its piece."""

    segment_id: str
    start: datetime
    end: datetime
    indexed_at: datetime
    piece: Piece


def _starting_in(spans: Iterable[tuple[datetime, datetime]]) -> list[list[ColumnElement[bool]]]:
    """Per statement, the conditions "a segment starting in one of these windows"."""
    merged = windows(spans, LONGEST)
    return [
        [
            and_(col(Segment.start) >= low, col(Segment.start) <= high)
            for low, high in merged[first : first + _WINDOWS_PER_READ]
        ]
        for first in range(0, len(merged), _WINDOWS_PER_READ)
    ]


async def shown_events(
    session: AsyncSession,
    subscription: Subscription,
    start: datetime,
    end: datetime,
    now: datetime,
) -> list[ShownEvent]:
    """The events of ``[start, end)`` that have viewable video, each with the segment that
    shows it (:func:`replay.events.link_event`), in time order. Only the subscription's
    unexpired segments may show one (R5, R6); an event without viewable video is not on
    the timeline."""
    connection = await session.connection()
    events = (
        await connection.execute(
            sa_select(col(CameraEvent.event_id), col(CameraEvent.type), col(CameraEvent.at))
            .where(
                col(CameraEvent.device_id) == subscription.device_id,
                col(CameraEvent.at) >= max(start, subscription.started_at),
                col(CameraEvent.at) < end,
            )
            .order_by(col(CameraEvent.at), col(CameraEvent.event_id))
        )
    ).all()
    candidates = await _candidates(connection, subscription, [at for _, _, at in events], now)
    shown: list[ShownEvent] = []
    for event_id, kind, at in events:
        linked = link_event(at, candidates)
        if linked is not None:
            shown.append(ShownEvent(event_id, kind, at, linked.piece))
    return shown


async def _candidates(
    connection: AsyncConnection, subscription: Subscription, instants: list[datetime], now: datetime
) -> list[_Candidate]:
    """The subscription's unexpired segments that may hold one of these instants."""
    found: list[_Candidate] = []
    for conditions in _starting_in((at, at) for at in instants):
        rows = await connection.execute(
            sa_select(
                col(Segment.segment_id),
                col(Segment.start),
                col(Segment.end),
                col(Segment.event_id),
                col(Segment.object_key),
                col(Segment.indexed_at),
            ).where(
                col(Segment.device_id) == subscription.device_id,
                or_(*conditions),
                col(Segment.subscription_id) == subscription.subscription_id,
                col(Segment.expires_at) > now,  # the read path enforces the cut-off itself
            )
        )
        for segment_id, a, b, event_id, key, indexed_at in rows:
            piece = Piece(segment_id, a, b, event_id, key)
            found.append(_Candidate(segment_id, a, b, indexed_at, piece))
    return found


async def event_clips_near(
    session: AsyncSession, spans: Mapping[str, Sequence[tuple[datetime, datetime]]]
) -> dict[str, list[Clip]]:
    """Per device, its indexed event clips that may overlap one of its ``spans`` (a
    superset: :func:`replay.events.overlapping_clip` decides). The devices whose spans are
    recent are read by one statement; a device catching up on older clips on its own."""
    wanted = {device: list(s) for device, s in spans.items() if s}
    if not wanted:
        return {}
    latest = max(a for s in wanted.values() for a, _ in s)
    recent = [d for d, s in wanted.items() if min(a for a, _ in s) >= latest - _CATCH_UP]
    reads: list[tuple[list[str], list[tuple[datetime, datetime]]]] = []
    if recent:
        everyone = [span for device in recent for span in wanted[device]]
        low = min(a for a, _ in everyone)
        high = max(b for _, b in everyone)
        for first in range(0, len(recent), _KEYS_PER_READ):
            reads.append((recent[first : first + _KEYS_PER_READ], [(low, high)]))
    reads += [([d], wanted[d]) for d in wanted if d not in recent]
    clips: dict[str, list[Clip]] = defaultdict(list)
    connection = await session.connection()
    for devices, device_spans in reads:
        for conditions in _starting_in(device_spans):
            rows = await connection.execute(
                sa_select(
                    col(Segment.device_id),
                    col(Segment.segment_id),
                    col(Segment.start),
                    col(Segment.end),
                ).where(
                    col(Segment.device_id).in_(devices),
                    or_(*conditions),
                    col(Segment.kind) == SegmentKind.EVENT.value,
                )
            )
            for device_id, segment_id, a, b in rows:
                clips[device_id].append(Clip(segment_id, a, b))
    return dict(clips)
