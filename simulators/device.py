"""A minimal simulated device: an MQTT client with retained state, Last Will and telemetry.

Cameras and routers share this base: on connect the device publishes its retained
``state`` (``{"online": true, "kind", "fw"}``) and leaves a Last Will that publishes
``{"online": false}`` on the same topic if the broker loses it without DISCONNECT; it
then sends ``telemetry`` every ``telemetry_interval`` seconds of its clock (``None``:
connected but silent). It applies the retained ``desired`` state and reports its version.
Run one alone with ``python -m simulators.device --kind camera --device-id cam-1``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Coroutine, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt

from devices.clock import Clock, WallClock

log = logging.getLogger(__name__)

TOPIC_PREFIX = "kj/v1/dev/"


def broker_client(url: str, **options: Any) -> aiomqtt.Client:
    """A client of the broker at ``mqtt://[user:password@]host[:port]`` (port 1883)."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"no host in MQTT URL {url!r}")
    username, password = (unquote(p) if p else None for p in (parts.username, parts.password))
    return aiomqtt.Client(
        parts.hostname, parts.port or 1883, username=username, password=password, **options
    )


class SimulatedDevice:
    def __init__(
        self,
        *,
        device_id: str,
        kind: str,
        mqtt_url: str,
        telemetry_interval: float | None = 10.0,
        firmware: str = "1.0.0",
        clock: Clock | None = None,
        seed: int | None = None,
    ) -> None:
        if kind not in ("camera", "router"):
            raise ValueError("kind must be camera or router")
        if not device_id or any(c in device_id for c in "/+#"):
            raise ValueError("device_id must be non-empty and free of MQTT wildcards")
        if telemetry_interval is not None and telemetry_interval <= 0:
            raise ValueError("telemetry_interval must be positive or None")
        self.device_id = device_id
        self.kind = kind
        self.mqtt_url = mqtt_url
        self.telemetry_interval = telemetry_interval
        self.firmware = firmware
        self.clock: Clock = clock if clock is not None else WallClock()
        self.rng = random.Random(seed if seed is not None else device_id)
        self.connected = asyncio.Event()
        self.desired: dict[str, Any] = {}
        self.applied_version = 0
        self.client: aiomqtt.Client | None = None

    def topic(self, suffix: str) -> str:
        return f"{TOPIC_PREFIX}{self.device_id}/{suffix}"

    def telemetry(self) -> dict[str, Any]:
        if self.kind == "camera":
            return {"fps": 10, "bitrate_kbps": round(self.rng.uniform(200, 400), 1)}
        return {
            "radios": [
                {
                    "band": "2.4",
                    "channel": 6,
                    "utilisation": self.rng.randint(10, 60),
                    "noise": -92,
                    "clients": self.rng.randint(0, 8),
                },
                {
                    "band": "5",
                    "channel": 36,
                    "utilisation": self.rng.randint(5, 40),
                    "noise": -95,
                    "clients": self.rng.randint(0, 8),
                },
            ]
        }

    async def publish(
        self, client: aiomqtt.Client, suffix: str, payload: dict[str, Any], *, retain: bool = False
    ) -> None:
        await client.publish(self.topic(suffix), json.dumps(payload), qos=1, retain=retain)

    async def run(self) -> None:
        """Connect, announce, send telemetry and follow ``desired`` until cancelled."""
        will = aiomqtt.Will(self.topic("state"), json.dumps({"online": False}), qos=1, retain=True)
        async with broker_client(
            self.mqtt_url,
            identifier=f"dev-{self.device_id}",
            will=will,
            keepalive=20,
            clean_session=True,
        ) as client:
            for suffix in self.listens:
                await client.subscribe(self.topic(suffix), qos=1)
            self.client = client
            await self.publish(
                client,
                "state",
                {"online": True, "kind": self.kind, "fw": self.firmware},
                retain=True,
            )
            self.connected.set()
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._follow(client), name=f"sim[{self.device_id}].rx")
                    for name, work in self.background():
                        tg.create_task(work, name=f"sim[{self.device_id}].{name}")
                    if self.telemetry_interval is not None:
                        tg.create_task(
                            self._telemetry(client, self.telemetry_interval),
                            name=f"sim[{self.device_id}].telemetry",
                        )
            finally:
                self.connected.clear()
                self.client = None

    def background(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        """Further loops of a kind of device, run while connected."""
        return []

    async def _telemetry(self, client: aiomqtt.Client, interval: float) -> None:
        while True:
            await self.publish(client, "telemetry", self.telemetry())
            await self.clock.sleep(interval)

    async def _follow(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            suffix = message.topic.value.rpartition(f"{self.device_id}/")[2]
            try:
                payload = json.loads(bytes(message.payload))
                if not isinstance(payload, dict):
                    raise TypeError("not an object")
            except (ValueError, TypeError):
                log.warning("%s: ignoring a malformed %s message", self.device_id, suffix)
                continue
            await self.on_message(client, suffix, payload)

    #: Service → device topics this device listens to.
    listens: tuple[str, ...] = ("desired",)

    async def on_message(
        self, client: aiomqtt.Client, suffix: str, payload: dict[str, Any]
    ) -> None:
        if suffix != "desired":
            return
        version = payload.get("version")
        if not isinstance(version, int):
            log.warning("%s: ignoring a desired state without version", self.device_id)
            return
        self.desired = payload
        self.applied_version = version
        await self.publish(client, "reported", {"version": version})

    async def say_offline(self) -> None:
        """A graceful goodbye: publish the retained offline state (then disconnect)."""
        async with broker_client(self.mqtt_url) as client:
            await client.publish(
                self.topic("state"), json.dumps({"online": False}), qos=1, retain=True
            )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run one simulated Kanjia device.")
    parser.add_argument("--kind", choices=("camera", "router"), required=True)
    parser.add_argument("--device-id", required=True)
    parser.add_argument("--mqtt-url", default="mqtt://127.0.0.1:1883")
    parser.add_argument(
        "--telemetry-interval",
        type=float,
        default=10.0,
        help="seconds between telemetry messages; 0 for none",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    device = SimulatedDevice(
        device_id=args.device_id,
        kind=args.kind,
        mqtt_url=args.mqtt_url,
        telemetry_interval=args.telemetry_interval or None,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(device.run())


if __name__ == "__main__":
    main()
