"""Companion-app playback: timeline, HLS playlist, segment URLs, family-cloud saves.

Only what the family may watch is shown: segments recorded under the device's current
subscription (R5, R6), younger than their retention, while broadband is active (R8). A
device of another account is 404, never 403.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from aiohttp import web
from pydantic import AwareDatetime, model_validator
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from devices import accounts, broadband_store
from devices.broadband import account_state
from gateway.http.api import Api, ApiError, Body, Out, json_out, parse_query
from gateway.http.requests import app_token_of, path_id, services_of
from gateway.services import Services
from replay import index_store, playback
from replay.models import FamilyCloudItem, Segment, Subscription
from replay.recording import family_key
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


async def _asked(
    request: web.Request, session: AsyncSession
) -> tuple[str, RangeQuery, Subscription]:
    """The device, the asked range and the device's current subscription (403/404 first)."""
    device_id = path_id(request, "device_id")
    query = parse_query(request, RangeQuery)
    account_id = app_token_of(request).account_id
    current = await _watchable(services_of(request), session, account_id, device_id)
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


async def _viewable_segment(
    services: Services, session: AsyncSession, account_id: str, segment_id: str
) -> Segment:
    segment = await index_store.segment(session, segment_id)
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
        if not await broadband_store.family_cloud_open(
            session, token.account_id, services.clock.now()
        ):
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
    # Imported on first use, in the worker thread: PyAV and OpenCV take a good part of a
    # second to import, which every gateway's start (or the event loop) would wait for.
    from replay.media import first_frame_jpeg

    return first_frame_jpeg(data)


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
