"""A camera's recorded range as one MP4 file (issue 15): the segments read, remuxed.

:func:`exported` is what the MP4 download and the family cloud's range saves share: the
viewable segments of the range (those the timeline shows: recorded under the device's
current subscription, not expired; the caller has checked the family may watch the device,
R5, R6, R8), read one at a time from the store and remuxed by :func:`replay.export.remux_mp4`
in a worker thread, so the event loop never waits on PyAV. The file is a temporary one,
deleted when the ``async with`` block ends; it holds at most one hour
(:data:`replay.clips.MAX_EXPORT`).

The worker fetches each segment through the event loop as it gets to it
(``run_coroutine_threadsafe``): only one segment's bytes are in memory at a time, beside
the MP4 being written to disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.services import Services
from replay import index_store
from replay.clips import NothingRecorded, export_refusal
from replay.index_store import Piece
from replay.models import Subscription
from storage.objects import ObjectNotFound

if TYPE_CHECKING:
    from replay.export import Exported, Source

log = logging.getLogger(__name__)

#: How long the worker waits for one segment from the store.
FETCH_TIMEOUT_S = 60.0
#: What one read of the finished file takes (serving it).
READ_CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class Export:
    """The MP4 written: its temporary file (deleted after the block), its size and what
    :func:`replay.export.remux_mp4` says of it."""

    path: Path
    bytes: int
    result: Exported


def _remux(
    sources: Iterator[Source], path: Path, device_id: str, start: datetime, end: datetime
) -> Export:
    # Imported on first use, in the worker thread: PyAV takes a good part of a second.
    from replay.export import NothingToExport, remux_mp4

    try:
        result = remux_mp4(sources, path, start=start, end=end)
    except NothingToExport as exc:
        raise NothingRecorded(device_id, start, end) from exc
    return Export(path=path, bytes=path.stat().st_size, result=result)


def _sources(
    services: Services, pieces: Sequence[Piece], loop: asyncio.AbstractEventLoop
) -> Iterator[Source]:
    """The segments' bytes, fetched through the loop one at a time (in the worker)."""
    from replay.export import Source

    for piece in pieces:
        fetch = asyncio.run_coroutine_threadsafe(services.store.get(piece.object_key), loop)
        try:
            data = fetch.result(FETCH_TIMEOUT_S)
        except ObjectNotFound:
            log.warning("segment %s left out of an export: swept meanwhile", piece.segment_id)
            continue
        yield Source(piece.start, data)


@asynccontextmanager
async def exported(
    services: Services, subscription: Subscription, start: datetime, end: datetime
) -> AsyncIterator[Export]:
    """``async with exported(services, current, start, end) as export``: the MP4 of what the
    device recorded in ``[start, end)`` under ``subscription`` and may still be watched.

    Refused: a range longer than an hour (``range_too_long``), nothing viewable recorded in
    it (:class:`~replay.clips.NothingRecorded`, ``no_recording``).
    """
    refusal = export_refusal(start, end)
    if refusal is not None:
        raise refusal
    async with services.db.session() as session:
        pieces = await index_store.segments_between(
            session, subscription, start, end, services.clock.now()
        )
    if not pieces:
        raise NothingRecorded(subscription.device_id, start, end)
    fd, name = tempfile.mkstemp(prefix="kanjia-export-", suffix=".mp4")
    os.close(fd)
    path = Path(name)
    loop = asyncio.get_running_loop()
    work = asyncio.ensure_future(
        asyncio.to_thread(
            _remux, _sources(services, pieces, loop), path, subscription.device_id, start, end
        )
    )
    try:
        # Shielded: a request cancelled meanwhile leaves the worker to finish its file,
        # which is deleted then, not while it is still being written.
        yield await asyncio.shield(work)
    finally:
        if work.done():
            _discard(path, work)
        else:
            work.add_done_callback(lambda done: _discard(path, done))


def _discard(path: Path, work: asyncio.Future[Export]) -> None:
    """Delete the export's file once its worker is done (its failure was answered, or
    nobody waits for it any more)."""
    if not work.cancelled():
        work.exception()  # retrieved: an abandoned export's failure is no one's to answer
    with contextlib.suppress(OSError):
        os.unlink(path)


async def chunks(path: Path) -> AsyncIterator[bytes]:
    """The file's bytes in :data:`READ_CHUNK` pieces, each read in a worker thread."""
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, READ_CHUNK):
            yield chunk
