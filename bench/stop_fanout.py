"""Benchmark 3, stop fan-out: a batch stop of ``--accounts`` accounts (3 devices each,
those of ``--online`` accounts connected) until every connected device applied the new
desired version; p50/p99 from the request, against a bare retained fan-out of the same
messages (same run).

A private Mosquitto and a gateway (``--db``, the filesystem store, the wall clock) are
started in this process; the accounts, devices and their first desired documents are
written straight into the database. Every device (a camera, a router and a mesh
satellite per account) is a real MQTT connection in a worker process of the fleet runner
(:mod:`simulators.fleet`), which stamps the instant each device applied a version and
published ``reported`` (monotonic time, shared by the processes of the machine).

1. Baseline: one paho client publishes the devices' current desired documents again,
   retained, QoS 1 (in-flight window 100); the figure is the time until each device
   applied it, from the first publish.
2. ``POST /platform/v1/broadband/batch`` with one ``stop`` (arrears, R10) per account,
   ``--per-request`` orders a request (the route takes 1,000 at most), the requests sent
   at once; the time until each device applied the version the batch answered for it,
   from the moment the request was sent (and, printed beside it, from the moment the last
   answer came back: devices apply the stops while the batch runs, so that figure alone
   measures nothing).

``--rounds N`` repeats the pair, stops and resumes in turn, and decides on the median
ratio (the machine is shared: one round can land on a busy second).

Run: ``.venv/bin/python -m bench.stop_fanout [--accounts 1000] [--online N] [--rounds N]
[--db sqlite|postgresql]``. Goal (issue 16): p99 from the request <= 1.5x the p99 of the
bare fan-out of the same messages, in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
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
#: The goal: p99 from the request within this multiple of the bare fan-out's p99 (issue 16).
GOAL_RATIO = 1.5
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


def verdict(from_request_p99: float, bare_p99: float) -> tuple[bool, float]:
    """Whether the stop met the goal, measured from the request, and its ratio to the bare
    fan-out (both p99, seconds, same run)."""
    if bare_p99 <= 0:
        raise ValueError("the bare fan-out's p99 must be positive")
    factor = from_request_p99 / bare_p99
    return factor <= GOAL_RATIO, factor


def summary(label: str, latencies: list[float]) -> None:
    row(
        label,
        f"p50 {percentile(latencies, 50) * 1000:,.0f} ms, p99 "
        f"{percentile(latencies, 99) * 1000:,.0f} ms, max {max(latencies) * 1000:,.0f} ms",
    )


async def run(args: argparse.Namespace) -> None:
    fleet = homes(args.accounts)
    online = fleet[: args.online] if args.online else fleet
    devices = [d for h in online for d in h.devices]
    heading(
        f"stop fan-out: {len(fleet)} accounts x 3 devices, {len(devices)} online, "
        f"batch stops (and resumes), database {args.db}"
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
                        horizon_s=300 + len(fleet) // 20,
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
                        accounts = [h.account_id for h in fleet]
                        await rounds(args, gateway, broker.port, devices, accounts, applied)
                    finally:
                        await worker.stop()


async def rounds(
    args: argparse.Namespace,
    gateway: Gateway,
    port: int,
    devices: Sequence[DeviceSpec],
    accounts: Sequence[str],
    applied: Applied,
) -> None:
    """``--rounds`` rounds, stops and resumes in turn; the median decides."""
    ratios = []
    for turn in range(args.rounds):
        action = "stop" if turn % 2 == 0 else "resume"
        if args.rounds > 1:
            heading(f"round {turn + 1} of {args.rounds}: {action}")
        ratios.append(
            await measure(
                gateway,
                port,
                devices,
                accounts,
                applied,
                per_request=args.per_request,
                action=action,
                turn=turn,
            )
        )
    if args.rounds > 1:
        conclude(ratios)


def conclude(ratios: Sequence[float]) -> None:
    """The rounds together: the median ratio decides (the machine is shared and noisy)."""
    heading(f"{len(ratios)} rounds")
    row("p99 from the request / bare p99, each round", ", ".join(f"{r:.2f}" for r in ratios))
    median = statistics.median(ratios)
    met = sum(r <= GOAL_RATIO for r in ratios)
    row("median ratio", f"{median:.2f}")
    row(
        f"goal p99 from the request <= {GOAL_RATIO}x the bare fan-out",
        f"{'met' if median <= GOAL_RATIO else 'missed'} (median; met in {met} of {len(ratios)})",
    )


async def post_batch(
    gateway: Gateway, accounts: Sequence[str], per_request: int, action: str, turn: int
) -> tuple[float, float, list[dict[str, Any]]]:
    """One ``action`` (a stop or a resume, arrears) per account, ``per_request`` orders a
    request, all sent at once.

    Returns when the first request was sent, when the last answer came, and the results."""
    orders = [
        {
            "action": action,
            "account_id": account,
            "order_id": f"fanout-{turn}-{account}",
            "stop_type": "arrears",
        }
        for account in accounts
    ]
    headers = {"Authorization": f"Bearer {PLATFORM_TOKEN}"}
    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def post(chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
            async with http.post(
                f"{gateway.url}/platform/v1/broadband/batch",
                json={"orders": chunk},
                headers=headers,
            ) as response:
                body = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"the batch was answered {response.status}: {body}")
            return list(body["results"])

        chunks = [orders[i : i + per_request] for i in range(0, len(orders), per_request)]
        sent = time.monotonic()
        answers = await asyncio.gather(*(post(chunk) for chunk in chunks))
        answered = time.monotonic()
    return sent, answered, [result for results in answers for result in results]


async def unpublished(services: Any) -> int:
    async with services.db.session() as session:
        return int(
            (
                await session.exec(
                    select(func.count())
                    .select_from(DesiredState)
                    .where(col(DesiredState.published_version) < col(DesiredState.version))
                )
            ).one()
        )


async def all_published(services: Any) -> float:
    """When no desired document was left unpublished (checked every 0.2 s)."""
    deadline = time.monotonic() + 600
    while True:
        if not await unpublished(services) or time.monotonic() > deadline:
            return time.monotonic()
        await asyncio.sleep(0.2)


async def behind(services: Any, online: set[str]) -> int:
    """The service's own view: online devices whose reported version has not caught up
    (waiting up to 30 s for it to)."""
    deadline = time.monotonic() + 30
    while True:
        async with services.db.session() as session:
            count = (
                await session.exec(
                    select(func.count())
                    .select_from(DesiredState)
                    .where(col(DesiredState.device_id).in_(list(online)))
                    .where(col(DesiredState.reported_version) < col(DesiredState.version))
                )
            ).one()
        if count == 0 or time.monotonic() > deadline:
            return int(count)
        await asyncio.sleep(0.2)


async def baseline(
    gateway: Gateway, port: int, devices: Sequence[DeviceSpec], applied: Applied
) -> list[float]:
    """The same fan-out, bare (paho publisher, broker, devices): each device's latency."""
    online = {d.device_id for d in devices}
    async with gateway.services.db.session() as session:
        states = (await session.exec(select(DesiredState))).all()
    documents = {
        s.device_id: Desired(s.device_id, s.version, s.document).payload()
        for s in states
        if s.device_id in online
    }
    await asyncio.sleep(1.0)
    start = await asyncio.to_thread(bare_fanout, port, documents)
    await wait_for(
        lambda: all(applied.first_after(d.device_id, start) for d in devices),
        "the bare fan-out",
        60,
    )
    bare = [applied.first_after(d.device_id, start) or start for d in devices]
    latency = [at - start for at in bare]
    summary("baseline: bare retained fan-out", latency)
    return latency


async def measure(
    gateway: Gateway,
    port: int,
    devices: Sequence[DeviceSpec],
    accounts: Sequence[str],
    applied: Applied,
    *,
    per_request: int,
    action: str,
    turn: int,
) -> float:
    """One round: the bare fan-out, then the batch; the ratio of their p99s."""
    services = gateway.services
    online = {d.device_id for d in devices}
    bare_latency = await baseline(gateway, port, devices, applied)
    await asyncio.sleep(1.0)
    # 2. The batch stop through the platform API.
    sent, accepted, results = await post_batch(gateway, accounts, per_request, action, turn)
    published = asyncio.create_task(all_published(services), name="bench[published]")
    targets: dict[str, int] = {}
    for result in results:
        if result["status"] != 200 or not result["body"].get("applied"):
            raise RuntimeError(f"an order was not applied: {result}")
        for device in result["body"]["devices"]:
            if device["device_id"] in online:
                targets[device["device_id"]] = int(device["desired_version"])
    row(
        f"batch of {len(results):,} {action}s: answered after",
        f"{(accepted - sent) * 1000:,.0f} ms ({(accepted - sent) / len(results) * 1000:.2f} "
        "ms an order)",
    )
    await wait_for(
        lambda: all(applied.reached(d, v) for d, v in targets.items()),
        f"every device to apply the {action}",
        120 + len(accounts) / 50,
    )
    reached = [applied.reached(d, v) or accepted for d, v in targets.items()]
    after_accepted = [max(0.0, at - accepted) for at in reached]
    after_sent = [at - sent for at in reached]
    early = sum(at < accepted for at in reached)
    summary(f"{action}: device applied, from the request", after_sent)
    summary(f"{action}: device applied, from the answer", after_accepted)
    row("devices that applied it before the answer came", f"{early:,} of {len(reached):,}")
    row("every desired document published, from the request", f"{await published - sent:.1f} s")
    bare_p99 = percentile(bare_latency, 99)
    met, factor = verdict(percentile(after_sent, 99), bare_p99)
    row("p99 from the request / p99 of the bare fan-out", f"{factor:.2f}")
    row(
        f"goal p99 from the request <= {GOAL_RATIO}x the bare fan-out",
        "met" if met else "missed",
    )
    lagging = await behind(services, online)
    row("online devices behind their desired version (service view)", str(lagging))
    return factor


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument(
        "--online", type=int, default=0, help="accounts whose devices connect (default: all)"
    )
    parser.add_argument(
        "--per-request", type=int, default=1000, help="orders a request (the route's maximum)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="stop, resume, stop... each with its bare fan-out"
    )
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # aiomqtt warns of every publish beyond ten in flight; a fan-out is exactly that.
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
