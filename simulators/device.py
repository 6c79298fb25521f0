"""A minimal simulated device: an MQTT client with retained state, Last Will and telemetry.

Cameras and routers share this base: on connect the device publishes its retained
``state`` (``{"online": true, "kind", "fw"}``) and leaves a Last Will that publishes
``{"online": false}`` on the same topic if the broker loses it without DISCONNECT; it
then sends ``telemetry`` every ``telemetry_interval`` seconds of its clock (``None``:
connected but silent). It applies the retained ``desired`` state and reports its version.
Run one alone with ``python -m simulators.device --kind camera --device-id cam-1``.

``mqtts://`` connects over TLS (port 8883 unless given), verifying the broker against the
login's CA file (the system's CAs without one). A device with a username signs in with
the client id the broker binds its credentials to: its device id (ARCHITECTURE.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import ssl
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt

from devices.clock import Clock, WallClock
from simulators.credentials import Credentials, CredentialsError

log = logging.getLogger(__name__)

TOPIC_PREFIX = "kj/v1/dev/"


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerLogin:
    """How a device signs in: its username and password (they win over the URL's), and
    the CA (PEM) that an ``mqtts://`` broker is verified against."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None


def broker_client(url: str, login: BrokerLogin | None = None, **options: Any) -> aiomqtt.Client:
    """A client of the broker at ``mqtt[s]://[user:password@]host[:port]``."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"no host in MQTT URL {url!r}")
    login = login or BrokerLogin()
    username, password = (unquote(p) if p else None for p in (parts.username, parts.password))
    over_tls = parts.scheme == "mqtts"
    return aiomqtt.Client(
        parts.hostname,
        parts.port or (8883 if over_tls else 1883),
        username=login.username or username,
        password=login.password or password,
        tls_context=ssl.create_default_context(cafile=login.ca_file) if over_tls else None,
        **options,
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
        login: BrokerLogin | None = None,
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
        self.login = login or BrokerLogin()
        self.telemetry_interval = telemetry_interval
        self.firmware = firmware
        self.clock: Clock = clock if clock is not None else WallClock()
        self.rng = random.Random(seed if seed is not None else device_id)
        self.connected = asyncio.Event()
        self.desired: dict[str, Any] = {}
        self.applied_version = 0
        self.client: aiomqtt.Client | None = None

    def connection(self, **options: Any) -> aiomqtt.Client:
        """A client of the device's broker, signed in as the device."""
        identifier = self.device_id if self.login.username else f"dev-{self.device_id}"
        return broker_client(self.mqtt_url, self.login, identifier=identifier, **options)

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
        async with self.connection(will=will, keepalive=20, clean_session=True) as client:
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

    async def _until(self, at: datetime) -> None:
        """Sleep until ``at`` on the device's clock (at once if it has passed)."""
        left = (at - self.clock.now()).total_seconds()
        if left > 0:
            await self.clock.sleep(left)

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
        async with self.connection() as client:
            await client.publish(
                self.topic("state"), json.dumps({"online": False}), qos=1, retain=True
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kanjia device", description="Run one simulated Kanjia device."
    )
    parser.add_argument("--kind", choices=("camera", "router"), required=True)
    parser.add_argument("--device-id", help="required unless --credentials-file names it")
    parser.add_argument(
        "--mqtt-url", default="mqtt://127.0.0.1:1883", help="mqtt://host:port, or mqtts:// (TLS)"
    )
    parser.add_argument("--ca-file", help="CA (PEM) that an mqtts:// broker is verified against")
    parser.add_argument("--username", help="the device's MQTT username")
    parser.add_argument("--password", help="its password (visible to ps: prefer a file)")
    parser.add_argument(
        "--credentials-file",
        type=Path,
        help="JSON answered by POST /platform/v1/devices/{id}/credentials",
    )
    parser.add_argument(
        "--telemetry-interval",
        type=float,
        default=10.0,
        help="seconds between telemetry messages; 0 for none",
    )
    return parser


def device_from_args(argv: Sequence[str] | None = None) -> SimulatedDevice:
    """The device the command line describes (argparse exits on a bad one)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    device_id, username, password = args.device_id, args.username, args.password
    if args.credentials_file is not None:
        if username or password:
            parser.error("--credentials-file replaces --username and --password")
        try:
            credentials = Credentials.read(args.credentials_file)
        except CredentialsError as exc:
            parser.error(str(exc))
        if device_id not in (None, credentials.device_id):
            parser.error(f"--credentials-file is for device {credentials.device_id!r}")
        device_id, username, password = (
            credentials.device_id,
            credentials.username,
            credentials.password,
        )
    if not device_id:
        parser.error("--device-id (or --credentials-file) is required")
    if bool(username) != bool(password):
        parser.error("--username and --password go together")
    if args.ca_file and not args.mqtt_url.startswith("mqtts://"):
        parser.error("--ca-file needs an mqtts:// --mqtt-url")
    if args.ca_file and not Path(args.ca_file).is_file():
        parser.error(f"--ca-file: no such file {args.ca_file!r}")
    return SimulatedDevice(
        device_id=device_id,
        kind=args.kind,
        mqtt_url=args.mqtt_url,
        telemetry_interval=args.telemetry_interval or None,
        login=BrokerLogin(username=username, password=password, ca_file=args.ca_file),
    )


def main(argv: Sequence[str] | None = None) -> None:
    device = device_from_args(argv)
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(device.run())


if __name__ == "__main__":
    main()
