"""Presence in one process: sightings coalesced in memory, written often, swept for silence.

:func:`flushing` is the component that writes the coalesced sightings and reported
versions every :data:`FLUSH_SECONDS` (real time), sooner when many messages wait for it
(:attr:`gateway.batching.HeldAcks.due`), each write uncut by shutdown, and writes what is
left when it stops. :func:`sweep` is the clock-driven job that marks silent
devices offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gateway.lifecycle import Uncut, running
from gateway.services import Services
from storage.transient import is_transient

log = logging.getLogger(__name__)

#: How often coalesced presence sightings are written (real seconds).
FLUSH_SECONDS = 0.25
#: How often (clock seconds) silent devices are looked for.
SWEEP_SECONDS = 5.0


async def flush(services: Services) -> None:
    """Write the sightings and reported versions received since the last flush, then
    acknowledge their messages; if the write fails, both wait for the next flush."""
    acks = services.presence_acks
    try:
        async with services.db.writing() as session:
            acks.take()
            result = await services.presence.flush(session)
            await services.reported.flush(session)
    except Exception as exc:
        if is_transient(exc):
            acks.give_back()  # written by a later flush
        else:
            acks.written()  # refused for good: sending it again would change nothing
        raise
    acks.written()
    for _ in result.went_online:
        services.metrics.presence_changes.labels("online", "message").inc()
    for _ in result.went_offline:
        services.metrics.presence_changes.labels("offline", "will_or_state").inc()
    if result.unknown:
        services.metrics.mqtt_unknown_device.inc(len(result.unknown))


async def sweep(services: Services) -> None:
    """The job: what was seen is written first, then silent devices go offline."""
    await flush(services)
    now = services.clock.now()
    count = await services.db.write(
        lambda session: services.presence.sweep(session, now), name="presence sweep"
    )
    if count:
        services.metrics.presence_changes.labels("offline", "timeout").inc(count)


@asynccontextmanager
async def flushing(services: Services) -> AsyncIterator[None]:
    """The component: flushes every :data:`FLUSH_SECONDS` while the block runs, each write
    uncut by shutdown; when it ends, the write in flight finishes and a last flush writes
    the sightings already received."""
    writing = Uncut()

    failed = False

    async def flush_logged() -> None:
        nonlocal failed
        try:
            await flush(services)
            failed = False
        except Exception:
            failed = True
            log.exception("presence flush failed")

    async def loop() -> None:
        due = services.presence_acks.due
        while True:
            # Every FLUSH_SECONDS, or at once when enough acknowledgements wait for it
            # (not after a failed flush: the database is given the whole interval).
            if failed:
                await asyncio.sleep(FLUSH_SECONDS)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(due.wait(), FLUSH_SECONDS)
            await writing.run(flush_logged())

    try:
        async with running(("gateway[presence].flush", loop)):
            yield
    finally:
        await writing.settle()
        with contextlib.suppress(Exception):
            await flush(services)
