"""The run: provisioning, the devices' ramp, the measured load, and the report."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from simulators.credentials import Credentials
from simulators.fleet.app import CompanionApp
from simulators.fleet.households import DeviceSpec, HouseholdSpec, plan_fleet
from simulators.fleet.metrics import failures_between
from simulators.fleet.options import FleetOptions
from simulators.fleet.orders import BroadbandOrders
from simulators.fleet.platform import Platform
from simulators.fleet.progress import GatewayIntake, Samples, StatusLine
from simulators.fleet.report import (
    cadences,
    errors_summary,
    fleet_summary,
    messages_summary,
    runner_cost,
    service_summary,
    uploads_summary,
    verdict,
)
from simulators.fleet.target import Target, embedded_service, remote_service
from simulators.fleet.workers import WorkerPool, WorkerSpec
from simulators.tasks import cancel_all

#: How long the end of a run waits for outstanding orders and the gateway's backlog.
DRAIN_SECONDS = 15.0
#: The ramp gives up when no further device connected for this long.
RAMP_STALL_SECONDS = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSetup:
    """What a run is given: the fleet, the service under test, and where to tell."""

    options: FleetOptions
    target: Target
    #: The households to run (``plan_fleet`` of the options, unless a benchmark gave them).
    households: tuple[HouseholdSpec, ...]
    #: The platform's calls to ``target``.
    platform: Platform
    status: StatusLine
    #: Where the workers write their logs (``None``: nowhere).
    log_dir: Path | None = None
    #: False when the households are already in the service's database.
    provision_first: bool = True
    #: Broker identities already issued, by device id (``FleetRun.credentials``).
    credentials: Mapping[str, Credentials] = field(default_factory=dict)


async def at_random(
    act: Callable[[], Coroutine[Any, Any, None]],
    *,
    per_real_second: float,
    rng: random.Random,
    stop: asyncio.Event,
    errors: Counter[str],
) -> None:
    """Run ``act`` as a Poisson process until ``stop``, at most 16 at once (more is
    counted as an overload error and skipped)."""
    if per_real_second <= 0:
        return
    gate = asyncio.Semaphore(16)
    async with asyncio.TaskGroup() as tg:
        while not stop.is_set():
            await asyncio.sleep(rng.expovariate(per_real_second))
            if gate.locked():
                errors["overload:requests_backed_up"] += 1
                continue

            async def guarded() -> None:
                async with gate:
                    await act()

            tg.create_task(guarded(), name="fleet[request]")


class FleetRun:
    """One run of a fleet: the platform's orders and the app's requests while the devices
    work, in workers; what everyone counted becomes the report."""

    def __init__(self, *, setup: RunSetup) -> None:
        self.setup = setup
        options, platform, households = setup.options, setup.platform, setup.households
        #: What went wrong on the runner's side (the workers count their own).
        self.errors: Counter[str] = Counter()
        rng = random.Random(f"run:{options.seed}")
        self.rng = rng
        self.orders = BroadbandOrders(
            platform=platform,
            households=households,
            prefix=options.id_prefix,
            errors=self.errors,
            rng=rng,
        )
        self.app = CompanionApp(
            platform=platform,
            clock=setup.target.clock,
            households=households,
            rng=rng,
            errors=self.errors,
        )
        self.pool = WorkerPool(on_version=self.orders.applied)
        self.intake = GatewayIntake(platform=platform, errors=self.errors)
        self.samples = Samples()
        self.elapsed = 0.0
        #: Telemetry messages the devices sent during the measured run, and over how many
        #: seconds (from fresh snapshots at both ends): the verdict's offered rate.
        self.telemetry_sent = 0
        self.telemetry_window = 0.0
        #: The measured run's bounds (monotonic), and what the runner's own processes
        #: spent in it: the workers' CPU seconds (fresh snapshots) and the coordinator's.
        self.window = (0.0, 0.0)
        self.worker_cpu_s = 0.0
        self.coordinator_cpu_s = 0.0
        self._stop = asyncio.Event()
        #: The broker identity each device signs in with, by device id (issue 13); a
        #: device without one connects as the URL says. Provisioning issues them through
        #: ``POST /platform/v1/devices/{id}/credentials`` where the service has it.
        self.credentials: dict[str, Credentials] = dict(setup.credentials)

    def request_stop(self) -> None:
        self._stop.set()

    async def provision(self) -> None:
        """Accounts, devices, plans, home-network products, memberships and app tokens; and
        each device's broker identity where the service issues them and none was given."""
        gate = asyncio.Semaphore(8)
        platform = self.setup.platform
        credentialed = await platform.has_credentials_route()
        home_network = await platform.has_home_network_routes()
        memberships = await platform.has_membership_routes()

        async def one(home: HouseholdSpec) -> None:
            async with gate:
                self.app.tokens[home.account_id] = await platform.provision(
                    home,
                    self.setup.options.id_prefix,
                    home_network=home_network,
                    memberships=memberships,
                )
                if credentialed and not any(d.device_id in self.credentials for d in home.devices):
                    self.credentials.update(await platform.issue_credentials(home))

        async with asyncio.TaskGroup() as tg:
            for home in self.setup.households:
                tg.create_task(one(home), name=f"fleet[provision].{home.account_id}")

    async def run(self) -> dict[str, Any]:
        setup = self.setup
        started = time.monotonic()
        if setup.provision_first:
            await self.provision()
        provisioned = time.monotonic()
        await self.orders.find_routes()
        await self.intake.begin()
        devices = [d for h in setup.households for d in h.devices]
        await self._start_workers(devices)
        try:
            ramp = await self._ramp(len(devices), started)
            timing = await self._steady()
            settle = time.monotonic()
            await self.orders.settle(within=DRAIN_SECONDS, status=setup.status)
        finally:
            stopping = time.monotonic()
            await self.pool.stop()
        stopped = time.monotonic()
        published = self.pool.totals()["published"]
        await self.intake.drain(published, within=DRAIN_SECONDS, status=setup.status)
        drained = time.monotonic()
        converged, known = await self._service_convergence()
        timing.update(
            provision_s=round(provisioned - started, 2),
            ramp_s=round(ramp, 2),
            settle_orders_s=round(stopping - settle, 2),
            stop_devices_s=round(stopped - stopping, 2),
            gateway_drain_s=round(drained - stopped, 2),
            service_convergence_s=round(time.monotonic() - drained, 2),
        )
        return self._report(timing, converged, known, await setup.platform.metrics())

    async def _start_workers(self, devices: Sequence[DeviceSpec]) -> None:
        """The devices, dealt round-robin to ``--workers`` processes (0: this one)."""
        options, target, log_dir = self.setup.options, self.setup.target, self.setup.log_dir
        count = max(1, options.workers)
        for i in range(count):
            spec = WorkerSpec(
                mqtt_url=target.mqtt_url,
                ca_file=options.ca_file,
                clock_start=target.clock.now().isoformat(),
                clock_speed=target.clock_speed,
                clock_mono=time.monotonic(),
                devices=tuple(
                    d.signed_in(self.credentials.get(d.device_id)) for d in devices[i::count]
                ),
                media=options.media,
                synthetic_bytes=options.synthetic_bytes,
                pacing=options.pacing,
                horizon_s=options.duration + 120,
                connect_concurrency=options.connect_concurrency or target.connect_concurrency,
                report_every=0.5,
                log_file=str(log_dir / f"worker-{i}.log") if log_dir else None,
            )
            await self.pool.start(spec, clock=target.clock, inline=options.workers == 0)

    async def _ramp(self, total: int, started: float) -> float:
        """Until every device is connected; gives up when no device got in for a while."""
        connected, progress_at = 0, time.monotonic()
        while not self._stop.is_set():
            now, seen = time.monotonic(), self.pool.totals()["connected"]
            if seen > connected:
                connected, progress_at = seen, now
            self.setup.status.show("connecting", f"{connected}/{total} devices connected")
            if connected >= total or now - progress_at > RAMP_STALL_SECONDS:
                break
            await asyncio.sleep(0.2)
        if connected < total:
            self.errors["device:not_connected_at_start"] += total - connected
        ramp = time.monotonic() - started
        self.setup.status.show("connected", f"{connected}/{total} devices in {ramp:.1f} s")
        return ramp

    def _load(
        self, per_sim_hour: float, act: Callable[[], Coroutine[Any, Any, None]]
    ) -> Coroutine[Any, Any, None]:
        """``act`` at ``per_sim_hour`` (a Poisson process in simulated time)."""
        return at_random(
            act,
            per_real_second=per_sim_hour * self.setup.target.clock_speed / 3600,
            rng=self.rng,
            stop=self._stop,
            errors=self.errors,
        )

    async def _steady(self) -> dict[str, Any]:
        """The measured run: orders and app requests while the devices work."""
        options, clock, status = self.setup.options, self.setup.target.clock, self.setup.status
        sim_begin = clock.now()
        begin = time.monotonic()
        end_at = begin + options.duration
        processed = await self.intake.read()
        totals = await self.pool.fresh_totals(begin)
        telemetry_begin, telemetry_at = totals["published_by"].get("telemetry", 0), totals["at"]
        worker_cpu, coordinator_cpu = totals["cpu_s"], time.process_time()
        self.samples.begin(begin, totals, processed)
        async with asyncio.TaskGroup() as tg:
            load = self._load(options.app_rate, self.app.request)
            loads = [tg.create_task(load, name="fleet[app]")]
            if self.orders.routes:
                load = self._load(options.stop_rate, self.orders.place_next)
                loads.append(tg.create_task(load, name="fleet[orders]"))
            while not self._stop.is_set() and time.monotonic() < end_at:
                await asyncio.sleep(options.status_interval)
                # The gateway's count first, then the devices' from after it (backlog).
                read_at = time.monotonic()
                processed = await self.intake.read()
                totals = await self.pool.fresh_totals(read_at)
                sample = self.samples.take(time.monotonic(), totals, processed)
                self.orders.expire()
                status.show("running", *self._status(time.monotonic() - begin, totals, sample))
            await cancel_all(loads)
        self.elapsed = time.monotonic() - begin
        totals = await self.pool.fresh_totals(time.monotonic())
        self.telemetry_sent = totals["published_by"].get("telemetry", 0) - telemetry_begin
        self.telemetry_window = totals["at"] - telemetry_at
        self.window = (begin, time.monotonic())
        self.worker_cpu_s = totals["cpu_s"] - worker_cpu
        self.coordinator_cpu_s = time.process_time() - coordinator_cpu
        sim_end = clock.now()
        return {
            "run_s": round(self.elapsed, 2),
            "sim_start": sim_begin.isoformat(),
            "sim_end": sim_end.isoformat(),
            "sim_hours": round((sim_end - sim_begin).total_seconds() / 3600, 2),
        }

    async def _service_convergence(self) -> tuple[int, int]:
        """Devices whose reported version has reached the desired one, per the service."""
        converged = total = 0
        gate = asyncio.Semaphore(8)

        async def one(account_id: str) -> tuple[int, int]:
            async with gate:
                body = await self.setup.platform.call(
                    "GET", f"/platform/v1/accounts/{account_id}/devices"
                )
            devices = body.get("devices", [])
            return sum(1 for d in devices if d.get("converged")), len(devices)

        deadline = time.monotonic() + DRAIN_SECONDS
        while True:
            results = await asyncio.gather(*(one(h.account_id) for h in self.setup.households))
            converged = sum(r[0] for r in results)
            total = sum(r[1] for r in results)
            if converged == total or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        if converged < total:
            self.errors["service:devices_not_converged"] += total - converged
        return converged, total

    # Over 60 lines: the report's sections, one literal each, no logic between them.
    def _report(
        self,
        timing: dict[str, Any],
        converged: int,
        known: int,
        metrics_end: dict[str, dict[str, float]],
    ) -> dict[str, Any]:
        setup, totals, intake = self.setup, self.pool.totals(), self.intake
        elapsed = max(self.elapsed, 1e-6)
        uploads = uploads_summary(
            totals,
            elapsed=elapsed,
            latency=self.pool.upload_latency,
            indexed=intake.since_start(metrics_end, "kanjia_segments_indexed_total"),
            swept=intake.since_start(metrics_end, "kanjia_segments_swept_total"),
        )
        errors = errors_summary(
            self.errors, totals["errors"], failures_between(intake.start, metrics_end)
        )
        pace = cadences(setup.options)
        judged = verdict(
            devices=totals["devices"],
            telemetry_sent=self.telemetry_sent,
            run_s=self.telemetry_window,
            telemetry_every_real_s=pace["telemetry_every_real_s"],
            segment_every_real_s=pace["segment_every_real_s"],
            uploads=uploads["ok"],
            upload_p99_ms=uploads["latency_p99_ms"],
            errors=errors["total"],
        )
        return {
            "options": setup.options.summary(),
            "service": service_summary(setup.target),
            "fleet": fleet_summary(setup.households),
            "cadences": pace,
            "verdict": judged,
            "timing": timing,
            "devices": {
                "total": totals["devices"],
                "connected_peak": self.samples.connected_peak,
                "converged_at_end": converged,
                "known_to_service": known,
            },
            "messages": messages_summary(
                totals, elapsed=elapsed, processed=intake.since_start(metrics_end)
            ),
            "uploads": uploads,
            "events": totals["events"],
            "orders": self.orders.summary(),
            "app": self.app.summary(),
            "errors": errors,
            "samples": self.samples.rows,
            "runner": runner_cost(
                devices=totals["devices"],
                wall_s=self.window[1] - self.window[0],
                worker_cpu_s=self.worker_cpu_s,
                coordinator_cpu_s=self.coordinator_cpu_s,
                worker_rss_mib=totals["rss_mib"],
                inline=setup.options.workers == 0,
            ),
            #: The measured run's bounds on this machine's monotonic clock, for a
            #: benchmark to read other processes' cost over the same seconds.
            "window": {"began": self.window[0], "ended": self.window[1]},
        }

    def _status(
        self, elapsed: float, totals: dict[str, Any], sample: dict[str, float]
    ) -> list[str]:
        """The running status, one fact a line."""
        refused = totals["refusals"]
        refusals = " ".join(f"{k}:{v}" for k, v in sorted(refused.items())) or "none"
        errors = sum(totals["errors"].values()) + sum(self.errors.values())
        options = self.setup.options
        sim = self.setup.target.clock.now().astimezone(UTC).strftime("%Y-%m-%d %H:%M")
        return [
            f"{elapsed:.0f}/{options.duration:.0f} s, simulated {sim} (x{options.clock_speed:g})",
            f"devices {totals['connected']}/{totals['devices']} connected",
            f"{sample['msgs_per_s']:.0f} msg/s, {sample['uploads_per_s']:.1f} uploads/s, "
            f"gateway backlog {sample['backlog']:.0f}",
            f"refused {refusals}; {self.orders.status()}; "
            f"app {sum(self.app.outcomes.values())} requests",
            f"errors {errors}",
        ]


async def run_fleet(
    options: FleetOptions,
    *,
    workdir: Path,
    households: Sequence[HouseholdSpec] | None = None,
    status: TextIO | None = None,
    stop: asyncio.Event | None = None,
    provisioned: bool = False,
    credentials: Mapping[str, Credentials] | None = None,
) -> dict[str, Any]:
    """Provision and run a fleet; return the report (``report["errors"]["total"]``).

    ``provisioned``: the households are already in the service's database (a benchmark
    wrote them); the runner then skips the platform calls, and makes no app requests.
    ``credentials``: broker identities already issued to devices, by device id.
    """
    if provisioned and options.app_rate:
        raise ValueError("app requests need the app tokens of provisioning")
    homes = households or plan_fleet(
        households=options.households,
        plans=options.plans,
        home_products=options.home_products,
        memberships=options.memberships,
        seed=options.seed,
        prefix=options.id_prefix,
        rogue_share=options.rogue_share,
    )
    line = StatusLine(status)
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        )
        if options.service_url:
            target = await stack.enter_async_context(remote_service(options, http))
        else:
            target = await stack.enter_async_context(embedded_service(options, workdir))
        setup = RunSetup(
            options=options,
            target=target,
            households=tuple(homes),
            platform=Platform(http=http, target=target),
            status=line,
            log_dir=workdir,
            provision_first=not provisioned,
            credentials=credentials or {},
        )
        run = FleetRun(setup=setup)
        watcher = None
        if stop is not None:
            watcher = asyncio.create_task(_relay(stop, run), name="fleet.stop")
        try:
            report = await run.run()
        finally:
            if watcher is not None:
                await cancel_all([watcher])
            line.done()
    return report


async def _relay(stop: asyncio.Event, run: FleetRun) -> None:
    await stop.wait()
    run.request_stop()
