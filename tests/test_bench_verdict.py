"""The benchmarks' verdicts: the fleet (bench.fleet_size, issue 16 item 3): a size holds only if
the fleet offered its load, uploads came back within a segment, nothing failed, and the
backlog did not grow; each way of missing is named. The stop fan-out (bench.stop_fanout,
issue 16 item 1): p99 from the request, within 1.5x the bare fan-out."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from bench.fleet_size import (
    cpu_between,
    gateway_cost,
    households,
    nominal_rate,
    proc_cpu_s,
    proc_peak_rss_mib,
    verdict,
)
from bench.stop_fanout import verdict as stop_verdict

NOMINAL = nominal_rate(4000, segment_seconds=10, telemetry_seconds=30)


def report(
    *,
    offered: float = NOMINAL,
    p99: float = 900.0,
    errors: int = 0,
    growth: float = 0.0,
    refused: int = 0,
) -> dict[str, Any]:
    samples = [
        {"t": t, "msgs_per_s": offered, "processed_per_s": offered, "backlog": growth * t}
        for t in range(60)
    ]
    uploads = {"latency_p99_ms": p99, "refused": {"not_entitled": refused} if refused else {}}
    return {"samples": samples, "uploads": uploads, "errors": {"total": errors}}


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
        # Uploads refused by rule (a rogue camera without a plan) are outcomes, not errors.
        (report(refused=250), 0, None),
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


def test_refused_cameras_send_no_segment_notice() -> None:
    """A camera refused by rule asks to upload each segment but never sends its notice."""
    full = nominal_rate(100, segment_seconds=10, telemetry_seconds=30)
    assert nominal_rate(100, segment_seconds=10, telemetry_seconds=30, refused=10) == (
        full - 10 / 10
    )


def test_every_nth_camera_is_rogue_and_has_no_plan() -> None:
    cameras = [d for home in households(12, "t", rogue_every=4) for d in home.devices]
    rogue = [d.device_id for d in cameras if d.rogue]
    assert rogue == ["t-h00000-cam4", "t-h00001-cam4", "t-h00002-cam4"]
    assert all(d.plan is None for d in cameras if d.rogue)
    assert all(d.plan == "continuous-7d" for d in cameras if not d.rogue)
    assert not any(d.rogue for home in households(12, "t") for d in home.devices)


TRACE = [(10.0, 1.0), (11.0, 1.5), (12.0, 2.5), (13.0, 2.5)]


@pytest.mark.parametrize(
    ("began", "ended", "cpu"),
    [
        (10.0, 13.0, 1.5),  # on samples
        (10.5, 12.0, 1.25),  # from half-way between two samples
        (5.0, 10.0, 0.0),  # before the first sample: clamped to it
        (12.0, 20.0, 0.0),  # after the last: clamped
        (11.5, 12.5, 0.5),  # across a sample, idle after it
    ],
)
def test_cpu_over_a_window_is_read_between_samples(began: float, ended: float, cpu: float) -> None:
    assert cpu_between(TRACE, began, ended) == pytest.approx(cpu)


@pytest.mark.parametrize(
    ("cameras", "cpu_s", "wall", "cores", "per_10k", "per_core"),
    [
        (1000, [30.0], 60.0, 0.5, 5.0, 2000),  # one gateway, half a core for 1,000
        (2000, [30.0, 30.0], 60.0, 1.0, 5.0, 2000),  # two gateways: their CPU adds up
        (4000, [24.0], 60.0, 0.4, 1.0, 10_000),  # the goal: a core per 10,000 cameras
        (100, [0.0], 60.0, 0.0, 0.0, 0),  # no CPU measured: no figure, not infinity
    ],
)
def test_gateway_cores_per_10000_cameras(
    cameras: int, cpu_s: list[float], wall: float, cores: float, per_10k: float, per_core: float
) -> None:
    cost = gateway_cost(cameras, cpu_s, wall)
    assert cost["cores"] == pytest.approx(cores)
    assert cost["cores_per_10k"] == pytest.approx(per_10k)
    assert cost["cameras_per_core"] == pytest.approx(per_core)


def test_a_process_cost_is_read_from_proc() -> None:
    """``/proc/PID/stat`` CPU seconds grow as the process works; its peak RSS is there."""
    pid = os.getpid()
    before = proc_cpu_s(pid)
    began = time.process_time()
    while time.process_time() - began < 0.3:
        sum(range(10_000))
    assert proc_cpu_s(pid) - before == pytest.approx(time.process_time() - began, abs=0.05)
    assert proc_peak_rss_mib(pid) > 10
