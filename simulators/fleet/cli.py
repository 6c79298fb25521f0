"""``kanjia simulate`` (``python -m simulators.fleet``): options in, report out."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from simulators.fleet.errors import FleetError
from simulators.fleet.options import (
    DEFAULT_PLANS,
    DEFAULT_START,
    FleetOptions,
    parse_duration,
    parse_plan_mix,
)
from simulators.fleet.run import run_fleet
from simulators.fleet.workers import worker_process


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kanjia simulate",
        description="Run simulated households (cameras, routers, satellites) against a gateway.",
    )
    parser.add_argument("--households", type=int, default=10)
    parser.add_argument(
        "--clock-speed", type=float, default=1.0, help="simulated seconds per real second"
    )
    parser.add_argument(
        "--duration", type=parse_duration, default=60.0, help="real time: 90s, 2m, 1h"
    )
    parser.add_argument("--media", choices=("real", "synthetic"), default="synthetic")
    parser.add_argument(
        "--plans",
        type=parse_plan_mix,
        default=DEFAULT_PLANS,
        help="plan=weight,...; 'none' for no plan",
    )
    parser.add_argument(
        "--stop-rate",
        type=float,
        default=2.0,
        help="broadband stop/resume orders per simulated hour",
    )
    parser.add_argument(
        "--app-rate",
        type=float,
        default=6.0,
        help="app timeline/playlist requests per simulated hour",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    parser.add_argument("--service-url", help="a running service (else an embedded one)")
    parser.add_argument("--platform-token")
    parser.add_argument("--mqtt-url", help="the broker (embedded mode: instead of amqtt)")
    parser.add_argument("--ca-file", help="CA (PEM) that an mqtts:// broker is verified against")
    parser.add_argument("--workers", type=int, default=1, help="device processes (0: in this one)")
    parser.add_argument("--rogue-share", type=float, default=0.05)
    parser.add_argument(
        "--connect-concurrency",
        type=int,
        help="devices connecting at once (default 64; 1 for the embedded amqtt broker)",
    )
    parser.add_argument("--telemetry-seconds", type=float, default=30.0)
    parser.add_argument("--segment-seconds", type=float, default=10.0)
    parser.add_argument("--segment-bytes", type=int, default=66_000, help="synthetic media size")
    parser.add_argument(
        "--min-real-interval", type=float, default=5.0, help="real-time floor of device cadences"
    )
    parser.add_argument(
        "--start", type=datetime.fromisoformat, default=DEFAULT_START, help="embedded clock start"
    )
    parser.add_argument("--prefix", default="", help="id prefix (default sim<seed>)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser


#: Flags named otherwise than the option they set (the others are named alike).
_OPTION_OF_FLAG = {"segment_bytes": "synthetic_bytes"}


def options_from(args: argparse.Namespace) -> FleetOptions:
    """The options that the flags set (``--report`` and ``--keep`` are not options)."""
    names = {field.name for field in dataclasses.fields(FleetOptions)}
    given = {_OPTION_OF_FLAG.get(flag, flag): value for flag, value in vars(args).items()}
    return FleetOptions(**{name: value for name, value in given.items() if name in names})


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    devices, msgs, uploads = report["devices"], report["messages"], report["uploads"]
    orders, app, errors = report["orders"], report["app"], report["errors"]
    lines = [
        f"households {report['fleet']['households']}, devices {devices['total']} "
        f"(peak connected {devices['connected_peak']}, converged at end "
        f"{devices['converged_at_end']}/{devices['known_to_service']})",
        f"simulated {report['timing']['sim_hours']} h in {report['timing']['run_s']} s; "
        f"messages {msgs['published']} ({msgs['per_second']}/s), processed by the gateway "
        f"{msgs['gateway_processed']}",
        f"uploads {uploads['ok']} ({uploads['per_second']}/s, p99 {uploads['latency_p99_ms']} ms), "
        f"indexed {uploads['gateway_indexed']}, swept {uploads['gateway_swept']}, "
        f"refused {uploads['refused'] or 'none'}",
    ]
    if "skipped" in orders:
        lines.append(f"orders skipped: {orders['skipped']}")
    else:
        lines.append(
            f"orders {orders['counts']}; convergence p50 "
            f"{orders['convergence_from_accepted_p50_ms']} ms, p99 "
            f"{orders['convergence_from_accepted_p99_ms']} ms"
        )
    lines.append(f"app requests {app['requests']} (p99 {app['latency_p99_ms']} ms)")
    lines.append(f"errors {errors['total']}" + (f": {errors}" if errors["total"] else ""))
    return lines


async def _main(options: FleetOptions, workdir: Path) -> dict[str, Any]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return await run_fleet(options, workdir=workdir, status=sys.stderr, stop=stop)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["--worker"]:
        return asyncio.run(worker_process())
    parser = build_parser()
    args = parser.parse_args(args_list)
    try:
        options = options_from(args)
    except ValueError as exc:
        parser.error(str(exc))
    workdir = Path(tempfile.mkdtemp(prefix="kanjia-fleet-"))
    logging.basicConfig(
        filename=workdir / "fleet.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        report = asyncio.run(_main(options, workdir))
    except FleetError as exc:
        print(f"kanjia simulate: {exc}", file=sys.stderr)
        return 2
    errors = int(report["errors"]["total"])
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for line in summary_lines(report):
        print(line)
    if errors or args.keep:
        print(f"work directory (logs): {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if errors else 0
