"""Benchmark 1, ingest: device messages the gateway processes per second, all indexing done,
against a bare paho-mqtt subscriber on the same broker in the same run (QoS 1).

A private Mosquitto is started. Both consumers first register a persistent session
(``clean_session=False``) and go away; ``--messages`` device messages are then published
(the mix: telemetry, camera events and segment notices from ``--devices`` cameras); each
consumer then comes back and drains its queue, timed from its first message to its last.
Pre-loading the broker measures each consumer's own capacity, not the publisher's.

The gateway's figure includes all the work of each message: telemetry updates presence
(coalesced writes), an event is inserted into ``camera_events``, and a segment notice is
confirmed against the object store (its ``--segment-bytes`` object exists with the granted
size: the store checked its SHA-256 when it was uploaded, docs/uploads.md) and indexed (the
upload grant becomes a ``segments`` row). Grants and objects are prepared beforehand, as
the upload handshake would have left them.

With ``--gateways N`` the gateway side is N gateway processes on one shared subscription
(``KANJIA_MQTT_SHARED_GROUP``: the broker deals the queued messages out between their
sessions), one database and one object store, as a scaled-out deployment runs them; the
drain is timed from the first message any of them handled to the moment their summed
counters show everything indexed. The processes import everything, then start their
gateways together on a signal, so that none drains alone while another is still loading.
``--gateways 1`` measures one gateway the same way, for the comparison.

With ``--auth mosquitto-dynsec`` the broker runs Mosquitto's dynamic security, the gateway
``KANJIA_MQTT_AUTH=mosquitto-dynsec``, and every camera has its own credentials (issued in
bulk, :func:`bench.common.credential_devices`): the pre-load publishes each camera's
messages on its own connection, and the bare subscriber signs in as the plugin's admin.

Run: ``.venv/bin/python -m bench.ingest [--messages 10000] [--db sqlite|postgresql]
[--store file|s3] [--per-kind] [--profile FILE] [--py-spy PREFIX] [--gateways N]
[--auth none|mosquitto-dynsec]``;
``--store s3`` runs a private SeaweedFS (``weed mini``) for the objects instead of the
filesystem store.
Goal: >= 0.8 of the bare rate.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import json
import multiprocessing
import os
import pstats
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path

import aiohttp
from prometheus_client import Counter
from sqlmodel import func, select

from bench.common import (
    AUTH_CHOICES,
    admin_login,
    bench_settings,
    credential_devices,
    database,
    heading,
    private_broker,
    ratio,
    row,
)
from bench.ingest_clients import BareSubscriber, Drain, Message, publish_all
from devices.clock import ManualClock
from devices.models import Account, Device, DeviceKind
from gateway.config import Settings, load_settings
from gateway.lifecycle import freeze_heap
from gateway.mqtt.messages import PREFIX
from gateway.service import Gateway
from replay.models import CameraEvent, Segment, UploadGrant
from replay.object_keys import object_key, service_segment_id
from replay.recording import SegmentKind
from simulators.fleet import parse_metrics
from simulators.media import synthetic_segment
from tests.seaweed import seaweed_server
from tests.services import Broker, DynsecBroker

T0 = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
KINDS = ("telemetry", "event", "segment")
MIX = {"telemetry": 0.4, "event": 0.2, "segment": 0.4}
POLL = 0.01
PY_SPY = Path(sys.executable).parent / "py-spy"  # installed beside the venv's python


@contextmanager
def sampled(output: Path | None) -> Iterator[None]:
    """py-spy samples this process (every thread, idle ones left out) for the block's
    duration, into ``output`` as collapsed stacks (``--format raw``: one line per stack and
    its count, readable as text; ``flamegraph.pl`` or speedscope draw it)."""
    if output is None:
        yield
        return
    spy = os.environ.get("KANJIA_PY_SPY") or str(PY_SPY)
    command = [spy, "record", "--pid", str(os.getpid()), "--format", "raw", "--threads",
               "--rate", "250", "--nonblocking", "--output", str(output)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the drain begins
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)


def camera(n: int) -> str:
    return f"cam-{n:05d}"


def build_messages(
    count: int, devices: int, mix: dict[str, float], segment_bytes: int, seed: int
) -> tuple[list[Message], list[UploadGrant], dict[str, bytes]]:
    """The messages, and the grants and objects their segment notices need."""
    rng = random.Random(seed)
    kinds = rng.choices(list(mix), weights=list(mix.values()), k=count)
    messages, grants, objects = [], [], {}
    for i, kind in enumerate(kinds):
        device = camera(rng.randrange(devices))
        at = T0 - timedelta(seconds=count - i)
        body: dict[str, object]
        if kind == "telemetry":
            body = {"fps": 10, "bitrate_kbps": round(rng.uniform(200, 400), 1)}
        elif kind == "event":
            body = {
                "event_id": f"{device}-ev-{i}",
                "type": rng.choice(("person", "pet", "door")),
                "at": at.isoformat(),
                "score": 0.9,
            }
        else:
            segment_id = f"{device}-s{i}"
            data = synthetic_segment(segment_bytes, segment_id)
            start, end = at - timedelta(seconds=10), at
            key = object_key("7d", device, end, segment_id, SegmentKind.CONTINUOUS)
            sha = hashlib.sha256(data).hexdigest()
            objects[key] = data
            grants.append(
                UploadGrant(
                    segment_id=service_segment_id(device, segment_id),
                    device_id=device,
                    account_id=f"acc-{device}",
                    subscription_id=f"sub-{device}",
                    kind="continuous",
                    start=start,
                    end=end,
                    bytes=len(data),
                    sha256=sha,
                    object_key=key,
                    retention_class="7d",
                    expires_at=end + timedelta(days=7),
                    granted_at=at,
                )
            )
            body = {
                "segment_id": segment_id,
                "kind": "continuous",
                "start": start.isoformat(),
                "end": end.isoformat(),
                "bytes": len(data),
                "sha256": sha,
            }
        topic = f"{PREFIX}{device}/{kind}"
        messages.append(Message(topic, json.dumps(body).encode(), kind, device))
    return messages, grants, objects


# -- the gateway ------------------------------------------------------------------------


async def provision(
    gateway: Gateway, devices: int, grants: list[UploadGrant], objects: dict[str, bytes]
) -> None:
    services = gateway.services
    async with services.db.session() as session:
        for n in range(devices):
            device = camera(n)
            session.add(
                Account(
                    account_id=f"acc-{device}",
                    owner_id=f"owner-{device}",
                    star_level=3,
                    created_at=T0,
                    updated_at=T0,
                )
            )
        await session.commit()
        for n in range(devices):
            device = camera(n)
            session.add(
                Device(
                    device_id=device,
                    account_id=f"acc-{device}",
                    kind=DeviceKind.CAMERA,
                    bound_at=T0,
                )
            )
        await session.commit()
        session.add_all(grants)
        await session.commit()
    gate = asyncio.Semaphore(16)

    async def put(key: str, data: bytes) -> None:
        async with gate:
            await services.store.put(key, data)

    await asyncio.gather(*(put(key, data) for key, data in objects.items()))


def _total(metric: Counter) -> float:
    """A counter's total over its labels, without collecting the whole registry."""
    return sum(
        sample.value
        for family in metric.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    )


async def gateway_drain(gateway: Gateway, expected: int, segments: int, events: int) -> Drain:
    """From the first message taken in to the last one handled with its indexing done.

    The gateway's own counters are polled every ``POLL`` seconds (reading three counters
    costs the loop a few microseconds); the database is read once at the end, to confirm.
    The process's CPU time over the drain (every thread; the publisher and the bare
    subscriber are done by then) is the gateway's cost per message, a figure that a busy
    shared machine disturbs far less than a rate.
    """
    cpu_began = time.process_time()
    first = None
    deadline = time.perf_counter() + 900
    while True:
        metrics = gateway.services.metrics
        handled = _total(metrics.mqtt_messages)
        indexed = _total(metrics.segments_indexed)
        stored = _total(metrics.events_indexed)
        now = time.perf_counter()
        if first is None and handled > 0:
            first = now
        if handled >= expected and indexed >= segments and stored >= events:
            break
        if now > deadline:
            raise RuntimeError(
                f"the gateway handled {handled:.0f} of {expected} messages, indexed "
                f"{indexed:.0f} of {segments} segments and {stored:.0f} of {events} events"
            )
        await asyncio.sleep(POLL if first is not None else 0.001)
    assert first is not None
    elapsed = time.perf_counter() - first
    cpu = time.process_time() - cpu_began
    async with gateway.services.db.session() as session:
        rows = (await session.exec(select(func.count()).select_from(Segment))).one()
        event_rows = (await session.exec(select(func.count()).select_from(CameraEvent))).one()
    if rows < segments or event_rows < events:
        raise RuntimeError(f"counted {indexed} segments but found {rows} rows")
    registry = gateway.services.metrics.registry
    count = registry.get_sample_value("kanjia_batch_size_count", {"queue": "recording"}) or 0
    total = registry.get_sample_value("kanjia_batch_size_sum", {"queue": "recording"}) or 0
    batches = (int(count), total / count if count else 0.0)
    return Drain(expected, elapsed, cpu_seconds=cpu, batches=batches)


# -- several gateway processes on the shared subscription -------------------------------

SHARED_GROUP = "kanjia-bench"
_COUNTERS = ("kanjia_mqtt_messages_total", "kanjia_segments_indexed_total",
             "kanjia_events_indexed_total")  # fmt: skip


def _gateway_process(settings: dict[str, object], channel: Connection) -> None:
    """A child: ready once imported, then serve from the parent's "go" until its "stop"."""

    async def serve() -> None:
        async with Gateway(settings=load_settings(environ={}, overrides=settings)) as gateway:
            freeze_heap()  # as kanjia serve does
            channel.send(gateway.url)
            await asyncio.to_thread(channel.recv)  # "stop"

    channel.send("ready")
    channel.recv()  # "go"
    asyncio.run(serve())


def _counters(text: str) -> tuple[float, float, float]:
    """(messages handled, segments indexed, events indexed) from a /metrics page."""
    metrics = parse_metrics(text)
    handled, indexed, stored = (sum(metrics.get(name, {}).values()) for name in _COUNTERS)
    return handled, indexed, stored


async def scaled_drain(
    settings: list[Settings], expected: int, segments: int, events: int
) -> Drain:
    """Run one gateway process per settings; time them draining the queued messages."""
    context = multiprocessing.get_context("spawn")
    channels, children = [], []
    for one in settings:
        mine, theirs = context.Pipe()
        child = context.Process(
            target=_gateway_process, args=(one.model_dump(mode="json"), theirs), daemon=True
        )
        child.start()
        channels.append(mine)
        children.append(child)
    try:
        for channel in channels:
            if await asyncio.to_thread(channel.recv) != "ready":
                raise RuntimeError("a gateway process did not get ready")
        for channel in channels:
            channel.send("go")
        urls = [await asyncio.to_thread(channel.recv) for channel in channels]
        first = None
        deadline = time.perf_counter() + 900
        async with aiohttp.ClientSession() as http:
            while True:
                pages = [await (await http.get(f"{url}/metrics")).text() for url in urls]
                now = time.perf_counter()
                counts = [_counters(page) for page in pages]
                handled, indexed, stored = map(sum, zip(*counts, strict=True))
                if first is None and handled > 0:
                    first = now
                if handled >= expected and indexed >= segments and stored >= events:
                    break
                if now > deadline:
                    raise RuntimeError(f"the gateways handled {handled:.0f} of {expected}")
                await asyncio.sleep(POLL if first is not None else 0.001)
        assert first is not None
        return Drain(expected, now - first, tuple(int(c[0]) for c in counts))
    finally:
        for channel in channels:
            channel.send("stop")
        for child in children:
            await asyncio.to_thread(child.join, 30)


async def run_once(
    *,
    tmp: Path,
    db: str,
    broker: Broker | DynsecBroker,
    messages: list[Message],
    grants: list[UploadGrant],
    objects: dict[str, bytes],
    devices: int,
    profile: Path | None,
    py_spy: Path | None,
    gateways: int,
    store_url: str | None = None,
) -> tuple[Drain, Drain, float]:
    port, dynsec = broker.port, isinstance(broker, DynsecBroker)
    bare = BareSubscriber(port, admin_login(broker))
    bare.register()
    passwords = None
    async with database(db, tmp) as url:
        settings = [
            bench_settings(
                tmp,
                database_url=url,
                object_store_url=store_url or (tmp / f"objects-{db}").as_uri(),
                mqtt_url=broker.url,
                mqtt_auth="mosquitto-dynsec" if dynsec else "none",
                mqtt_client_id=f"kanjia-bench-ingest-{db}-{n}",
                mqtt_shared_group=SHARED_GROUP if gateways else "",
                url_signing_key="bench-" + "k" * 32,  # one filesystem store, shared
                clock=f"manual:{T0.isoformat()}",  # the gateway processes' clock, as here
            )
            for n in range(max(1, gateways))
        ]
        clock = ManualClock(T0)
        for n, each in enumerate(settings):
            async with Gateway(settings=each, clock=clock) as gateway:
                mqtt = gateway.services.mqtt
                assert mqtt is not None
                await asyncio.wait_for(mqtt.connected.wait(), 10)
                if n == 0:
                    await provision(gateway, devices, grants, objects)
                if n == 0 and dynsec:
                    ids = [camera(c) for c in range(devices)]
                    passwords = await credential_devices(gateway, ids)
        # Every session is registered and gone: the broker now queues for all of them.
        published = await asyncio.to_thread(publish_all, port, messages, passwords)
        baseline = await asyncio.to_thread(bare.drain, len(messages))
        segments = sum(m.kind == "segment" for m in messages)
        events = sum(m.kind == "event" for m in messages)
        if gateways:
            measured = await scaled_drain(settings, len(messages), segments, events)
            return baseline, measured, len(messages) / published
        profiler = cProfile.Profile() if profile else None
        with sampled(py_spy):
            async with Gateway(settings=settings[0], clock=clock) as gateway:
                freeze_heap()  # as kanjia serve does
                if profiler is not None:
                    profiler.enable()
                measured = await gateway_drain(gateway, len(messages), segments, events)
            if profiler is not None:
                profiler.disable()
        if profiler is not None and profile is not None:
            profiler.dump_stats(profile)
            stats = pstats.Stats(profiler)
            stats.sort_stats("tottime").print_stats(15)
    return baseline, measured, len(messages) / published


async def batching_what_if(db: str, rows: int) -> tuple[float, float]:
    """Rows per second inserting camera events as the gateway does (a session and a
    commit each, after the device lookup), and the same rows 100 to a transaction."""
    from replay.migrations import open_database

    with tempfile.TemporaryDirectory(prefix="kanjia-bench-whatif-") as tmp_name:
        async with database(db, Path(tmp_name)) as url, open_database(url) as data:
            async with data.session() as session:
                session.add(
                    Account(
                        account_id="acc", owner_id="o", star_level=3, created_at=T0, updated_at=T0
                    )
                )
                await session.commit()
                session.add(
                    Device(device_id="cam", account_id="acc", kind=DeviceKind.CAMERA, bound_at=T0)
                )
                await session.commit()
            began = time.perf_counter()
            for i in range(rows):
                async with data.session() as session:
                    await session.get(Device, "cam")
                    await session.get(Account, "acc")
                    if await session.get(CameraEvent, ("cam", f"one-{i}")) is None:
                        session.add(
                            CameraEvent(event_id=f"one-{i}", device_id="cam", type="person", at=T0)
                        )
                        await session.commit()
            each = rows / (time.perf_counter() - began)
            began = time.perf_counter()
            for first in range(0, rows, 100):
                async with data.session() as session:
                    await session.get(Device, "cam")
                    session.add_all(
                        CameraEvent(event_id=f"many-{i}", device_id="cam", type="person", at=T0)
                        for i in range(first, min(rows, first + 100))
                    )
                    await session.commit()
            batched = rows / (time.perf_counter() - began)
    return each, batched


async def run(args: argparse.Namespace) -> None:
    mixes: list[tuple[str, dict[str, float]]] = [("mix 40/20/40", MIX)]
    if args.per_kind:
        mixes += [(f"{kind} only", {kind: 1.0}) for kind in KINDS]
    side = (
        f"{args.gateways} gateway process(es) on a shared subscription"
        if args.gateways
        else "one gateway in this process"
    )
    heading(
        f"ingest: {args.messages} messages from {args.devices} cameras, QoS 1, "
        f"database {args.db}, store {args.store}, segments of {args.segment_bytes} bytes, "
        f"{side}, broker auth {args.auth}"
    )
    for label, mix in mixes:
        messages, grants, objects = build_messages(
            args.messages, args.devices, mix, args.segment_bytes, args.seed
        )
        with tempfile.TemporaryDirectory(prefix="kanjia-bench-ingest-") as tmp_name:
            tmp = Path(tmp_name)
            with private_broker(args.auth, tmp) as broker, ExitStack() as stack:
                store_url = None
                if args.store == "s3":
                    seaweed = stack.enter_context(seaweed_server(tmp / "seaweed"))
                    store_url = seaweed.url_for_bucket("kanjia-bench-ingest")
                baseline, measured, publish_rate = await run_once(
                    tmp=tmp,
                    db=args.db,
                    broker=broker,
                    messages=messages,
                    grants=grants,
                    objects=objects,
                    devices=args.devices,
                    profile=args.profile if label.startswith("mix") else None,
                    py_spy=(
                        args.py_spy.with_name(f"{args.py_spy.name}-{label.split()[0]}.txt")
                        if args.py_spy
                        else None
                    ),
                    gateways=args.gateways,
                    store_url=store_url,
                )
        row(f"{label}: publisher (pre-load)", f"{publish_rate:,.0f} msg/s")
        row(f"{label}: bare paho subscriber", f"{baseline.rate:,.0f} msg/s")
        row(f"{label}: gateway, indexing done", f"{measured.rate:,.0f} msg/s")
        if measured.shares:
            row(f"{label}: messages per gateway process", " / ".join(map(str, measured.shares)))
        if measured.cpu_seconds is not None and baseline.cpu_seconds is not None:
            per_message = measured.cpu_seconds / measured.messages * 1e6
            bare_cpu = baseline.cpu_seconds / baseline.messages * 1e6
            row(f"{label}: gateway CPU per message", f"{per_message:,.0f} µs")
            row(f"{label}: bare paho CPU per message", f"{bare_cpu:,.0f} µs")
            # What the rates' ratio would be with a core each: steadier on a busy machine.
            row(f"{label}: CPU ratio bare / gateway", ratio(bare_cpu, per_message))
        if measured.batches is not None and measured.batches[0]:
            count, mean = measured.batches
            row(f"{label}: recording batches", f"{count} (mean {mean:,.0f} messages)")
        row(
            f"{label}: ratio gateway / bare (goal >= 0.8)",
            ratio(measured.rate, baseline.rate),
        )
    each, batched = await batching_what_if(args.db, 2000)
    row("what if: events, a transaction each", f"{each:,.0f} rows/s")
    row("what if: events, 100 to a transaction", f"{batched:,.0f} rows/s ({ratio(batched, each)}x)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--devices", type=int, default=1_000)
    parser.add_argument("--segment-bytes", type=int, default=66_000)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--store",
        choices=("file", "s3"),
        default="file",
        help="the object store: files (default) or a private SeaweedFS (weed mini)",
    )
    parser.add_argument("--per-kind", action="store_true", help="also each kind alone")
    parser.add_argument("--profile", type=Path, help="cProfile the gateway's drain (mix)")
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="PREFIX",
        help="py-spy the gateway's run, each mix into PREFIX-{mix,telemetry,...}.txt "
        "(collapsed stacks, every thread)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--auth",
        choices=AUTH_CHOICES,
        default="none",
        help="mosquitto-dynsec: each camera publishes as itself, per-device credentials",
    )
    parser.add_argument(
        "--gateways",
        type=int,
        default=0,
        help="N gateway processes on a shared subscription (default: one, in this process)",
    )
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
