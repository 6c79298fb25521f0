"""Broadband orders' background work: jobs and device commands (R8-R12, R15)."""

from __future__ import annotations

from gateway.services import Services
from gateway.wire import DeviceMessage


def install(services: Services) -> None:
    """Add the clock-driven jobs of broadband orders to ``services.jobs``."""


async def on_rpc_result(services: Services, msg: DeviceMessage) -> None:
    """An ``rpc/res`` from a device: settle its command."""
