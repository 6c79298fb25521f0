"""The run: provisioning, the devices' ramp, the measured load, and the report."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any, Literal, TextIO

import aiohttp

from devices.broadband import StopType
from simulators.fleet.errors import ProvisioningError
from simulators.fleet.households import HouseholdSpec, plan_fleet
from simulators.fleet.metrics import gateway_failures, metric_total, percentile
from simulators.fleet.options import NO_PLAN, FleetOptions
from simulators.fleet.platform import Platform
from simulators.fleet.target import Target, embedded_service, remote_service
from simulators.fleet.workers import WorkerHandle, WorkerSpec
from simulators.tasks import cancel_all

log = logging.getLogger(__name__)


#: An order whose devices have not all reported its version by then is an error.
CONVERGENCE_TIMEOUT = 30.0
#: How long the end of a run waits for outstanding orders and the gateway's backlog.
DRAIN_SECONDS = 15.0
#: The ramp gives up when no further device connected for this long.
RAMP_STALL_SECONDS = 30.0
STOP_TYPES = tuple(StopType)


AppVerdict = Literal["ok", "refused", "error"]


def app_verdict(status: int, code: str | None) -> AppVerdict:
    """How the runner counts a companion-app answer: the rules refusing is not an error."""
    if status == 200:
        return "ok"
    if status == 403 and code is not None:
        return "refused"  # not entitled (R1), unsubscribed (R5), broadband inactive (R8)
    if status == 404 and code == "no_recording":
        return "refused"
    return "error"


@dataclass(slots=True)
class PendingOrder:
    account_id: str
    action: str
    sent: float
    accepted: float | None = None
    targets: dict[str, int] = field(default_factory=dict)
    reached: dict[str, float] = field(default_factory=dict)


class StatusLine:
    def __init__(self, out: TextIO | None) -> None:
        self.out = out
        self.tty = bool(out is not None and out.isatty())
        self._last_plain = 0.0

    def show(self, text: str, *, force: bool = False) -> None:
        if self.out is None:
            return
        if self.tty:
            self.out.write("\r\x1b[2K" + text)
            self.out.flush()
        elif force or time.monotonic() - self._last_plain >= 10:
            self._last_plain = time.monotonic()
            print(text, file=self.out, flush=True)

    def done(self) -> None:
        if self.out is not None and self.tty:
            self.out.write("\n")
            self.out.flush()


class FleetRun:
    def __init__(
        self,
        options: FleetOptions,
        households: Sequence[HouseholdSpec],
        target: Target,
        platform: Platform,
        status: StatusLine,
        log_dir: Path | None = None,
        provision_first: bool = True,
    ) -> None:
        self.options = options
        self.log_dir = log_dir
        self.provision_first = provision_first
        self.households = list(households)
        self.target = target
        self.platform = platform
        self.status = status
        self.rng = random.Random(f"run:{options.seed}")
        self.account_of = {d.device_id: h.account_id for h in households for d in h.devices}
        self.devices_of = {h.account_id: [d.device_id for d in h.devices] for h in households}
        self.tokens: dict[str, str] = {}
        self.workers: list[WorkerHandle] = []
        self.history: dict[str, deque[tuple[int, float]]] = {}
        self.pending: dict[str, PendingOrder] = {}
        self.stopped: dict[str, str] = {}
        self.order_seq = 0
        self.orders: Counter[str] = Counter()
        self.order_latency_sent: list[float] = []
        self.order_latency_accepted: list[float] = []
        self.device_latency: list[float] = []
        self.upload_latency: list[float] = []
        self.app: Counter[str] = Counter()
        self.app_latency: list[float] = []
        self.errors: Counter[str] = Counter()
        self.broadband = False
        self.connected_peak = 0
        self.samples: list[dict[str, float]] = []
        self.metrics_start: dict[str, dict[str, float]] = {}
        self.processed_start = 0.0
        self.processed = 0.0
        self.elapsed = 0.0
        self._stop = asyncio.Event()

    # -- bookkeeping -----------------------------------------------------------------
    def _snapshot(self, snap: dict[str, Any]) -> None:
        for device_id, version, at in snap.get("versions", []):
            history = self.history.setdefault(device_id, deque(maxlen=8))
            history.append((int(version), float(at)))
            account = self.account_of.get(device_id)
            order = self.pending.get(account) if account else None
            if order is not None:
                self._check_device(order, device_id)
        self.upload_latency.extend(snap.get("latencies", []))

    def _check_device(self, order: PendingOrder, device_id: str) -> None:
        target = order.targets.get(device_id)
        if target is None or device_id in order.reached:
            return
        for version, at in self.history.get(device_id, ()):
            if version >= target:
                order.reached[device_id] = at
                break
        if order.accepted is not None and len(order.reached) == len(order.targets):
            self._converged(order)

    def _converged(self, order: PendingOrder) -> None:
        assert order.accepted is not None
        last = max(order.reached.values(), default=order.accepted)
        self.order_latency_sent.append(last - order.sent)
        self.order_latency_accepted.append(max(0.0, last - order.accepted))
        self.device_latency.extend(max(0.0, at - order.accepted) for at in order.reached.values())
        self.orders["converged"] += 1
        self.pending.pop(order.account_id, None)

    def totals(self) -> dict[str, Any]:
        snaps = [w.latest for w in self.workers]
        refusals: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        published_by: Counter[str] = Counter()
        for snap in snaps:
            published_by.update(snap.get("published_by", {}))
            refusals.update(snap.get("refusals", {}))
            errors.update(snap.get("errors", {}))
        return {
            "connected": sum(int(s.get("connected", 0)) for s in snaps),
            "devices": sum(int(s.get("devices", 0)) for s in snaps),
            "published": sum(int(s.get("published", 0)) for s in snaps),
            "uploads": sum(int(s.get("uploads", 0)) for s in snaps),
            "upload_bytes": sum(int(s.get("upload_bytes", 0)) for s in snaps),
            "events": sum(int(s.get("events", 0)) for s in snaps),
            "published_by": published_by,
            "refusals": refusals,
            "errors": errors,
        }

    # -- platform and app --------------------------------------------------------------
    async def provision(self) -> None:
        gate = asyncio.Semaphore(8)

        async def one(home: HouseholdSpec) -> None:
            async with gate:
                self.tokens[home.account_id] = await self.platform.provision(
                    home, self.options.id_prefix
                )

        async with asyncio.TaskGroup() as tg:
            for home in self.households:
                tg.create_task(one(home), name=f"fleet[provision].{home.account_id}")

    async def _order(self, account_id: str) -> None:
        stop_type = self.stopped.get(account_id)
        action = "resume" if stop_type is not None else "stop"
        if stop_type is None:
            stop_type = self.rng.choice(STOP_TYPES).value
        self.order_seq += 1
        order_id = f"{self.options.id_prefix}-bb-{self.order_seq}-{secrets.token_hex(3)}"
        order = PendingOrder(account_id=account_id, action=action, sent=time.monotonic())
        self.pending[account_id] = order
        self.orders[action] += 1
        try:
            body = await self.platform.call(
                "POST",
                f"/platform/v1/broadband/{account_id}/{action}",
                {"order_id": order_id, "stop_type": stop_type},
                ok=(200,),
            )
        except (ProvisioningError, aiohttp.ClientError) as exc:
            self.errors[f"order:{action}"] += 1
            log.warning("order %s on %s failed: %s", action, account_id, exc)
            self.pending.pop(account_id, None)
            return
        order.accepted = time.monotonic()
        if not body.get("applied"):
            self.orders[f"not_applied:{body.get('reason')}"] += 1
            self.pending.pop(account_id, None)
            return
        self.orders["applied"] += 1
        if action == "stop":
            self.stopped[account_id] = stop_type
        else:
            self.stopped.pop(account_id, None)
        for device in body.get("devices", []):
            order.targets[str(device["device_id"])] = int(device["desired_version"])
        for device_id in list(order.targets):
            self._check_device(order, device_id)
        if not order.targets:
            self._converged(order)

    def _expire_orders(self, *, final: bool = False) -> None:
        now = time.monotonic()
        for order in list(self.pending.values()):
            if order.accepted is None:
                continue
            if final or now - order.accepted > CONVERGENCE_TIMEOUT:
                missing = len(order.targets) - len(order.reached)
                self.errors["order:not_converged"] += 1
                log.warning(
                    "order %s on %s: %d device(s) never reported its version",
                    order.action,
                    order.account_id,
                    missing,
                )
                self.pending.pop(order.account_id, None)

    async def _app_request(self) -> None:
        homes = [h for h in self.households if h.cameras]
        home = self.rng.choice(homes)
        camera = self.rng.choice(home.cameras)
        now = self.target.clock.now()
        if self.rng.random() < 0.5:
            what, path, span = "timeline", "timeline", timedelta(days=1)
        else:
            what, path, span = "playlist", "playlist.m3u8", timedelta(hours=1)
        params = {"start": (now - span).isoformat(), "end": now.isoformat()}
        headers = {"Authorization": f"Bearer {self.tokens[home.account_id]}"}
        url = f"{self.platform.url}/app/v1/devices/{camera.device_id}/{path}"
        began = time.monotonic()
        try:
            async with self.platform.http.get(url, params=params, headers=headers) as response:
                status = response.status
                text = await response.text()
        except aiohttp.ClientError as exc:
            self.errors[f"app:{type(exc).__name__}"] += 1
            return
        self.app_latency.append(time.monotonic() - began)
        code = None
        if status != 200:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                code = json.loads(text)["error"]["code"]
        verdict = app_verdict(status, code)
        self.app[f"{what} {status}{' ' + code if code else ''}"] += 1
        if verdict == "error":
            self.errors[f"app:{what}_{status}"] += 1
        elif what == "playlist" and status == 200:
            await self._fetch_first_segment(text)

    async def _fetch_first_segment(self, playlist: str) -> None:
        url = next((ln for ln in playlist.splitlines() if ln.startswith("http")), None)
        if url is None:
            self.errors["app:empty_playlist"] += 1
            return
        try:
            async with self.platform.http.get(url) as response:
                await response.read()
                ok = response.status == 200
        except aiohttp.ClientError:
            ok = False
        self.app["segment GET " + ("200" if ok else "failed")] += 1
        if not ok:
            self.errors["app:segment_get"] += 1

    async def _poisson(
        self, per_sim_hour: float, act: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        """Run ``act`` at ``per_sim_hour`` (a Poisson process in simulated time)."""
        per_real_second = per_sim_hour * self.target.clock_speed / 3600
        if per_real_second <= 0:
            return
        gate = asyncio.Semaphore(16)
        async with asyncio.TaskGroup() as tg:
            while not self._stop.is_set():
                await asyncio.sleep(self.rng.expovariate(per_real_second))
                if gate.locked():
                    self.errors["overload:requests_backed_up"] += 1
                    continue

                async def guarded() -> None:
                    async with gate:
                        await act()

                tg.create_task(guarded(), name="fleet[request]")

    async def _next_order(self) -> None:
        free = [h.account_id for h in self.households if h.account_id not in self.pending]
        if free:
            await self._order(self.rng.choice(free))

    # -- the run -------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> dict[str, Any]:
        options, target = self.options, self.target
        started = time.monotonic()
        if self.provision_first:
            await self.provision()
        provisioned = time.monotonic()
        self.broadband = await self.platform.has_broadband_routes()
        self.metrics_start = await self.platform.metrics()
        self.processed_start = metric_total(self.metrics_start, "kanjia_mqtt_messages_total")
        devices = [d for h in self.households for d in h.devices]
        count = max(1, options.workers)
        for i in range(count):
            spec = WorkerSpec(
                mqtt_url=target.mqtt_url,
                clock_start=target.clock.now().isoformat(),
                clock_speed=target.clock_speed,
                clock_mono=time.monotonic(),
                devices=tuple(devices[i::count]),
                media=options.media,
                synthetic_bytes=options.synthetic_bytes,
                pacing=options.pacing,
                horizon_s=options.duration + 120,
                connect_concurrency=options.connect_concurrency or target.connect_concurrency,
                report_every=0.5,
                log_file=str(self.log_dir / f"worker-{i}.log") if self.log_dir else None,
            )
            handle = WorkerHandle(spec, clock=target.clock, inline=options.workers == 0)
            handle.on_snapshot = self._snapshot
            self.workers.append(handle)
            await handle.start()
        try:
            ramp = await self._ramp(len(devices), started)
            timing = await self._steady()
            settle = time.monotonic()
            await self._settle_orders()
        finally:
            stopping = time.monotonic()
            for handle in self.workers:
                await handle.stop()
        stopped = time.monotonic()
        await self._drain_gateway()
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
        report = self._report(timing, converged, known, await self.platform.metrics())
        self._finish(report)
        return report

    async def _processed(self) -> float:
        """Device messages the gateway has taken in since the fleet started."""
        try:
            metrics = await self.platform.metrics()
        except aiohttp.ClientError:
            self.errors["metrics:unreachable"] += 1
            return self.processed
        self.processed = metric_total(metrics, "kanjia_mqtt_messages_total") - self.processed_start
        return self.processed

    async def _ramp(self, total: int, started: float) -> float:
        """Until every device is connected; gives up when no device got in for a while."""
        connected, progress_at = 0, time.monotonic()
        while not self._stop.is_set():
            now, seen = time.monotonic(), self.totals()["connected"]
            if seen > connected:
                connected, progress_at = seen, now
            self.status.show(f"connecting {connected}/{total} devices...")
            if connected >= total or now - progress_at > RAMP_STALL_SECONDS:
                break
            await asyncio.sleep(0.2)
        if connected < total:
            self.errors["device:not_connected_at_start"] += total - connected
        return time.monotonic() - started

    async def _steady(self) -> dict[str, Any]:
        """The measured run: orders and app requests while the devices work."""
        options, target = self.options, self.target
        sim_begin = target.clock.now()
        begin = time.monotonic()
        end_at = begin + options.duration
        prev, prev_t, prev_processed = self.totals(), begin, await self._processed()
        async with asyncio.TaskGroup() as tg:
            loads = [tg.create_task(self._poisson(options.app_rate, self._app_request))]
            if self.broadband:
                loads.append(tg.create_task(self._poisson(options.stop_rate, self._next_order)))
            while not self._stop.is_set() and time.monotonic() < end_at:
                await asyncio.sleep(options.status_interval)
                now, totals, processed = time.monotonic(), self.totals(), await self._processed()
                self.connected_peak = max(self.connected_peak, totals["connected"])
                span = max(now - prev_t, 1e-6)
                sample = {
                    "t": round(now - begin, 2),
                    "connected": totals["connected"],
                    "msgs_per_s": round((totals["published"] - prev["published"]) / span, 1),
                    "uploads_per_s": round((totals["uploads"] - prev["uploads"]) / span, 2),
                    "processed_per_s": round((processed - prev_processed) / span, 1),
                    "backlog": totals["published"] - processed,
                }
                self.samples.append(sample)
                self._expire_orders()
                self.status.show(self._status(now - begin, totals, sample))
                prev, prev_t, prev_processed = totals, now, processed
            await cancel_all(loads)
        self.elapsed = time.monotonic() - begin
        sim_end = target.clock.now()
        return {
            "run_s": round(self.elapsed, 2),
            "sim_start": sim_begin.isoformat(),
            "sim_end": sim_end.isoformat(),
            "sim_hours": round((sim_end - sim_begin).total_seconds() / 3600, 2),
        }

    async def _settle_orders(self) -> None:
        """Outstanding orders converge while the devices are still up (or count as errors)."""
        until = time.monotonic() + DRAIN_SECONDS
        while self.pending and time.monotonic() < until:
            self.status.show(f"waiting for {len(self.pending)} order(s) to converge...")
            await asyncio.sleep(0.25)
        self._expire_orders(final=True)

    async def _drain_gateway(self) -> None:
        """After the devices stopped: the gateway catches up with what they sent."""
        published = self.totals()["published"]
        until = time.monotonic() + DRAIN_SECONDS
        while (backlog := published - await self._processed()) > 0:
            if time.monotonic() > until:
                self.errors["gateway:backlog_not_drained"] += int(backlog)
                return
            self.status.show(f"gateway backlog {backlog:.0f} message(s)...")
            await asyncio.sleep(0.25)

    def _report(
        self,
        timing: dict[str, Any],
        converged: int,
        known: int,
        metrics_end: dict[str, dict[str, float]],
    ) -> dict[str, Any]:
        target, totals, elapsed = self.target, self.totals(), max(self.elapsed, 1e-6)
        start = self.metrics_start

        def delta(name: str) -> int:
            return int(metric_total(metrics_end, name) - metric_total(start, name))

        processed = metric_total(metrics_end, "kanjia_mqtt_messages_total") - self.processed_start
        return {
            "options": self.options.summary(),
            "service": {
                "mode": "embedded" if target.embedded else "remote",
                "http": target.http_url,
                "broker": target.broker,
            },
            "fleet": self._fleet_summary(),
            "timing": timing,
            "devices": {
                "total": totals["devices"],
                "connected_peak": self.connected_peak,
                "converged_at_end": converged,
                "known_to_service": known,
            },
            "messages": {
                "published": totals["published"],
                "per_second": round(totals["published"] / elapsed, 1),
                "by_topic": dict(sorted(totals["published_by"].items())),
                "gateway_processed": int(processed),
            },
            "uploads": {
                "ok": totals["uploads"],
                "per_second": round(totals["uploads"] / elapsed, 2),
                "bytes": totals["upload_bytes"],
                "refused": dict(sorted(totals["refusals"].items())),
                "latency_p50_ms": round(percentile(self.upload_latency, 50) * 1000, 1),
                "latency_p99_ms": round(percentile(self.upload_latency, 99) * 1000, 1),
                "gateway_indexed": delta("kanjia_segments_indexed_total"),
                "gateway_swept": delta("kanjia_segments_swept_total"),
            },
            "events": totals["events"],
            "orders": self._orders_summary(),
            "app": {
                "requests": sum(v for k, v in self.app.items() if not k.startswith("segment")),
                "outcomes": dict(sorted(self.app.items())),
                "latency_p50_ms": round(percentile(self.app_latency, 50) * 1000, 1),
                "latency_p99_ms": round(percentile(self.app_latency, 99) * 1000, 1),
            },
            "errors": {},
            "samples": self.samples,
            "_worker_errors": dict(totals["errors"]),
            "_gateway_failures": gateway_failures(start, metrics_end),
        }

    async def _service_convergence(self) -> tuple[int, int]:
        """Devices whose reported version has reached the desired one, per the service."""
        converged = total = 0
        gate = asyncio.Semaphore(8)

        async def one(account_id: str) -> tuple[int, int]:
            async with gate:
                body = await self.platform.call(
                    "GET", f"/platform/v1/accounts/{account_id}/devices"
                )
            devices = body.get("devices", [])
            return sum(1 for d in devices if d.get("converged")), len(devices)

        deadline = time.monotonic() + DRAIN_SECONDS
        while True:
            results = await asyncio.gather(*(one(h.account_id) for h in self.households))
            converged = sum(r[0] for r in results)
            total = sum(r[1] for r in results)
            if converged == total or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        if converged < total:
            self.errors["service:devices_not_converged"] += total - converged
        return converged, total

    def _fleet_summary(self) -> dict[str, Any]:
        roles: Counter[str] = Counter()
        plans: Counter[str] = Counter()
        rogue = 0
        for home in self.households:
            for device in home.devices:
                roles[device.role] += 1
                if device.role == "camera":
                    plans[device.plan or NO_PLAN] += 1
                    rogue += device.rogue
        return {
            "households": len(self.households),
            "devices": dict(roles),
            "camera_plans": dict(sorted(plans.items())),
            "rogue_cameras": rogue,
        }

    def _orders_summary(self) -> dict[str, Any]:
        if not self.broadband:
            return {"skipped": "the service has no broadband stop/resume routes"}
        return {
            "counts": dict(sorted(self.orders.items())),
            "convergence_from_accepted_p50_ms": round(
                percentile(self.order_latency_accepted, 50) * 1000, 1
            ),
            "convergence_from_accepted_p99_ms": round(
                percentile(self.order_latency_accepted, 99) * 1000, 1
            ),
            "convergence_from_sent_p99_ms": round(
                percentile(self.order_latency_sent, 99) * 1000, 1
            ),
            "device_p99_ms": round(percentile(self.device_latency, 99) * 1000, 1),
        }

    def _finish(self, report: dict[str, Any]) -> None:
        errors: Counter[str] = Counter(self.errors)
        errors.update(report.pop("_worker_errors"))
        errors.update(report.pop("_gateway_failures"))
        report["errors"] = {"total": sum(errors.values()), **dict(sorted(errors.items()))}

    def _status(self, elapsed: float, totals: dict[str, Any], sample: dict[str, float]) -> str:
        refused = totals["refusals"]
        refusals = " ".join(f"{k}:{v}" for k, v in sorted(refused.items())) or "none"
        errors = sum(totals["errors"].values()) + sum(self.errors.values())
        if self.broadband:
            orders = f"orders {self.orders['applied']} conv {self.orders['converged']}"
            if self.order_latency_accepted:
                orders += f" p99 {percentile(self.order_latency_accepted, 99):.2f}s"
        else:
            orders = "orders skipped"
        sim = self.target.clock.now().astimezone(UTC).strftime("%Y-%m-%d %H:%M")
        return (
            f"[{elapsed:5.0f}/{self.options.duration:.0f}s] sim {sim} | "
            f"dev {totals['connected']}/{totals['devices']} | "
            f"msg/s {sample['msgs_per_s']:.0f} | up/s {sample['uploads_per_s']:.1f} | "
            f"refused {refusals} | {orders} | app {sum(self.app.values())} | "
            f"backlog {sample['backlog']:.0f} | errors {errors}"
        )


async def run_fleet(
    options: FleetOptions,
    *,
    workdir: Path,
    households: Sequence[HouseholdSpec] | None = None,
    status: TextIO | None = None,
    stop: asyncio.Event | None = None,
    provisioned: bool = False,
) -> dict[str, Any]:
    """Provision and run a fleet; return the report (``report["errors"]["total"]``).

    ``provisioned``: the households are already in the service's database (a benchmark
    wrote them); the runner then skips the platform calls, and makes no app requests.
    """
    if provisioned and options.app_rate:
        raise ValueError("app requests need the app tokens of provisioning")
    homes = households or plan_fleet(
        households=options.households,
        plans=options.plans,
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
        run = FleetRun(
            options, homes, target, Platform(http, target), line, workdir, not provisioned
        )
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
