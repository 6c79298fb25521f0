"""Companion-app thumbnails: a frame of a viewable segment as JPEG.

The timeline's events point here (``thumbnail_url``) with ``at``, the event's instant: the
thumbnail is the frame nearest it (R1), not the clip's first frame (its pre-roll). Without
``at``, the first frame. The same viewing rules as playback apply (R5, R6, R8), and a
segment without decodable video is 422. The viewing rule is checked on every request; the
JPEG made for a segment's content (its SHA-256) and an offset is kept in a small cache of
the process, so the thumbnails of a day's events are decoded once.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from aiohttp import web
from pydantic import AwareDatetime

from gateway.http.api import Api, ApiError, Body, parse_query
from gateway.http.requests import SEGMENT, services_of, viewable_segment

api = Api()

#: Thumbnails kept (a JPEG is some tens of kB).
CACHE_SIZE = 256
_cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()


class ThumbnailQuery(Body):
    at: AwareDatetime | None = None


def _thumbnail(data: bytes, offset_s: float) -> bytes:
    # Imported on first use, in the worker thread: PyAV and OpenCV take a good part of a
    # second to import, which every gateway's start (or the event loop) would wait for.
    from replay.media import frame_jpeg_at

    return frame_jpeg_at(data, offset_s)


def _remember(key: tuple[str, int], jpeg: bytes) -> None:
    _cache[key] = jpeg
    _cache.move_to_end(key)
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)


@api.route(
    "GET",
    "/app/v1/segments/{segment_id}/thumbnail.jpg",
    auth="app",
    tag="app",
    summary="The frame of a segment at an instant (or its first) as JPEG",
    query=ThumbnailQuery,
    content_type="image/jpeg",
    errors=(*SEGMENT, "not_decodable"),
)
async def thumbnail(request: web.Request) -> web.StreamResponse:
    """The frame of a segment the family may watch nearest the instant ``at`` (an event's,
    as the timeline's ``thumbnail_url`` gives it), or its first frame without ``at``, as
    JPEG. ``at`` must fall within the segment (400 otherwise); a segment without decodable
    video is 422. Decoded in a worker thread, and kept in a small in-process cache by the
    segment's content and the offset."""
    services = services_of(request)
    query = parse_query(request, ThumbnailQuery)
    async with services.db.session() as session:
        s = await viewable_segment(request, session)
    offset_s = 0.0
    if query.at is not None:
        if not s.start <= query.at <= s.end:
            raise ApiError(400, "invalid_query", "at: the instant is not within the segment")
        offset_s = (query.at - s.start).total_seconds()
    key = (s.sha256, round(offset_s * 1000))
    jpeg = _cache.get(key)
    if jpeg is None:
        data = await services.store.get(s.object_key)
        try:
            jpeg = await asyncio.to_thread(_thumbnail, data, offset_s)
        except Exception as exc:
            raise ApiError(422, "not_decodable", "the segment has no decodable video") from exc
        _remember(key, jpeg)
    return web.Response(body=jpeg, content_type="image/jpeg")
