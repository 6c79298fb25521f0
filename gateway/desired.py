"""Publishing desired state: retained, versioned, re-published until handed over.

:func:`refresh_desired` runs inside the transaction that changed what a device should do
(a bind, an order, a broadband stop); the publish job then sends every document whose
version the broker has not yet received, retained, so offline devices get it when they
return. A crash between the commit and the publish only delays it: the job finds the
unpublished version at its next turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from sqlmodel.ext.asyncio.session import AsyncSession

from devices import desired
from gateway.mqtt.messages import Desired
from gateway.mqtt.session import NotConnected
from gateway.services import Services
from replay import desired as composed

log = logging.getLogger(__name__)

PUBLISH_JOB = "desired_publish"


async def refresh_desired(
    services: Services, session: AsyncSession, device_ids: Iterable[str]
) -> int:
    """Recompute the devices' desired documents in ``session``; return how many changed."""
    changed = await composed.refresh(session, device_ids, now=services.clock.now())
    return len(changed)


async def republish_all(services: Services) -> None:
    """The broker kept no session: every device's desired document goes out again,
    retained, so a device that reconnects later still learns what it should do."""
    async with services.db.writing() as session:
        count = await desired.mark_all_unpublished(session)
        await session.commit()
    log.info("%d desired documents to publish again", count)
    services.jobs.trigger(PUBLISH_JOB)


async def publish_pending(services: Services) -> int:
    """Publish every unpublished desired version (retained, QoS 1)."""
    mqtt = services.mqtt
    if mqtt is None or not mqtt.connected.is_set():
        return 0
    published = 0
    while True:
        async with services.db.session() as session:
            batch = await desired.unpublished(session)
        if not batch:
            break
        sends = [
            mqtt.send(Desired(state.device_id, state.version, state.document)) for state in batch
        ]
        # The sends go out with no transaction open; what the broker took is written after.
        results = await asyncio.gather(*sends, return_exceptions=True)
        sent = [
            (state.device_id, state.version)
            for state, result in zip(batch, results, strict=True)
            if not isinstance(result, BaseException)
        ]
        async with services.db.writing() as session:
            await desired.mark_published(session, sent)
            await session.commit()
        published += len(sent)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, NotConnected):
                raise result
        if len(sent) < len(batch):
            break
    return published
