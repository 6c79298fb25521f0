"""Companion-app playback: timeline, HLS playlist, segment URLs and MP4 clips.

Only what the family may watch is shown: segments recorded under the device's current
subscription (R5, R6), younger than their retention, while broadband is active (R8). A
device of another account is 404, never 403.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from aiohttp import web
from pydantic import AwareDatetime, model_validator
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway import exports
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
    errors=(403, 404),
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


async def _clip_viewing(request: web.Request, db: AsyncSession, device_id: str) -> Subscription:
    """The device's current subscription, if the clip's caller may watch it now: the app
    token's family (R5, R6, R8; another account's device is 404).

    MERGE (issue 15, playback sessions): accept a session credential here too, as
    ``gateway.http.sessions`` describes for the MP4 export: the route's ``auth`` becomes
    ``"app_or_session"``, the clip's query takes an optional ``session`` value
    (:class:`RangeQuery` refuses unknown parameters), and when
    ``request.get(PLAYBACK_SESSION)`` is set this returns ``session_viewing(request, db,
    device_id)[1]``, the asked range clipped to the session's.
    """
    return await watchable(db, app_token_of(request).account_id, device_id)


@api.route(
    "GET",
    "/app/v1/devices/{device_id}/clip.mp4",
    auth="app",
    tag="app",
    summary="The recorded part of a range as one MP4 (at most an hour)",
    query=RangeQuery,
    content_type="video/mp4",
    errors=(403, 404),
)
async def clip_mp4(request: web.Request) -> web.StreamResponse:
    """What the camera recorded in ``[start, end)`` and the family may watch (R5, R6, R8),
    as one standard MP4: the segments remuxed without re-encoding, gaps skipped, timestamps
    continuous from 0, opening on the keyframe at or before ``start``. At most an hour (400
    ``range_too_long``); 404 ``no_recording`` when nothing viewable was recorded there.
    ``X-Recorded-Seconds`` gives the MP4's duration."""
    services = services_of(request)
    device_id = path_id(request, "device_id")
    query = parse_query(request, RangeQuery)
    async with services.db.session() as session:
        current = await _clip_viewing(request, session, device_id)
    async with exports.exported(services, current, query.start, query.end) as export:
        name = f"{device_id}-{export.result.first:%Y%m%dT%H%M%SZ}.mp4"
        response = web.StreamResponse(
            headers={
                "Content-Type": "video/mp4",
                "Content-Disposition": f'attachment; filename="{name}"',
                "X-Recorded-Seconds": f"{export.result.seconds:.3f}",
            }
        )
        response.content_length = export.bytes
        await response.prepare(request)
        async for chunk in exports.chunks(export.path):
            await response.write(chunk)
        await response.write_eof()
    return response
