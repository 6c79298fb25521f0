"""Platform and app routes of home routers: status, WiFi settings, tuning (R12, R13)."""

from __future__ import annotations

from gateway.api import Api
from gateway.services import Services
from gateway.wire import DeviceMessage

api = Api()


async def on_telemetry(services: Services, msg: DeviceMessage) -> None:
    """A router's telemetry arrived (tuning waits for the next one after a change)."""
