"""Companion-app playback: timeline, HLS playlist and segment URLs.

Only what the family may watch is shown: segments recorded under the device's current
subscription (R5, R6), younger than their retention, while broadband is active (R8). A
device of another account is 404, never 403. The timeline's events each name the segment
that shows them (:func:`replay.events.link_event`: the same on every read) and a
thumbnail of their instant; its gaps say why they are there where the service knows
(:mod:`replay.gaps`); it is gzip-compressed when the request accepts gzip.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import hdrs, web
from aiohttp.web import ContentCoding
from pydantic import AwareDatetime, model_validator
from sqlmodel.ext.asyncio.session import AsyncSession

from devices import broadband_store, presence
from gateway.http.api import Api, ApiError, Body, Out, json_out, parse_query
from gateway.http.requests import (
    app_token_of,
    path_id,
    services_of,
    viewable_segment,
    watchable,
)
from replay import event_index, gaps, index_store, playback
from replay.models import Subscription

api = Api()

MAX_RANGE = timedelta(days=31)


class RangeQuery(Body):
    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> RangeQuery:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.end - self.start > MAX_RANGE:
            raise ValueError("the range may span at most 31 days")
        return self


class RangeOut(Out):
    start: datetime
    end: datetime


class EventOut(Out):
    event_id: str
    type: str
    at: datetime
    segment_id: str | None = None
    thumbnail_url: str | None = None


class GapOut(Out):
    start: datetime
    end: datetime
    cause: gaps.Cause


class TimelineOut(Out):
    device_id: str
    start: datetime
    end: datetime
    ranges: list[RangeOut]
    events: list[EventOut]
    gaps: list[GapOut]


class SegmentUrlOut(Out):
    segment_id: str
    device_id: str
    kind: str
    start: datetime
    end: datetime
    url: str
    expires_in: int


async def _asked(
    request: web.Request, session: AsyncSession
) -> tuple[str, RangeQuery, Subscription]:
    """The device, the asked range and the device's current subscription (403/404 first)."""
    device_id = path_id(request, "device_id")
    query = parse_query(request, RangeQuery)
    account_id = app_token_of(request).account_id
    current = await watchable(session, account_id, device_id)
    return device_id, query, current


@api.route(
    "GET",
    "/app/v1/devices/{device_id}/timeline",
    auth="app",
    tag="app",
    summary="Recorded ranges and events of a camera",
    query=RangeQuery,
    response=TimelineOut,
    errors=(403, 404),
)
async def timeline(request: web.Request) -> web.StreamResponse:
    """Recorded ranges (clipped to the asked range and to retention), the events that have
    viewable video, each with the segment that shows it (the one whose time holds the
    event's instant, the same on every read) and a thumbnail of that instant, and the gaps
    between the ranges, each with its cause where the service knows it (``not_entitled``,
    ``broadband_stopped``, ``offline``, else ``unknown``). Gzip-compressed when the
    request's ``Accept-Encoding`` accepts gzip."""
    services = services_of(request)
    now = services.clock.now()
    async with services.db.session() as session:
        device_id, query, current = await _asked(request, session)
        cutoff = playback.retention_cutoff(current.retention_days, now)  # R5
        stored = await index_store.ranges_between(
            session,
            device_id,
            current.subscription_id,
            max(query.start, cutoff),
            query.end,
        )
        events = await event_index.shown_events(session, current, query.start, query.end, now)
        ranges = playback.visible_ranges(stored, start=query.start, end=query.end, cutoff=cutoff)
        holes = await _gaps(session, current, query, ranges, cutoff=cutoff, now=now)
    response = json_out(
        TimelineOut(
            device_id=device_id,
            start=query.start,
            end=query.end,
            ranges=[RangeOut(start=a, end=b) for a, b in ranges],
            events=[
                EventOut(
                    event_id=e.event_id,
                    type=e.type,
                    at=e.at,
                    segment_id=e.segment.segment_id,
                    thumbnail_url=thumbnail_url(e.segment.segment_id, e.at),
                )
                for e in events
            ],
            gaps=[GapOut(start=g.start, end=g.end, cause=g.cause) for g in holes],
        )
    )
    if accepts_gzip(request):
        response.enable_compression(ContentCoding.gzip)
    return response


def thumbnail_url(segment_id: str, at: datetime) -> str:
    """The thumbnail of the instant ``at`` of a segment, relative to the API (UTC, ``Z``:
    nothing to escape in a query)."""
    stamp = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"/app/v1/segments/{segment_id}/thumbnail.jpg?at={stamp}"


def accepts_gzip(request: web.Request) -> bool:
    """Whether ``Accept-Encoding`` accepts gzip (named, or ``*``, with a non-zero q)."""
    for item in request.headers.get(hdrs.ACCEPT_ENCODING, "").split(","):
        coding, _, parameters = item.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "*"):
            continue
        q = parameters.strip().removeprefix("q=").strip() if parameters else "1"
        try:
            return float(q or "1") > 0
        except ValueError:
            return False
    return False


async def _gaps(
    session: AsyncSession,
    current: Subscription,
    query: RangeQuery,
    ranges: list[tuple[datetime, datetime]],
    *,
    cutoff: datetime,
    now: datetime,
) -> list[gaps.Gap]:
    """The timeline's gaps with their causes: before the subscription (not entitled, R6),
    broadband stopped (R8) and the camera offline, from their histories."""
    span = gaps.window(query.start, query.end, cutoff=cutoff, now=now)
    if span is None:
        return []
    low, high = span
    offline = await presence.presence_changes(session, current.device_id, low, high)
    stopped = await broadband_store.state_changes(session, current.account_id, low, high)
    known: dict[gaps.Cause, list[tuple[datetime, datetime]]] = {
        "not_entitled": [(low, current.started_at)] if low < current.started_at else [],
        "broadband_stopped": gaps.down_periods(
            [(at, state != "active") for at, state in stopped], low, high
        ),
        "offline": gaps.down_periods([(at, not online) for at, online in offline], low, high),
    }
    return gaps.timeline_gaps(span, ranges, known)


@api.route(
    "GET",
    "/app/v1/devices/{device_id}/playlist.m3u8",
    auth="app",
    tag="app",
    summary="An HLS VOD playlist of presigned segment URLs",
    query=RangeQuery,
    content_type="application/vnd.apple.mpegurl",
    errors=(403, 404),
)
async def playlist(request: web.Request) -> web.StreamResponse:
    services = services_of(request)
    async with services.db.session() as session:
        _, query, current = await _asked(request, session)
        segments = await index_store.segments_between(
            session, current, query.start, query.end, services.clock.now()
        )
    if not segments:
        raise ApiError(404, "no_recording", "nothing recorded in that range")
    ttl = services.settings.url_ttl_seconds
    entries = [
        (
            await services.store.presign_get(s.object_key, expires_in=ttl),
            s.start,
            (s.end - s.start).total_seconds(),
        )
        for s in segments
    ]
    return web.Response(
        text=playback.hls_playlist(entries), content_type="application/vnd.apple.mpegurl"
    )


@api.route(
    "GET",
    "/app/v1/segments/{segment_id}",
    auth="app",
    tag="app",
    summary="A playable URL of one segment",
    response=SegmentUrlOut,
    errors=(403, 404),
)
async def segment_url(request: web.Request) -> web.StreamResponse:
    services = services_of(request)
    async with services.db.session() as session:
        s = await viewable_segment(request, session)
    ttl = services.settings.url_ttl_seconds
    url = await services.store.presign_get(s.object_key, expires_in=ttl)
    return json_out(
        SegmentUrlOut(
            segment_id=s.segment_id,
            device_id=s.device_id,
            kind=s.kind,
            start=s.start,
            end=s.end,
            url=url,
            expires_in=ttl,
        )
    )
