"""The benchmarks' verdicts: the fleet (bench.fleet_size, issue 16 item 3): a size holds only if
the fleet offered its load, uploads came back within a segment, nothing failed, and the
backlog did not grow; each way of missing is named. The stop fan-out (bench.stop_fanout,
issue 16 item 1): p99 from the request, within 1.5x the bare fan-out."""

from __future__ import annotations

from typing import Any

import pytest

from bench.fleet_size import nominal_rate, verdict
from bench.stop_fanout import verdict as stop_verdict

NOMINAL = nominal_rate(4000, segment_seconds=10, telemetry_seconds=30)


def report(
    *, offered: float = NOMINAL, p99: float = 900.0, errors: int = 0, growth: float = 0.0
) -> dict[str, Any]:
    samples = [
        {"t": t, "msgs_per_s": offered, "processed_per_s": offered, "backlog": growth * t}
        for t in range(60)
    ]
    return {"samples": samples, "uploads": {"latency_p99_ms": p99}, "errors": {"total": errors}}


def test_the_nominal_rate_of_a_fleet() -> None:
    assert round(NOMINAL) == 933  # 4,000 cameras: 2 messages a segment, telemetry each 30 s


@pytest.mark.parametrize(
    ("case", "jobs", "reason"),
    [
        (report(), 0, None),
        (report(offered=686), 0, "offered 686 of a nominal 933"),  # the 4,000 run
        (report(p99=19_800), 0, "upload p99 19,800 ms"),
        (report(errors=3), 0, "3 errors"),
        (report(), 1, "1 job failures"),
        (report(growth=NOMINAL), 0, "backlog grew"),
    ],
)
def test_a_size_holds_only_if_nothing_is_missed(
    case: dict[str, Any], jobs: float, reason: str | None
) -> None:
    holds, _, reasons = verdict(case, nominal=NOMINAL, segment_ms=10_000, job_failures=jobs)
    if reason is None:
        assert (holds, reasons) == (True, [])
    else:
        assert not holds
        assert len(reasons) == 1
        assert reason in reasons[0]


@pytest.mark.parametrize(
    ("from_request", "bare", "met"),
    [
        (23.7, 3.3, False),  # issue 16: 7.2x the bare fan-out, "met" by the old verdict
        (3.0, 2.0, True),  # 1.5x exactly
        (3.1, 2.0, False),
        (1.0, 3.3, True),
    ],
)
def test_the_stop_fanout_verdict_is_measured_from_the_request(
    from_request: float, bare: float, met: bool
) -> None:
    verdict_met, factor = stop_verdict(from_request, bare)
    assert verdict_met is met
    assert factor == pytest.approx(from_request / bare)
