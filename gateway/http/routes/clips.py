"""The recorded part of a range as one MP4 (issue 15): the app's export, and a playback
session's (the ``session`` credential of :mod:`gateway.http.sessions`, for players and
links that send no header)."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from pydantic import AwareDatetime
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway import exports
from gateway.http.api import Api, ApiError, Body, parse_query
from gateway.http.requests import (
    RANGE,
    SESSION,
    WATCHING,
    app_token_of,
    path_id,
    services_of,
    watchable,
)
from gateway.http.sessions import PLAYBACK_SESSION, session_viewing
from replay.models import Subscription

api = Api()


class ClipQuery(Body):
    start: AwareDatetime
    end: AwareDatetime
    #: A playback session's credential, in place of the app token (``app_or_session``).
    session: str | None = None


async def _clip_viewing(
    request: web.Request, db: AsyncSession, device_id: str, start: datetime, end: datetime
) -> tuple[Subscription, datetime, datetime]:
    """The device's current subscription, if the caller may watch it now, and the range
    to export: the app token's family (R5, R6, R8; another account's device is 404), or a
    playback session's, whose range bounds the clip (403 ``session_scope`` outside it)."""
    if PLAYBACK_SESSION not in request:
        return await watchable(db, app_token_of(request).account_id, device_id), start, end
    session, current = await session_viewing(request, db, device_id)
    start, end = max(start, session.start), min(end, session.end)
    if end <= start:
        raise ApiError(403, "session_scope", "the range is outside this playback session")
    return current, start, end


@api.route(
    "GET",
    "/app/v1/devices/{device_id}/clip.mp4",
    auth="app_or_session",
    tag="app",
    summary="The recorded part of a range as one MP4 (at most an hour)",
    query=ClipQuery,
    content_type="video/mp4",
    errors=(*RANGE, *SESSION, *WATCHING, "previous_subscription", "no_recording"),
)
async def clip_mp4(request: web.Request) -> web.StreamResponse:
    """What the camera recorded in ``[start, end)`` and the family may watch (R5, R6, R8),
    as one standard MP4: the segments remuxed without re-encoding, gaps skipped, timestamps
    continuous from 0, opening on the keyframe at or before ``start``. At most an hour (400
    ``range_too_long``); 404 ``no_recording`` when nothing viewable was recorded there.
    ``X-Recorded-Seconds`` gives the MP4's duration. With a playback session's
    ``session`` credential instead of the app token, the clip is of the session's range."""
    services = services_of(request)
    device_id = path_id(request, "device_id")
    query = parse_query(request, ClipQuery)
    async with services.db.session() as session:
        current, start, end = await _clip_viewing(
            request, session, device_id, query.start, query.end
        )
    async with exports.exported(services, current, start, end) as export:
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
