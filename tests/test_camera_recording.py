"""A recording simulated camera against the service (issue 15, item 4; R1).

Real parts: the suite's Mosquitto, a gateway on SQLite and the filesystem store, real
H.264 drawn, detected on (opencv) and encoded (PyAV) by the camera's own recording loop
(``record=True``), driven stretch by stretch by a manual clock the gateway shares.

* A camera on a continuous plan reports the events it detects, so its timeline carries
  event marks, and the range played back through the service's playlist is one clean
  stream (FFmpeg finds nothing to say at the segment boundaries).
* A camera on an event plan puts two events 20 s apart in one one-minute clip: one clip
  covering both, none overlapping.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from sqlmodel import select

from devices.clock import ManualClock
from gateway.service import Gateway
from replay.models import CameraEvent, Segment
from simulators.camera import CameraSimulator
from simulators.clips import floor_to
from simulators.scene import Actor, Scene
from tests.conftest import T0, StartGateway, eventually, platform_headers
from tests.services import Broker
from tests.test_presence import running

H = platform_headers()
STEP = timedelta(seconds=10)

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None, reason="needs ffmpeg (Debian package ffmpeg)"
)


class Home:
    def __init__(
        self, gw: Gateway, http: aiohttp.ClientSession, clock: ManualClock, mqtt_url: str
    ) -> None:
        self.gw, self.http, self.clock, self.mqtt_url = gw, http, clock, mqtt_url
        self.app_token = ""

    async def call(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        headers = {"Authorization": f"Bearer {self.app_token}"} if path.startswith("/app") else H
        async with self.http.request(
            method, f"{self.gw.url}{path}", json=body, params=params, headers=headers
        ) as r:
            assert r.status < 300, await r.text()
            return await (r.json() if r.content_type == "application/json" else r.text())

    async def subscribe(self, plan: str) -> None:
        order = {
            "order_id": f"o-{plan}",
            "account_id": "acc-1",
            "device_id": "cam-1",
            "plan": plan,
            "orderer_id": "owner-1",
            "channel": "electronic",
        }
        await self.call("POST", "/platform/v1/subscriptions", order)
        self.clock.advance(120)  # video from before the order is not the subscription's (R6)

    async def segments(self) -> list[Segment]:
        async with self.gw.services.db.session() as session:
            query = select(Segment).where(Segment.device_id == "cam-1")
            return sorted((await session.exec(query)).all(), key=lambda s: s.start)

    async def events(self) -> list[CameraEvent]:
        async with self.gw.services.db.session() as session:
            query = select(CameraEvent).where(CameraEvent.device_id == "cam-1")
            return sorted((await session.exec(query)).all(), key=lambda e: e.at)


@pytest.fixture
async def home(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock
) -> AsyncIterator[Home]:
    async with (
        start_gateway(clock=clock, mqtt_url=broker.url) as gw,
        aiohttp.ClientSession() as http,
    ):
        home = Home(gw, http, clock, broker.url)
        await home.call(
            "PUT", "/platform/v1/accounts/acc-1", {"owner_id": "owner-1", "star_level": 3}
        )
        await home.call(
            "POST", "/platform/v1/accounts/acc-1/devices", {"device_id": "cam-1", "kind": "camera"}
        )
        token = await home.call(
            "POST", "/platform/v1/app-tokens", {"account_id": "acc-1", "user_id": "u"}
        )
        home.app_token = token["token"]
        yield home


async def record(home: Home, offsets: list[float], stretches: int, mode: str) -> datetime:
    """Run a recording camera whose people pass at these offsets from its first stretch;
    step the clock through ``stretches`` stretches; return the first stretch's start."""
    start = floor_to(home.clock.now(), STEP)
    scene = Scene(
        seed="cam-1",
        actors=[
            Actor(kind="person", start=start + timedelta(seconds=offset), duration_s=4)
            for offset in offsets
        ],
    )
    camera = CameraSimulator(
        device_id="cam-1", mqtt_url=home.mqtt_url, clock=home.clock, scene=scene
    )
    async with running(camera):

        async def told() -> bool:
            return camera.mode == mode

        await eventually(told)
        for n in range(1, stretches + 1):
            home.clock.advance((start + n * STEP - home.clock.now()).total_seconds())

            async def recorded(until: datetime = start + n * STEP) -> bool:
                return camera.recorded_until == until

            await eventually(recorded, timeout=30)
    assert camera.outcomes["errors"] == 0, camera.outcomes
    return start


async def test_a_continuous_camera_reports_events_and_plays_back_as_one_stream(
    home: Home, tmp_path: Path
) -> None:
    await home.subscribe("continuous-7d")
    start = await record(home, [12, 33], stretches=5, mode="continuous")

    async def indexed() -> bool:
        return len(await home.segments()) == 5 and len(await home.events()) == 2

    await eventually(indexed)
    events = await home.events()
    for event, offset in zip(events, (12, 33), strict=True):
        assert abs((event.at - start).total_seconds() - offset) < 1, event
    segments = await home.segments()
    assert [(s.start, s.end) for s in segments] == [
        (start + n * STEP, start + (n + 1) * STEP) for n in range(5)
    ]
    window = {"start": start.isoformat(), "end": (start + 5 * STEP).isoformat()}
    timeline = await home.call("GET", "/app/v1/devices/cam-1/timeline", **window)
    assert [e["event_id"] for e in timeline["events"]] == [e.event_id for e in events]

    playlist = await home.call("GET", "/app/v1/devices/cam-1/playlist.m3u8", **window)
    urls = [line for line in playlist.splitlines() if line.startswith("http")]
    assert len(urls) == 5
    joined = tmp_path / "played.ts"
    with joined.open("wb") as out:
        for url in urls:
            async with home.http.get(url) as got:
                assert got.status == 200
                out.write(await got.read())
    done = await asyncio.to_thread(
        subprocess.run,
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(joined), "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")


async def test_two_events_20_s_apart_on_an_event_plan_make_one_clip(home: Home) -> None:
    """R1: the second event comes while the first one's clip is recorded: it joins it."""
    await home.subscribe("event-7d")
    start = await record(home, [15, 35], stretches=8, mode="event")

    async def indexed() -> bool:
        return len(await home.segments()) == 1 and len(await home.events()) == 2

    await eventually(indexed)
    [clip] = await home.segments()
    first, second = await home.events()
    assert clip.kind == "event"
    assert clip.event_id == first.event_id
    assert (clip.end - clip.start).total_seconds() == 60
    assert clip.start <= first.at < second.at < clip.end
    assert (second.at - first.at).total_seconds() == pytest.approx(20, abs=1)
    # Pre-roll: 10 s before the first event, back to its key frame (2-s grid).
    assert clip.start == floor_to(first.at - timedelta(seconds=10), timedelta(seconds=2))
    assert clip.start >= start


async def test_a_camera_whose_clock_jumps_skips_ahead_with_a_gap(broker: Broker) -> None:
    """A clock that jumps an hour (or runs faster than frames are drawn): the camera does
    not draw the hour it missed; it carries on from the present, the hour a gap (no
    recording, no events), as a camera that was offline. Synthetic media, no plan."""
    clock = ManualClock(floor_to(T0, STEP))
    start = clock.now()
    hour = timedelta(hours=1)
    scene = Scene(
        seed="cam-1",
        actors=[
            Actor(kind="person", start=start + timedelta(seconds=5), duration_s=4),
            Actor(kind="pet", start=start + hour / 2, duration_s=4),
            Actor(kind="door", start=start + hour + timedelta(seconds=25), duration_s=3),
        ],
    )
    camera = CameraSimulator(
        device_id="cam-jump", mqtt_url=broker.url, clock=clock, scene=scene, media="synthetic"
    )
    host, port = broker.url.removeprefix("mqtt://").split(":")
    async with (
        aiomqtt.Client(host, int(port), identifier="watch-cam-jump") as watcher,
        running(camera),
    ):
        await watcher.subscribe("kj/v1/dev/cam-jump/event", qos=1)
        for until in (start + STEP, start + hour + 3 * STEP):
            clock.set(until)

            async def recorded(until: datetime = until) -> bool:
                return camera.recorded_until == until

            await eventually(recorded)
        heard = []
        async with asyncio.timeout(5):
            async for message in watcher.messages:
                heard.append(json.loads(bytes(message.payload))["type"])
                if len(heard) == 2:
                    break
    assert heard == ["person", "door"], "the pet passed in the gap"
    assert camera.outcomes["errors"] == 0
