"""Benchmark 3, stop fan-out: a batch stop of ``--accounts`` accounts (3 devices each, all
online) until every device reported the new desired version; p50/p99 after the batch is
accepted, against a bare retained fan-out of the same number of messages (same run).

A private Mosquitto and a gateway (``--db``, the filesystem store, the wall clock) are
started in this process; the accounts, devices and their first desired documents are
written straight into the database. Every device (a camera, a router and a mesh
satellite per account) is a real MQTT connection in a worker process of the fleet runner
(:mod:`simulators.fleet`), which stamps the instant each device applied a version and
published ``reported`` (monotonic time, shared by the processes of the machine).

1. Baseline: one paho client publishes the devices' current desired documents again,
   retained, QoS 1 (in-flight window 100); the figure is the time until each device
   applied it, from the first publish.
2. ``POST /platform/v1/broadband/batch`` with one ``stop`` (arrears, R10) per account;
   the time until each device applied the version the batch answered for it, from the
   moment the answer came back (and from the moment the request was sent).

Run: ``.venv/bin/python -m bench.stop_fanout [--accounts 1000] [--db sqlite|postgresql]``.
Goal: p99 < 1 s after the batch is accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from sqlmodel import col, func, select

from bench.common import (
    PLATFORM_TOKEN,
    bench_settings,
    database,
    heading,
    provision_fleet,
    ratio,
    row,
)
from devices.clock import SimClock
from devices.models import DesiredState
from gateway.lifecycle import freeze_heap
from gateway.mqtt.messages import Desired, topic
from gateway.service import Gateway
from simulators.fleet import (
    DeviceSpec,
    HouseholdSpec,
    Pacing,
    Role,
    WorkerHandle,
    WorkerSpec,
    percentile,
)
from tests.services import mosquitto

T0 = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
ROLES: tuple[tuple[str, Role], ...] = (("cam", "camera"), ("rt", "router"), ("sat", "satellite"))


class Applied:
    """When each device applied which version (from the workers' snapshots)."""

    def __init__(self) -> None:
        self.events: dict[str, list[tuple[int, float]]] = {}

    def take(self, snap: dict[str, Any]) -> None:
        for device_id, version, at in snap.get("versions", []):
            self.events.setdefault(device_id, []).append((int(version), float(at)))

    def first_after(self, device_id: str, since: float) -> float | None:
        return next((at for _, at in self.events.get(device_id, []) if at >= since), None)

    def reached(self, device_id: str, version: int) -> float | None:
        return next((at for v, at in self.events.get(device_id, []) if v >= version), None)


def homes(count: int) -> list[HouseholdSpec]:
    return [
        HouseholdSpec(
            account_id=account,
            owner_id=f"{account}-owner",
            star_level=3,
            devices=tuple(
                DeviceSpec(device_id=f"{account}-{suffix}", role=role) for suffix, role in ROLES
            ),
        )
        for account in (f"acct-{n:05d}" for n in range(count))
    ]


def bare_fanout(port: int, documents: dict[str, bytes]) -> float:
    """Publish each device's desired document again, retained; returns the start instant."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-fanout", clean_session=True)
    client.max_inflight_messages_set(100)
    done = threading.Event()
    acked = 0

    def on_publish(*_args: object) -> None:
        nonlocal acked
        acked += 1
        if acked == len(documents):
            done.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    began = time.monotonic()
    for device_id, body in documents.items():
        client.publish(topic(device_id, "desired"), body, qos=1, retain=True)
    done.wait(120)
    client.disconnect()
    client.loop_stop()
    return began


async def wait_for(check: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def summary(label: str, latencies: list[float]) -> None:
    row(
        label,
        f"p50 {percentile(latencies, 50) * 1000:,.0f} ms, p99 "
        f"{percentile(latencies, 99) * 1000:,.0f} ms, max {max(latencies) * 1000:,.0f} ms",
    )


async def run(args: argparse.Namespace) -> None:
    fleet = homes(args.accounts)
    devices = [d for h in fleet for d in h.devices]
    heading(
        f"stop fan-out: {len(fleet)} accounts x 3 devices online, one batch stop, "
        f"database {args.db}"
    )
    applied = Applied()
    with tempfile.TemporaryDirectory(prefix="kanjia-bench-fanout-") as tmp_name:
        tmp = Path(tmp_name)
        with mosquitto(tmp) as broker:
            async with database(args.db, tmp) as url:
                settings = bench_settings(
                    tmp, database_url=url, mqtt_url=broker.url, log_level="WARNING"
                )
                async with Gateway(settings=settings) as gateway:
                    freeze_heap()  # as kanjia serve does
                    mqtt = gateway.services.mqtt
                    assert mqtt is not None
                    await asyncio.wait_for(mqtt.connected.wait(), 10)
                    began = time.monotonic()
                    await provision_fleet(gateway, fleet)
                    row("provisioned (direct to the database)", f"{time.monotonic() - began:.1f} s")
                    clock = SimClock(gateway.clock.now(), 1.0)
                    spec = WorkerSpec(
                        mqtt_url=broker.url,
                        clock_start=clock.now().isoformat(),
                        clock_speed=1.0,
                        clock_mono=time.monotonic(),
                        devices=tuple(devices),
                        media="synthetic",
                        synthetic_bytes=1000,
                        # Online and quiet: telemetry every 30 s, nothing recorded (no plans).
                        pacing=Pacing.for_speed(
                            speed=1, telemetry_s=30, segment_s=10, min_real_s=0
                        ),
                        horizon_s=300,
                        connect_concurrency=64,
                        report_every=0.2,
                        log_file=str(tmp / "worker.log"),
                    )
                    worker = WorkerHandle(spec, clock=clock, inline=False)
                    worker.on_snapshot = applied.take
                    began = time.monotonic()
                    await worker.start()
                    try:
                        await wait_for(
                            lambda: all(applied.reached(d.device_id, 1) for d in devices),
                            "every device to apply its first desired state",
                            120 + len(devices) / 50,
                        )
                        row("devices connected and converged", f"{time.monotonic() - began:.1f} s")
                        await measure(gateway, broker.port, devices, applied)
                    finally:
                        await worker.stop()


async def measure(
    gateway: Gateway, port: int, devices: Sequence[DeviceSpec], applied: Applied
) -> None:
    services = gateway.services
    async with services.db.session() as session:
        states = (await session.exec(select(DesiredState))).all()
    documents = {s.device_id: Desired(s.device_id, s.version, s.document).payload() for s in states}
    await asyncio.sleep(1.0)
    # 1. Baseline: the same fan-out, bare (paho publisher, broker, devices).
    start = await asyncio.to_thread(bare_fanout, port, documents)
    await wait_for(
        lambda: all(applied.first_after(d.device_id, start) for d in devices),
        "the bare fan-out",
        60,
    )
    bare = [applied.first_after(d.device_id, start) or start for d in devices]
    bare_latency = [at - start for at in bare]
    summary("baseline: bare retained fan-out", bare_latency)
    await asyncio.sleep(1.0)
    # 2. The batch stop through the platform API.
    orders = [
        {
            "action": "stop",
            "account_id": account,
            "order_id": f"fanout-{account}",
            "stop_type": "arrears",
        }
        for account in sorted({d.device_id.rsplit("-", 1)[0] for d in devices})
    ]
    headers = {"Authorization": f"Bearer {PLATFORM_TOKEN}"}
    async with aiohttp.ClientSession() as http:
        sent = time.monotonic()
        async with http.post(
            f"{gateway.url}/platform/v1/broadband/batch", json={"orders": orders}, headers=headers
        ) as response:
            body = await response.json()
            status = response.status
        accepted = time.monotonic()
    if status != 200:
        raise RuntimeError(f"the batch was answered {status}: {body}")
    targets: dict[str, int] = {}
    for result in body["results"]:
        if result["status"] != 200 or not result["body"].get("applied"):
            raise RuntimeError(f"an order was not applied: {result}")
        for device in result["body"]["devices"]:
            targets[device["device_id"]] = int(device["desired_version"])
    row("batch of stops: answered after", f"{(accepted - sent) * 1000:,.0f} ms")
    await wait_for(
        lambda: all(applied.reached(d, v) for d, v in targets.items()),
        "every device to apply the stop",
        120,
    )
    reached = [applied.reached(d, v) or accepted for d, v in targets.items()]
    after_accepted = [max(0.0, at - accepted) for at in reached]
    after_sent = [at - sent for at in reached]
    early = sum(at < accepted for at in reached)
    summary("stop: device reported, from the answer", after_accepted)
    summary("stop: device reported, from the request", after_sent)
    row("devices that applied it before the answer came", f"{early} of {len(reached)}")
    row(
        "p99 from the request / p99 of the bare fan-out",
        ratio(percentile(after_sent, 99), percentile(bare_latency, 99)),
    )
    row(
        "goal p99 < 1 s after the batch is accepted",
        "met" if percentile(after_accepted, 99) < 1.0 else "missed",
    )
    # The service's own view: every device's reported version caught up.
    deadline = time.monotonic() + 30
    while True:
        async with services.db.session() as session:
            behind = (
                await session.exec(
                    select(func.count())
                    .select_from(DesiredState)
                    .where(col(DesiredState.reported_version) < col(DesiredState.version))
                )
            ).one()
        if behind == 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    row("devices behind their desired version (service view)", str(behind))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # aiomqtt warns of every publish beyond ten in flight; a fan-out is exactly that.
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
