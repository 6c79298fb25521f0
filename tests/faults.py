"""The fault suite's parts (issue 14, item 8): a ``kanjia serve`` process that a test kills,
stops and starts again, simulated cameras that keep uploading through the faults and count
what was acknowledged, and the counts read back from the database and the store.

A segment is *acknowledged* when its PUT returned 2xx and the broker PUBACKed its
``segment`` notice (``CameraSimulator.upload`` returns ``ok`` only then); an event when
the broker PUBACKed it. Both are counted on the camera side. Segments are matched by
their object key (the ``key`` of ``upload/res``, ``Segment.object_key``, the listed
object), so the counts do not depend on how segment ids are scoped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import signal
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
from sqlmodel import select

from replay.migrations import open_database
from replay.models import CameraEvent, Segment
from simulators.camera import CameraSimulator
from storage.s3store import S3ObjectStore
from tests.conftest import PLATFORM_TOKEN, platform_headers
from tests.test_cli import KANJIA, clean_env, read_until

#: Seconds a camera waits for ``upload/res`` before it gives the upload up.
RESPONSE_TIMEOUT = 3.0
SEGMENT_SECONDS = 10
#: Where recordings live in the store (every retention's prefix starts so).
RECORDINGS = "rec/"
REPO = Path(__file__).resolve().parents[1]


class GatewayProcess:
    """``kanjia serve`` on a manual clock, its log appended to ``log_path``. Started again
    after a kill, it resumes the clock where the test last moved it."""

    def __init__(self, *, env: dict[str, str], workdir: Path, clock_at: datetime) -> None:
        self._env = env
        self._workdir = workdir
        self.clock_at = clock_at
        self.url = ""
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def log_path(self) -> Path:
        return self._workdir / "serve.log"

    async def start(self) -> None:
        env = clean_env(**self._env, KANJIA_CLOCK=f"manual:{self.clock_at.isoformat()}")
        # The code under test, whatever the caller's PYTHONPATH (a relative one would be
        # read from the process's working directory, and an installed kanjia found).
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
        with self.log_path.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                *KANJIA,
                "serve",
                cwd=self._workdir,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        assert self._proc.stdout is not None
        seen = await read_until(self._proc.stdout, r"serving on \S+", timeout=30)
        found = re.search(r"serving on (\S+)", seen)
        assert found is not None
        self.url = found[1]

    async def signal(self, sig: signal.Signals, *, timeout: float = 15) -> int:
        """Send ``sig`` and wait for the process to end; its exit status."""
        assert self._proc is not None
        self._proc.send_signal(sig)
        return await asyncio.wait_for(self._proc.wait(), timeout)

    async def close(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._proc.wait(), 15)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()

    async def call(
        self, http: aiohttp.ClientSession, method: str, path: str, body: Any = None
    ) -> tuple[int, Any]:
        """A platform or ops request: its status and JSON body."""
        async with http.request(
            method, f"{self.url}{path}", json=body, headers=platform_headers()
        ) as r:
            return r.status, await r.json()

    async def advance(self, http: aiohttp.ClientSession, seconds: float) -> None:
        """Move the manual clock (every job runs once, reconcile included)."""
        status, body = await self.call(http, "POST", "/ops/v1/clock", {"advance_seconds": seconds})
        assert status == 200, body
        self.clock_at = datetime.fromisoformat(body["now"])


def gateway_env(
    *, mqtt_url: str, database_url: str, object_store_url: str, name: str
) -> dict[str, str]:
    return {
        "KANJIA_MQTT_URL": mqtt_url,
        "KANJIA_MQTT_AUTH": "none",
        # Persistent session: what it took but did not commit comes again after a kill.
        "KANJIA_MQTT_CLIENT_ID": f"kanjia-faults-{name}",
        "KANJIA_DATABASE_URL": database_url,
        "KANJIA_OBJECT_STORE_URL": object_store_url,
        "KANJIA_HTTP_PORT": "0",
        "KANJIA_PLATFORM_TOKEN": PLATFORM_TOKEN,
    }


@dataclass
class Tally:
    """What the cameras were told was acknowledged, and what went wrong on their side."""

    #: Object keys of acknowledged segments.
    segments: set[str] = field(default_factory=set)
    #: Ids of acknowledged events.
    events: set[str] = field(default_factory=set)
    refused: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)


class CameraDriver:
    """One camera uploading real H.264 (the same encoded segment each time, under a new
    start) and reporting an event after each upload, through faults: a lost connection is
    opened again by a new simulator, as a camera that restarted (it remembers no desired
    state, so it learns it again only from the broker's retained ``desired``)."""

    def __init__(
        self, device_id: str, *, mqtt_url: str, media: bytes, first_start: datetime, tally: Tally
    ) -> None:
        self.device_id = device_id
        self._mqtt_url = mqtt_url
        self._media = media
        self._first_start = first_start
        self._tally = tally
        self._next = 0
        self.camera: CameraSimulator | None = None
        self._task: asyncio.Task[None] | None = None

    async def connected(self, *, wait: float = 2.0) -> CameraSimulator | None:
        """The camera once connected (reconnecting it if need be), or ``None`` for now."""
        camera, task = self.camera, self._task
        if camera is None or task is None or task.done():
            if task is not None:
                _forget(task)
            camera = self.camera = CameraSimulator(
                device_id=self.device_id,
                mqtt_url=self._mqtt_url,
                telemetry_interval=None,
                record=False,
                response_timeout=RESPONSE_TIMEOUT,
            )
            task = self._task = asyncio.create_task(camera.run(), name=f"fault[{self.device_id}]")
        if not camera.connected.is_set():
            waiter = asyncio.ensure_future(camera.connected.wait())
            await asyncio.wait({waiter, task}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        return camera if camera.connected.is_set() else None

    async def burst(self, stop: asyncio.Event) -> None:
        async with slow_uplink() as http:
            while not stop.is_set():
                camera = await self.connected()
                if camera is None:
                    await asyncio.sleep(0.2)
                    continue
                await self._upload(camera, http)
                await self._event(camera)

    async def _upload(self, camera: CameraSimulator, http: aiohttp.ClientSession) -> None:
        start = self._first_start + timedelta(seconds=SEGMENT_SECONDS * self._next)
        self._next += 1
        try:
            outcome = await camera.upload(
                http, start=start, seconds=SEGMENT_SECONDS, data=self._media
            )
        except (TimeoutError, aiohttp.ClientError, aiomqtt.MqttError, RuntimeError) as exc:
            # RuntimeError: the camera is not connected (any more).
            self._tally.failed[type(exc).__name__] += 1
            await asyncio.sleep(0.2)
            return
        if outcome.ok:
            self._tally.segments.add(str(outcome.key))
        else:
            self._tally.refused[str(outcome.code)] += 1

    async def _event(self, camera: CameraSimulator) -> None:
        """An event after each upload, whatever became of it (events need no grant, so
        they keep coming while uploads cannot be granted)."""
        event_id = f"{self.device_id}-ev-{self._next}"
        at = self._first_start + timedelta(seconds=SEGMENT_SECONDS * self._next - 5)
        try:
            await camera.report_event(event_id=event_id, kind="person", at=at, score=0.9)
        except (aiomqtt.MqttError, RuntimeError) as exc:
            self._tally.failed[type(exc).__name__] += 1
            return
        self._tally.events.add(event_id)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            _forget(self._task)
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError, Exception):
                await self._task


#: A camera hears that its PUT finished up to this long after the store has the object
#: (a slow uplink), so segment notices keep arriving for a moment after uploads stopped
#: being granted or stored: what a fault in that moment does to them is counted.
UPLINK_LATENCY = 0.6


@asynccontextmanager
async def slow_uplink() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP session whose responses reach the camera ``0..UPLINK_LATENCY`` s late."""

    async def late(*_: object) -> None:
        await asyncio.sleep(random.uniform(0, UPLINK_LATENCY))

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(late)
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout, trace_configs=[trace]) as http:
        yield http


def _forget(task: asyncio.Task[None]) -> None:
    """Retrieve a finished camera task's error (a lost connection) so nobody warns of it."""
    if task.done() and not task.cancelled():
        task.exception()


class Fleet:
    """Cameras uploading at once until :meth:`stop`; :attr:`tally` counts the acknowledged."""

    def __init__(self, devices: dict[str, bytes], *, mqtt_url: str, first_start: datetime) -> None:
        self.tally = Tally()
        self.drivers = [
            CameraDriver(
                device_id, mqtt_url=mqtt_url, media=media, first_start=first_start, tally=self.tally
            )
            for device_id, media in devices.items()
        ]
        self._stop = asyncio.Event()
        self._bursts: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._bursts = [
            asyncio.create_task(d.burst(self._stop), name=f"burst[{d.device_id}]")
            for d in self.drivers
        ]

    async def until_acknowledged(self, count: int, *, timeout: float = 60) -> bool:
        """Wait until ``count`` segments in all were acknowledged; false if they were not
        within ``timeout`` seconds (the counts then show where it stalled)."""
        try:
            async with asyncio.timeout(timeout):
                while len(self.tally.segments) < count:
                    for burst in self._bursts:
                        if burst.done():
                            burst.result()  # a driver that crashed fails the test at once
                    await asyncio.sleep(0.05)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """Stop uploading (each camera finishes its upload in flight); stay connected."""
        self._stop.set()
        await asyncio.gather(*self._bursts)

    async def close(self) -> None:
        await asyncio.gather(*(d.close() for d in self.drivers))


@asynccontextmanager
async def fleet_of(
    devices: dict[str, bytes], *, mqtt_url: str, first_start: datetime
) -> AsyncIterator[Fleet]:
    fleet = Fleet(devices, mqtt_url=mqtt_url, first_start=first_start)
    try:
        for driver in fleet.drivers:
            assert await driver.connected(wait=10) is not None, driver.device_id
        yield fleet
    finally:
        await fleet.stop()
        await fleet.close()


@dataclass(frozen=True, slots=True)
class Stored:
    """What the gateway's database and object store hold."""

    segments: frozenset[str]  # object keys of indexed segments
    events: frozenset[str]
    objects: frozenset[str]  # keys listed under the recordings' prefix


async def indexed(database_url: str) -> tuple[frozenset[str], frozenset[str]]:
    """Object keys of the indexed segments, and ids of the indexed events."""
    async with open_database(database_url) as db, db.session() as session:
        keys = (await session.exec(select(Segment.object_key))).all()
        events = (await session.exec(select(CameraEvent.event_id))).all()
    return frozenset(keys), frozenset(events)


async def listed(object_store_url: str) -> frozenset[str]:
    async with S3ObjectStore.from_url(object_store_url) as store:
        return frozenset([info.key async for info in store.list(RECORDINGS)])


async def stored(database_url: str, object_store_url: str) -> Stored:
    segments, events = await indexed(database_url)
    return Stored(segments, events, await listed(object_store_url))


async def until_indexed(
    database_url: str, tally: Tally, *, timeout: float
) -> tuple[frozenset[str], frozenset[str]]:
    """Wait (at most ``timeout`` seconds) until every acknowledged segment and event is
    indexed; what is indexed then, whether or not all of it came."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        segments, events = await indexed(database_url)
        done = tally.segments <= segments and tally.events <= events
        if done or loop.time() > deadline:
            return segments, events
        await asyncio.sleep(0.3)


async def retained_desired(mqtt_url: str, count: int, *, wait: float = 1.5) -> dict[str, int]:
    """The version of each retained ``desired`` on the broker (a fresh subscriber's view)."""
    host, port = mqtt_url.removeprefix("mqtt://").split(":")
    seen: dict[str, int] = {}
    identifier = f"probe-{secrets.token_hex(3)}"
    async with aiomqtt.Client(host, int(port), identifier=identifier) as probe:
        await probe.subscribe("kj/v1/dev/+/desired", qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                async for message in probe.messages:
                    if message.retain:
                        device_id = message.topic.value.split("/")[3]
                        seen[device_id] = int(_version(bytes(message.payload)))
                    if len(seen) >= count:
                        break
    return seen


def _version(payload: bytes) -> int:
    try:
        version = json.loads(payload).get("version")
    except (ValueError, AttributeError):
        return -1
    return version if isinstance(version, int) else -1


@dataclass(frozen=True, slots=True)
class FaultCount:
    """One scenario's row of the counts table."""

    scenario: str
    acknowledged: int
    indexed: int
    stored: int
    #: Acknowledged segments not indexed after the bounded wait.
    lost: int
    #: Acknowledged segments whose object is gone after reconcile.
    deleted: int
    events_acknowledged: int
    events_lost: int
    #: Devices whose desired state is retained, applied by the camera and reported.
    converged: int
    devices: int
    refused: int
    failed: int


_COLUMNS = (
    ("scenario", 30),
    ("acked", 6),
    ("indexed", 7),
    ("stored", 6),
    ("lost", 4),
    ("deleted", 7),
    ("ev.acked", 8),
    ("ev.lost", 7),
    ("desired", 7),
    ("refused", 7),
    ("failed", 6),
)


def table_header() -> list[str]:
    names = [name.ljust(w) if i == 0 else name.rjust(w) for i, (name, w) in enumerate(_COLUMNS)]
    return [
        "acked: PUT 2xx and the segment notice PUBACKed (camera side); indexed: segment rows; "
        "stored: objects under rec/ after reconcile; lost: acked, not indexed; deleted: acked, "
        "object gone; desired: devices converged of all; refused/failed: uploads the cameras "
        "saw refused or failing",
        "  ".join(names),
    ]


def table_row(row: FaultCount) -> str:
    cells = [
        row.scenario,
        row.acknowledged,
        row.indexed,
        row.stored,
        row.lost,
        row.deleted,
        row.events_acknowledged,
        row.events_lost,
        f"{row.converged}/{row.devices}",
        row.refused,
        row.failed,
    ]
    return "  ".join(
        str(cell).ljust(w) if i == 0 else str(cell).rjust(w)
        for i, (cell, (_, w)) in enumerate(zip(cells, _COLUMNS, strict=True))
    )
