"""The gateway process: database, object store, HTTP, MQTT and jobs in one TaskGroup.

``async with Gateway(settings=...) as gw`` starts everything (an ``AsyncExitStack`` owns
the resources, in order) and leaving the block stops it: tasks are cancelled and
awaited, the HTTP server closes, the store and database close. :func:`serve` runs one
until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import signal
import socket
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from types import TracebackType

from aiohttp import web

from devices.clock import Clock, parse_clock
from devices.presence import PresenceTracker
from gateway import broadband, retention
from gateway.callbacks import CallbackSender
from gateway.config import Settings
from gateway.desired import PUBLISH_JOB, publish_pending
from gateway.http.app import create_app
from gateway.jobs import JobRunner
from gateway.lifecycle import Uncut, cancel_all, freeze_heap
from gateway.metrics import Metrics
from gateway.mqtt.ingest import Ingest
from gateway.mqtt.session import MqttSession
from gateway.orders import CALLBACK_JOB
from gateway.services import Services
from replay import subscriptions
from replay.billing import business_date
from replay.migrations import open_database
from replay.plans import DEFAULT_CATALOG, load_plans
from replay.recording import lifecycle_rules
from storage.open import open_object_store

log = logging.getLogger(__name__)

#: How often coalesced presence sightings are written (real seconds).
PRESENCE_FLUSH_SECONDS = 0.25
#: How often (clock seconds) silent devices are looked for.
PRESENCE_SWEEP_SECONDS = 5.0


def signing_key(settings: Settings) -> bytes:
    if settings.url_signing_key:
        return settings.url_signing_key.encode()
    seed = settings.platform_token or settings.database_url
    return hmac.new(seed.encode(), b"kanjia-presigned-urls", hashlib.sha256).digest()


class Gateway:
    def __init__(
        self, *, settings: Settings, clock: Clock | None = None, mqtt: bool = True
    ) -> None:
        self.settings = settings
        self.clock = clock if clock is not None else parse_clock(settings.clock)
        self._with_mqtt = mqtt
        self._stack = AsyncExitStack()
        self._services: Services | None = None
        self._flushing = Uncut()
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
        settings, clock, stack = self.settings, self.clock, self._stack
        metrics = Metrics()
        catalog = load_plans(Path(settings.plans_file)) if settings.plans_file else DEFAULT_CATALOG
        db = await stack.enter_async_context(open_database(settings.database_url))
        if settings.http_port == 0:
            # Presigned URLs must name the port, so choose it before the store opens.
            self.port = self._free_port()
        base_url = settings.public_url.rstrip("/") or self.url
        store = await stack.enter_async_context(
            open_object_store(
                settings.object_store_url,
                base_url=base_url,
                signing_key=signing_key(settings),
                clock=clock,
                lifecycle=dict(lifecycle_rules(plan.retention_days for plan in catalog)),
            )
        )
        jobs = JobRunner(clock=clock, metrics=metrics)
        services = Services(
            settings=settings,
            clock=clock,
            db=db,
            store=store,
            metrics=metrics,
            presence=PresenceTracker(timeout=timedelta(seconds=settings.presence_timeout_seconds)),
            jobs=jobs,
            catalog=catalog,
        )
        ingest = Ingest(services)
        if self._with_mqtt:
            services.mqtt = MqttSession(
                url=settings.mqtt_url,
                client_id=settings.mqtt_client_id,
                shared_group=settings.mqtt_shared_group,
                metrics=metrics,
                on_message=ingest.handle,
            )
        self._services = services
        jobs.add("presence_sweep", PRESENCE_SWEEP_SECONDS, self._presence_sweep)
        jobs.add("subscription_purge", 3600, self._purge_subscriptions)
        broadband.install(services)
        jobs.add("retention_sweep", 60, lambda: retention.sweep_expired(services))
        jobs.add("stale_grants", 600, lambda: retention.drop_stale_grants(services))
        jobs.add("reconcile", 86400, lambda: retention.reconcile(services))
        jobs.add(PUBLISH_JOB, 2.0, lambda: publish_pending(services))
        jobs.add("tariff_terms", 3600, self._roll_terms)
        if settings.platform_callback_url:
            sender = CallbackSender(services=services, url=settings.platform_callback_url)
            stack.push_async_callback(sender.close)
            jobs.add(CALLBACK_JOB, 1.0, sender.deliver_due)

        runner = web.AppRunner(create_app(services=services), handle_signals=False)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, settings.http_host, self.port, reuse_address=True)
        await site.start()

        tg = await stack.enter_async_context(asyncio.TaskGroup())
        tasks = [
            tg.create_task(jobs.run(), name="gateway[jobs]"),
            tg.create_task(self._presence_flush_loop(), name="gateway[presence].flush"),
            tg.create_task(ingest.run(), name="gateway[ingest]"),
        ]
        if services.mqtt is not None:
            tasks.append(tg.create_task(services.mqtt.run(), name="gateway[mqtt].rx"))

        async def stop_tasks() -> None:
            await cancel_all(tasks)
            # Writes in flight finish; then a last flush, so data and sightings already
            # received are not lost on shutdown.
            with contextlib.suppress(Exception):
                await ingest.drain()
            await self._flushing.settle()
            with contextlib.suppress(Exception):
                await self._presence_flush()

        stack.push_async_callback(stop_tasks)
        log.info("gateway listening on %s", self.url)

    def _free_port(self) -> int:
        """The kernel's choice of a free port (``http_port = 0``)."""
        with socket.socket() as sock:
            sock.bind((self.settings.http_host, 0))
            port: int = sock.getsockname()[1]
        return port

    async def _presence_flush(self) -> None:
        services = self.services
        async with services.db.session() as session:
            result = await services.presence.flush(session)
            await services.reported.flush(session)
        for _ in result.went_online:
            services.metrics.presence_changes.labels("online", "message").inc()
        for _ in result.went_offline:
            services.metrics.presence_changes.labels("offline", "will_or_state").inc()
        if result.unknown:
            services.metrics.mqtt_unknown_device.inc(len(result.unknown))

    async def _presence_flush_loop(self) -> None:
        while True:
            await asyncio.sleep(PRESENCE_FLUSH_SECONDS)
            await self._flushing.run(self._presence_flush_logged())

    async def _presence_flush_logged(self) -> None:
        try:
            await self._presence_flush()
        except Exception:
            log.exception("presence flush failed")

    async def _presence_sweep(self) -> None:
        services = self.services
        await self._presence_flush()
        async with services.db.session() as session:
            count = await services.presence.sweep(session, services.clock.now())
        if count:
            services.metrics.presence_changes.labels("offline", "timeout").inc(count)

    async def _purge_subscriptions(self) -> None:
        async with self.services.db.session() as session:
            await subscriptions.purge_unsubscribed(session, self.clock.now())

    async def _roll_terms(self) -> None:
        async with self.services.db.session() as session:
            await subscriptions.roll_terms(session, business_date(self.clock.now()))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.__aexit__(exc_type, exc, tb)
        self._services = None


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
