"""Desired state converges through retained, versioned documents (R1, R8; issue 4/5)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from devices.broadband import AccountState
from devices.clock import ManualClock
from replay.desired import desired_document
from replay.plans import Family
from simulators.device import SimulatedDevice
from tests.conftest import StartGateway, eventually, platform_headers
from tests.services import Broker
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
