"""What the process depends on, checked now: the database, the object store, the broker.

:func:`check` runs each probe with a short deadline and records the result in the
``kanjia_dependency_up`` gauge; ``/healthz`` answers with the report (503 while any is
down) and ``/metrics`` checks before each scrape, so neither tells an old story.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass

from sqlalchemy import text

from gateway.services import Services

log = logging.getLogger(__name__)

#: How long one probe may take before its dependency counts as down (seconds).
PROBE_SECONDS = 2.0
#: A key no object is written under: a HEAD of it proves the store answers.
PROBE_KEY = "health/probe"


@dataclass(frozen=True, slots=True)
class Health:
    database: bool
    object_store: bool
    #: ``None`` when the gateway runs without MQTT (then it is no dependency).
    mqtt: bool | None

    @property
    def ok(self) -> bool:
        return self.database and self.object_store and self.mqtt is not False


async def _probe(name: str, probe: Awaitable[object]) -> bool:
    try:
        async with asyncio.timeout(PROBE_SECONDS):
            await probe
    except Exception as exc:
        log.warning("health: %s is down (%s)", name, type(exc).__name__)
        return False
    return True


async def _select_one(services: Services) -> None:
    async with services.db.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def check(services: Services) -> Health:
    """Probe every dependency at once; record each in the metrics."""
    database, object_store = await asyncio.gather(
        _probe("database", _select_one(services)),
        _probe("object store", services.store.head(PROBE_KEY)),
    )
    mqtt = None if services.mqtt is None else services.mqtt.connected.is_set()
    health = Health(database=database, object_store=object_store, mqtt=mqtt)
    up = services.metrics.dependency_up
    up.labels("database").set(int(database))
    up.labels("object_store").set(int(object_store))
    if mqtt is not None:
        up.labels("mqtt").set(int(mqtt))
    return health
