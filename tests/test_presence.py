"""Presence through a real Mosquitto: connect, Last Will, inactivity timeout (issue 2, #3)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from sqlalchemy import event
from sqlmodel import select

from devices import accounts
from devices.clock import ManualClock
from devices.models import Device, DeviceKind
from devices.presence import PresenceTracker
from gateway.mqtt.session import broker_address
from gateway.presence import FLUSH_SECONDS
from gateway.service import Gateway
from gateway.services import Services
from replay.migrations import open_database
from simulators.device import SimulatedDevice
from tests.conftest import StartGateway, eventually, platform_headers
from tests.services import Broker


async def setup_account(gw: Gateway, http: aiohttp.ClientSession, *devices: str) -> str:
    """An account with the given camera ids; returns an app token."""
    r = await http.put(
        f"{gw.url}/platform/v1/accounts/acc-1",
        json={"owner_id": "owner-1", "star_level": 3},
        headers=platform_headers(),
    )
    assert r.status == 201
    for device_id in devices:
        r = await http.post(
            f"{gw.url}/platform/v1/accounts/acc-1/devices",
            json={"device_id": device_id, "kind": "camera"},
            headers=platform_headers(),
        )
        assert r.status == 201, await r.text()
    r = await http.post(
        f"{gw.url}/platform/v1/app-tokens",
        json={"account_id": "acc-1", "user_id": "u1"},
        headers=platform_headers(),
    )
    assert r.status == 201
    token: str = (await r.json())["token"]
    return token


async def online_map(gw: Gateway, http: aiohttp.ClientSession, token: str) -> dict[str, bool]:
    r = await http.get(f"{gw.url}/app/v1/devices", headers={"Authorization": f"Bearer {token}"})
    assert r.status == 200
    return {d["device_id"]: d["online"] for d in (await r.json())["devices"]}


@asynccontextmanager
async def running(device: SimulatedDevice) -> AsyncIterator[SimulatedDevice]:
    task = asyncio.create_task(device.run(), name=f"test[{device.device_id}]")
    try:
        await asyncio.wait_for(device.connected.wait(), 10)
        yield device
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await task


async def test_a_device_that_connects_is_online(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    async with (
        start_gateway(clock=clock, mqtt_url=broker.url) as gw,
        aiohttp.ClientSession() as http,
    ):
        token = await setup_account(gw, http, "cam-on")
        assert await online_map(gw, http, token) == {"cam-on": False}
        device = SimulatedDevice(
            device_id="cam-on", kind="camera", mqtt_url=broker.url, telemetry_interval=1.0
        )
        async with running(device):

            async def is_online() -> bool:
                return (await online_map(gw, http, token))["cam-on"]

            await eventually(is_online)


async def test_a_device_killed_without_disconnect_goes_offline_by_its_will(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    async with (
        start_gateway(clock=clock, mqtt_url=broker.url) as gw,
        aiohttp.ClientSession() as http,
    ):
        token = await setup_account(gw, http, "cam-will")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "simulators.device",
            "--kind",
            "camera",
            "--device-id",
            "cam-will",
            "--mqtt-url",
            broker.url,
            "--telemetry-interval",
            "0.5",
        )
        try:

            async def online() -> bool:
                return (await online_map(gw, http, token))["cam-will"]

            async def offline() -> bool:
                return not await online()

            await eventually(online, timeout=15)
            process.send_signal(signal.SIGKILL)  # no DISCONNECT: the broker sends the Will
            await asyncio.wait_for(process.wait(), 5)
            await eventually(offline, timeout=10)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_a_silent_device_goes_offline_after_its_inactivity_timeout(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    async with (
        start_gateway(clock=clock, mqtt_url=broker.url, presence_timeout_seconds=60) as gw,
        aiohttp.ClientSession() as http,
    ):
        token = await setup_account(gw, http, "cam-quiet")
        device = SimulatedDevice(
            device_id="cam-quiet", kind="camera", mqtt_url=broker.url, telemetry_interval=None
        )
        async with running(device):

            async def online() -> bool:
                return (await online_map(gw, http, token))["cam-quiet"]

            await eventually(online)
            # Still connected (keepalive pings reach the broker, not us), but silent.
            r = await http.post(
                f"{gw.url}/ops/v1/clock", json={"advance_seconds": 59}, headers=platform_headers()
            )
            assert r.status == 200
            assert await online(), "59 s of silence is within the 60 s timeout"
            r = await http.post(
                f"{gw.url}/ops/v1/clock", json={"advance_seconds": 2}, headers=platform_headers()
            )
            assert r.status == 200
            assert not await online(), "61 s of silence is past the timeout"
            assert device.connected.is_set()


async def test_presence_is_acknowledged_only_once_written_and_a_failed_flush_loses_nothing(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock, tmp_path: Path
) -> None:
    """Issue 14, item 1 for what is coalesced in memory: a device's ``state`` is acknowledged
    to the broker only after the presence flush that writes it commits; while flushes fail
    for a transient reason (here another process holds SQLite's write lock), the sighting
    and its acknowledgement wait, and the first flush that succeeds writes the one and
    sends the other."""
    database = tmp_path / "presence.db"
    async with (
        start_gateway(clock=clock, mqtt_url=broker.url, database_url=f"sqlite:///{database}") as gw,
        aiohttp.ClientSession() as http,
    ):
        token = await setup_account(gw, http, "cam-p")
        services = gw.services
        event.listen(services.db.engine.sync_engine, "checkout", _short_busy_timeout)
        other_process = sqlite3.connect(database, isolation_level=None)
        other_process.execute("BEGIN IMMEDIATE")  # holds the write lock
        try:
            await _state_waits_for_the_lock(services, broker)
        finally:
            other_process.execute("ROLLBACK")
            other_process.close()

        async def written() -> bool:
            online = (await online_map(gw, http, token))["cam-p"]
            return online and len(services.presence_acks) == 0

        await eventually(written)


async def _state_waits_for_the_lock(services: Services, broker: Broker) -> None:
    host, port, _, _ = broker_address(broker.url)
    async with aiomqtt.Client(host, port, identifier="cam-p") as client:
        await client.publish("kj/v1/dev/cam-p/state", b'{"online": true}', qos=1)

        async def received() -> bool:
            # At least cam-p's (the broker also hands over other tests' retained states).
            return len(services.presence_acks) >= 1

        await eventually(received)
        await asyncio.sleep(3 * FLUSH_SECONDS)  # flushes keep failing
        assert len(services.presence_acks) >= 1  # not acknowledged
        async with services.db.session() as session:
            device = await session.get(Device, "cam-p")
        assert device is not None
        assert not device.online  # not written


def _short_busy_timeout(dbapi_connection: Any, *_: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=50")  # 10 s in production: scaled down for the test
    cursor.close()


@pytest.mark.postgres
async def test_one_refused_sighting_does_not_cost_the_others_theirs(pg_url: str) -> None:
    """Issue 14 ("poisoned presence"): a value PostgreSQL refuses (a firmware string past
    its column) costs only its own device's sighting, not the whole flush."""
    now = datetime(2026, 3, 1, tzinfo=UTC)
    async with open_database(pg_url) as db:
        async with db.writing() as session:
            await accounts.upsert_account(
                session, account_id="acc-p", owner_id="o", star_level=3, name=None, now=now
            )
            for device_id in ("cam-a", "cam-b", "cam-c"):
                await accounts.bind_device(
                    session,
                    account_id="acc-p",
                    device_id=device_id,
                    kind=DeviceKind.CAMERA,
                    name=None,
                    now=now,
                )
        tracker = PresenceTracker(timeout=timedelta(seconds=60))
        tracker.state("cam-a", online=True, at=now, firmware="x" * 65)  # past the edge checks
        tracker.seen("cam-b", now)
        tracker.seen("cam-c", now)
        async with db.writing() as session:
            result = await tracker.flush(session)
        assert (result.updated, tracker.pending) == (2, 0)
        async with db.session() as session:
            rows = (await session.exec(select(Device).where(Device.account_id == "acc-p"))).all()
        assert {row.device_id: row.online for row in rows} == {
            "cam-a": False,
            "cam-b": True,
            "cam-c": True,
        }
