"""Companion-app playback: timeline, HLS playlist, segment URLs, family-cloud saves.

Only what the family may watch is shown: segments recorded under the device's current
subscription (R5, R6), younger than their retention, while broadband is active (R8). A
device of another account is 404, never 403.
"""

from __future__ import annotations

import asyncio
import bisect
from datetime import datetime, timedelta
from typing import NamedTuple

from aiohttp import web
from pydantic import AwareDatetime, model_validator
from sqlalchemy import select as sa_select
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from devices import accounts
from devices.broadband import account_state
from gateway.api import Api, ApiError, Body, Out, json_out, parse_query
from gateway.app import app_token_of, services_of
from gateway.routes_platform import path_id
from gateway.services import Services
from replay import playback
from replay.models import CameraEvent, FamilyCloudItem, Segment, Subscription
from replay.recording import EVENT_CLIP_TOLERANCE_S, MAX_CONTINUOUS_SECONDS, family_key
from replay.subscriptions import active_subscription

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


class SavedOut(Out):
    item_id: int
    segment_id: str
    bytes: int
    used_bytes: int
    quota_bytes: int


async def _watchable(
    services: Services, session: AsyncSession, account_id: str, device_id: str
) -> Subscription:
    """The device's current subscription if the family may watch it now; else 403/404."""
    await accounts.device_of_account(session, account_id, device_id)
    account = await accounts.get_account(session, account_id)
    current = await active_subscription(session, device_id)
    latest = (
        await session.exec(
            select(Subscription.status)
            .where(Subscription.device_id == device_id)
            .order_by(col(Subscription.started_at).desc())
            .limit(1)
        )
    ).first()
    refusal = playback.playback_refusal(current, latest, account_state(account.broadband_state))
    if refusal is not None:
        raise ApiError(refusal.status, refusal.code, refusal.message, rule=refusal.rule)
    assert current is not None
    return current


class Piece(NamedTuple):
    """The columns playback needs of an indexed segment (no ORM objects on this path)."""

    segment_id: str
    start: datetime
    end: datetime
    event_id: str | None
    object_key: str


#: No segment is longer than this (R1: continuous ≤ 60 s, event clips 60 s ± 2 s), so a
#: segment overlapping ``[start, end)`` began after ``start - LONGEST``: the index on
#: (device_id, start) then scans only the asked range, not the device's whole history.
LONGEST = timedelta(seconds=MAX_CONTINUOUS_SECONDS + EVENT_CLIP_TOLERANCE_S)


async def _segments(
    session: AsyncSession,
    subscription: Subscription,
    start: datetime,
    end: datetime,
    now: datetime,
) -> list[Piece]:
    connection = await session.connection()
    result = await connection.execute(
        sa_select(
            col(Segment.segment_id),
            col(Segment.start),
            col(Segment.end),
            col(Segment.event_id),
            col(Segment.object_key),
        )
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


def _covering(segments: list[Piece], starts: list[datetime], at: datetime) -> Piece | None:
    """The segment recorded at ``at`` (``segments`` sorted by start)."""
    index = bisect.bisect_right(starts, at) - 1
    return segments[index] if index >= 0 and at < segments[index].end else None


async def _viewing_window(
    request: web.Request, session: AsyncSession
) -> tuple[str, RangeQuery, Subscription, list[Piece]]:
    """The device, the asked range, its current subscription and the viewable segments."""
    services = services_of(request)
    device_id = path_id(request, "device_id")
    query = parse_query(request, RangeQuery)
    account_id = app_token_of(request).account_id
    current = await _watchable(services, session, account_id, device_id)
    segments = await _segments(session, current, query.start, query.end, services.clock.now())
    return device_id, query, current, segments


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
    services = services_of(request)
    async with services.db.session() as session:
        device_id, query, current, segments = await _viewing_window(request, session)
        events = (
            await session.exec(
                select(CameraEvent)
                .where(
                    CameraEvent.device_id == device_id,
                    col(CameraEvent.at) >= max(query.start, current.started_at),
                    col(CameraEvent.at) < query.end,
                )
                .order_by(col(CameraEvent.at))
            )
        ).all()
    ranges = playback.merge_ranges([(s.start, s.end) for s in segments])
    clips = {s.event_id: s for s in segments if s.event_id is not None}
    starts = [s.start for s in segments]
    out_events = []
    for event in events:
        holder = clips.get(event.event_id) or _covering(segments, starts, event.at)
        if holder is None:
            continue  # an event without viewable video is not on the timeline
        thumb = f"/app/v1/segments/{holder.segment_id}/thumbnail.jpg"  # relative to the API
        out_events.append(
            EventOut(
                event_id=event.event_id,
                type=event.type,
                at=event.at,
                segment_id=holder.segment_id,
                thumbnail_url=thumb,
            )
        )
    return json_out(
        TimelineOut(
            device_id=device_id,
            start=query.start,
            end=query.end,
            ranges=[RangeOut(start=a, end=b) for a, b in ranges],
            events=out_events,
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
        _, _, _, segments = await _viewing_window(request, session)
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


async def _viewable_segment(
    services: Services, session: AsyncSession, account_id: str, segment_id: str
) -> Segment:
    segment = await session.get(Segment, segment_id)
    if segment is None or segment.account_id != account_id:
        raise ApiError(404, "not_found", f"segment {segment_id} not found")
    current = await _watchable(services, session, account_id, segment.device_id)
    verdict = playback.viewable(
        segment, current_subscription=current, broadband_state="active", now=services.clock.now()
    )
    if verdict is not True:
        raise ApiError(verdict.status, verdict.code, verdict.message, rule=verdict.rule)
    return segment


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
    token = app_token_of(request)
    async with services.db.session() as session:
        s = await _viewable_segment(
            services, session, token.account_id, path_id(request, "segment_id")
        )
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


@api.route(
    "POST",
    "/app/v1/segments/{segment_id}/save",
    auth="app",
    tag="app",
    summary="Save a clip to the family cloud (R14)",
    response=SavedOut,
    status=201,
    errors=(403, 404, 409),
)
async def save_segment(request: web.Request) -> web.StreamResponse:
    services = services_of(request)
    token = app_token_of(request)
    quota = services.settings.family_cloud_quota_bytes
    async with services.db.session() as session:
        s = await _viewable_segment(
            services, session, token.account_id, path_id(request, "segment_id")
        )
        if not await services.family_cloud_open(session, token.account_id):
            raise ApiError(
                409,
                "family_cloud_closed",
                "the family cloud is closed after a long stop",
                rule="R15",
            )
        used = (
            await session.exec(
                select(func.coalesce(func.sum(FamilyCloudItem.bytes), 0)).where(
                    FamilyCloudItem.account_id == token.account_id
                )
            )
        ).one()
        key = family_key(token.account_id, s.segment_id, s.start)
        existing = (
            await session.exec(select(FamilyCloudItem).where(FamilyCloudItem.object_key == key))
        ).first()
        if existing is not None:
            assert existing.item_id is not None
            return json_out(
                SavedOut(
                    item_id=existing.item_id,
                    segment_id=s.segment_id,
                    bytes=existing.bytes,
                    used_bytes=int(used),
                    quota_bytes=quota,
                )
            )
        if int(used) + s.bytes > quota:
            raise ApiError(
                409, "quota_exceeded", f"the family cloud holds {used} of {quota} bytes", rule="R14"
            )
        await services.store.copy(s.object_key, key)
        item = FamilyCloudItem(
            account_id=token.account_id,
            segment_id=s.segment_id,
            device_id=s.device_id,
            object_key=key,
            bytes=s.bytes,
            saved_at=services.clock.now(),
        )
        session.add(item)
        await session.commit()
        assert item.item_id is not None
    return json_out(
        SavedOut(
            item_id=item.item_id,
            segment_id=s.segment_id,
            bytes=s.bytes,
            used_bytes=int(used) + s.bytes,
            quota_bytes=quota,
        ),
        201,
    )


def _thumbnail(data: bytes) -> bytes:
    import cv2

    from simulators.media import decode_first_frame

    ok, jpeg = cv2.imencode(".jpg", decode_first_frame(data))
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(jpeg.tobytes())


@api.route(
    "GET",
    "/app/v1/segments/{segment_id}/thumbnail.jpg",
    auth="app",
    tag="app",
    summary="The first frame of a segment as JPEG",
    content_type="image/jpeg",
    errors=(403, 404, 422),
)
async def thumbnail(request: web.Request) -> web.StreamResponse:
    services = services_of(request)
    token = app_token_of(request)
    async with services.db.session() as session:
        s = await _viewable_segment(
            services, session, token.account_id, path_id(request, "segment_id")
        )
    data = await services.store.get(s.object_key)
    try:
        jpeg = await asyncio.to_thread(_thumbnail, data)
    except Exception as exc:
        raise ApiError(422, "not_decodable", "the segment has no decodable video") from exc
    return web.Response(body=jpeg, content_type="image/jpeg")
