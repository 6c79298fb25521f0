"""Companion-app playback: timeline, HLS playlist and segment URLs.

Only what the family may watch is shown: segments recorded under the device's current
subscription (R5, R6), younger than their retention, while broadband is active (R8). A
device of another account is 404, never 403.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from aiohttp import web
from pydantic import AwareDatetime, model_validator
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.http.api import Api, ApiError, Body, Out, json_out, parse_query
from gateway.http.requests import (
    app_token_of,
    path_id,
    services_of,
    viewable_segment,
    watchable,
)
from replay import index_store, playback
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


class TimelineOut(Out):
    device_id: str
    start: datetime
    end: datetime
    ranges: list[RangeOut]
    events: list[EventOut]


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
    errors=("not_entitled", "unsubscribed", ("broadband_inactive", 403)),
)
async def timeline(request: web.Request) -> web.StreamResponse:
    """Recorded ranges (clipped to the asked range and to retention) and the events that
    have viewable video, each with the segment that shows it."""
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
        events = await index_store.shown_events(session, current, query.start, query.end, now)
    ranges = playback.visible_ranges(stored, start=query.start, end=query.end, cutoff=cutoff)
    return json_out(
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
                    # relative to the API
                    thumbnail_url=f"/app/v1/segments/{e.segment.segment_id}/thumbnail.jpg",
                )
                for e in events
            ],
        )
    )


@api.route(
    "GET",
    "/app/v1/devices/{device_id}/playlist.m3u8",
    auth="app",
    tag="app",
    summary="An HLS VOD playlist of presigned segment URLs",
    query=RangeQuery,
    content_type="application/vnd.apple.mpegurl",
    errors=("not_entitled", "unsubscribed", ("broadband_inactive", 403), "no_recording"),
)
async def playlist(request: web.Request) -> web.StreamResponse:
    """An HLS VOD playlist of presigned segment URLs over the asked range, of what the family
    may watch now (R5, R6, R8); 404 no_recording when nothing in the range is viewable."""
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
    errors=(
        "not_entitled",
        "unsubscribed",
        ("broadband_inactive", 403),
        "previous_subscription",
        "expired",
    ),
)
async def segment_url(request: web.Request) -> web.StreamResponse:
    """A presigned, expiring URL of one segment the family may watch now: recorded under the
    current subscription (R6), within retention (R5), while broadband is active (R8)."""
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
