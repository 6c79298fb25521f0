"""Benchmark: WiFi tuning (R13) of many simulated routers through one bounded SSH pool.

Starts ``--routers`` simulated homes in this process, each router its own asyncssh server
on its own port, records their host keys (trust on first use), then tunes them all
concurrently through one :class:`~devices.router.RouterManager` with ``--max-sessions``.
Before that it tunes one extra router alone, as the baseline.

Prints the total time, p50/p99 per router (queueing for a pool slot included), the peak
number of sessions seen by the manager and of SSH connections seen by the routers (the
pool bound must hold on both sides), and what tuning changed.

Run: ``.venv/bin/python -m bench.router_tuning [--routers 200] [--max-sessions 32]``.
Client and servers share this process's one event loop, so the figure includes the
routers' side of every SSH handshake.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass

from devices.router import RouterCredentials, RouterManager
from devices.tuning import TuneReport, tune
from simulators.radio import Home
from simulators.router import ConnectionGauge, RouterSimulator

PASSWORD = secrets.token_urlsafe(12)  # the simulated routers' login, fresh per run


@dataclass(frozen=True, slots=True)
class Timed:
    seconds: float
    report: TuneReport


async def _provision(manager: RouterManager, sim: RouterSimulator) -> RouterCredentials:
    creds = RouterCredentials(host=sim.host, port=sim.port, username="root", password=PASSWORD)
    key = await manager.provision_host_key(creds)
    return RouterCredentials(
        host=sim.host, port=sim.port, username="root", password=PASSWORD, pinned_host_key=key
    )


async def _timed_tune(
    manager: RouterManager, sim: RouterSimulator, creds: RouterCredentials
) -> Timed:
    started = time.perf_counter()
    report = await tune(manager, creds, sim.read_telemetry)
    return Timed(time.perf_counter() - started, report)


def _summary(results: Sequence[Timed]) -> str:
    moved = sum(len(r.report.changes) for r in results)
    rolled = sum(len(r.report.rolled_back) for r in results)
    failed = [r.report.failure for r in results if r.report.failure is not None]
    gains = []
    for r in results:
        before, after = r.report.scores("before"), r.report.scores("after")
        gains += [after[radio] - before[radio] for radio in before if radio in after]
    touched = [g for g in gains if g != 0]
    mean_gain = statistics.fmean(touched) if touched else 0.0
    return (
        f"radios moved {moved}, rolled back {rolled}, failures {len(failed)}; "
        f"mean score change of radios kept on a new channel {mean_gain:+.1f}"
    )


async def run(routers: int, max_sessions: int, seed: int) -> None:
    gauge = ConnectionGauge()
    manager = RouterManager(max_sessions=max_sessions, connect_timeout=30.0, command_timeout=30.0)
    async with AsyncExitStack() as stack:
        started = time.perf_counter()
        sims = [
            await stack.enter_async_context(
                RouterSimulator(password=PASSWORD, home=Home.generate(seed + i), gauge=gauge)
            )
            for i in range(routers + 1)
        ]
        print(f"started {len(sims)} SSH servers in {time.perf_counter() - started:.2f} s")
        started = time.perf_counter()
        creds = await asyncio.gather(*(_provision(manager, s) for s in sims))
        print(f"provisioned {len(creds)} host keys in {time.perf_counter() - started:.2f} s")

        alone = await _timed_tune(manager, sims[-1], creds[-1])
        print(f"baseline: one router tuned alone in {alone.seconds * 1000:.0f} ms")

        manager.peak_sessions = 0
        gauge.peak = gauge.current
        started = time.perf_counter()
        results = await asyncio.gather(
            *(_timed_tune(manager, s, c) for s, c in zip(sims[:-1], creds[:-1], strict=True))
        )
        total = time.perf_counter() - started

    latencies = sorted(r.seconds for r in results)
    p50 = statistics.median(latencies)
    p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98]
    print(f"{routers} routers tuned concurrently, max_sessions={max_sessions}")
    print(f"  total {total:.2f} s ({routers / total:.1f} routers/s)")
    print(
        f"  per router p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {latencies[-1] * 1000:.0f} ms"
    )
    print(
        f"  peak sessions: manager {manager.peak_sessions}, routers' SSH connections "
        f"{gauge.peak} (bound {max_sessions}: "
        f"{'held' if max(manager.peak_sessions, gauge.peak) <= max_sessions else 'BROKEN'})"
    )
    print(f"  SSH connections opened in total: {gauge.total}")
    print(f"  {_summary(results)}")
    print(
        f"  ratio total / one alone: {total / alone.seconds:.1f}x "
        f"(serial would be {routers}x; bound allows up to {max_sessions} at once)"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--routers", type=int, default=200)
    parser.add_argument("--max-sessions", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.routers < 1:
        parser.error("--routers must be at least 1")
    asyncio.run(run(args.routers, args.max_sessions, args.seed))


if __name__ == "__main__":
    main()
