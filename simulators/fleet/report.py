"""Sections of the run's JSON report (its fields are read by the benchmarks: keep them)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from simulators.fleet.households import HouseholdSpec
from simulators.fleet.metrics import percentile_ms
from simulators.fleet.options import NO_PLAN, FleetOptions
from simulators.fleet.target import Target


def service_summary(target: Target) -> dict[str, Any]:
    return {
        "mode": "embedded" if target.embedded else "remote",
        "http": target.http_url,
        "broker": target.broker,
    }


def fleet_summary(households: Sequence[HouseholdSpec]) -> dict[str, Any]:
    roles: Counter[str] = Counter()
    plans: Counter[str] = Counter()
    rogue = 0
    memberships = Counter(home.membership or NO_PLAN for home in households)
    for home in households:
        for device in home.devices:
            roles[device.role] += 1
            if device.role == "camera":
                plans[device.plan or NO_PLAN] += 1
                rogue += device.rogue
    return {
        "households": len(households),
        "devices": dict(roles),
        "camera_plans": dict(sorted(plans.items())),
        "rogue_cameras": rogue,
        #: The accounts' family-cloud membership tiers (R18), ordered at provisioning.
        "memberships": dict(sorted(memberships.items())),
    }


def messages_summary(
    totals: Mapping[str, Any], *, elapsed: float, processed: float
) -> dict[str, Any]:
    """``totals`` of the workers over ``elapsed`` seconds; ``processed`` by the gateway."""
    return {
        "published": totals["published"],
        "per_second": round(totals["published"] / elapsed, 1),
        "by_topic": dict(sorted(totals["published_by"].items())),
        "gateway_processed": int(processed),
    }


def uploads_summary(
    totals: Mapping[str, Any],
    *,
    elapsed: float,
    latency: Sequence[float],
    indexed: float,
    swept: float,
) -> dict[str, Any]:
    """``totals`` of the workers over ``elapsed`` seconds; ``indexed`` and ``swept`` by
    the gateway."""
    return {
        "ok": totals["uploads"],
        "per_second": round(totals["uploads"] / elapsed, 2),
        "bytes": totals["upload_bytes"],
        "refused": dict(sorted(totals["refusals"].items())),
        "latency_p50_ms": percentile_ms(latency, 50),
        "latency_p99_ms": percentile_ms(latency, 99),
        "gateway_indexed": int(indexed),
        "gateway_swept": int(swept),
    }


def errors_summary(*counts: Mapping[str, int]) -> dict[str, int]:
    """Everything counted as an error, by what, and their ``total``."""
    errors: Counter[str] = Counter()
    for count in counts:
        errors.update(count)
    return {"total": sum(errors.values()), **dict(sorted(errors.items()))}


def cadences(options: FleetOptions) -> dict[str, Any]:
    """The devices' effective cadences, in simulated and in real seconds at the clock's
    speed: ``floored`` when ``--min-real-interval`` slowed one down (a camera then records
    a segment's length of video every ``segment_every``, with gaps between)."""
    pacing, speed = options.pacing, options.clock_speed
    return {
        "clock_speed": speed,
        "segment_s": pacing.segment_seconds,
        "segment_every_sim_s": pacing.segment_every,
        "segment_every_real_s": round(pacing.segment_every / speed, 3),
        "telemetry_every_sim_s": pacing.telemetry_every,
        "telemetry_every_real_s": round(pacing.telemetry_every / speed, 3),
        "event_gap_real_s": [round(gap / speed, 3) for gap in pacing.event_gap],
        "floored": pacing.segment_every > pacing.segment_seconds
        or pacing.telemetry_every > options.telemetry_seconds,
    }


#: A run passes when the devices offered at least this share of their nominal telemetry.
MIN_OFFERED_SHARE = 0.95
#: The offered rate is judged only over at least this many telemetry periods.
MIN_PERIODS_JUDGED = 2


def verdict(
    *,
    devices: int,
    telemetry_sent: int,
    run_s: float,
    telemetry_every_real_s: float,
    segment_every_real_s: float,
    uploads: int,
    upload_p99_ms: float,
    errors: int,
) -> dict[str, Any]:
    """Whether the run passes, its thresholds, its figures and every reason it fails.

    It passes when (1) the devices kept their cadence: the telemetry they sent over the
    measured run is at least 95 % of its nominal rate (every device, one message each
    telemetry period; telemetry goes on whatever the plans and stops, so it measures the
    fleet itself; judged over at least two periods), (2) the upload round trip's p99 stays
    under the real time between two segments (else uploads pile up), and (3) nothing was
    counted as an error (the gateway's backlog not drained at the end is one).
    """
    nominal = devices / telemetry_every_real_s if telemetry_every_real_s > 0 else 0.0
    offered = telemetry_sent / run_s if run_s > 0 else 0.0
    judged = run_s >= MIN_PERIODS_JUDGED * telemetry_every_real_s
    limit_ms = round(segment_every_real_s * 1000, 1)
    reasons = []
    if judged and offered < MIN_OFFERED_SHARE * nominal:
        reasons.append(
            f"telemetry offered {offered:,.1f} msg/s, under 95 % of the nominal {nominal:,.1f}"
        )
    if uploads and upload_p99_ms >= limit_ms:
        reasons.append(f"upload p99 {upload_p99_ms:,.0f} ms, not under {limit_ms:,.0f} ms")
    if errors:
        reasons.append(f"{errors} error(s)")
    return {
        "pass": not reasons,
        "reasons": reasons,
        "thresholds": {
            "telemetry_offered_min_share": MIN_OFFERED_SHARE,
            "upload_p99_max_ms": limit_ms,
            "errors_max": 0,
        },
        "figures": {
            "telemetry_nominal_per_s": round(nominal, 2),
            "telemetry_offered_per_s": round(offered, 2),
            "telemetry_rate_judged": judged,
            "upload_p99_ms": upload_p99_ms,
            "errors": errors,
        },
    }


def runner_cost(
    *,
    devices: int,
    wall_s: float,
    worker_cpu_s: float,
    coordinator_cpu_s: float,
    worker_rss_mib: float,
    inline: bool,
) -> dict[str, Any]:
    """What simulating the fleet cost over the measured run (issue 16): the worker
    processes' CPU seconds per wall second (cores), per simulated device, and simulated
    devices per worker core; the coordinator (this process: orders, app, samples) apart.

    ``inline`` (``--workers 0``): the devices run in the coordinator's process, so the
    workers' figure is that process's, with the coordinator (and an embedded gateway) in
    it; the coordinator's own figure is then not apart and reads ``None``."""
    wall = max(wall_s, 1e-6)
    cores = worker_cpu_s / wall
    return {
        "wall_s": round(wall_s, 2),
        "devices": devices,
        "inline": inline,
        "worker_cores": round(cores, 3),
        "worker_cpu_ms_per_device_s": round(cores * 1000 / devices, 4) if devices else None,
        "devices_per_worker_core": round(devices / cores) if cores > 0 else None,
        "worker_rss_mib": round(worker_rss_mib, 1),
        "coordinator_cores": None if inline else round(coordinator_cpu_s / wall, 3),
    }
