"""The gateway process: its components, entered in order on one ``AsyncExitStack``.

``async with Gateway(settings=...) as gw`` opens the database and the object store,
builds the :class:`~gateway.services.Services` (immutable from then on), and enters the
components, each an async context manager with its own TaskGroup: the HTTP server,
presence flushing, ingest, MQTT receiving, the jobs (:data:`gateway.schedule.JOBS`).
Leaving the block stops them in reverse order, each finishing its write in flight.
:func:`serve` runs one until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from types import TracebackType

from aiohttp import web

from devices.clock import Clock, parse_clock
from devices.presence import PresenceTracker
from gateway import presence
from gateway.broker_admin import BrokerAdmin, NoBrokerAdmin
from gateway.callbacks import CallbackSender
from gateway.config import Settings, derived_key
from gateway.credential_cache import CredentialCache
from gateway.credentials import resync_broker
from gateway.desired import republish_all
from gateway.http.access_log import RedactingAccessLogger
from gateway.http.app import create_app
from gateway.jobs import JobRunner
from gateway.lifecycle import freeze_heap, listening_socket
from gateway.metrics import Metrics
from gateway.mqtt.dynsec import DynsecAdmin
from gateway.mqtt.ingest import Ingest
from gateway.mqtt.session import MqttSession
from gateway.orders import CALLBACK_JOB
from gateway.schedule import JOBS
from gateway.services import Services
from replay.membership import TierCatalog, load_tiers
from replay.migrations import open_database
from replay.plans import DEFAULT_CATALOG, load_plans
from replay.recording import lifecycle_rules
from storage.open import open_object_store

log = logging.getLogger(__name__)


def signing_key(settings: Settings) -> bytes:
    """The HMAC key of the filesystem store's presigned URLs."""
    return derived_key(settings, settings.url_signing_key, b"kanjia-presigned-urls")


async def broker_admin_on(stack: AsyncExitStack, settings: Settings) -> tuple[BrokerAdmin, str]:
    """The broker integration of ``KANJIA_MQTT_AUTH``, entered on ``stack``, and the URL the
    gateway's session connects with: with dynamic security, the URL carries the plugin's
    admin, and the session uses the service identity the admin set up."""
    if settings.mqtt_auth != "mosquitto-dynsec":
        return NoBrokerAdmin(), settings.mqtt_url
    admin = DynsecAdmin(
        url=settings.mqtt_url,
        client_id=settings.mqtt_client_id,
        ca_file=settings.mqtt_ca_file or None,
    )
    await stack.enter_async_context(admin)
    return admin, admin.service_url


class Gateway:
    def __init__(
        self, *, settings: Settings, clock: Clock | None = None, mqtt: bool = True
    ) -> None:
        self.settings = settings
        self.clock = clock if clock is not None else parse_clock(settings.clock)
        self._with_mqtt = mqtt
        self._stack = AsyncExitStack()
        self._services: Services | None = None
        self.port = settings.http_port

    @property
    def services(self) -> Services:
        if self._services is None:
            raise RuntimeError("the gateway is not running")
        return self._services

    @property
    def url(self) -> str:
        return f"http://{self.settings.http_host}:{self.port}"

    async def __aenter__(self) -> Gateway:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _start(self) -> None:
        """Enter every component on one stack, in order; leaving it stops them in reverse:
        jobs, then MQTT receiving, then ingest (which drains), then presence (a last
        flush), then HTTP, the hooks' credential cache, the object store and the database."""
        settings, stack = self.settings, self._stack
        # Presigned URLs must name the port, so bind it before the store opens.
        sock = listening_socket(settings.http_host, settings.http_port)
        stack.callback(sock.close)
        self.port = sock.getsockname()[1]
        services = await self._services_on(stack)
        self._services = services
        if settings.mqtt_auth == "mosquitto-dynsec":
            await resync_broker(services)
        services.jobs.schedule(JOBS, services)
        if settings.platform_callback_url:
            sender = await stack.enter_async_context(
                CallbackSender(services=services, url=settings.platform_callback_url)
            )
            services.jobs.add(CALLBACK_JOB, 1.0, sender.deliver_due)
        await stack.enter_async_context(services.credential_cache.running())
        await stack.enter_async_context(http_server(create_app(services=services), sock))
        ingest = Ingest(services)
        await stack.enter_async_context(presence.flushing(services))
        await stack.enter_async_context(ingest.running())
        if services.mqtt is not None:
            await stack.enter_async_context(
                services.mqtt.receiving(ingest.handle, lambda: republish_all(services))
            )
        await stack.enter_async_context(services.jobs.running())
        log.info("gateway listening on %s", self.url)

    async def _services_on(self, stack: AsyncExitStack) -> Services:
        """The database and object store opened on ``stack``, and the services built on them."""
        settings, clock = self.settings, self.clock
        metrics = Metrics()
        catalog = load_plans(Path(settings.plans_file)) if settings.plans_file else DEFAULT_CATALOG
        tiers = load_tiers(Path(settings.plans_file)) if settings.plans_file else TierCatalog()
        db = await stack.enter_async_context(open_database(settings.database_url))
        store = await stack.enter_async_context(
            open_object_store(
                settings.object_store_url,
                base_url=settings.public_url.rstrip("/") or self.url,
                signing_key=signing_key(settings),
                now=clock.now,
                lifecycle=dict(lifecycle_rules(plan.retention_days for plan in catalog)),
            )
        )
        broker_admin, mqtt_url = await broker_admin_on(stack, settings)
        mqtt = None
        if self._with_mqtt:
            mqtt = MqttSession(
                url=mqtt_url,
                client_id=settings.mqtt_client_id,
                shared_group=settings.mqtt_shared_group,
                metrics=metrics,
                ca_file=settings.mqtt_ca_file or None,
            )
        return Services(
            settings=settings,
            clock=clock,
            db=db,
            store=store,
            metrics=metrics,
            presence=PresenceTracker(timeout=timedelta(seconds=settings.presence_timeout_seconds)),
            jobs=JobRunner(clock=clock, metrics=metrics),
            catalog=catalog,
            tiers=tiers,
            mqtt=mqtt,
            credential_cache=CredentialCache(
                db=db, ttl=settings.broker_hook_cache_seconds, metrics=metrics
            ),
            broker_admin=broker_admin,
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.__aexit__(exc_type, exc, tb)
        self._services = None


@asynccontextmanager
async def http_server(app: web.Application, sock: socket.socket) -> AsyncIterator[None]:
    """The component: ``app`` served on the listening ``sock`` for the block's lifetime."""
    runner = web.AppRunner(app, handle_signals=False, access_log_class=RedactingAccessLogger)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        yield
    finally:
        await runner.cleanup()


async def serve(settings: Settings, *, shutdown_timeout: float = 5.0) -> None:
    """Run a gateway until SIGTERM/SIGINT; shut down within ``shutdown_timeout``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gateway = Gateway(settings=settings)
    await gateway.__aenter__()
    try:
        freeze_heap()
        print(f"kanjia: serving on {gateway.url}", flush=True)
        await stop.wait()
        log.info("stopping")
    finally:
        # Bounded, so a stuck peer cannot hold the process past its grace period.
        async with asyncio.timeout(shutdown_timeout):
            await gateway.__aexit__(None, None, None)
