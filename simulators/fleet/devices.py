"""The fleet's devices: cameras and routers that count what they do, paced."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import aiomqtt

from devices.clock import Clock
from simulators.camera import CameraSimulator
from simulators.device import SimulatedDevice
from simulators.fleet.options import Pacing
from simulators.scene import Scene, script_actors

log = logging.getLogger(__name__)


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

    Continuous mode uploads the last ``segment_seconds`` every ``segment_every``; every
    scripted actor is reported as an event, in every mode, and event mode records it in a
    one-minute clip that later events join (R1; clips never overlap). A rogue camera
    ignores its desired mode and always records continuously, so the service's refusals
    (R1, R8) are exercised.
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
        """Each scripted actor is an event, reported whatever the recording mode (the
        camera's detection runs in every mode). Recording events, the camera places it in
        a clip (R1, :class:`~simulators.clips.ClipPlan`: it opens a clip or joins the
        running one, so clips never overlap) and uploads each clip once it has ended."""
        await self.go.wait()
        for actor in self.scene.actors:
            if actor.start < self.clock.now():
                continue  # before the fleet was up, or before a reconnection
            await self._clips_until(actor.start)
            await self._until(actor.start)
            event_id = f"{self.device_id}-ev-{int(actor.start.timestamp() * 1000)}"
            await self.report_event(event_id=event_id, kind=actor.kind, at=actor.start, score=1.0)
            self.counters.events += 1
            if self._recording() == "event":
                self._clips, _ = self._clips.add(event_id, actor.start)
        await self._clips_until(None)

    async def _clips_until(self, at: datetime | None) -> None:
        """Upload the clips that end by ``at`` (None: all), each once its end has come."""
        running = self._clips.running
        while running is not None and (at is None or running.end <= at):
            await self._until(running.end)
            self._clips, clips = self._clips.due(running.end)
            for clip in clips:
                await self._upload(clip.start, clip.seconds, "event", clip.event_id)
            running = self._clips.running

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
            data = self.media_for(start, seconds)
        else:
            data = await asyncio.to_thread(self.media_for, start, seconds)
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
