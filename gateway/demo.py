"""``kanjia demo``: everything in one process, no outside services.

An embedded MQTT broker (amqtt, MQTT 3.1.1) on a free loopback port, the gateway on
SQLite and the filesystem store under ``./var/``, and one simulated household: an
account, two cameras and a router. Prints the URLs and tokens; Ctrl-C stops it all.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from amqtt.broker import Broker

from devices import accounts, router_store
from devices.clock import Clock
from devices.models import DeviceKind
from devices.router import RouterCredentials
from gateway.config import Settings
from gateway.desired import PUBLISH_JOB, refresh_desired
from gateway.lifecycle import cancel_all, free_port
from gateway.service import Gateway
from replay import subscriptions
from simulators.camera import CameraSimulator
from simulators.device import SimulatedDevice
from simulators.radio import Home
from simulators.router import RouterSimulator
from simulators.router_device import RouterDevice
from simulators.scene import Scene, script_actors

log = logging.getLogger(__name__)

HOUSEHOLD = "demo-home"
OWNER = "demo-owner"
#: The demo's cloud-replay products: one camera of each family (R1).
ROUTER_PASSWORD = secrets.token_urlsafe(12)  # the demo router's SSH login (root)
PLANS = {"demo-cam-door": "continuous-7d", "demo-cam-living": "event-7d"}
DEVICES = (
    ("demo-cam-door", DeviceKind.CAMERA, "Front door"),
    ("demo-cam-living", DeviceKind.CAMERA, "Living room"),
    ("demo-router", DeviceKind.ROUTER, "Home router"),
)


@asynccontextmanager
async def embedded_broker(host: str = "127.0.0.1") -> AsyncIterator[str]:
    """An amqtt broker on a free port; yields its ``mqtt://`` URL."""
    port = free_port(host)
    config: dict[str, Any] = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config)
    await broker.start()
    try:
        yield f"mqtt://{host}:{port}"
    finally:
        await broker.shutdown()


async def provision(gateway: Gateway) -> str:
    """The demo household with one product per camera; returns an app token for it."""
    services = gateway.services
    now = services.clock.now()
    async with services.db.writing() as session:
        await accounts.upsert_account(
            session,
            account_id=HOUSEHOLD,
            owner_id=OWNER,
            star_level=5,
            name="Demo household",
            now=now,
        )
        for device_id, kind, name in DEVICES:
            await accounts.bind_device(
                session,
                account_id=HOUSEHOLD,
                device_id=device_id,
                kind=kind,
                name=name,
                now=now,
            )
        for device_id, plan in PLANS.items():
            if await subscriptions.active_subscription(session, device_id) is None:
                await subscriptions.subscribe(
                    session,
                    catalog=services.catalog,
                    order_id=f"demo-{device_id}-{now.timestamp():.0f}",
                    account_id=HOUSEHOLD,
                    device_id=device_id,
                    plan_id=plan,
                    orderer_id=OWNER,
                    channel="electronic",
                    ordered_at=now,
                )
        await refresh_desired(services, session, [d for d, _, _ in DEVICES])
        await session.commit()
        services.jobs.trigger(PUBLISH_JOB)
        issued = await accounts.issue_app_token(
            session,
            account_id=HOUSEHOLD,
            user_id="demo-user",
            now=now,
            ttl=timedelta(days=services.settings.app_token_ttl_days),
        )
        return issued.token


async def provision_router(gateway: Gateway, router: RouterSimulator) -> None:
    """Pin the demo router's SSH host key, as an installer would (trust on first use)."""
    services = gateway.services
    creds = RouterCredentials(
        host=router.host,
        port=router.port,
        username="root",
        password=ROUTER_PASSWORD,
        pinned_host_key=None,
    )
    host_key = await services.router_manager.provision_host_key(creds)
    async with services.db.writing() as session:
        await router_store.save_access(
            session,
            device_id="demo-router",
            creds=creds,
            host_key=host_key,
            now=services.clock.now(),
        )
        await session.commit()


def demo_fleet(mqtt_url: str, clock: Clock, router: RouterSimulator) -> list[SimulatedDevice]:
    """Two recording cameras (real H.264) with people passing by, and a router."""
    actors = script_actors(start=clock.now(), count=200, seed="demo", gap_s=(20.0, 40.0))
    fleet: list[SimulatedDevice] = [
        CameraSimulator(
            device_id=device_id,
            mqtt_url=mqtt_url,
            clock=clock,
            scene=Scene(seed=device_id, actors=actors),
            telemetry_interval=10.0,
        )
        for device_id, kind, _ in DEVICES
        if kind == DeviceKind.CAMERA
    ]
    fleet.append(
        RouterDevice(
            device_id="demo-router",
            mqtt_url=mqtt_url,
            router=router,
            telemetry_interval=5.0,
            clock=clock,
        )
    )
    return fleet


async def run_demo(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with embedded_broker() as mqtt_url:
        token = settings.platform_token or secrets.token_urlsafe(24)
        settings = settings.model_copy(
            update={"mqtt_url": mqtt_url, "platform_token": token, "mqtt_auth": "none"}
        )
        async with (
            Gateway(settings=settings) as gateway,
            RouterSimulator(password=ROUTER_PASSWORD, home=Home.generate("demo")) as router,
        ):
            app_token = await provision(gateway)
            await provision_router(gateway, router)
            fleet = demo_fleet(mqtt_url, gateway.clock, router)
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(device.run(), name=f"demo[{device.device_id}]")
                    for device in fleet
                ]
                base = gateway.url
                print(
                    "Kanjia demo is running (Ctrl-C to stop)\n"
                    f"  console:        {base}/console#token={app_token}\n"
                    f"  operator:       {base}/console#token={token}\n"
                    f"  API:            {base}/openapi.json\n"
                    f"  metrics:        {base}/metrics\n"
                    f"  MQTT broker:    {mqtt_url}\n"
                    "  MQTT auth:      none (embedded broker on loopback, open to any client)\n"
                    f"  platform token: {token}\n"
                    f"  app token:      {app_token}\n"
                    f"  try:            curl -H 'Authorization: Bearer {app_token}' "
                    f"{base}/app/v1/devices",
                    flush=True,
                )
                await stop.wait()
                print("stopping...", flush=True)
                await cancel_all(tasks)
