"""The service under test: an embedded gateway, or one already running.

The only module of ``simulators`` that embeds the gateway."""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp

from devices.clock import Clock, SimClock
from simulators.fleet.errors import ProvisioningError
from simulators.fleet.options import FleetOptions


@dataclass(frozen=True, slots=True)
class Target:
    http_url: str
    platform_token: str
    mqtt_url: str
    clock: Clock
    clock_speed: float
    embedded: bool
    broker: str
    #: amqtt 0.12 breaks ("dictionary changed size during iteration") under concurrent
    #: connects: it walks every subscription of the broker for each new client.
    connect_concurrency: int = 64
    #: Further gateways whose ``/metrics`` count with ``http_url``'s (``--metrics-url``).
    metrics_urls: tuple[str, ...] = ()


@asynccontextmanager
async def embedded_service(options: FleetOptions, workdir: Path) -> AsyncIterator[Target]:
    """An amqtt broker (unless ``--mqtt-url``) and a gateway on SQLite and files."""
    from gateway.config import load_settings
    from gateway.demo import embedded_broker
    from gateway.service import Gateway

    speed, pacing = options.clock_speed, options.pacing
    clock = SimClock(options.start, speed)
    async with AsyncExitStack() as stack:
        if options.mqtt_url:
            mqtt_url, broker, concurrency = options.mqtt_url, options.mqtt_url, 64
        else:
            concurrency = 1
            mqtt_url = await stack.enter_async_context(embedded_broker())
            broker = f"amqtt (embedded) {mqtt_url}"
        token = secrets.token_urlsafe(18)
        # A device is silent for at most its cadence, and presigned URLs must outlive a
        # busy second: both are clock seconds, so they grow with the speed.
        quiet = max(pacing.telemetry_every, pacing.segment_every)
        settings = load_settings(
            environ={},
            overrides={
                "mqtt_url": mqtt_url,
                "mqtt_ca_file": options.ca_file or "",
                "mqtt_client_id": f"kanjia-fleet-{secrets.token_hex(4)}",
                "database_url": f"sqlite:///{workdir / 'kanjia.db'}",
                "object_store_url": (workdir / "objects").as_uri(),
                "http_port": 0,
                "platform_token": token,
                "clock": f"sim:{options.start.isoformat()}@{speed:g}",
                "presence_timeout_seconds": max(90.0, 3 * quiet, speed * 15),
                "url_ttl_seconds": max(300, math.ceil(speed * 60)),
                "upload_url_ttl_seconds": max(60, math.ceil(speed * 60)),
            },
        )
        gateway = await stack.enter_async_context(Gateway(settings=settings, clock=clock))
        mqtt = gateway.services.mqtt
        assert mqtt is not None
        await asyncio.wait_for(mqtt.connected.wait(), 30)
        yield Target(
            http_url=gateway.url,
            platform_token=token,
            mqtt_url=mqtt_url,
            clock=clock,
            clock_speed=speed,
            embedded=True,
            broker=broker,
            connect_concurrency=concurrency,
        )


@asynccontextmanager
async def remote_service(
    options: FleetOptions, http: aiohttp.ClientSession
) -> AsyncIterator[Target]:
    """A running service: the fleet's clock starts from the service's ``/ops/v1/clock``."""
    assert options.service_url
    assert options.platform_token
    assert options.mqtt_url
    url = options.service_url.rstrip("/")
    headers = {"Authorization": f"Bearer {options.platform_token}"}
    began = time.monotonic()
    async with http.get(f"{url}/ops/v1/clock", headers=headers) as response:
        if response.status != 200:
            raise ProvisioningError(
                "reading the service clock", response.status, await response.text()
            )
        body = await response.json()
    half_trip = (time.monotonic() - began) / 2
    now = datetime.fromisoformat(body["now"]) + timedelta(seconds=half_trip * options.clock_speed)
    yield Target(
        http_url=url,
        platform_token=options.platform_token,
        mqtt_url=options.mqtt_url,
        clock=SimClock(now, options.clock_speed),
        clock_speed=options.clock_speed,
        embedded=False,
        broker=options.mqtt_url,
        metrics_urls=tuple(u.rstrip("/") for u in options.metrics_urls),
    )
