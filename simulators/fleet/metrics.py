"""Reading the gateway's Prometheus metrics, and percentiles of the report."""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping, Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0-100) of ``values``; 0 when there are none."""
    if not 0 <= q <= 100:
        raise ValueError("q is a percentage from 0 to 100")
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    """The ``q`` percentile of durations in seconds, as milliseconds to one decimal."""
    return round(percentile(seconds, q) * 1000, 1)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def parse_metrics(text: str) -> dict[str, dict[str, float]]:
    """Prometheus text: ``{name: {labels: value}}`` (labels as written, ``""`` for none)."""
    found: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match is None or line.startswith("#"):
            continue
        name, labels, value = match.groups()
        with contextlib.suppress(ValueError):
            found.setdefault(name, {})[labels or ""] = float(value)
    return found


def metric_total(metrics: Mapping[str, Mapping[str, float]], name: str, where: str = "") -> float:
    """The sum of the samples of ``name`` whose labels contain ``where``."""
    return sum(v for labels, v in metrics.get(name, {}).items() if where in labels)


#: Gateway counters that only move when something went wrong.
GATEWAY_FAILURES = (
    ("kanjia_mqtt_handler_errors_total", ""),
    ("kanjia_mqtt_malformed_total", ""),
    ("kanjia_mqtt_unknown_device_total", ""),
    ("kanjia_segments_rejected_total", ""),
    ("kanjia_job_runs_total", 'outcome="error"'),
)


def failures_between(
    before: Mapping[str, Mapping[str, float]], after: Mapping[str, Mapping[str, float]]
) -> dict[str, int]:
    """The failure counters of the gateway that moved from ``before`` to ``after``."""
    out = {}
    for name, where in GATEWAY_FAILURES:
        delta = metric_total(after, name, where) - metric_total(before, name, where)
        if delta:
            out[f"gateway:{name.removeprefix('kanjia_').removesuffix('_total')}"] = int(delta)
    return out
