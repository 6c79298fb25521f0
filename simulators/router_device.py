"""A simulated home router on both of its channels: MQTT (state, Will, telemetry, desired)
and SSH (the :class:`~simulators.router.RouterSimulator`), over one radio model (R12, R13).

Its ``telemetry`` is the simulator's ``telemetry_payload()``, so a channel changed over
SSH shows in the next message; its ``desired`` state's ``service.suspended`` (set while
the broadband account is stopped, R12) is copied to the simulator's ``suspended`` flag,
so the SSH server refuses management commands exactly while the service says the managed
networking is suspended.

The caller owns the SSH server's lifetime (``async with router:``), so a reconnecting MQTT
client never moves the router to another port::

    async with RouterSimulator(password="pw", home=Home.generate(7)) as router:
        device = RouterDevice(device_id="rt-1", mqtt_url=url, router=router)
        await device.run()
"""

from __future__ import annotations

import logging
from typing import Any

import aiomqtt

from devices.clock import Clock
from simulators.device import BrokerLogin, SimulatedDevice
from simulators.router import RouterSimulator

__all__ = ["RouterDevice"]

log = logging.getLogger(__name__)


class RouterDevice(SimulatedDevice):
    """A :class:`SimulatedDevice` of kind ``router`` backed by a :class:`RouterSimulator`."""

    def __init__(
        self,
        *,
        device_id: str,
        mqtt_url: str,
        router: RouterSimulator,
        telemetry_interval: float | None = 10.0,
        firmware: str = "23.05.3",
        clock: Clock | None = None,
        login: BrokerLogin | None = None,
    ) -> None:
        super().__init__(
            device_id=device_id,
            kind="router",
            mqtt_url=mqtt_url,
            telemetry_interval=telemetry_interval,
            firmware=firmware,
            clock=clock,
            login=login,
        )
        self.router = router

    def telemetry(self) -> dict[str, Any]:
        """Per radio and node: channel, utilisation, noise, clients, retry rate (R13)."""
        return dict(self.router.telemetry_payload())

    async def on_message(
        self, client: aiomqtt.Client, suffix: str, payload: dict[str, Any]
    ) -> None:
        if suffix == "desired" and isinstance(payload.get("version"), int):
            service = payload.get("service")
            suspended = isinstance(service, dict) and service.get("suspended") is True
            if suspended != self.router.suspended:
                log.info(
                    "%s: managed networking %s (R12)",
                    self.device_id,
                    "suspended" if suspended else "resumed",
                )
            # Applied before the version is reported: "reported" means the SSH side follows.
            self.router.suspended = suspended
        await super().on_message(client, suffix, payload)
