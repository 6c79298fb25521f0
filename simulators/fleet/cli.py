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
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from simulators.fleet.errors import FleetError
from simulators.fleet.options import (
    DEFAULT_HOME_PRODUCTS,
    DEFAULT_MEMBERSHIPS,
    DEFAULT_PLANS,
    DEFAULT_START,
    FleetOptions,
    parse_duration,
    parse_plan_mix,
)
from simulators.fleet.run import run_fleet
from simulators.fleet.workers import worker_process


def _output_options(parser: argparse.ArgumentParser) -> None:
    """Where the run writes: the report, the work directory, the log (not options)."""
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where the run keeps its logs (and an embedded service its database and "
        f"objects); default: a new directory under ./{WORK_ROOT}/, removed after a run "
        "that passes unless --keep",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="one level for every logger of the work directory's fleet.log, third-party "
        "ones included (amqtt, asyncssh ...); default: the fleet's and the service's INFO, "
        "the others from WARNING",
    )


# Over 60 lines: one declaration per option, no logic; the options read best together.
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kanjia simulate",
        description="Run simulated households (cameras, routers, satellites) against a gateway. "
        "Shows a live status (redrawn in place on a terminal, plain lines otherwise), then a "
        "report: the effective cadences and a pass/fail verdict with its thresholds; exits 1 "
        "when the run fails.",
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
        "--home-products",
        type=lambda text: parse_plan_mix(text, "--home-products"),
        default=DEFAULT_HOME_PRODUCTS,
        help="the routers' home-network products (R16, R17), product=weight,...; 'none' for "
        "none; the app then asks for tunings against them",
    )
    parser.add_argument(
        "--memberships",
        type=lambda text: parse_plan_mix(text, "--memberships"),
        default=DEFAULT_MEMBERSHIPS,
        help="the accounts' family-cloud membership tiers (R18), tier=weight,...; 'none' for "
        "none; the app saves ranges to the family cloud against their quotas",
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
    parser.add_argument("--service-url", help="a running service (else an embedded one)")
    parser.add_argument("--platform-token")
    parser.add_argument(
        "--metrics-url",
        dest="metrics_urls",
        action="append",
        default=[],
        help="a further gateway of the service (shared subscription) whose /metrics count "
        "with --service-url's (repeat for more)",
    )
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
    _output_options(parser)
    return parser


#: Where the runs' work directories go by default, under the current directory.
WORK_ROOT = "var/simulate"
#: The project's loggers: INFO in fleet.log; the others from WARNING unless --log-level.
OWN_LOGGERS = ("gateway", "devices", "replay", "storage", "simulators")

#: Flags named otherwise than the option they set (the others are named alike).
_OPTION_OF_FLAG = {"segment_bytes": "synthetic_bytes"}


def options_from(args: argparse.Namespace) -> FleetOptions:
    """The options that the flags set (``--report``, ``--workdir``, ``--keep`` and
    ``--log-level`` are not options)."""
    names = {field.name for field in dataclasses.fields(FleetOptions)}
    given = {_OPTION_OF_FLAG.get(flag, flag): value for flag, value in vars(args).items()}
    given["metrics_urls"] = tuple(given.get("metrics_urls") or ())
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
    saved = sum(
        n for k, n in app.get("outcomes", {}).items() if k.startswith("family-cloud save 2")
    )
    lines.append(
        f"app requests {app['requests']} (p99 {app['latency_p99_ms']} ms), "
        f"family-cloud saves {saved}"
    )
    lines.append(f"errors {errors['total']}" + (f": {errors}" if errors["total"] else ""))
    if "runner" in report:
        lines.append(cost_line(report["runner"]))
    return [*lines, *verdict_lines(report)]


def cost_line(cost: Mapping[str, Any]) -> str:
    """What simulating the fleet cost (``report.runner``), one line."""
    where = "this process, inline" if cost["inline"] else "the worker processes"
    line = (
        f"runner cost: {cost['worker_cores']:.2f} cores busy in {where} "
        f"({cost['devices_per_worker_core'] or 'n/a'} simulated devices per core, "
        f"{cost['worker_cpu_ms_per_device_s'] or 0:.3f} CPU ms per device per second, "
        f"RSS {cost['worker_rss_mib']:,.0f} MiB)"
    )
    if cost["coordinator_cores"] is not None:
        line += f"; coordinator {cost['coordinator_cores']:.2f} cores"
    return line


def verdict_lines(report: Mapping[str, Any]) -> list[str]:
    """The effective cadences, and the verdict with its thresholds and reasons."""
    pace, judged = report["cadences"], report["verdict"]
    floored = " (slowed to the --min-real-interval floor)" if pace["floored"] else ""
    figures, limits = judged["figures"], judged["thresholds"]
    rate = (
        f"telemetry offered {figures['telemetry_offered_per_s']:g} of a nominal "
        f"{figures['telemetry_nominal_per_s']:g} msg/s"
        if figures["telemetry_rate_judged"]
        else "telemetry rate not judged (a run shorter than two telemetry periods)"
    )
    lines = [
        f"cadences at x{pace['clock_speed']:g}: a {pace['segment_s']:g}-s segment every "
        f"{pace['segment_every_real_s']:g} s real ({pace['segment_every_sim_s']:g} s "
        f"simulated), telemetry every {pace['telemetry_every_real_s']:g} s real "
        f"({pace['telemetry_every_sim_s']:g} s simulated){floored}",
        f"verdict: {'PASS' if judged['pass'] else 'FAIL'}; {rate}",
        f"  passes with: telemetry offered >= {limits['telemetry_offered_min_share']:.0%} of "
        f"nominal, upload p99 under {limits['upload_p99_max_ms']:g} ms (a segment's real "
        f"cadence), no error",
    ]
    return lines + [f"  fails: {reason}" for reason in judged["reasons"]]


def _logging(workdir: Path, everyone: str | None) -> None:
    """The run's log, ``fleet.log`` in the work directory (the terminal shows the status)."""
    logging.basicConfig(
        filename=workdir / "fleet.log",
        level=everyone or logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(everyone or logging.INFO)


def work_directory(given: Path | None) -> Path:
    """``--workdir``, or a new directory under ``./var/simulate`` named by the time."""
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        return given.resolve()
    root = Path(WORK_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=root)).resolve()


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
    workdir = work_directory(args.workdir)
    _logging(workdir, args.log_level)
    try:
        report = asyncio.run(_main(options, workdir))
    except FleetError as exc:
        print(f"kanjia simulate: {exc}", file=sys.stderr)
        return 2
    passed = bool(report["verdict"]["pass"])
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for line in summary_lines(report):
        print(line)
    if not passed or args.keep or args.workdir is not None:
        print(f"work directory (logs): {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if passed else 1
