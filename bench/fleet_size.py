"""Benchmark 2, fleet size: the largest fleet one gateway serves with a lag that does not
grow: cameras on continuous plans, synthetic media (``--segment-bytes``), a 10-s segment
every 10 s and telemetry every 30 s, in real time.

For each size of ``--sizes`` (cameras), a fresh private Mosquitto and a gateway
(``--db``, the filesystem store, the wall clock) are started in this process and the
fleet runner (:mod:`simulators.fleet`, devices in ``--workers`` processes) provisions the
cameras through the platform API and runs them for ``--step-seconds``. Every second it
compares what the devices published with what the gateway has taken in (the backlog).

A size *holds* only when (:func:`verdict`) the fleet offered at least 95 % of its nominal
rate, the upload round trip's p99 stayed under one segment length (10 s), nothing failed
(no error, no failed job of the gateway), and the backlog did not grow (its trend over the
second half of the step under one second's worth of messages per minute, and under one
second's worth at the end); every reason a size does not hold is printed, and the
benchmark stops at the first such size. The baseline of the same run is the rate the
devices offered: a gateway that keeps up processes 1.0 of it. Each size also prints this
process's CPU per wall second and peak RSS: the gateway (and the fleet's coordinator; the
devices run in worker processes), read as gateway cores per 10,000 cameras.

With ``--auth mosquitto-dynsec`` the broker runs Mosquitto's dynamic security, the gateway
``KANJIA_MQTT_AUTH=mosquitto-dynsec``, and every camera signs in with its own credentials
(issued in bulk before the fleet starts).

Run: ``.venv/bin/python -m bench.fleet_size [--sizes 250,500,1000,2000]
[--step-seconds 60] [--auth none|mosquitto-dynsec]`` (the issue asks for 5 minutes per
size: ``--step-seconds 300``).
Goal: 10,000 devices.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    AUTH_CHOICES,
    PLATFORM_TOKEN,
    bench_settings,
    credential_devices,
    database,
    heading,
    private_broker,
    provision_fleet,
    ratio,
    row,
)
from gateway.lifecycle import freeze_heap
from gateway.service import Gateway
from simulators.credentials import Credentials
from simulators.fleet import DeviceSpec, FleetOptions, HouseholdSpec, run_fleet

CAMERAS_PER_HOME = 4
PLAN = "continuous-7d"


def households(cameras: int, prefix: str) -> tuple[HouseholdSpec, ...]:
    homes = []
    for n in range(-(-cameras // CAMERAS_PER_HOME)):
        home = f"{prefix}-h{n:05d}"
        count = min(CAMERAS_PER_HOME, cameras - n * CAMERAS_PER_HOME)
        homes.append(
            HouseholdSpec(
                account_id=home,
                owner_id=f"{home}-owner",
                star_level=3,
                devices=tuple(
                    DeviceSpec(device_id=f"{home}-cam{c}", role="camera", plan=PLAN)
                    for c in range(1, count + 1)
                ),
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


def nominal_rate(cameras: int, *, segment_seconds: float, telemetry_seconds: float) -> float:
    """Messages a second the fleet should offer: per camera an ``upload/req`` and a
    ``segment`` notice per segment, and a ``telemetry`` message per period."""
    return cameras * (2 / segment_seconds + 1 / telemetry_seconds)


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


def job_failures(gateway: Gateway) -> float:
    """Clock-driven job runs of the gateway that failed (``kanjia_job_runs{outcome=error}``)."""
    return sum(
        sample.value
        for metric in gateway.services.metrics.registry.collect()
        if metric.name == "kanjia_job_runs"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels.get("outcome") == "error"
    )


async def device_logins(
    gateway: Gateway, homes: Sequence[HouseholdSpec], auth: str
) -> dict[str, Credentials]:
    """Each camera's own broker identity when the broker checks them (none otherwise)."""
    if auth == "none":
        return {}
    ids = [device.device_id for home in homes for device in home.devices]
    passwords = await credential_devices(gateway, ids)
    return {d: Credentials(device_id=d, username=d, password=p) for d, p in passwords.items()}


async def step(args: argparse.Namespace, cameras: int) -> bool:
    with tempfile.TemporaryDirectory(prefix="kanjia-bench-fleet-") as tmp_name:
        tmp = Path(tmp_name)
        if args.keep is not None:
            tmp = args.keep / f"{cameras}"
            tmp.mkdir(parents=True, exist_ok=True)
        with private_broker(args.auth, tmp) as broker:
            async with database(args.db, tmp) as url:
                settings = bench_settings(
                    tmp, database_url=url, mqtt_url=broker.url, mqtt_auth=args.auth
                )
                async with Gateway(settings=settings) as gateway:
                    freeze_heap()  # as kanjia serve does
                    mqtt = gateway.services.mqtt
                    assert mqtt is not None
                    await asyncio.wait_for(mqtt.connected.wait(), 10)
                    options = FleetOptions(
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
                        service_url=gateway.url,
                        platform_token=PLATFORM_TOKEN,
                        # Without the admin's login of a dynsec broker's URL: each device
                        # signs in with its own credentials.
                        mqtt_url=f"mqtt://127.0.0.1:{broker.port}",
                    )
                    homes = households(cameras, options.id_prefix)
                    await provision_fleet(gateway, homes)
                    logins = await device_logins(gateway, homes, args.auth)
                    cpu, wall = time.process_time(), time.perf_counter()
                    report = await run_fleet(
                        options,
                        workdir=tmp,
                        households=homes,
                        provisioned=True,
                        credentials=logins,
                    )
                    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                    failed_jobs = job_failures(gateway)
    nominal = nominal_rate(cameras, segment_seconds=10, telemetry_seconds=30)
    holds, f, reasons = verdict(
        report, nominal=nominal, segment_ms=10_000, job_failures=failed_jobs
    )
    uploads = report["uploads"]
    row(
        f"{cameras} cameras",
        f"{'holds' if holds else 'does not hold'}: offered {f['offered']:,.0f} of a nominal "
        f"{nominal:,.0f} msg/s, processed {f['processed']:,.0f} msg/s "
        f"(ratio {ratio(f['processed'], f['offered'])}), backlog trend {f['trend']:+,.0f}/min, "
        f"at end {f['final']:,.0f}; uploads {uploads['per_second']}/s, p99 "
        f"{uploads['latency_p99_ms']:,.0f} ms; errors {report['errors']['total']:.0f}, "
        f"job failures {failed_jobs:.0f}",
    )
    # This process runs the gateway and the fleet's coordinator; the devices run in the
    # fleet's worker processes, so this is (a little more than) the gateway's cost.
    cores = cpu / wall if wall else 0.0
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row(
        "  gateway process",
        f"{cores:.2f} cores busy ({cores * 10_000 / cameras:.2f} cores per 10,000 cameras at "
        f"this size), peak RSS {rss_mib:,.0f} MiB",
    )
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
