"""Benchmark 2, fleet size: the largest fleet one gateway serves with a lag that does not
grow: cameras on continuous plans, synthetic media (``--segment-bytes``), a 10-s segment
every 10 s and telemetry every 30 s, in real time.

For each size of ``--sizes`` (cameras), a fresh private Mosquitto, a database (``--db``)
and an object store (``--store``: the filesystem store, whose PUTs go through the gateway,
or S3 on a private SeaweedFS, which the cameras PUT to directly) are made; the fleet is
written into the database by a gateway in this process, which then stops; ``--gateways``
gateway processes (spawned, set up as ``kanjia serve`` is; above one, on one shared
subscription) serve it on the wall clock while the fleet runner (:mod:`simulators.fleet`,
devices in ``--workers`` processes) runs the cameras for ``--step-seconds``. Every second
the runner compares what the devices published with what the gateways have taken in (the
backlog).

A size *holds* only when (:func:`verdict`) the fleet offered at least 95 % of its nominal
rate, the upload round trip's p99 stayed under one segment length (10 s), nothing failed
(no error, no failed job of a gateway), and the backlog did not grow (its trend over the
second half of the step under one second's worth of messages per minute, and under one
second's worth at the end); every reason a size does not hold is printed, and the
benchmark stops at the first such size. Uploads refused by rule (``--rogue-every N``:
every N-th camera has no plan and records anyway, R8) are outcomes, not errors.

Each size also prints what it cost over the measured run (issue 16): the gateway
processes' CPU seconds per wall second (from ``/proc``) and peak RSS, read as **gateway
cores per 10,000 cameras** (:func:`gateway_cost`), and the fleet runner's own, as
simulated cameras per worker core (the report's ``runner``); with the machine's load.

With ``--auth mosquitto-dynsec`` the broker runs Mosquitto's dynamic security, the gateway
``KANJIA_MQTT_AUTH=mosquitto-dynsec``, and every camera signs in with its own credentials
(issued in bulk before the fleet starts).

Run: ``.venv/bin/python -m bench.fleet_size [--sizes 250,500,1000,2000]
[--step-seconds 60] [--db sqlite|postgresql] [--store file|s3] [--gateways N]
[--rogue-every N] [--auth none|mosquitto-dynsec]`` (the issue asks for 5 minutes per
size: ``--step-seconds 300``).
Goals: 10,000 devices; one gateway core per 10,000 cameras; 5,000 cameras per runner core.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp

from bench.broker_hooks import Server
from bench.common import (
    AUTH_CHOICES,
    PLATFORM_TOKEN,
    admin_login,
    bench_settings,
    credential_devices,
    database,
    heading,
    private_broker,
    provision_fleet,
    ratio,
    row,
)
from bench.ingest_clients import bare_cpu_per_message
from gateway.config import Settings
from gateway.service import Gateway
from simulators.credentials import Credentials
from simulators.fleet import DeviceSpec, FleetOptions, HouseholdSpec, parse_metrics, run_fleet
from simulators.fleet.metrics import metric_total
from simulators.tasks import cancel_all
from tests.seaweed import seaweed_server

CAMERAS_PER_HOME = 4
PLAN = "continuous-7d"
#: The shared subscription's group of ``--gateways`` above one.
SHARED_GROUP = "kanjia-bench-fleet"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def households(cameras: int, prefix: str, *, rogue_every: int = 0) -> tuple[HouseholdSpec, ...]:
    """``cameras`` on ``PLAN``, four a home; with ``rogue_every`` n, every n-th camera has
    no plan and rogue firmware that records anyway: its uploads are refused by rule (R8,
    ``not_entitled``), outcomes the verdict does not count as errors."""
    homes = []
    for n in range(-(-cameras // CAMERAS_PER_HOME)):
        home = f"{prefix}-h{n:05d}"
        count = min(CAMERAS_PER_HOME, cameras - n * CAMERAS_PER_HOME)
        specs = []
        for c in range(1, count + 1):
            index = n * CAMERAS_PER_HOME + c
            rogue = bool(rogue_every) and index % rogue_every == 0
            specs.append(
                DeviceSpec(
                    device_id=f"{home}-cam{c}",
                    role="camera",
                    plan=None if rogue else PLAN,
                    rogue=rogue,
                )
            )
        homes.append(
            HouseholdSpec(
                account_id=home, owner_id=f"{home}-owner", star_level=3, devices=tuple(specs)
            )
        )
    return tuple(homes)


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of ``(t, y)`` points (y per unit of t); 0 for fewer than two."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (y - mean_y) for t, y in points) / var


def nominal_rate(
    cameras: int, *, segment_seconds: float, telemetry_seconds: float, refused: int = 0
) -> float:
    """Messages a second the fleet should offer: per camera an ``upload/req`` and a
    ``segment`` notice per segment, and a ``telemetry`` message per period; a camera whose
    uploads are ``refused`` by rule sends no notice."""
    return (2 * cameras - refused) / segment_seconds + cameras / telemetry_seconds


def verdict(
    report: dict[str, Any],
    *,
    nominal: float,
    segment_ms: float,
    job_failures: float = 0.0,
) -> tuple[bool, dict[str, float], list[str]]:
    """Whether a size holds, its figures, and every reason it does not (issue 16): the
    fleet offered at least 95 % of its nominal rate (a fleet that cannot offer its load
    measures nothing), the upload round trip's p99 stayed under one segment length,
    nothing failed (no error, no job failure), and the backlog did not grow."""
    samples = report["samples"]
    half = samples[len(samples) // 2 :]
    offered = sum(s["msgs_per_s"] for s in half) / max(1, len(half))
    processed = sum(s["processed_per_s"] for s in half) / max(1, len(half))
    trend = slope([(s["t"], s["backlog"]) for s in half]) * 60  # messages per minute
    final = samples[-1]["backlog"] if samples else 0.0
    p99 = float(report["uploads"]["latency_p99_ms"] or 0.0)
    figures = {
        "offered": offered,
        "nominal": nominal,
        "processed": processed,
        "trend": trend,
        "final": final,
        "upload_p99_ms": p99,
        "errors": float(report["errors"]["total"]),
        "job_failures": job_failures,
        # Uploads refused by rule (R8: a rogue camera without a plan) are outcomes.
        "refused": float(sum(report["uploads"].get("refused", {}).values())),
    }
    reasons = []
    if offered < 0.95 * nominal:
        reasons.append(f"offered {offered:,.0f} of a nominal {nominal:,.0f} msg/s (< 95 %)")
    if p99 >= segment_ms:
        reasons.append(f"upload p99 {p99:,.0f} ms, not under a segment ({segment_ms:,.0f} ms)")
    if figures["errors"] or job_failures:
        reasons.append(f"{figures['errors']:.0f} errors, {job_failures:.0f} job failures")
    if trend >= max(offered, 1.0) or final >= max(offered, 1.0):
        reasons.append(f"backlog grew ({trend:+,.0f}/min, {final:,.0f} at the end)")
    return not reasons, figures, reasons


def cpu_between(trace: Sequence[tuple[float, float]], began: float, ended: float) -> float:
    """CPU seconds spent from ``began`` to ``ended`` by a process whose CPU so far was
    sampled as ``(monotonic, cpu seconds)`` points (interpolated linearly between them;
    clamped to the first and last sample)."""

    def at(t: float) -> float:
        if not trace:
            return 0.0
        if t <= trace[0][0]:
            return trace[0][1]
        for (t0, c0), (t1, c1) in itertools.pairwise(trace):
            if t0 <= t <= t1:
                return c0 if t1 == t0 else c0 + (c1 - c0) * (t - t0) / (t1 - t0)
        return trace[-1][1]

    return at(ended) - at(began)


def gateway_cost(cameras: int, cpu_s: Sequence[float], wall_s: float) -> dict[str, float]:
    """The gateways' cost at a size (issue 16): cores busy (CPU seconds per wall second,
    all gateway processes together), **gateway cores per 10,000 cameras**, and cameras per
    gateway core."""
    cores = sum(cpu_s) / wall_s if wall_s > 0 else 0.0
    return {
        "cores": cores,
        "cores_per_10k": cores * 10_000 / cameras if cameras else 0.0,
        "cameras_per_core": cameras / cores if cores > 0 else 0.0,
    }


def proc_cpu_s(pid: int) -> float:
    """A process's CPU seconds so far (user + system), from ``/proc/PID/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def proc_peak_rss_mib(pid: int) -> float:
    """A process's peak resident set (``VmHWM`` of ``/proc/PID/status``), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def trace_cpu(pids: Sequence[int], into: list[list[tuple[float, float]]]) -> None:
    """Sample each process's CPU so far twice a second, until cancelled."""
    while True:
        now = time.monotonic()
        for trace, pid in zip(into, pids, strict=True):
            trace.append((now, proc_cpu_s(pid)))
        await asyncio.sleep(0.5)


async def gateway_counters(
    http: aiohttp.ClientSession, urls: Sequence[str]
) -> tuple[float, dict[str, float]]:
    """Clock-driven job runs of the gateways that failed (``kanjia_job_runs{outcome=error}``),
    and the mean size of each group commit's batches (``kanjia_batch_size``), all gateways."""
    failed = 0.0
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for url in urls:
        async with http.get(f"{url}/metrics") as response:
            found = parse_metrics(await response.text())
        failed += metric_total(found, "kanjia_job_runs_total", 'outcome="error"')
        for name in ("upload/req", "recording"):
            where = f'queue="{name}"'
            sums[name] = sums.get(name, 0.0) + metric_total(found, "kanjia_batch_size_sum", where)
            counts[name] = counts.get(name, 0.0) + metric_total(
                found, "kanjia_batch_size_count", where
            )
    return failed, {name: sums[name] / counts[name] for name in sums if counts[name]}


async def device_logins(
    gateway: Gateway, homes: Sequence[HouseholdSpec], auth: str
) -> dict[str, Credentials]:
    """Each camera's own broker identity when the broker checks them (none otherwise)."""
    if auth == "none":
        return {}
    ids = [device.device_id for home in homes for device in home.devices]
    passwords = await credential_devices(gateway, ids)
    return {d: Credentials(device_id=d, username=d, password=p) for d, p in passwords.items()}


async def prepare(
    settings: Settings, homes: Sequence[HouseholdSpec], auth: str
) -> dict[str, Credentials]:
    """The fleet into the database, its desired documents retained on the broker and its
    credentials issued, by a gateway in this process that then stops."""
    async with Gateway(settings=settings) as gateway:
        mqtt = gateway.services.mqtt
        assert mqtt is not None
        await asyncio.wait_for(mqtt.connected.wait(), 10)
        await provision_fleet(gateway, homes)
        return await device_logins(gateway, homes, auth)


def fleet_options(
    args: argparse.Namespace, cameras: int, urls: Sequence[str], port: int
) -> FleetOptions:
    return FleetOptions(
        households=-(-cameras // CAMERAS_PER_HOME),
        clock_speed=1.0,
        duration=args.step_seconds,
        stop_rate=0,
        app_rate=0,
        rogue_share=0,
        telemetry_seconds=30,
        segment_seconds=10,
        min_real_interval=0,
        synthetic_bytes=args.segment_bytes,
        workers=args.workers,
        prefix=f"fs{cameras}",
        service_url=urls[0],
        metrics_urls=tuple(urls[1:]),
        platform_token=PLATFORM_TOKEN,
        # Without the admin's login of a dynsec broker's URL: each device signs in with
        # its own credentials.
        mqtt_url=f"mqtt://127.0.0.1:{port}",
    )


@dataclass(frozen=True, slots=True)
class Measured:
    report: dict[str, Any]
    job_failures: float
    mean_batch: dict[str, float]
    #: The bare paho subscriber's CPU microseconds per message on this size's broker.
    bare_us: float
    #: Each gateway process's CPU seconds over the measured run, and its peak RSS (MiB).
    gateway_cpu_s: tuple[float, ...]
    gateway_rss_mib: tuple[float, ...]


async def measure(args: argparse.Namespace, cameras: int, tmp: Path) -> Measured:
    """One size: a broker, the object store and a database; the fleet prepared; then
    ``--gateways`` gateway processes (``kanjia serve``'s set-up, spawned) and the fleet."""
    with private_broker(args.auth, tmp) as broker, ExitStack() as stack:
        # The machine's speed in this run, before any gateway session exists on the broker.
        bare_us = await asyncio.to_thread(bare_cpu_per_message, broker.port, admin_login(broker))
        store: dict[str, Any] = {}
        if args.store == "s3":
            weed = stack.enter_context(seaweed_server(tmp / "seaweed"))
            store["object_store_url"] = weed.url_for_bucket("kanjia-bench-fleet")
        async with database(args.db, tmp) as url, AsyncExitStack() as gateways:
            settings = bench_settings(
                tmp, database_url=url, mqtt_url=broker.url, mqtt_auth=args.auth, **store
            )
            homes = households(cameras, f"fs{cameras}", rogue_every=args.rogue_every)
            logins = await prepare(settings, homes, args.auth)
            servers = []
            for n in range(args.gateways):
                own = settings.model_copy(
                    update={
                        "mqtt_client_id": f"{settings.mqtt_client_id}-{n}",
                        "mqtt_shared_group": SHARED_GROUP if args.gateways > 1 else "",
                    }
                )
                server = Server("gateway", own, tmp / f"gateway-{n}.log")
                servers.append(await gateways.enter_async_context(server))
            pids = [server.pid for server in servers]
            assert all(pid is not None for pid in pids)
            traces: list[list[tuple[float, float]]] = [[] for _ in servers]
            tracer = asyncio.create_task(trace_cpu(cast(list[int], pids), traces))
            urls = [server.url for server in servers]
            try:
                report = await run_fleet(
                    fleet_options(args, cameras, urls, broker.port),
                    workdir=tmp,
                    households=homes,
                    provisioned=True,
                    credentials=logins,
                )
            finally:
                await cancel_all([tracer])
            window = report["window"]
            async with aiohttp.ClientSession() as http:
                failed, batches = await gateway_counters(http, urls)
            return Measured(
                report=report,
                bare_us=bare_us,
                job_failures=failed,
                mean_batch=batches,
                gateway_cpu_s=tuple(
                    cpu_between(t, window["began"], window["ended"]) for t in traces
                ),
                gateway_rss_mib=tuple(proc_peak_rss_mib(cast(int, p)) for p in pids),
            )


async def step(args: argparse.Namespace, cameras: int) -> bool:
    with tempfile.TemporaryDirectory(prefix="kanjia-bench-fleet-") as tmp_name:
        tmp = Path(tmp_name)
        if args.keep is not None:
            tmp = args.keep / f"{cameras}"
            tmp.mkdir(parents=True, exist_ok=True)
        measured = await measure(args, cameras, tmp)
    report = measured.report
    refused = cameras // args.rogue_every if args.rogue_every else 0
    nominal = nominal_rate(cameras, segment_seconds=10, telemetry_seconds=30, refused=refused)
    holds, f, reasons = verdict(
        report, nominal=nominal, segment_ms=10_000, job_failures=measured.job_failures
    )
    uploads = report["uploads"]
    row(
        f"{cameras} cameras",
        f"{'holds' if holds else 'does not hold'}: offered {f['offered']:,.0f} of a nominal "
        f"{nominal:,.0f} msg/s, processed {f['processed']:,.0f} msg/s "
        f"(ratio {ratio(f['processed'], f['offered'])}), backlog trend {f['trend']:+,.0f}/min, "
        f"at end {f['final']:,.0f}; uploads {uploads['per_second']}/s, p99 "
        f"{uploads['latency_p99_ms']:,.0f} ms, refused by rule {f['refused']:,.0f}; errors "
        f"{report['errors']['total']:.0f}, job failures {measured.job_failures:.0f}",
    )
    wall = report["window"]["ended"] - report["window"]["began"]
    cost = gateway_cost(cameras, measured.gateway_cpu_s, wall)
    each = ", ".join(f"{c / wall:.2f}" for c in measured.gateway_cpu_s)
    rss = ", ".join(f"{r:,.0f}" for r in measured.gateway_rss_mib)
    row(
        f"  gateway ({args.gateways} process{'es' if args.gateways > 1 else ''})",
        f"{cost['cores']:.2f} cores busy ({each}): {cost['cores_per_10k']:.2f} gateway cores "
        f"per 10,000 cameras, {cost['cameras_per_core']:,.0f} cameras per gateway core; "
        f"peak RSS {rss} MiB; mean batch "
        + ", ".join(f"{name} {size:.1f}" for name, size in measured.mean_batch.items()),
    )
    per_camera_us = cost["cores"] * 1e6 / cameras
    row(
        "  against the machine",
        f"gateway CPU {per_camera_us:,.0f} µs per camera-second (the goal, one core per "
        f"10,000 cameras, is 100 µs); a bare paho subscriber on this broker, same run: "
        f"{measured.bare_us:,.0f} µs per message; ratio {per_camera_us / measured.bare_us:.2f} "
        f"bare messages per camera-second",
    )
    runner = report["runner"]
    row(
        "  fleet runner",
        f"{runner['worker_cores']:.2f} cores busy in {args.workers} worker(s): "
        f"{runner['devices_per_worker_core'] or 0:,} simulated cameras per core, RSS "
        f"{runner['worker_rss_mib']:,.0f} MiB; coordinator {runner['coordinator_cores']:.2f} "
        f"cores",
    )
    row("  machine", f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for reason in reasons:
        row("  does not hold", reason)
    if report["errors"]["total"]:
        row("  errors", str(report["errors"]))
    return holds


async def run(args: argparse.Namespace) -> None:
    heading(
        f"fleet size: continuous cameras, {args.segment_bytes}-byte synthetic 10-s segments, "
        f"telemetry 30 s, {args.step_seconds:.0f} s per size, database {args.db}, "
        f"broker auth {args.auth}"
    )
    largest = 0
    for cameras in args.sizes:
        if not await step(args, cameras):
            break
        largest = cameras
    row("largest fleet that held", f"{largest} cameras (goal 10,000 devices)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(v) for v in text.split(",")],
        default=[250, 500, 1000, 2000],
    )
    parser.add_argument("--step-seconds", type=float, default=60.0)
    parser.add_argument("--segment-bytes", type=int, default=66_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--gateways",
        type=int,
        default=1,
        help="gateway processes; above 1 on a shared subscription (scale-out)",
    )
    parser.add_argument("--store", choices=("file", "s3"), default="file")
    parser.add_argument(
        "--rogue-every",
        type=int,
        default=0,
        help="every n-th camera has no plan and records anyway (refused by rule; 0: none)",
    )
    parser.add_argument("--keep", type=Path, help="work (and log) directories go here")
    parser.add_argument(
        "--auth",
        choices=AUTH_CHOICES,
        default="none",
        help="mosquitto-dynsec: dynamic security, every camera its own credentials",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # aiomqtt warns of every publish beyond ten in flight: the first desired documents are.
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
