"""Companion-app playback: timeline, HLS playlists, segment URLs, playback sessions and
MP4 clips.

Only what the family may watch is shown: segments recorded under the device's current
subscription (R5, R6), younger than their retention, while broadband is active (R8). A
device of another account is 404, never 403. The timeline's events each name the segment
that shows them (:func:`replay.events.link_event`: the same on every read) and a
thumbnail of their instant; its gaps say why they are there where the service knows
(:mod:`replay.gaps`); it is gzip-compressed when the request accepts gzip.

A playback session (issue 15, :mod:`replay.playback_sessions`) is a playlist URL that
carries its own credential, for players that send no header: its segments point back
here, and each is judged again and presigned when fetched, so none runs out while the
session lives (``KANJIA_URL_TTL_SECONDS`` bounds only the redirect's target).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from aiohttp import hdrs, web
from aiohttp.web import ContentCoding
from pydantic import AwareDatetime, model_validator
from sqlmodel.ext.asyncio.session import AsyncSession

from devices import broadband_periods, presence
from devices.errors import NotFound
from gateway.http.api import Api, ApiError, Body, Out, json_out, parse_body, parse_query
from gateway.http.requests import (
    RANGE,
    SEGMENT,
    SESSION,
    WATCHING,
    app_token_of,
    path_id,
    services_of,
    viewable_segment,
    watchable,
)
from gateway.http.sessions import (
    SESSION_PARAM,
    issue_session,
    playlist_path,
    segment_uri,
    session_viewing,
)
from replay import event_index, gaps, index_store, playback, playback_sessions
from replay.index_store import Piece
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


class SessionAsk(Body):
    start: AwareDatetime
    end: AwareDatetime


class SessionOut(Out):
    device_id: str
    start: datetime
    end: datetime
    #: The HLS playlist; its ``session`` query value is the credential (no header needed).
    url: str
    expires_at: datetime


class SegmentUrlOut(Out):
    segment_id: str
    device_id: str
    kind: str
    start: datetime
    end: datetime
    url: str
    expires_in: int


def _require(segments: Sequence[Piece]) -> None:
    if not segments:
        raise ApiError(404, "no_recording", "nothing recorded in that range")


def _m3u8(entries: list[tuple[str, datetime, float]]) -> web.Response:
    return web.Response(
        text=playback.hls_playlist(entries),
        content_type="application/vnd.apple.mpegurl",
        headers={"Cache-Control": "no-store"},
    )


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
    errors=WATCHING,
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
    account = current.account_id
    inactive = (await broadband_periods.periods_since(session, [account], low)).get(account, [])
    known: dict[gaps.Cause, list[tuple[datetime, datetime]]] = {
        "not_entitled": [(low, current.started_at)] if low < current.started_at else [],
        "broadband_stopped": gaps.inactive_spans(inactive, low, high),
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
    errors=(*WATCHING, "no_recording"),
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
    _require(segments)
    ttl = services.settings.url_ttl_seconds
    entries = [
        (
            await services.store.presign_get(s.object_key, expires_in=ttl),
            s.start,
            (s.end - s.start).total_seconds(),
        )
        for s in segments
    ]
    return _m3u8(entries)


@api.route(
    "GET",
    "/app/v1/segments/{segment_id}",
    auth="app",
    tag="app",
    summary="A playable URL of one segment",
    response=SegmentUrlOut,
    errors=SEGMENT,
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


@api.route(
    "POST",
    "/app/v1/devices/{device_id}/playback",
    auth="app",
    tag="app",
    summary="A playback session: an HLS playlist URL that carries its own credential",
    body=SessionAsk,
    response=SessionOut,
    status=201,
    errors=(*RANGE, *WATCHING, "no_recording"),
)
async def create_playback_session(request: web.Request) -> web.StreamResponse:
    """Open a playback session over ``[start, end)`` of a camera the family may watch
    (R1, R5, R6, R8): the answer's ``url`` is an HLS playlist whose ``session`` query
    value is the credential, so ``<video src>`` or ffmpeg play it with no header. It
    lives until the range has played through from now plus 5 minutes (``expires_at``);
    each of its segments stays fetchable all that time; it is refused as soon as the
    family may no longer watch. A range over 12 hours is 400 ``range_too_long``; one with
    nothing recorded, 404 ``no_recording``."""
    services = services_of(request)
    device_id = path_id(request, "device_id")
    asked = parse_body(await request.read(), SessionAsk)
    playback_sessions.check_range(asked.start, asked.end)
    account_id = app_token_of(request).account_id
    now = services.clock.now()
    async with services.db.session() as db:
        current = await watchable(db, account_id, device_id)
        cutoff = playback.retention_cutoff(current.retention_days, now)  # R5
        stored = await index_store.ranges_between(
            db, device_id, current.subscription_id, max(asked.start, cutoff), asked.end
        )
    if not playback.visible_ranges(stored, start=asked.start, end=asked.end, cutoff=cutoff):
        raise ApiError(404, "no_recording", "nothing recorded in that range")
    credential, session = issue_session(
        services.settings,
        account_id=account_id,
        subscription=current,
        start=asked.start,
        end=asked.end,
        now=now,
    )
    base = services.settings.public_url.rstrip("/") or str(request.url.origin())
    return json_out(
        SessionOut(
            device_id=device_id,
            start=session.start,
            end=session.end,
            url=base + playlist_path(device_id, credential),
            expires_at=session.expires_at,
        ),
        status=201,
    )


@api.route(
    "GET",
    "/app/v1/devices/{device_id}/playback/playlist.m3u8",
    auth="session",
    tag="app",
    summary="A playback session's HLS VOD playlist",
    content_type="application/vnd.apple.mpegurl",
    errors=(*SESSION, *WATCHING, "previous_subscription", "no_recording"),
)
async def session_playlist(request: web.Request) -> web.StreamResponse:
    """The session's range as an HLS VOD playlist of what is recorded and viewable now,
    read afresh on each fetch; each segment URI points back at this gateway, relative to
    the playlist, with the same ``session`` value. Refused as soon as the family may no
    longer watch (403: R5, R6, R8); 401 once the session expired."""
    services = services_of(request)
    device_id = path_id(request, "device_id")
    async with services.db.session() as db:
        session, current = await session_viewing(request, db, device_id)
        segments = await index_store.segments_between(
            db, current, session.start, session.end, services.clock.now()
        )
    _require(segments)
    credential = request.query[SESSION_PARAM]
    return _m3u8(
        [
            (segment_uri(s.segment_id, credential), s.start, (s.end - s.start).total_seconds())
            for s in segments
        ]
    )


@api.route(
    "GET",
    "/app/v1/devices/{device_id}/playback/segments/{segment_id}.ts",
    auth="session",
    tag="app",
    summary="One segment of a playback session: a redirect to it, presigned now",
    status=302,
    errors=(*SESSION, *SEGMENT),
)
async def session_segment(request: web.Request) -> web.StreamResponse:
    """Redirect (302) to the segment on the object store, presigned at this moment for
    ``KANJIA_URL_TTL_SECONDS``, on the filesystem store and on S3 alike. The segment must
    be the session's device's, overlap its range and be viewable now (R5, R6, R8, its
    retention): the session and what the family may watch are judged on every fetch."""
    services = services_of(request)
    device_id = path_id(request, "device_id")
    segment_id = path_id(request, "segment_id")
    now = services.clock.now()
    async with services.db.session() as db:
        session, current = await session_viewing(request, db, device_id)
        segment = await index_store.segment(db, segment_id)
    if (
        segment is None
        or segment.device_id != device_id
        or not session.covers(segment.start, segment.end)
    ):
        raise NotFound("segment", segment_id, on=f"this playback session of {device_id}")
    verdict = playback.viewable(
        segment, current_subscription=current, broadband_state="active", now=now
    )
    if verdict is not True:
        raise verdict.error()
    url = await services.store.presign_get(
        segment.object_key, expires_in=services.settings.url_ttl_seconds
    )
    return web.Response(status=302, headers={"Location": url, "Cache-Control": "no-store"})
