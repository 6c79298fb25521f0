"""Companion-app thumbnails: the first frame of a viewable segment as JPEG.

The timeline's events point here (``thumbnail_url``); the same viewing rules as playback
apply (R5, R6, R8), and a segment without decodable video is 422.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.http.api import Api, ApiError
from gateway.http.requests import services_of, viewable_segment

api = Api()


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
    errors=(
        "not_entitled",
        "unsubscribed",
        ("broadband_inactive", 403),
        "previous_subscription",
        "expired",
        "not_decodable",
    ),
)
async def thumbnail(request: web.Request) -> web.StreamResponse:
    """The first frame of a viewable segment as JPEG (the timeline's event thumbnails); the
    same viewing rules as the segment's URL, and 422 when the segment holds no decodable video."""
    services = services_of(request)
    async with services.db.session() as session:
        s = await viewable_segment(request, session)
    data = await services.store.get(s.object_key)
    try:
        jpeg = await asyncio.to_thread(_thumbnail, data)
    except Exception as exc:
        raise ApiError(422, "not_decodable", "the segment has no decodable video") from exc
    return web.Response(body=jpeg, content_type="image/jpeg")
