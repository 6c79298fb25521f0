"""Clock-driven background jobs (sweeps, purges, expiries).

Each job runs every ``interval`` seconds of the injected clock, so on a 3600x simulated
clock an hourly purge runs every real second; ``min_real_interval`` keeps a fast clock
from spinning the CPU. :meth:`JobRunner.run_all` runs every job once, now: the clock
endpoint calls it after moving a manual clock, so the effects of the jump are visible
when the request returns. A job never runs twice at once; a failing run is counted and
logged, and the job runs again at its next turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from devices.clock import Clock
from gateway.lifecycle import running
from gateway.metrics import Metrics

if TYPE_CHECKING:
    from gateway.services import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A job as a module declares it: its name, its interval (clock seconds) and what it
    runs with the process's services."""

    name: str
    interval: float
    run: Callable[[Services], Awaitable[object]]


@dataclass(slots=True)
class Job:
    name: str
    interval: float
    run: Callable[[], Awaitable[object]]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class JobRunner:
    def __init__(self, *, clock: Clock, metrics: Metrics, min_real_interval: float = 0.2) -> None:
        self._clock = clock
        self._metrics = metrics
        self._min_real = min_real_interval
        self._jobs: list[Job] = []

    def add(self, name: str, interval: float, run: Callable[[], Awaitable[object]]) -> None:
        if interval <= 0:
            raise ValueError(f"job {name}: interval must be positive")
        self._jobs.append(Job(name=name, interval=interval, run=run))

    def schedule(self, specs: Iterable[JobSpec], services: Services) -> None:
        """Add every declared job, bound to ``services``."""
        for spec in specs:
            self.add(spec.name, spec.interval, functools.partial(spec.run, services))

    async def _once(self, job: Job) -> None:
        async with job.lock:
            try:
                await job.run()
            except Exception:
                self._metrics.job_runs.labels(job.name, "error").inc()
                log.exception("job %s failed", job.name)
            else:
                self._metrics.job_runs.labels(job.name, "ok").inc()

    def _job(self, name: str) -> Job:
        for job in self._jobs:
            if job.name == name:
                return job
        raise KeyError(name)

    @contextlib.asynccontextmanager
    async def held(self, name: str) -> AsyncIterator[None]:
        """Keep one job from running inside the block (maintenance; tests of lateness)."""
        async with self._job(name).lock:
            yield

    def trigger(self, name: str) -> None:
        """Run the job soon, without waiting for its interval (new work arrived)."""
        self._job(name).wake.set()

    async def run_all(self) -> None:
        for job in self._jobs:
            await self._once(job)

    async def _loop(self, job: Job) -> None:
        while True:
            waits = [
                asyncio.ensure_future(self._pace(job.interval)),
                asyncio.ensure_future(job.wake.wait()),
            ]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
            job.wake.clear()
            await self._once(job)

    async def _pace(self, interval: float) -> None:
        await asyncio.gather(self._clock.sleep(interval), asyncio.sleep(self._min_real))

    def running(self) -> AbstractAsyncContextManager[None]:
        """The component: every job runs on its interval for the block's lifetime (one
        TaskGroup, a named task a job)."""
        return running(
            *(
                (f"gateway[jobs].{job.name}", functools.partial(self._loop, job))
                for job in self._jobs
            )
        )
