"""Benchmark 2, fleet size: the largest fleet one gateway serves with a lag that does not
grow: cameras on continuous plans, synthetic media (``--segment-bytes``), a 10-s segment
every 10 s and telemetry every 30 s, in real time.

For each size of ``--sizes`` (cameras), a fresh private Mosquitto and a gateway
(``--db``, the filesystem store, the wall clock) are started in this process and the
fleet runner (:mod:`simulators.fleet`, devices in ``--workers`` processes) provisions the
cameras through the platform API and runs them for ``--step-seconds``. Every second it
compares what the devices published with what the gateway has taken in (the backlog).

A size *holds* when nothing failed, the backlog's trend over the second half of the step
is under one second's worth of messages per minute, and it ends under one second's worth;
the benchmark stops at the first size that does not hold. The baseline of the same run is
the rate the devices offered: a gateway that keeps up processes 1.0 of it.

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
import tempfile
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


def verdict(report: dict[str, Any]) -> tuple[bool, dict[str, float]]:
    samples = report["samples"]
    half = samples[len(samples) // 2 :]
    offered = sum(s["msgs_per_s"] for s in half) / max(1, len(half))
    processed = sum(s["processed_per_s"] for s in half) / max(1, len(half))
    trend = slope([(s["t"], s["backlog"]) for s in half]) * 60  # messages per minute
    final = samples[-1]["backlog"] if samples else 0.0
    figures = {
        "offered": offered,
        "processed": processed,
        "trend": trend,
        "final": final,
        "errors": float(report["errors"]["total"]),
    }
    holds = figures["errors"] == 0 and trend < max(offered, 1.0) and final < max(offered, 1.0)
    return holds, figures


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
                    report = await run_fleet(
                        options,
                        workdir=tmp,
                        households=homes,
                        provisioned=True,
                        credentials=logins,
                    )
    holds, f = verdict(report)
    uploads = report["uploads"]
    row(
        f"{cameras} cameras",
        f"{'holds' if holds else 'does not hold'}: offered {f['offered']:,.0f} msg/s, "
        f"processed {f['processed']:,.0f} msg/s (ratio {ratio(f['processed'], f['offered'])}), "
        f"backlog trend {f['trend']:+,.0f}/min, at end {f['final']:,.0f}; uploads "
        f"{uploads['per_second']}/s, p99 {uploads['latency_p99_ms']:,.0f} ms; "
        f"errors {report['errors']['total']:.0f}",
    )
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
