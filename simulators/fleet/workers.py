"""Worker processes: each runs some devices of the fleet and reports snapshots."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import resource
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, BinaryIO

import aiohttp

from devices.clock import Clock, SimClock
from simulators.camera import Media
from simulators.device import BrokerLogin, SimulatedDevice
from simulators.fleet.devices import FleetCamera, FleetRouter, Uploads, WorkerCounters
from simulators.fleet.households import DeviceSpec
from simulators.fleet.options import Pacing
from simulators.tasks import cancel_all

log = logging.getLogger(__name__)


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return type(exc).__name__


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSpec:
    """Everything a worker process needs (sent as JSON on its stdin)."""

    mqtt_url: str
    #: The CA (PEM) that an ``mqtts://`` broker is verified against (else the system's).
    ca_file: str | None = None
    #: The parent's clock: its time (ISO) at its monotonic ``clock_mono``, and its speed.
    clock_start: str
    clock_speed: float
    clock_mono: float
    devices: tuple[DeviceSpec, ...]
    media: Media
    synthetic_bytes: int
    pacing: Pacing
    #: Real seconds that the cameras' scripted events must cover.
    horizon_s: float
    connect_concurrency: int
    #: Real seconds between two snapshots.
    report_every: float
    log_file: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        raw = json.loads(text)
        pacing = raw["pacing"]
        return cls(
            mqtt_url=raw["mqtt_url"],
            ca_file=raw.get("ca_file"),
            clock_start=raw["clock_start"],
            clock_speed=float(raw["clock_speed"]),
            clock_mono=float(raw["clock_mono"]),
            devices=tuple(DeviceSpec(**d) for d in raw["devices"]),
            media=raw["media"],
            synthetic_bytes=int(raw["synthetic_bytes"]),
            pacing=Pacing(
                telemetry_every=pacing["telemetry_every"],
                segment_seconds=pacing["segment_seconds"],
                segment_every=pacing["segment_every"],
                event_gap=(pacing["event_gap"][0], pacing["event_gap"][1]),
            ),
            horizon_s=float(raw["horizon_s"]),
            connect_concurrency=int(raw["connect_concurrency"]),
            report_every=float(raw["report_every"]),
            log_file=raw.get("log_file"),
        )

    def clock(self) -> SimClock:
        """The parent's clock, rebuilt here: monotonic time is shared by the machine."""
        elapsed = (time.monotonic() - self.clock_mono) * self.clock_speed
        start = datetime.fromisoformat(self.clock_start) + timedelta(seconds=elapsed)
        return SimClock(start, self.clock_speed)


class DeviceWorker:
    """Runs some devices of the fleet: connects them at a bounded pace and keeps them up."""

    def __init__(self, *, spec: WorkerSpec, clock: Clock) -> None:
        self.spec = spec
        self.clock = clock
        self.counters = WorkerCounters()
        self.devices: list[SimulatedDevice] = []
        #: Set once every device has connected (or failed to within its time).
        self.go = asyncio.Event()
        self.uploads = Uploads()
        self._rng = random.Random(f"worker:{len(spec.devices)}")

    @property
    def connected(self) -> int:
        return sum(1 for device in self.devices if device.connected.is_set())

    def snapshot(self, *, final: bool = False) -> dict[str, Any]:
        """Totals so far, and the versions and latencies since the last snapshot."""
        c = self.counters
        snap = {
            # When it was taken: the machine's monotonic clock, which the parent shares.
            "at": time.monotonic(),
            "connected": self.connected,
            "devices": len(self.spec.devices),
            "published": sum(c.published.values()),
            "published_by": dict(c.published),
            "uploads": c.uploads,
            "upload_bytes": c.upload_bytes,
            "events": c.events,
            "refusals": dict(c.refusals),
            "errors": dict(c.errors),
            "versions": c.versions,
            "latencies": c.latencies,
            # This process's own cost (issue 16): CPU seconds so far, peak RSS.
            "cpu_s": round(time.process_time(), 3),
            "rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "final": final,
        }
        c.versions, c.latencies = [], []
        return snap

    def _build(self, spec: DeviceSpec, http: aiohttp.ClientSession) -> SimulatedDevice:
        common: dict[str, Any] = {
            "device_id": spec.device_id,
            "mqtt_url": self.spec.mqtt_url,
            "login": BrokerLogin(
                username=spec.username, password=spec.password, ca_file=self.spec.ca_file
            ),
            "clock": self.clock,
            "counters": self.counters,
            "go": self.go,
        }
        if spec.kind == "camera":
            return FleetCamera(
                pacing=self.spec.pacing,
                http=http,
                uploads=self.uploads,
                rogue=spec.rogue,
                horizon_s=self.spec.horizon_s * self.spec.clock_speed,
                media=self.spec.media,
                synthetic_bytes=self.spec.synthetic_bytes,
                **common,
            )
        return FleetRouter(telemetry_every=self.spec.pacing.telemetry_every, **common)

    async def _supervise(self, device: SimulatedDevice) -> None:
        delay = 1.0
        while True:
            try:
                await device.run()
                self.counters.errors["device:disconnected"] += 1
            except Exception as exc:
                self.counters.errors[f"device:{_describe(exc)}"] += 1
                log.warning("%s: %s", device.device_id, exc)
            await asyncio.sleep(delay * self._rng.uniform(0.5, 1.5))
            delay = min(delay * 2, 30.0)

    async def _admit(self, device: SimulatedDevice, gate: asyncio.Semaphore) -> None:
        try:
            await asyncio.wait_for(device.connected.wait(), 30)
        except TimeoutError:
            self.counters.errors["device:connect_timeout"] += 1
        finally:
            gate.release()

    async def run(self, stop: asyncio.Event) -> None:
        """Connect every device (at most ``connect_concurrency`` at once) until ``stop``."""
        connector = aiohttp.TCPConnector(limit=256)
        async with aiohttp.ClientSession(connector=connector) as http:
            self.devices = [self._build(spec, http) for spec in self.spec.devices]
            gate = asyncio.Semaphore(self.spec.connect_concurrency)
            tasks: list[asyncio.Task[None]] = []
            async with asyncio.TaskGroup() as tg:
                for device in self.devices:
                    await gate.acquire()
                    if stop.is_set():
                        gate.release()
                        break
                    name = f"fleet[{device.device_id}]"
                    tasks.append(tg.create_task(self._supervise(device), name=name))
                    tasks.append(tg.create_task(self._admit(device, gate), name=f"{name}.admit"))
                for _ in range(self.spec.connect_concurrency):  # the last admissions
                    await gate.acquire()
                self.go.set()
                await stop.wait()
                await self.uploads.halt()
                await cancel_all(tasks)


async def worker_process() -> int:
    """``python -m simulators.fleet --worker``: a spec line on stdin, snapshots on stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    spec = WorkerSpec.from_json(await asyncio.to_thread(sys.stdin.readline))
    if spec.log_file:
        logging.basicConfig(
            filename=spec.log_file,
            level=logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    worker = DeviceWorker(spec=spec, clock=spec.clock())
    stop = asyncio.Event()

    async def wait_for_stop() -> None:
        await asyncio.to_thread(sys.stdin.readline)  # "stop", or EOF if the parent died
        stop.set()

    async def report() -> None:
        while True:
            await asyncio.sleep(spec.report_every)
            print(json.dumps(worker.snapshot()), flush=True)

    async with asyncio.TaskGroup() as tg:
        helpers = [
            tg.create_task(wait_for_stop(), name="worker.stdin"),
            tg.create_task(report(), name="worker.report"),
        ]
        await worker.run(stop)
        await cancel_all(helpers[1:])
    print(json.dumps(worker.snapshot(final=True)), flush=True)
    return 0


@contextlib.contextmanager
def _log_sink(path: str | None) -> Iterator[BinaryIO | None]:
    if path is None:
        yield None
        return
    with open(path, "ab") as sink:
        yield sink


class WorkerHandle:
    """The parent's side of one worker: a child process, or devices run in this loop."""

    def __init__(self, spec: WorkerSpec, *, clock: Clock, inline: bool) -> None:
        self.spec = spec
        self.inline = inline
        self.latest: dict[str, Any] = {"connected": 0, "devices": len(spec.devices)}
        self.on_snapshot: Callable[[dict[str, Any]], None] = lambda _snap: None
        self._clock = clock
        self._process: asyncio.subprocess.Process | None = None
        self._inline: DeviceWorker | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._final = asyncio.Event()

    def _take(self, snap: dict[str, Any]) -> None:
        self.latest = snap
        self.on_snapshot(snap)

    async def start(self) -> None:
        if self.inline:
            self._start_inline()
        else:
            await self._start_process()

    def _start_inline(self) -> None:
        worker = DeviceWorker(spec=self.spec, clock=self._clock)
        self._inline = worker

        async def run_inline() -> None:
            await worker.run(self._stop)
            self._take(worker.snapshot(final=True))
            self._final.set()

        async def report_inline() -> None:
            while True:
                await asyncio.sleep(self.spec.report_every)
                self._take(worker.snapshot())

        self._tasks = [
            asyncio.create_task(run_inline(), name="fleet[inline].run"),
            asyncio.create_task(report_inline(), name="fleet[inline].report"),
        ]

    async def _start_process(self) -> None:
        # The child's stderr goes to its log file (the status line owns this terminal).
        with _log_sink(self.spec.log_file) as stderr:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "simulators.fleet",
                "--worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                limit=64 * 1024 * 1024,
            )
        assert self._process.stdin is not None
        self._process.stdin.write(self.spec.to_json().encode() + b"\n")
        await self._process.stdin.drain()
        self._tasks = [asyncio.create_task(self._read(), name="fleet[worker].read")]

    async def _read(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        while line := await self._process.stdout.readline():
            snap = json.loads(line)
            self._take(snap)
            if snap.get("final"):
                self._final.set()
        self._final.set()

    async def stop(self, timeout: float = 30.0) -> None:
        if self.inline:
            self._stop.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._final.wait(), timeout)
            await cancel_all(self._tasks)
            return
        process = self._process
        if process is None:
            return
        if process.stdin is not None and process.returncode is None:
            with contextlib.suppress(ConnectionError):
                process.stdin.write(b"stop\n")
                await process.stdin.drain()
        try:
            await asyncio.wait_for(self._final.wait(), timeout)
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
        await cancel_all(self._tasks)


class WorkerPool:
    """The workers of a run, and the fleet's totals from their latest snapshots."""

    def __init__(self, *, on_version: Callable[[str, int, float], None]) -> None:
        self.handles: list[WorkerHandle] = []
        #: The upload latencies (seconds) the workers have reported so far.
        self.upload_latency: list[float] = []
        #: Called with each device id, the version it applied and when (monotonic).
        self._on_version = on_version
        #: Set at each snapshot (:meth:`fresh_totals` waits on it).
        self._snapshot = asyncio.Event()

    async def start(self, spec: WorkerSpec, *, clock: Clock, inline: bool) -> None:
        handle = WorkerHandle(spec, clock=clock, inline=inline)
        handle.on_snapshot = self._take
        self.handles.append(handle)
        await handle.start()

    def _take(self, snap: dict[str, Any]) -> None:
        for device_id, version, at in snap.get("versions", []):
            self._on_version(device_id, int(version), float(at))
        self.upload_latency.extend(snap.get("latencies", []))
        self._snapshot.set()

    async def fresh_totals(self, after: float, *, within: float = 2.0) -> dict[str, Any]:
        """The totals once every worker's snapshot was taken at or after ``after``
        (monotonic), waiting up to ``within`` seconds for them (then what there is).

        What the devices had sent by a moment is then at least what they had sent when
        the gateway's count was read before it: the backlog cannot go below zero by the
        snapshots' lag alone."""
        deadline = time.monotonic() + within
        while True:
            self._snapshot.clear()
            # A worker's final snapshot counts all it will ever send.
            if all(
                h.latest.get("final") or h.latest.get("at", after) >= after for h in self.handles
            ):
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._snapshot.wait(), left)
        return self.totals()

    async def stop(self) -> None:
        for handle in self.handles:
            await handle.stop()

    def totals(self) -> dict[str, Any]:
        snaps = [handle.latest for handle in self.handles]
        refusals: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        published_by: Counter[str] = Counter()
        for snap in snaps:
            published_by.update(snap.get("published_by", {}))
            refusals.update(snap.get("refusals", {}))
            errors.update(snap.get("errors", {}))

        def total(key: str) -> int:
            return sum(int(snap.get(key, 0)) for snap in snaps)

        def amount(key: str) -> float:
            return sum(float(snap.get(key, 0.0)) for snap in snaps)

        taken = [float(snap["at"]) for snap in snaps if "at" in snap]
        return {
            #: When the snapshots were taken (their mean, monotonic); 0 before any.
            "at": sum(taken) / len(taken) if taken else 0.0,
            "connected": total("connected"),
            "devices": total("devices"),
            "published": total("published"),
            "uploads": total("uploads"),
            "upload_bytes": total("upload_bytes"),
            "events": total("events"),
            "published_by": published_by,
            "refusals": refusals,
            "errors": errors,
            #: The workers' CPU seconds so far and their peak RSS, summed (an inline
            #: worker's are those of the whole process: the runner's, and an embedded
            #: gateway's).
            "cpu_s": amount("cpu_s"),
            "rss_mib": amount("rss_mib"),
        }
