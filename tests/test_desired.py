"""Desired state converges through retained, versioned documents (R1, R8; issue 4/5)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest

from devices.broadband import AccountState
from devices.clock import ManualClock
from gateway.mqtt.session import broker_address
from replay.desired import desired_document
from replay.plans import Family
from simulators.device import SimulatedDevice
from tests.conftest import StartGateway, eventually, platform_headers
from tests.services import Broker, mosquitto, stop_process
from tests.test_presence import running, setup_account


@pytest.mark.parametrize(
    ("kind", "broadband", "family", "expected"),
    [
        ("camera", "active", None, {"service": {"suspended": False}, "recording": {"mode": "off"}}),
        (
            "camera",
            "active",
            Family.CONTINUOUS,
            {"service": {"suspended": False}, "recording": {"mode": "continuous"}},
        ),
        (
            "camera",
            "active",
            Family.EVENT,
            {"service": {"suspended": False}, "recording": {"mode": "event"}},
        ),
        pytest.param(
            "camera",
            "stopped",
            Family.CONTINUOUS,
            {"service": {"suspended": True}, "recording": {"mode": "off"}},
            id="R8",
        ),
        pytest.param(
            "camera",
            "torn_down",
            Family.EVENT,
            {"service": {"suspended": True}, "recording": {"mode": "off"}},
            id="R8-torn-down",
        ),
        pytest.param("router", "stopped", None, {"service": {"suspended": True}}, id="R12"),
        pytest.param(
            "router", "torn_down", None, {"service": {"suspended": True}}, id="R12-torn-down"
        ),
        ("router", "active", None, {"service": {"suspended": False}}),
    ],
)
def test_desired_document(
    kind: str, broadband: AccountState, family: Family | None, expected: dict[str, Any]
) -> None:
    assert desired_document(kind=kind, broadband_state=broadband, replay_family=family) == expected


async def test_a_camera_follows_its_subscription_and_reports_the_version(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    async with (
        start_gateway(clock=clock, mqtt_url=broker.url) as gw,
        aiohttp.ClientSession() as http,
    ):
        await setup_account(gw, http, "cam-d")
        # The camera connects after its binding: the retained version 1 awaits it.
        device = SimulatedDevice(
            device_id="cam-d", kind="camera", mqtt_url=broker.url, telemetry_interval=None
        )
        async with running(device):

            async def applied(version: int) -> bool:
                return device.applied_version == version

            await eventually(lambda: applied(1))
            assert device.desired["recording"] == {"mode": "off"}
            r = await http.post(
                f"{gw.url}/platform/v1/subscriptions",
                headers=platform_headers(),
                json={
                    "order_id": "o-1",
                    "account_id": "acc-1",
                    "device_id": "cam-d",
                    "plan": "event-7d",
                    "orderer_id": "owner-1",
                    "channel": "physical",
                },
            )
            assert r.status == 201
            await eventually(lambda: applied(2))
            assert device.desired["recording"] == {"mode": "event"}

            async def converged() -> bool:
                r = await http.get(
                    f"{gw.url}/platform/v1/accounts/acc-1/devices", headers=platform_headers()
                )
                (view,) = (await r.json())["devices"]
                return bool(
                    view["desired_version"] == view["reported_version"] == 2 and view["converged"]
                )

            await eventually(converged)


async def test_a_broker_restarted_without_persistence_gets_every_desired_again(
    tmp_path: Path, start_gateway: StartGateway, clock: ManualClock
) -> None:
    """Issue 14, item 3: the broker forgot its retained messages and the gateway's session;
    the gateway sees the session is gone and publishes every desired document again, so a
    camera that connects only afterwards still learns its version."""
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    with mosquitto(tmp_path / "first") as first:
        port = first.port
        async with (
            start_gateway(clock=clock, mqtt_url=first.url) as gw,
            aiohttp.ClientSession() as http,
        ):
            await setup_account(gw, http, "cam-r1", "cam-r2", "cam-r3")
            await eventually(lambda: retained_versions(first.url, 3, expect=3))
            stop_process(first.process)
            with mosquitto(tmp_path / "second", port=port) as second:
                # The new broker starts empty; only the gateway can fill it again (without
                # the republish this waits in vain: checked against the old code).
                await eventually(lambda: retained_versions(second.url, 3, expect=3), timeout=15)
                device = SimulatedDevice(
                    device_id="cam-r2",
                    kind="camera",
                    mqtt_url=second.url,
                    telemetry_interval=None,
                )
                async with running(device):
                    await eventually(lambda: _applied(device, 1))


async def _applied(device: SimulatedDevice, version: int) -> bool:
    return device.applied_version == version


async def retained_versions(url: str, count: int, *, expect: int, wait: float = 1.0) -> bool:
    """Whether the broker holds ``expect`` retained desired documents of the ``count``
    test cameras (read by subscribing for ``wait`` seconds)."""
    host, port, _, _ = broker_address(url)
    seen: set[str] = set()
    async with aiomqtt.Client(host, port, identifier=f"probe-{secrets.token_hex(3)}") as probe:
        await probe.subscribe("kj/v1/dev/+/desired", qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                async for message in probe.messages:
                    seen.add(message.topic.value)
                    if len(seen) >= count:
                        break
    return len(seen) == expect
