"""Sections of the run's JSON report (its fields are read by the benchmarks: keep them)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from simulators.fleet.households import HouseholdSpec
from simulators.fleet.metrics import percentile_ms
from simulators.fleet.options import NO_PLAN
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
