"""Presence through a real Mosquitto: connect, Last Will, inactivity timeout (issue 2, #3)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import aiomqtt

from devices.clock import ManualClock
from gateway.mqtt.session import broker_address
from gateway.presence import FLUSH_SECONDS
from gateway.service import Gateway
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
    broker: Broker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    """Issue 14, item 1 for what is coalesced in memory: a device's ``state`` is acknowledged
    to the broker only after the presence flush that writes it commits; while flushes fail
    (here the devices table is out of reach), the sighting and its acknowledgement wait,
    and the first flush that succeeds writes the one and sends the other."""
    from sqlalchemy import text

    async with (
        start_gateway(clock=clock, mqtt_url=broker.url) as gw,
        aiohttp.ClientSession() as http,
    ):
        token = await setup_account(gw, http, "cam-p")
        services = gw.services
        async with services.db.writing() as session:
            await session.exec(text("ALTER TABLE devices RENAME TO devices_away"))  # type: ignore[call-overload]
            await session.commit()
        host, port, _, _ = broker_address(broker.url)
        async with aiomqtt.Client(host, port, identifier="cam-p") as client:
            await client.publish("kj/v1/dev/cam-p/state", b'{"online": true}', qos=1)

            async def held() -> bool:
                return len(services.presence_acks) == 1 and services.presence.pending == 1

            await eventually(held)
            await asyncio.sleep(3 * FLUSH_SECONDS)  # flushes keep failing
            assert await held()
            async with services.db.writing() as session:
                await session.exec(text("ALTER TABLE devices_away RENAME TO devices"))  # type: ignore[call-overload]
                await session.commit()

            async def written() -> bool:
                return (
                    len(services.presence_acks) == 0
                    and (await online_map(gw, http, token))["cam-p"]
                )

            await eventually(written)
