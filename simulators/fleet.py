"""``kanjia simulate``: a fleet of simulated households against one gateway.

Each household is a broadband account with 1-3 cameras, a router and 0-2 mesh satellites
(routers too); cameras get a cloud-replay plan drawn from ``--plans`` (or none). The
runner provisions them through the platform API, then runs every device as its own MQTT
connection (own client id, own Last Will) in one or more worker processes, and meanwhile
plays the platform (broadband stop/resume orders, ``--stop-rate`` per simulated hour) and
the companion app (timeline and playlist requests, ``--app-rate`` per simulated hour).

Without ``--service-url`` it starts an embedded service: an amqtt broker (or the broker
named by ``--mqtt-url``) and a gateway on SQLite and the filesystem store in a temporary
directory, on a :class:`~devices.clock.SimClock` that the fleet shares. With it, the fleet
reads the service's clock once and runs a clock of ``--clock-speed`` from there.

Accelerated time and real cadence: device cadences are clock seconds (telemetry every 30,
10-s segments), but no device sends telemetry, and no camera a segment, more often than
once per ``--min-real-interval`` real seconds (5). At 3600x a continuous camera therefore
uploads a 10-s segment every five simulated hours, and an event camera sees an event
every 10-30 real seconds: the wire and the rules run at a rate one machine can carry.

Progress goes to stderr as a refreshing status line; the final report is JSON
(``--report FILE``), and the exit status is 1 when anything counted as an error.
Errors are what should never happen: device or upload failures, unexpected HTTP answers,
orders whose devices did not converge, and the gateway's own failure counters.
Refusals (``not_entitled``, ``suspended``...) are the rules at work and are only counted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import random
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Literal, TextIO

import aiohttp
import aiomqtt

from devices.broadband import StopType
from devices.clock import Clock, SimClock
from simulators.camera import CLIP_SECONDS, PRE_ROLL_SECONDS, CameraSimulator, Media
from simulators.device import SimulatedDevice
from simulators.media import encode_segment, synthetic_segment
from simulators.scene import Scene, script_actors
from simulators.tasks import cancel_all

log = logging.getLogger(__name__)

NO_PLAN = "none"
DEFAULT_PLANS = (
    "continuous-7d=3,event-7d=3,continuous-1d=1,continuous-30d=1,event-1d=1,event-30d=1,none=2"
)
DEFAULT_START = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
#: An order whose devices have not all reported its version by then is an error.
CONVERGENCE_TIMEOUT = 30.0
#: How long the end of a run waits for outstanding orders and the gateway's backlog.
DRAIN_SECONDS = 15.0
#: The ramp gives up when no further device connected for this long.
RAMP_STALL_SECONDS = 30.0
STOP_TYPES = tuple(StopType)


class FleetError(Exception):
    """The fleet could not be set up (the message says what the service answered)."""


class ProvisioningError(FleetError):
    def __init__(self, what: str, status: int, body: str) -> None:
        super().__init__(f"{what}: HTTP {status}: {body[:300]}")
        self.what = what
        self.status = status


# -- options (pure) ----------------------------------------------------------------------

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h)?$")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Real seconds from ``90``, ``90s``, ``2m``, ``1.5h``; positive."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"duration {text!r} is not like 90s, 2m or 1h")
    seconds = float(match.group(1)) * _UNIT[match.group(2) or "s"]
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be more than zero")
    return seconds


@dataclass(frozen=True, slots=True)
class PlanShare:
    """One entry of ``--plans``: a plan id (or ``none``) and its weight."""

    plan: str | None
    weight: int


_PLAN_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def parse_plan_mix(text: str) -> tuple[PlanShare, ...]:
    """``continuous-7d=3,event-7d=2,none=1``: plans (or none) with whole weights."""
    shares: list[PlanShare] = []
    seen: set[str] = set()
    for part in text.split(","):
        name, sep, weight_text = part.strip().partition("=")
        name = name.strip()
        if not _PLAN_ID.match(name):
            raise ValueError(f"plan {name!r} in --plans is not a plan id")
        if name in seen:
            raise ValueError(f"plan {name!r} is given twice in --plans")
        seen.add(name)
        try:
            weight = int(weight_text) if sep else 1
        except ValueError:
            raise ValueError(f"the weight of {name!r} in --plans is not a whole number") from None
        if weight < 0:
            raise ValueError(f"the weight of {name!r} in --plans is negative")
        shares.append(PlanShare(plan=None if name == NO_PLAN else name, weight=weight))
    if not any(share.weight for share in shares):
        raise ValueError("--plans gives no plan a positive weight")
    return tuple(shares)


@dataclass(frozen=True, slots=True, kw_only=True)
class Pacing:
    """Device cadences in clock seconds, never faster than the real-time floor."""

    telemetry_every: float
    segment_seconds: float
    segment_every: float
    event_gap: tuple[float, float]

    @classmethod
    def for_speed(
        cls, *, speed: float, telemetry_s: float, segment_s: float, min_real_s: float
    ) -> Pacing:
        if speed <= 0 or telemetry_s <= 0 or min_real_s < 0:
            raise ValueError("speed and telemetry must be positive, the floor not negative")
        if not 0 < segment_s <= 60:
            raise ValueError("segments last more than 0 and at most 60 seconds")
        floor = speed * min_real_s
        return cls(
            telemetry_every=max(telemetry_s, floor),
            segment_seconds=segment_s,
            segment_every=max(segment_s, floor),
            # An event clip is a minute long (R1): events at least a minute apart.
            event_gap=(max(60.0, 2 * floor), max(300.0, 6 * floor)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetOptions:
    households: int = 10
    clock_speed: float = 1.0
    duration: float = 60.0
    media: Media = "synthetic"
    plans: tuple[PlanShare, ...] = field(default_factory=lambda: parse_plan_mix(DEFAULT_PLANS))
    #: Broadband stop/resume orders per simulated hour (fleet-wide).
    stop_rate: float = 2.0
    #: Companion-app timeline/playlist requests per simulated hour (fleet-wide).
    app_rate: float = 6.0
    seed: int = 1
    #: Share of cameras whose firmware ignores the desired state and always records.
    rogue_share: float = 0.05
    telemetry_seconds: float = 30.0
    segment_seconds: float = 10.0
    #: Size of a synthetic segment (``--media synthetic``).
    synthetic_bytes: int = 66_000
    min_real_interval: float = 5.0
    workers: int = 1
    #: Devices connecting at once; ``None``: one for the embedded amqtt broker, else 64.
    connect_concurrency: int | None = None
    start: datetime = DEFAULT_START
    prefix: str = ""
    service_url: str | None = None
    platform_token: str | None = None
    mqtt_url: str | None = None
    status_interval: float = 1.0

    def __post_init__(self) -> None:
        if self.households < 1:
            raise ValueError("households must be at least 1")
        if self.clock_speed <= 0 or self.duration <= 0:
            raise ValueError("clock speed and duration must be positive")
        if self.media not in ("real", "synthetic"):
            raise ValueError("media must be real or synthetic")
        if self.stop_rate < 0 or self.app_rate < 0:
            raise ValueError("stop and app rates must not be negative")
        if self.synthetic_bytes < 1:
            raise ValueError("a synthetic segment holds at least one byte")
        if not 0 <= self.rogue_share <= 1:
            raise ValueError("the rogue share is a fraction from 0 to 1")
        if self.workers < 0 or (self.connect_concurrency or 1) < 1:
            raise ValueError("workers must not be negative; connect concurrency at least 1")
        if self.start.tzinfo is None:
            raise ValueError("the start must carry a timezone offset")
        if self.service_url and not (self.platform_token and self.mqtt_url):
            raise ValueError("--service-url needs --platform-token and --mqtt-url")
        if self.prefix and not re.fullmatch(r"[A-Za-z0-9-]{1,20}", self.prefix):
            raise ValueError("the id prefix is 1-20 letters, digits or hyphens")
        Pacing.for_speed(
            speed=self.clock_speed,
            telemetry_s=self.telemetry_seconds,
            segment_s=self.segment_seconds,
            min_real_s=self.min_real_interval,
        )

    @property
    def id_prefix(self) -> str:
        return self.prefix or f"sim{self.seed}"

    @property
    def pacing(self) -> Pacing:
        return Pacing.for_speed(
            speed=self.clock_speed,
            telemetry_s=self.telemetry_seconds,
            segment_s=self.segment_seconds,
            min_real_s=self.min_real_interval,
        )

    def summary(self) -> dict[str, Any]:
        return {
            "households": self.households,
            "clock_speed": self.clock_speed,
            "duration_s": self.duration,
            "media": self.media,
            "plans": {share.plan or NO_PLAN: share.weight for share in self.plans},
            "stop_rate_per_sim_hour": self.stop_rate,
            "app_rate_per_sim_hour": self.app_rate,
            "seed": self.seed,
            "rogue_share": self.rogue_share,
            "telemetry_s": self.telemetry_seconds,
            "segment_s": self.segment_seconds,
            "synthetic_bytes": self.synthetic_bytes,
            "min_real_interval_s": self.min_real_interval,
            "workers": self.workers,
        }


# -- the fleet's make-up (pure) ----------------------------------------------------------

Role = Literal["camera", "router", "satellite"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSpec:
    device_id: str
    role: Role
    plan: str | None = None
    rogue: bool = False

    @property
    def kind(self) -> Literal["camera", "router"]:
        return "camera" if self.role == "camera" else "router"


@dataclass(frozen=True, slots=True, kw_only=True)
class HouseholdSpec:
    account_id: str
    owner_id: str
    star_level: int
    devices: tuple[DeviceSpec, ...]

    @property
    def cameras(self) -> tuple[DeviceSpec, ...]:
        return tuple(d for d in self.devices if d.role == "camera")


def plan_fleet(
    *,
    households: int,
    plans: Sequence[PlanShare],
    seed: int,
    prefix: str,
    rogue_share: float = 0.0,
) -> tuple[HouseholdSpec, ...]:
    """The households of a run: the same arguments always give the same fleet."""
    rng = random.Random(f"fleet:{seed}")
    choices = [share.plan for share in plans]
    weights = [share.weight for share in plans]
    fleet = []
    for n in range(1, households + 1):
        home = f"{prefix}-h{n:05d}"
        devices: list[DeviceSpec] = []
        for c in range(1, rng.randint(1, 3) + 1):
            plan = rng.choices(choices, weights)[0]
            rogue = rng.random() < rogue_share
            devices.append(
                DeviceSpec(device_id=f"{home}-cam{c}", role="camera", plan=plan, rogue=rogue)
            )
        devices.append(DeviceSpec(device_id=f"{home}-rt", role="router"))
        for s in range(1, rng.randint(0, 2) + 1):
            devices.append(DeviceSpec(device_id=f"{home}-sat{s}", role="satellite"))
        fleet.append(
            HouseholdSpec(
                account_id=home,
                owner_id=f"{home}-owner",
                star_level=rng.randint(1, 7),
                devices=tuple(devices),
            )
        )
    return tuple(fleet)


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0-100) of ``values``; 0 when there are none."""
    if not 0 <= q <= 100:
        raise ValueError("q is a percentage from 0 to 100")
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


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


# -- devices and worker processes --------------------------------------------------------


@dataclass(slots=True)
class WorkerCounters:
    """What the devices of one worker did; drained into snapshots."""

    published: Counter[str] = field(default_factory=Counter)
    uploads: int = 0
    upload_bytes: int = 0
    events: int = 0
    refusals: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    versions: list[tuple[str, int, float]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def applied(self, device_id: str, version: int) -> None:
        self.versions.append((device_id, version, time.monotonic()))


class Uploads:
    """The worker's uploads in flight, so that stopping lets them finish: an upload cut
    after its segment notice went out would be indexed by the service but never counted
    by the fleet, and the two tallies of the report would disagree."""

    #: How long stopping waits for the uploads in flight (an answer's timeout, a PUT).
    GRACE_S = 15.0

    def __init__(self) -> None:
        self.halted = False
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def one(self) -> Iterator[None]:
        self._count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._count -= 1
            if not self._count:
                self._idle.set()

    async def halt(self) -> None:
        """No new upload starts; wait (bounded) for those in flight."""
        self.halted = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self.GRACE_S)


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return type(exc).__name__


class FleetDevice(SimulatedDevice):
    """What every device of the fleet adds: counting, and quiet until the fleet is up.

    Telemetry (and a camera's recording) starts when ``go`` is set, once every device of
    the worker has connected, at a random phase of its cadence: a connection storm and
    traffic at once would measure the broker's connect path, not the service.
    """

    def __init__(
        self, *, counters: WorkerCounters, go: asyncio.Event, telemetry_every: float, **kwargs: Any
    ) -> None:
        super().__init__(telemetry_interval=None, **kwargs)
        self.counters = counters
        self.go = go
        self.telemetry_every = telemetry_every

    async def publish(
        self, client: aiomqtt.Client, suffix: str, payload: dict[str, Any], *, retain: bool = False
    ) -> None:
        await super().publish(client, suffix, payload, retain=retain)
        self.counters.published[suffix] += 1

    async def on_message(
        self, client: aiomqtt.Client, suffix: str, payload: dict[str, Any]
    ) -> None:
        await super().on_message(client, suffix, payload)
        if suffix == "desired" and isinstance(payload.get("version"), int):
            self.counters.applied(self.device_id, self.applied_version)

    def background(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        return [("telemetry", self._paced_telemetry()), *self.loops()]

    def loops(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        """Further loops of a kind of fleet device."""
        return []

    async def _until(self, at: datetime) -> None:
        left = (at - self.clock.now()).total_seconds()
        if left > 0:
            await self.clock.sleep(left)

    async def _paced_telemetry(self) -> None:
        """Telemetry on the device's own cadence (see ``FleetCamera._continuous``)."""
        await self.go.wait()
        await self.clock.sleep(self.rng.uniform(0, self.telemetry_every))
        due = self.clock.now()
        while True:
            client = self.client
            if client is None:
                return
            await self.publish(client, "telemetry", self.telemetry())
            due += timedelta(seconds=self.telemetry_every)
            await self._until(due)


class FleetRouter(FleetDevice):
    """A router or mesh satellite of the fleet."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(kind="router", **kwargs)


class FleetCamera(FleetDevice, CameraSimulator):
    """A camera of the fleet, paced by :class:`Pacing` (see the module docstring).

    Continuous mode uploads the last ``segment_seconds`` every ``segment_every``; event
    mode reports each scripted actor as an event and uploads its one-minute clip (R1).
    A rogue camera ignores its desired mode and always records continuously, so the
    service's refusals (R1, R8) are exercised.
    """

    def __init__(
        self,
        *,
        pacing: Pacing,
        http: aiohttp.ClientSession,
        uploads: Uploads,
        rogue: bool,
        horizon_s: float,
        clock: Clock,
        device_id: str,
        **kwargs: Any,
    ) -> None:
        count = min(10_000, math.ceil(horizon_s / pacing.event_gap[0]) + 1)
        actors = script_actors(
            start=clock.now(), count=count, seed=device_id, gap_s=pacing.event_gap
        )
        super().__init__(
            record=False,
            segment_seconds=pacing.segment_seconds,
            telemetry_every=pacing.telemetry_every,
            scene=Scene(seed=device_id, actors=actors),
            clock=clock,
            device_id=device_id,
            **kwargs,
        )
        self.pacing = pacing
        self.http = http
        self.uploads = uploads
        self.rogue = rogue

    def loops(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        if self.rogue:
            return [("continuous", self._continuous())]
        return [("continuous", self._continuous()), ("events", self._events())]

    def _recording(self) -> str:
        return "continuous" if self.rogue else self.mode

    async def _continuous(self) -> None:
        """A segment ends every ``segment_every`` on the camera's own cadence, as a real
        camera cuts its recording: the next one is due ``every`` after the last one was
        due, not after its upload finished. (Sleeping after each upload let every slow
        moment of the worker's loop gather cameras onto the same phase, until their
        uploads came in bursts that stalled the loop for seconds.)"""
        seconds, every = self.pacing.segment_seconds, self.pacing.segment_every
        await self.go.wait()
        await self.clock.sleep(self.rng.uniform(0, every))
        end = self.clock.now()
        while True:
            await self._until(end)
            if self._recording() == "continuous":
                await self._upload(end - timedelta(seconds=seconds), seconds, "continuous")
            end += timedelta(seconds=every)

    async def _events(self) -> None:
        await self.go.wait()
        for actor in self.scene.actors:
            if actor.start < self.clock.now():
                continue  # before the fleet was up, or before a reconnection
            await self._until(actor.start)
            if self.mode != "event":
                continue
            event_id = f"{self.device_id}-ev-{int(actor.start.timestamp() * 1000)}"
            await self.report_event(event_id=event_id, kind=actor.kind, at=actor.start, score=1.0)
            self.counters.events += 1
            clip_start = actor.start - timedelta(seconds=PRE_ROLL_SECONDS)
            await self._until(clip_start + timedelta(seconds=CLIP_SECONDS))
            await self._upload(clip_start, CLIP_SECONDS, "event", event_id)

    def _media(self, start: datetime, seconds: float) -> bytes:
        if self.media == "synthetic":
            return synthetic_segment(self.synthetic_bytes, f"{self.device_id}:{start}")
        return encode_segment(
            self.scene, start, seconds, width=self.scene.width, height=self.scene.height
        )

    async def _upload(
        self, start: datetime, seconds: float, kind: str, event_id: str | None = None
    ) -> None:
        if self.uploads.halted:
            return
        with self.uploads.one():
            await self._upload_one(start, seconds, kind, event_id)

    async def _upload_one(
        self, start: datetime, seconds: float, kind: str, event_id: str | None
    ) -> None:
        counters = self.counters
        if self.media == "synthetic":
            data = self._media(start, seconds)
        else:
            data = await asyncio.to_thread(self._media, start, seconds)
        began = time.monotonic()
        try:
            outcome = await self.upload(
                self.http, start=start, seconds=seconds, kind=kind, event_id=event_id, data=data
            )
        except TimeoutError:
            counters.errors["upload:no_answer"] += 1
            log.warning("%s: no answer to the upload of %s (%s)", self.device_id, start, kind)
            return
        except aiohttp.ClientError as exc:
            counters.errors[f"upload:{type(exc).__name__}"] += 1
            return
        if outcome.ok:
            counters.latencies.append(time.monotonic() - began)
            counters.uploads += 1
            counters.upload_bytes += len(data)
            counters.published["segment"] += 1  # the notice, sent by upload() itself
        elif outcome.code is not None and outcome.code.startswith("http_"):
            counters.errors[f"upload:put_{outcome.code}"] += 1
        else:
            counters.refusals[str(outcome.code)] += 1


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSpec:
    """Everything a worker process needs (sent as JSON on its stdin)."""

    mqtt_url: str
    clock_start: str
    clock_speed: float
    clock_mono: float
    devices: tuple[DeviceSpec, ...]
    media: Media
    synthetic_bytes: int
    pacing: Pacing
    horizon_s: float
    connect_concurrency: int
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
            "final": final,
        }
        c.versions, c.latencies = [], []
        return snap

    def _build(self, spec: DeviceSpec, http: aiohttp.ClientSession) -> SimulatedDevice:
        common: dict[str, Any] = {
            "device_id": spec.device_id,
            "mqtt_url": self.spec.mqtt_url,
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


async def _worker_process() -> int:
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
            return
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


# -- the service under test --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    http_url: str
    platform_token: str
    mqtt_url: str
    clock: Clock
    clock_speed: float
    embedded: bool
    broker: str
    #: amqtt 0.12 breaks ("dictionary changed size during iteration") under concurrent
    #: connects: it walks every subscription of the broker for each new client.
    connect_concurrency: int = 64


@asynccontextmanager
async def embedded_service(options: FleetOptions, workdir: Path) -> AsyncIterator[Target]:
    """An amqtt broker (unless ``--mqtt-url``) and a gateway on SQLite and files."""
    from gateway.config import load_settings
    from gateway.demo import embedded_broker
    from gateway.service import Gateway

    speed, pacing = options.clock_speed, options.pacing
    clock = SimClock(options.start, speed)
    async with AsyncExitStack() as stack:
        if options.mqtt_url:
            mqtt_url, broker, concurrency = options.mqtt_url, options.mqtt_url, 64
        else:
            concurrency = 1
            mqtt_url = await stack.enter_async_context(embedded_broker())
            broker = f"amqtt (embedded) {mqtt_url}"
        token = secrets.token_urlsafe(18)
        # A device is silent for at most its cadence, and presigned URLs must outlive a
        # busy second: both are clock seconds, so they grow with the speed.
        quiet = max(pacing.telemetry_every, pacing.segment_every)
        settings = load_settings(
            environ={},
            overrides={
                "mqtt_url": mqtt_url,
                "mqtt_client_id": f"kanjia-fleet-{secrets.token_hex(4)}",
                "database_url": f"sqlite:///{workdir / 'kanjia.db'}",
                "object_store_url": (workdir / "objects").as_uri(),
                "http_port": 0,
                "platform_token": token,
                "clock": f"sim:{options.start.isoformat()}@{speed:g}",
                "presence_timeout_seconds": max(90.0, 3 * quiet, speed * 15),
                "url_ttl_seconds": max(300, math.ceil(speed * 60)),
            },
        )
        gateway = await stack.enter_async_context(Gateway(settings=settings, clock=clock))
        mqtt = gateway.services.mqtt
        assert mqtt is not None
        await asyncio.wait_for(mqtt.connected.wait(), 30)
        yield Target(
            http_url=gateway.url,
            platform_token=token,
            mqtt_url=mqtt_url,
            clock=clock,
            clock_speed=speed,
            embedded=True,
            broker=broker,
            connect_concurrency=concurrency,
        )


@asynccontextmanager
async def remote_service(
    options: FleetOptions, http: aiohttp.ClientSession
) -> AsyncIterator[Target]:
    """A running service: the fleet's clock starts from the service's ``/ops/v1/clock``."""
    assert options.service_url
    assert options.platform_token
    assert options.mqtt_url
    url = options.service_url.rstrip("/")
    headers = {"Authorization": f"Bearer {options.platform_token}"}
    began = time.monotonic()
    async with http.get(f"{url}/ops/v1/clock", headers=headers) as response:
        if response.status != 200:
            raise ProvisioningError(
                "reading the service clock", response.status, await response.text()
            )
        body = await response.json()
    half_trip = (time.monotonic() - began) / 2
    now = datetime.fromisoformat(body["now"]) + timedelta(seconds=half_trip * options.clock_speed)
    yield Target(
        http_url=url,
        platform_token=options.platform_token,
        mqtt_url=options.mqtt_url,
        clock=SimClock(now, options.clock_speed),
        clock_speed=options.clock_speed,
        embedded=False,
        broker=options.mqtt_url,
    )


class Platform:
    """The platform's and the app's HTTP calls."""

    def __init__(self, http: aiohttp.ClientSession, target: Target) -> None:
        self.http = http
        self.url = target.http_url
        self.headers = {"Authorization": f"Bearer {target.platform_token}"}

    async def call(
        self, method: str, path: str, body: Any = None, ok: Iterable[int] = (200, 201)
    ) -> Any:
        async with self.http.request(
            method, f"{self.url}{path}", json=body, headers=self.headers
        ) as response:
            text = await response.text()
            if response.status not in tuple(ok):
                raise ProvisioningError(f"{method} {path}", response.status, text)
            return json.loads(text) if text else None

    async def provision(self, home: HouseholdSpec, prefix: str) -> str:
        """The account, its devices, their plans; returns an app token for the family."""
        await self.call(
            "PUT",
            f"/platform/v1/accounts/{home.account_id}",
            {"owner_id": home.owner_id, "star_level": home.star_level, "name": "simulated"},
        )
        for device in home.devices:
            await self.call(
                "POST",
                f"/platform/v1/accounts/{home.account_id}/devices",
                {"device_id": device.device_id, "kind": device.kind, "name": device.role},
            )
        for camera in home.cameras:
            if camera.plan is not None:
                await self.call(
                    "POST",
                    "/platform/v1/subscriptions",
                    {
                        "order_id": f"{prefix}-sub-{camera.device_id}",
                        "account_id": home.account_id,
                        "device_id": camera.device_id,
                        "plan": camera.plan,
                        "orderer_id": home.owner_id,
                        "channel": "electronic",
                    },
                )
        token = await self.call(
            "POST", "/platform/v1/app-tokens", {"account_id": home.account_id, "user_id": "family"}
        )
        return str(token["token"])

    async def has_broadband_routes(self) -> bool:
        document = await self.call("GET", "/openapi.json")
        paths = document.get("paths", {}) if isinstance(document, dict) else {}
        return "/platform/v1/broadband/{account_id}/stop" in paths

    async def metrics(self) -> dict[str, dict[str, float]]:
        async with self.http.get(f"{self.url}/metrics") as response:
            return parse_metrics(await response.text())


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


def _total(metrics: Mapping[str, Mapping[str, float]], name: str, where: str = "") -> float:
    return sum(v for labels, v in metrics.get(name, {}).items() if where in labels)


#: Gateway counters that only move when something went wrong.
GATEWAY_FAILURES = (
    ("kanjia_mqtt_handler_errors_total", ""),
    ("kanjia_mqtt_malformed_total", ""),
    ("kanjia_mqtt_unknown_device_total", ""),
    ("kanjia_segments_rejected_total", ""),
    ("kanjia_job_runs_total", 'outcome="error"'),
)


def gateway_failures(
    before: Mapping[str, Mapping[str, float]], after: Mapping[str, Mapping[str, float]]
) -> dict[str, int]:
    out = {}
    for name, where in GATEWAY_FAILURES:
        delta = _total(after, name, where) - _total(before, name, where)
        if delta:
            out[f"gateway:{name.removeprefix('kanjia_').removesuffix('_total')}"] = int(delta)
    return out


# -- the run -----------------------------------------------------------------------------


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
        self.processed_start = _total(self.metrics_start, "kanjia_mqtt_messages_total")
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
        self.processed = _total(metrics, "kanjia_mqtt_messages_total") - self.processed_start
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
            return int(_total(metrics_end, name) - _total(start, name))

        processed = _total(metrics_end, "kanjia_mqtt_messages_total") - self.processed_start
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


# -- the command -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kanjia simulate",
        description="Run simulated households (cameras, routers, satellites) against a gateway.",
    )
    parser.add_argument("--households", type=int, default=10)
    parser.add_argument(
        "--clock-speed", type=float, default=1.0, help="simulated seconds per real second"
    )
    parser.add_argument(
        "--duration", type=parse_duration, default=60.0, help="real time: 90s, 2m, 1h"
    )
    parser.add_argument("--media", choices=("real", "synthetic"), default="synthetic")
    parser.add_argument(
        "--plans",
        type=parse_plan_mix,
        default=DEFAULT_PLANS,
        help="plan=weight,...; 'none' for no plan",
    )
    parser.add_argument(
        "--stop-rate",
        type=float,
        default=2.0,
        help="broadband stop/resume orders per simulated hour",
    )
    parser.add_argument(
        "--app-rate",
        type=float,
        default=6.0,
        help="app timeline/playlist requests per simulated hour",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    parser.add_argument("--service-url", help="a running service (else an embedded one)")
    parser.add_argument("--platform-token")
    parser.add_argument("--mqtt-url", help="the broker (embedded mode: instead of amqtt)")
    parser.add_argument("--workers", type=int, default=1, help="device processes (0: in this one)")
    parser.add_argument("--rogue-share", type=float, default=0.05)
    parser.add_argument(
        "--connect-concurrency",
        type=int,
        help="devices connecting at once (default 64; 1 for the embedded amqtt broker)",
    )
    parser.add_argument("--telemetry-seconds", type=float, default=30.0)
    parser.add_argument("--segment-seconds", type=float, default=10.0)
    parser.add_argument("--segment-bytes", type=int, default=66_000, help="synthetic media size")
    parser.add_argument(
        "--min-real-interval", type=float, default=5.0, help="real-time floor of device cadences"
    )
    parser.add_argument(
        "--start", type=datetime.fromisoformat, default=DEFAULT_START, help="embedded clock start"
    )
    parser.add_argument("--prefix", default="", help="id prefix (default sim<seed>)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser


def options_from(args: argparse.Namespace) -> FleetOptions:
    return FleetOptions(
        households=args.households,
        clock_speed=args.clock_speed,
        duration=args.duration,
        media=args.media,
        plans=args.plans,
        stop_rate=args.stop_rate,
        app_rate=args.app_rate,
        seed=args.seed,
        rogue_share=args.rogue_share,
        telemetry_seconds=args.telemetry_seconds,
        segment_seconds=args.segment_seconds,
        synthetic_bytes=args.segment_bytes,
        min_real_interval=args.min_real_interval,
        workers=args.workers,
        connect_concurrency=args.connect_concurrency,
        start=args.start,
        prefix=args.prefix,
        service_url=args.service_url,
        platform_token=args.platform_token,
        mqtt_url=args.mqtt_url,
    )


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    devices, msgs, uploads = report["devices"], report["messages"], report["uploads"]
    orders, app, errors = report["orders"], report["app"], report["errors"]
    lines = [
        f"households {report['fleet']['households']}, devices {devices['total']} "
        f"(peak connected {devices['connected_peak']}, converged at end "
        f"{devices['converged_at_end']}/{devices['known_to_service']})",
        f"simulated {report['timing']['sim_hours']} h in {report['timing']['run_s']} s; "
        f"messages {msgs['published']} ({msgs['per_second']}/s), processed by the gateway "
        f"{msgs['gateway_processed']}",
        f"uploads {uploads['ok']} ({uploads['per_second']}/s, p99 {uploads['latency_p99_ms']} ms), "
        f"indexed {uploads['gateway_indexed']}, swept {uploads['gateway_swept']}, "
        f"refused {uploads['refused'] or 'none'}",
    ]
    if "skipped" in orders:
        lines.append(f"orders skipped: {orders['skipped']}")
    else:
        lines.append(
            f"orders {orders['counts']}; convergence p50 "
            f"{orders['convergence_from_accepted_p50_ms']} ms, p99 "
            f"{orders['convergence_from_accepted_p99_ms']} ms"
        )
    lines.append(f"app requests {app['requests']} (p99 {app['latency_p99_ms']} ms)")
    lines.append(f"errors {errors['total']}" + (f": {errors}" if errors["total"] else ""))
    return lines


async def _main(options: FleetOptions, workdir: Path) -> dict[str, Any]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return await run_fleet(options, workdir=workdir, status=sys.stderr, stop=stop)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["--worker"]:
        return asyncio.run(_worker_process())
    parser = build_parser()
    args = parser.parse_args(args_list)
    try:
        options = options_from(args)
    except ValueError as exc:
        parser.error(str(exc))
    workdir = Path(tempfile.mkdtemp(prefix="kanjia-fleet-"))
    logging.basicConfig(
        filename=workdir / "fleet.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        report = asyncio.run(_main(options, workdir))
    except FleetError as exc:
        print(f"kanjia simulate: {exc}", file=sys.stderr)
        return 2
    errors = int(report["errors"]["total"])
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for line in summary_lines(report):
        print(line)
    if errors or args.keep:
        print(f"work directory (logs): {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
