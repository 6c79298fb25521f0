"""Recording, playback and retention end to end (issue 4; R1, R5, R6, R8).

A simulated camera uploads real H.264 through the MQTT handshake to the object store;
the app reads the timeline and an HLS playlist; a manual clock drives retention. Runs on
SQLite with the filesystem store and on PostgreSQL and SQLite with SeaweedFS (S3).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import aiomqtt
import cv2
import numpy as np
import pytest
from sqlmodel import select

from devices.clock import ManualClock
from devices.models import DesiredState
from gateway.mqtt.session import broker_address
from gateway.service import Gateway
from replay.media import decode_first_frame
from replay.models import RecordedRange, Segment, UploadGrant
from replay.object_keys import service_segment_id
from simulators.camera import CameraSimulator, UploadOutcome
from simulators.scene import read_timestamp
from tests.conftest import StartGateway, eventually, platform_headers
from tests.services import Broker
from tests.test_presence import running

H = platform_headers()


@dataclass
class Home:
    gw: Gateway
    http: aiohttp.ClientSession
    app_token: str
    clock: ManualClock

    async def platform(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        r = await self.http.request(method, f"{self.gw.url}{path}", json=body, headers=H)
        return r.status, await r.json()

    async def app(self, path: str, **params: str) -> aiohttp.ClientResponse:
        return await self.http.get(
            f"{self.gw.url}{path}",
            params=params,
            headers={"Authorization": f"Bearer {self.app_token}"},
        )

    async def subscribe(self, device_id: str, plan: str, order_id: str) -> str:
        status, body = await self.platform(
            "POST",
            "/platform/v1/subscriptions",
            {
                "order_id": order_id,
                "account_id": "acc-1",
                "device_id": device_id,
                "plan": plan,
                "orderer_id": "owner-1",
                "channel": "electronic",
            },
        )
        assert status == 201, body
        # Video recorded before the order is not the subscription's (R6): let time pass.
        await self.advance(120)
        return str(body["subscription_id"])

    async def advance(self, seconds: float) -> None:
        status, _ = await self.platform("POST", "/ops/v1/clock", {"advance_seconds": seconds})
        assert status == 200

    async def wait_indexed(self, count: int) -> None:
        async def done() -> bool:
            return await self.segment_count() == count

        await eventually(done)

    async def segment_count(self) -> int:
        from sqlmodel import func, select

        async with self.gw.services.db.session() as session:
            return int((await session.exec(select(func.count()).select_from(Segment))).one())


@pytest.fixture
def home_settings() -> dict[str, Any]:
    """Settings of the household's gateway beyond the stack (a test parametrizes it)."""
    return {}


@pytest.fixture
async def home(
    broker: Broker,
    start_gateway: StartGateway,
    clock: ManualClock,
    stack: dict[str, str],
    home_settings: dict[str, Any],
) -> AsyncIterator[Home]:
    async with (
        start_gateway(clock=clock, mqtt_url=broker.url, **stack, **home_settings) as gw,
        aiohttp.ClientSession() as http,
    ):
        await http.put(
            f"{gw.url}/platform/v1/accounts/acc-1",
            json={"owner_id": "owner-1", "star_level": 3},
            headers=H,
        )
        for cam in ("cam-1", "cam-2"):
            r = await http.post(
                f"{gw.url}/platform/v1/accounts/acc-1/devices",
                json={"device_id": cam, "kind": "camera"},
                headers=H,
            )
            assert r.status == 201
        r = await http.post(
            f"{gw.url}/platform/v1/app-tokens",
            json={"account_id": "acc-1", "user_id": "u"},
            headers=H,
        )
        yield Home(gw, http, (await r.json())["token"], clock)


def camera(broker: Broker, clock: ManualClock, device_id: str = "cam-1") -> CameraSimulator:
    return CameraSimulator(
        device_id=device_id, mqtt_url=broker.url, clock=clock, telemetry_interval=None, record=False
    )


def app_id(seg: UploadOutcome, device_id: str = "cam-1") -> str:
    """The id the app knows a camera's segment by: the service's, not the camera's (issue 14)."""
    return service_segment_id(device_id, seg.segment_id)


def _ranges(body: dict[str, Any]) -> list[tuple[datetime, datetime]]:
    return [
        (datetime.fromisoformat(x["start"]), datetime.fromisoformat(x["end"]))
        for x in body["ranges"]
    ]


async def test_a_continuous_camera_records_and_the_family_plays_it_back(
    home: Home, broker: Broker, clock: ManualClock
) -> None:
    """Acceptance 1: timeline, HLS bytes, and the decoded timestamp of the first segment."""
    await home.subscribe("cam-1", "continuous-7d", "o-1")
    cam = camera(broker, clock)
    t0 = clock.now() - timedelta(seconds=30)
    async with running(cam):
        uploads = [
            await cam.upload(home.http, start=t0 + timedelta(seconds=10 * i), seconds=10)
            for i in range(3)
        ]
    assert all(u.ok for u in uploads), [u.code for u in uploads]

    await home.wait_indexed(3)
    window = {
        "start": (t0 - timedelta(minutes=1)).isoformat(),
        "end": (t0 + timedelta(minutes=1)).isoformat(),
    }
    r = await home.app("/app/v1/devices/cam-1/timeline", **window)
    assert r.status == 200
    timeline = await r.json()
    assert _ranges(timeline) == [(t0, t0 + timedelta(seconds=30))]

    r = await home.app("/app/v1/devices/cam-1/playlist.m3u8", **window)
    assert r.status == 200
    assert r.content_type == "application/vnd.apple.mpegurl"
    lines = (await r.text()).splitlines()
    assert lines[0] == "#EXTM3U"
    assert lines[-1] == "#EXT-X-ENDLIST"
    urls = [line for line in lines if line.startswith("http")]
    assert len(urls) == 3
    for url, upload in zip(urls, uploads, strict=True):
        async with aiohttp.ClientSession() as anonymous, anonymous.get(url) as got:
            assert got.status == 200
            assert await got.read() == upload.data
    assert upload.data is not None
    first = uploads[0].data
    assert first is not None
    assert read_timestamp(decode_first_frame(first)) == t0.replace(microsecond=0)


async def test_the_timeline_keeps_ranges_events_and_retention_in_step(
    home: Home, broker: Broker, clock: ManualClock
) -> None:
    """R5: the timeline (read from kept ranges, not segments) joins segments that arrive out
    of order, clips to the asked window and the retention cut-off, shows each event with
    the segment recorded at its instant, and forgets what the sweeper deleted."""
    await home.subscribe("cam-1", "continuous-1d", "o-1")
    cam = camera(broker, clock)
    t0 = clock.now() - timedelta(seconds=60)
    s = timedelta(seconds=1)
    async with running(cam):
        # 0-10 and 20-30 first, then 10-20 joins them; 40-50 stays apart (a 10-s gap).
        segs = {
            offset: await cam.upload(home.http, start=t0 + offset * s, seconds=10)
            for offset in (0, 20, 10, 40)
        }
        for name, offset in (("ev-a", 5), ("ev-gap", 35), ("ev-c", 45)):
            await cam.report_event(event_id=name, kind="person", at=t0 + offset * s, score=0.9)
    assert all(u.ok for u in segs.values()), [u.code for u in segs.values()]
    await home.wait_indexed(4)

    async def timeline(start: datetime, end: datetime) -> dict[str, Any]:
        r = await home.app(
            "/app/v1/devices/cam-1/timeline", start=start.isoformat(), end=end.isoformat()
        )
        assert r.status == 200
        body: dict[str, Any] = await r.json()
        return body

    async def events_indexed() -> bool:
        return len((await timeline(t0, t0 + 60 * s))["events"]) == 2

    await eventually(events_indexed)
    body = await timeline(t0 - 60 * s, t0 + 60 * s)
    assert _ranges(body) == [(t0, t0 + 30 * s), (t0 + 40 * s, t0 + 50 * s)]
    assert [(e["event_id"], e["segment_id"]) for e in body["events"]] == [
        ("ev-a", app_id(segs[0])),
        ("ev-c", app_id(segs[40])),
    ], "the event in the gap has no video to show"
    body = await timeline(t0 + 15 * s, t0 + 45 * s)
    assert _ranges(body) == [(t0 + 15 * s, t0 + 30 * s), (t0 + 40 * s, t0 + 45 * s)]

    # A day after 0-10 and 10-20 ended (not 20-30): those two are swept, the range is cut.
    await home.advance((t0 + 25 * s + timedelta(days=1) - clock.now()).total_seconds())
    assert await home.segment_count() == 2
    body = await timeline(t0 - 60 * s, t0 + 60 * s)
    assert _ranges(body) == [(t0 + 25 * s, t0 + 30 * s), (t0 + 40 * s, t0 + 50 * s)]
    assert [e["event_id"] for e in body["events"]] == ["ev-c"]
    # Everything expired: nothing shown, and the sweeper dropped the kept ranges too.
    await home.advance(60)
    body = await timeline(t0 - 60 * s, t0 + 60 * s)
    assert (body["ranges"], body["events"]) == ([], [])
    async with home.gw.services.db.session() as session:
        assert (await session.exec(select(RecordedRange))).all() == []


async def test_retention_cuts_off_at_expiry_and_the_sweeper_deletes(
    home: Home, broker: Broker, clock: ManualClock
) -> None:
    """Acceptance 2: 7 days + 1 s not served, then swept; 1-day plans after a day."""
    await home.subscribe("cam-1", "continuous-7d", "o-1")
    await home.subscribe("cam-2", "continuous-1d", "o-2")
    start = clock.now() - timedelta(seconds=10)
    cams = [camera(broker, clock, "cam-1"), camera(broker, clock, "cam-2")]
    async with running(cams[0]), running(cams[1]):
        seg7 = await cams[0].upload(home.http, start=start, seconds=10)
        seg1 = await cams[1].upload(home.http, start=start, seconds=10)

    await home.wait_indexed(2)
    store = home.gw.services.store
    assert seg1.key is not None
    assert seg7.key is not None
    # One day after recording: the 1-day segment is gone, the 7-day one stays.
    await home.advance(86400 + 1)
    assert await store.head(seg1.key) is None
    assert await store.head(seg7.key) is not None
    r = await home.app(f"/app/v1/segments/{app_id(seg7)}")
    assert r.status == 200
    # 7 days + 1 s after the recording ended: not served, even while the sweeper is late...
    async with home.gw.services.jobs.held("retention_sweep"):
        home.clock.advance(6 * 86400)
        r = await home.app(f"/app/v1/segments/{app_id(seg7)}")
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "expired"
        assert await store.head(seg7.key) is not None, "the sweeper has not run yet"
    # ...and gone from the store and the index after one sweep.
    await home.advance(0)
    assert await store.head(seg7.key) is None
    assert await home.segment_count() == 0


async def test_unsubscribed_video_is_refused_at_once_and_deleted_at_its_expiry(
    home: Home, broker: Broker, clock: ManualClock
) -> None:
    """R5/R6: no viewing after unsubscription, not even under a new subscription."""
    sid = await home.subscribe("cam-1", "continuous-7d", "o-1")
    cam = camera(broker, clock)
    async with running(cam):
        seg = await cam.upload(home.http, start=clock.now() - timedelta(seconds=10), seconds=10)

    await home.wait_indexed(1)
    await home.platform(
        "POST", f"/platform/v1/subscriptions/{sid}/unsubscribe", {"order_id": "u-1"}
    )
    r = await home.app(f"/app/v1/segments/{app_id(seg)}")
    assert r.status == 403
    assert (await r.json())["error"]["code"] == "unsubscribed"
    await home.subscribe("cam-1", "continuous-7d", "o-2")
    r = await home.app(f"/app/v1/segments/{app_id(seg)}")
    assert r.status == 403
    assert (await r.json())["error"]["code"] == "previous_subscription"
    assert seg.key is not None
    await home.advance(3 * 86400)
    assert await home.gw.services.store.head(seg.key) is not None, "kept until its expiry"
    await home.advance(4 * 86400 + 1)
    assert await home.gw.services.store.head(seg.key) is None


async def test_an_event_plan_takes_clips_not_continuous_video(
    home: Home, broker: Broker, clock: ManualClock
) -> None:
    """Acceptance 3 (R1): continuous refused not_entitled; one-minute clips with events."""
    await home.subscribe("cam-1", "event-7d", "o-1")
    cam = camera(broker, clock)
    at = clock.now() - timedelta(seconds=50)
    async with running(cam):
        refused = await cam.upload(home.http, start=clock.now() - timedelta(seconds=10), seconds=10)
        await cam.report_event(event_id="ev-1", kind="person", at=at, score=0.9)
        clip = await cam.upload(
            home.http, start=at - timedelta(seconds=10), seconds=60, kind="event", event_id="ev-1"
        )
    assert (refused.ok, refused.code) == (False, "not_entitled")
    assert clip.ok

    await home.wait_indexed(1)
    r = await home.app(
        "/app/v1/devices/cam-1/timeline",
        start=(at - timedelta(minutes=5)).isoformat(),
        end=(at + timedelta(minutes=5)).isoformat(),
    )
    body = await r.json()
    assert [(e["event_id"], e["type"], e["segment_id"]) for e in body["events"]] == [
        ("ev-1", "person", app_id(clip))
    ]
    r = await home.app(body["events"][0]["thumbnail_url"])
    assert r.status == 200
    assert r.content_type == "image/jpeg"


async def test_the_family_can_save_a_clip_to_its_cloud(
    home: Home, broker: Broker, clock: ManualClock
) -> None:
    """R14: the saved copy is outside retention."""
    await home.subscribe("cam-1", "continuous-1d", "o-1")
    cam = camera(broker, clock)
    async with running(cam):
        seg = await cam.upload(home.http, start=clock.now() - timedelta(seconds=10), seconds=10)

    await home.wait_indexed(1)
    r = await home.http.post(
        f"{home.gw.url}/app/v1/segments/{app_id(seg)}/save",
        headers={"Authorization": f"Bearer {home.app_token}"},
    )
    assert r.status == 201
    saved = await r.json()
    assert saved["bytes"] == len(seg.data or b"")
    keys = [i.key async for i in home.gw.services.store.list("family/acc-1/")]
    assert len(keys) == 1
    await home.advance(2 * 86400)
    assert await home.gw.services.store.get(keys[0]) == seg.data, "outside replay retention"


CLIP = b"\x47" * 188 * 100  # 18,800 bytes of TS packets


@pytest.mark.parametrize("home_settings", [{"family_cloud_quota_bytes": 2 * len(CLIP)}])
async def test_concurrent_saves_never_exceed_the_quota(
    home: Home, broker: Broker, clock: ManualClock
) -> None:
    """Issue 14 (R14): the quota is read and charged in one transaction, so saves racing
    for the last room store at most what fits (ten at once used to store them all)."""
    await home.subscribe("cam-1", "continuous-1d", "o-1")
    cam = camera(broker, clock)
    start = clock.now() - timedelta(seconds=60)
    async with running(cam):
        segs = [
            await cam.upload(
                home.http, start=start + timedelta(seconds=10 * i), seconds=10, data=CLIP
            )
            for i in range(5)
        ]
    await home.wait_indexed(5)
    answers = await asyncio.gather(
        *(
            home.http.post(
                f"{home.gw.url}/app/v1/segments/{app_id(seg)}/save",
                headers={"Authorization": f"Bearer {home.app_token}"},
            )
            for seg in segs
        )
    )
    statuses = sorted(r.status for r in answers)
    assert statuses == [201, 201, 409, 409, 409]
    stored = [i async for i in home.gw.services.store.list("family/acc-1/")]
    assert sum(i.size for i in stored) <= 2 * len(CLIP)


async def test_reconcile_never_deletes_most_of_a_device_without_the_flag(
    home: Home, broker: Broker, clock: ManualClock
) -> None:
    """Acceptance 5: an index lost for a device does not take its recordings with it."""
    from sqlmodel import col, delete

    await home.subscribe("cam-1", "continuous-7d", "o-1")
    cam = camera(broker, clock)
    start = clock.now() - timedelta(seconds=20)
    async with running(cam):
        segs = [
            await cam.upload(home.http, start=start + timedelta(seconds=10 * i), seconds=10)
            for i in range(2)
        ]

    await home.wait_indexed(2)
    async with home.gw.services.db.session() as session:
        await session.exec(delete(Segment).where(col(Segment.device_id) == "cam-1"))
        await session.commit()
    status, body = await home.platform("POST", "/ops/v1/reconcile", {})
    assert status == 200
    assert body["deleted"] == 0
    assert [(d["device_id"], d["orphans"], d["objects"]) for d in body["refused_devices"]] == [
        ("cam-1", 2, 2)
    ]
    for seg in segs:
        assert seg.key is not None
        assert await home.gw.services.store.head(seg.key) is not None
    status, body = await home.platform("POST", "/ops/v1/reconcile", {"allow_mass_delete": True})
    assert body["deleted"] == 2
    for seg in segs:
        assert seg.key is not None
        assert await home.gw.services.store.head(seg.key) is None


async def test_a_stopped_account_neither_records_nor_plays_and_retention_runs_on(
    home: Home, broker: Broker, clock: ManualClock
) -> None:
    """Acceptance 4 (R8): refused while stopped; after resume both work; no retention pause."""
    await home.subscribe("cam-1", "continuous-1d", "o-1")
    cam = camera(broker, clock)
    async with running(cam):
        before = await cam.upload(home.http, start=clock.now() - timedelta(seconds=10), seconds=10)
        await home.wait_indexed(1)
        status, body = await home.platform(
            "POST", "/platform/v1/broadband/acc-1/stop", {"order_id": "s-1", "stop_type": "arrears"}
        )
        assert status == 200
        assert body["state"] == "stopped"
        await home.advance(10)
        refused = await cam.upload(home.http, start=clock.now() - timedelta(seconds=10), seconds=10)
        assert (refused.ok, refused.code) == (False, "suspended")
        r = await home.app(f"/app/v1/segments/{app_id(before)}")
        assert r.status == 403
        assert (await r.json())["error"]["code"] == "broadband_inactive"
        await home.advance(12 * 3600)  # half a day stopped: the retention clock runs on
        status, body = await home.platform(
            "POST",
            "/platform/v1/broadband/acc-1/resume",
            {"order_id": "r-1", "stop_type": "arrears"},
        )
        assert body["state"] == "active"
        await home.advance(10)  # started at the resume's instant: recorded while active
        after = await cam.upload(home.http, start=clock.now() - timedelta(seconds=10), seconds=10)
        assert after.ok
        await home.wait_indexed(2)
    r = await home.app(f"/app/v1/segments/{app_id(before)}")
    assert r.status == 200
    await home.advance(12 * 3600 + 1)  # one day after the first recording, not 1.5
    r = await home.app(f"/app/v1/segments/{app_id(before)}")
    assert r.status == 404
    r = await home.app(f"/app/v1/segments/{app_id(after)}")
    assert r.status == 200


async def test_a_batch_of_notices_indexes_only_the_objects_that_match_their_grant(
    home: Home, broker: Broker
) -> None:
    """Group commit (issue 7) keeps the check of issue 4: a notice is indexed only when its
    object exists with the granted size, and only for the camera granted. (Its SHA-256 was
    checked by the store as it was uploaded: tests/test_uploads_e2e.py, issue 16.) Here
    the objects are put by the service itself, as something other than an upload could."""
    start = home.clock.now() - timedelta(seconds=10)
    good = b"\x47" * 1880
    uploaded = {"good": good, "short": good[:-188]}
    async with home.gw.services.db.session() as session:
        for name in ("good", "short", "absent", "theirs"):
            key = f"rec/7d/cam-1/notice-{name}.ts"
            session.add(
                UploadGrant(
                    segment_id=service_segment_id("cam-1", f"seg-{name}"),
                    device_id="cam-1",
                    account_id="acc-1",
                    subscription_id="sub-x",
                    kind="continuous",
                    start=start,
                    end=start + timedelta(seconds=10),
                    bytes=len(good),
                    sha256=hashlib.sha256(good).hexdigest(),
                    object_key=key,
                    retention_class="7d",
                    expires_at=start + timedelta(days=7),
                    granted_at=start,
                )
            )
            if name in uploaded:
                await home.gw.services.store.put(key, uploaded[name])
        await session.commit()

    def notice(name: str) -> str:
        return json.dumps(
            {
                "segment_id": f"seg-{name}",
                "kind": "continuous",
                "start": start.isoformat(),
                "end": (start + timedelta(seconds=10)).isoformat(),
                "bytes": len(good),
                "sha256": hashlib.sha256(good).hexdigest(),
            }
        )

    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="notices") as client:
        for name in ("good", "short", "absent", "good"):
            await client.publish("kj/v1/dev/cam-1/segment", notice(name), qos=1)
        await client.publish("kj/v1/dev/cam-2/segment", notice("theirs"), qos=1)
    registry = home.gw.services.metrics.registry

    def rejected(reason: str) -> float | None:
        return registry.get_sample_value("kanjia_segments_rejected_total", {"reason": reason})

    async def settled() -> bool:
        return rejected("no_grant") == 1

    await eventually(settled)
    assert registry.get_sample_value("kanjia_segments_indexed_total") == 1
    reasons = ("size_mismatch", "missing_object")
    assert {reason: rejected(reason) for reason in reasons} == dict.fromkeys(reasons, 1)
    async with home.gw.services.db.session() as session:
        indexed = (await session.exec(select(Segment.segment_id))).all()
        waiting = (await session.exec(select(UploadGrant.segment_id))).all()
    assert indexed == [service_segment_id("cam-1", "seg-good")]
    names = ("absent", "short", "theirs")
    assert sorted(waiting) == sorted(service_segment_id("cam-1", f"seg-{n}") for n in names)


async def test_a_late_notice_is_indexed_and_its_object_never_reconciled_away(
    home: Home, broker: Broker, clock: ManualClock
) -> None:
    """Issue 14, item 2 (the reconcile guard, :mod:`replay.reconcile`): an upload that landed
    but whose ``segment`` notice comes hours late (a camera offline, a gateway waiting out a
    database outage) keeps its grant, so neither the stale-grant job nor reconcile, even
    with ``allow_mass_delete``, deletes its object, and the notice is indexed when it comes.
    """
    from gateway.retention import drop_stale_grants

    await home.subscribe("cam-1", "continuous-7d", "o-1")
    start = clock.now() - timedelta(seconds=20)
    data = camera(broker, clock).media_for(start, 10)
    notice = {
        "segment_id": "late-1",
        "kind": "continuous",
        "start": start.isoformat(),
        "end": (start + timedelta(seconds=10)).isoformat(),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    host, port, _, _ = broker_address(broker.url)
    async with aiomqtt.Client(host, port, identifier="cam-1") as client:
        await client.subscribe("kj/v1/dev/cam-1/upload/res", qos=1)
        await client.publish(
            "kj/v1/dev/cam-1/upload/req", json.dumps({"req_id": "r1", **notice}), qos=1
        )
        async with asyncio.timeout(10):
            answer = json.loads(bytes((await anext(aiter(client.messages))).payload))
        assert answer["ok"], answer
        put = await home.http.put(answer["url"], data=data, headers=answer["headers"])
        assert put.status < 300
        await home.advance(2 * 3600)  # the URL is long dead; the notice has not come
        await drop_stale_grants(home.gw.services)
        status, body = await home.platform("POST", "/ops/v1/reconcile", {"allow_mass_delete": True})
        assert (status, body["deleted"]) == (200, 0)
        assert await home.gw.services.store.head(answer["key"]) is not None
        await client.publish("kj/v1/dev/cam-1/segment", json.dumps(notice), qos=1)
        await home.wait_indexed(1)


async def test_events_link_to_the_segment_of_their_instant_with_its_frame_as_thumbnail(
    home: Home, broker: Broker, clock: ManualClock
) -> None:
    """Issue 15 (R1): an event links to the segment whose time holds its instant, the same
    on every read and after later segments arrive; its thumbnail is the frame of that
    instant; the timeline is gzip-compressed when the app asks for it."""
    await home.subscribe("cam-1", "continuous-7d", "o-1")
    cam = camera(broker, clock)
    t0 = (clock.now() - timedelta(seconds=40)).replace(microsecond=0)
    s = timedelta(seconds=1)
    async with running(cam):
        first = await cam.upload(home.http, start=t0, seconds=10)
        await cam.report_event(event_id="ev-1", kind="person", at=t0 + 6.5 * s, score=0.9)
        await home.wait_indexed(1)
        window = {"start": (t0 - 60 * s).isoformat(), "end": (t0 + 60 * s).isoformat()}

        async def linked() -> list[tuple[str, str]]:
            body = await (await home.app("/app/v1/devices/cam-1/timeline", **window)).json()
            return [(e["event_id"], e["segment_id"]) for e in body["events"]]

        async def shown() -> bool:
            return await linked() == [("ev-1", app_id(first))]

        await eventually(shown)
        # A segment indexed later over the same instant (an event clip) does not take it.
        await home.advance(1)
        clip = await cam.upload(home.http, start=t0, seconds=60, kind="event", event_id="ev-x")
        assert clip.ok, clip.code
        await home.wait_indexed(2)
        assert await linked() == [("ev-1", app_id(first))]
        assert await linked() == [("ev-1", app_id(first))], "the same on every read"

    r = await home.app("/app/v1/devices/cam-1/timeline", **window)
    event = (await r.json())["events"][0]
    r = await home.app(event["thumbnail_url"])
    assert (r.status, r.content_type) == (200, "image/jpeg")
    image = np.asarray(
        cv2.imdecode(np.frombuffer(await r.read(), np.uint8), cv2.IMREAD_COLOR), np.uint8
    )
    assert read_timestamp(image) == t0 + 6 * s, "the frame of the event's instant"
    r = await home.app(f"/app/v1/segments/{app_id(first)}/thumbnail.jpg")
    image = np.asarray(
        cv2.imdecode(np.frombuffer(await r.read(), np.uint8), cv2.IMREAD_COLOR), np.uint8
    )
    assert read_timestamp(image) == t0, "without an instant, the first frame"
    r = await home.app(
        f"/app/v1/segments/{app_id(first)}/thumbnail.jpg",
        at=(t0 + 30 * s).isoformat(),
    )
    assert r.status == 400, "an instant outside the segment"

    async with aiohttp.ClientSession(auto_decompress=False) as raw:
        headers = {"Authorization": f"Bearer {home.app_token}", "Accept-Encoding": "gzip"}
        url = f"{home.gw.url}/app/v1/devices/cam-1/timeline"
        async with raw.get(url, params=window, headers=headers) as got:
            assert got.headers.get("Content-Encoding") == "gzip"
            body = json.loads(gzip.decompress(await got.read()))
        headers["Accept-Encoding"] = "identity"
        async with raw.get(url, params=window, headers=headers) as got:
            assert "Content-Encoding" not in got.headers
            assert json.loads(await got.read()) == body
    assert [e["event_id"] for e in body["events"]] == ["ev-1"]


async def test_an_event_clip_overlapping_an_indexed_clip_is_refused(
    home: Home, broker: Broker, clock: ManualClock
) -> None:
    """R1: event clips of one camera never overlap: a clip overlapping an indexed one is
    refused ``clip_overlaps``; one that starts where it ended, or another camera's, is not."""
    await home.subscribe("cam-1", "event-7d", "o-1")
    await home.subscribe("cam-2", "event-7d", "o-2")
    await home.advance(240)  # every clip below starts after both orders (R6)
    a = clock.now() - timedelta(minutes=3)
    cam, other = camera(broker, clock), camera(broker, clock, "cam-2")
    async with running(cam), running(other):
        kept = await cam.upload(home.http, start=a, seconds=60, kind="event", event_id="e1")
        await home.wait_indexed(1)
        late = timedelta(seconds=30)
        refused = await cam.upload(
            home.http, start=a + late, seconds=60, kind="event", event_id="e2"
        )
        theirs = await other.upload(
            home.http, start=a + late, seconds=60, kind="event", event_id="e2"
        )
        nxt = await cam.upload(
            home.http, start=a + 2 * late, seconds=60, kind="event", event_id="e3"
        )
    assert kept.ok
    assert (refused.ok, refused.code) == (False, "clip_overlaps")
    assert theirs.ok, "another camera's clip"
    assert nxt.ok, "a clip that starts where the indexed one ended"
    await home.wait_indexed(3)


async def test_the_timeline_says_why_each_gap_is_there(
    home: Home, broker: Broker, clock: ManualClock
) -> None:
    """Issue 15: before the subscription the gap is not_entitled (R6), while the camera
    was silent past its timeout offline, while broadband was stopped broadband_stopped
    (R8, which wins over offline), and where nothing is known unknown."""
    # A camera the broker holds no retained state of (from another test) for a clean history.
    device_id = f"cam-{secrets.token_hex(4)}"
    status, _ = await home.platform(
        "POST", "/platform/v1/accounts/acc-1/devices", {"device_id": device_id, "kind": "camera"}
    )
    assert status == 201
    ordered = clock.now()
    await home.subscribe(device_id, "continuous-7d", "o-1")  # then 120 s pass
    cam = camera(broker, clock, device_id)
    async with running(cam):
        start = clock.now() - timedelta(seconds=10)
        seg = await cam.upload(home.http, start=start, seconds=10)
        assert seg.ok
        await home.wait_indexed(1)
    await home.advance(100)  # silent past the 90-s timeout: the sweep marks it offline
    status, _ = await home.platform(
        "POST", "/platform/v1/broadband/acc-1/stop", {"order_id": "s-1", "stop_type": "arrears"}
    )
    assert status == 200
    stopped = clock.now()
    await home.advance(600)
    status, _ = await home.platform(
        "POST", "/platform/v1/broadband/acc-1/resume", {"order_id": "r-1", "stop_type": "arrears"}
    )
    assert status == 200
    resumed = clock.now()
    await home.advance(60)
    now = clock.now()
    r = await home.app(
        f"/app/v1/devices/{device_id}/timeline",
        start=(ordered - timedelta(minutes=1)).isoformat(),
        end=(now + timedelta(minutes=1)).isoformat(),
    )
    body = await r.json()
    assert _ranges(body) == [(start, start + timedelta(seconds=10))]
    gaps = [
        (g["cause"], datetime.fromisoformat(g["start"]), datetime.fromisoformat(g["end"]))
        for g in body["gaps"]
    ]
    causes = [cause for cause, _, _ in gaps]
    assert causes == ["not_entitled", "unknown", "offline", "broadband_stopped", "offline"]
    assert gaps[0][1:] == (ordered - timedelta(minutes=1), ordered)
    assert gaps[1][1:] == (ordered, start), "the camera was never seen before"
    offline_since = gaps[2][1]
    assert start + timedelta(seconds=10) <= offline_since <= stopped, "its last message"
    assert gaps[3][1:] == (stopped, resumed)
    assert gaps[4][1:] == (resumed, now), "not after now: that has not happened yet"


async def test_of_two_overlapping_clips_granted_the_first_notice_wins(
    home: Home, broker: Broker
) -> None:
    """R1 on the notice: two overlapping clips both granted (neither indexed when asked),
    here in one batch: the first notice is indexed, the other refused ``clip_overlaps`` and
    its grant dropped (its object is no one's, for reconcile). Objects put by the service."""
    start = home.clock.now() - timedelta(minutes=3)
    data = b"\x47" * 1880
    spans = {"one": start, "two": start + timedelta(seconds=30)}
    async with home.gw.services.db.session() as session:
        for name, at in spans.items():
            key = f"rec/7d/cam-1/clip-{name}.ts"
            session.add(
                UploadGrant(
                    segment_id=service_segment_id("cam-1", f"clip-{name}"),
                    device_id="cam-1",
                    account_id="acc-1",
                    subscription_id="sub-x",
                    kind="event",
                    start=at,
                    end=at + timedelta(seconds=60),
                    bytes=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                    event_id=f"ev-{name}",
                    object_key=key,
                    retention_class="7d",
                    expires_at=at + timedelta(days=7),
                    granted_at=at,
                )
            )
            await home.gw.services.store.put(key, data)
        await session.commit()

    def notice(name: str) -> str:
        return json.dumps(
            {
                "segment_id": f"clip-{name}",
                "kind": "event",
                "event_id": f"ev-{name}",
                "start": spans[name].isoformat(),
                "end": (spans[name] + timedelta(seconds=60)).isoformat(),
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )

    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="clip-notices") as client:
        for name in ("one", "two"):
            await client.publish("kj/v1/dev/cam-1/segment", notice(name), qos=1)
    registry = home.gw.services.metrics.registry

    async def settled() -> bool:
        labels = {"reason": "clip_overlaps"}
        return registry.get_sample_value("kanjia_segments_rejected_total", labels) == 1

    await eventually(settled)
    async with home.gw.services.db.session() as session:
        indexed = (await session.exec(select(Segment.segment_id))).all()
        waiting = (await session.exec(select(UploadGrant.segment_id))).all()
    assert indexed == [service_segment_id("cam-1", "clip-one")]
    assert waiting == [], "the refused clip's grant is gone"


#: How long each family's piece lasts: a 10-s segment, a one-minute clip (R1).
PIECE_SECONDS = {"continuous-7d": 10, "event-7d": 60}


@pytest.mark.parametrize("plan", ["continuous-7d", "event-7d"])
async def test_one_rule_at_every_boundary_judges_a_piece_by_its_start(
    home: Home, broker: Broker, clock: ManualClock, plan: str
) -> None:
    """RULES.md "Boundaries of a state change" (R5, R6, R8), for both families: a segment or
    clip that started before a stop, or before an unsubscription, is accepted (uploaded
    after the change) and served whole; one started at the stop's instant, during the stop
    (spanning the resume), at the unsubscription's instant or before a new order (spanning
    it) is refused; one started at the resume's or the order's instant is accepted."""
    seconds = PIECE_SECONDS[plan]
    kind = "continuous" if plan == "continuous-7d" else "event"
    cam = camera(broker, clock)
    n = 0

    async def piece(start: datetime) -> UploadOutcome:
        nonlocal n
        n += 1
        event = f"ev-{n}" if kind == "event" else None
        return await cam.upload(
            home.http, start=start, seconds=seconds, kind=kind, event_id=event,
            data=b"x" * 1000,
        )  # fmt: skip

    async def broadband(action: str, order_id: str) -> datetime:
        at = clock.now()
        status, body = await home.platform(
            "POST", f"/platform/v1/broadband/acc-1/{action}",
            {"order_id": order_id, "stop_type": "arrears"},
        )  # fmt: skip
        assert status == 200, body
        await home.advance(60)  # every piece below is uploaded after the change
        return at

    first = await home.subscribe("cam-1", plan, "o-1")
    async with running(cam):
        stop = await broadband("stop", "s-1")
        spans_stop = await piece(stop - timedelta(seconds=seconds - 2))
        at_stop = await piece(stop)
        resume = await broadband("resume", "r-1")
        spans_resume = await piece(resume - timedelta(seconds=2))
        at_resume = await piece(resume)
        assert [spans_stop.ok, at_stop.code, spans_resume.code, at_resume.ok] == [
            True, "suspended", "suspended", True,
        ]  # fmt: skip
        await home.wait_indexed(2)
        for served in (spans_stop, at_resume):  # recorded while active: served whole
            r = await home.app(f"/app/v1/segments/{app_id(served)}")
            assert r.status == 200, await r.text()

        await home.advance(seconds)  # past the last piece: clips never overlap (R1)
        unsubscribed = clock.now()
        status, _ = await home.platform(
            "POST", f"/platform/v1/subscriptions/{first}/unsubscribe", {"order_id": "u-1"}
        )
        assert status == 200
        await home.advance(60)
        spans_unsubscription = await piece(unsubscribed - timedelta(seconds=seconds - 2))
        at_unsubscription = await piece(unsubscribed)
        assert (spans_unsubscription.ok, at_unsubscription.code) == (True, "not_entitled")
        await home.wait_indexed(3)
        async with home.gw.services.db.session() as session:
            kept = await session.get(Segment, app_id(spans_unsubscription))
        assert kept is not None
        assert kept.subscription_id == first
        r = await home.app(f"/app/v1/segments/{app_id(spans_unsubscription)}")
        assert (await r.json())["error"]["code"] == "unsubscribed"

        ordered = clock.now()
        second = await home.subscribe("cam-1", plan, "o-2")  # advances 120 s
        spans_order = await piece(ordered - timedelta(seconds=2))
        at_order = await piece(ordered)
        assert (spans_order.code, at_order.ok) == ("not_entitled", True)
        await home.wait_indexed(4)
    async with home.gw.services.db.session() as session:
        new = await session.get(Segment, app_id(at_order))
    assert new is not None
    assert new.subscription_id == second


async def test_a_camera_unbound_and_bound_to_another_family_starts_clean(
    home: Home, broker: Broker, clock: ManualClock
) -> None:
    """Issue 17 item 2: a camera recorded under acc-1, unbound (refused while subscribed,
    R9) and bound to acc-2: acc-2 sees nothing of acc-1's, acc-1 no longer sees the camera,
    the old credentials are refused, and acc-1's video is swept at its retention (R5)."""
    from gateway.credentials import authenticate

    services = home.gw.services
    sid = await home.subscribe("cam-1", "continuous-1d", "o-1")
    status, issued = await home.platform("POST", "/platform/v1/devices/cam-1/credentials")
    assert status in (200, 201), issued
    cam = camera(broker, clock)
    async with running(cam):
        await cam.report_event(
            event_id="ev-a", kind="person", at=clock.now() - timedelta(seconds=5), score=0.9
        )
        old = await cam.upload(home.http, start=clock.now() - timedelta(seconds=10), seconds=10)
    assert old.ok
    await home.wait_indexed(1)
    window = {
        "start": (clock.now() - timedelta(hours=1)).isoformat(),
        "end": (clock.now() + timedelta(hours=1)).isoformat(),
    }

    unbind = "/platform/v1/accounts/acc-1/devices/cam-1"
    status, body = await home.platform("DELETE", unbind)
    assert (status, body["error"]["code"], body["error"]["rule"]) == (
        409, "subscription_active", "R9",
    )  # fmt: skip
    await home.platform("POST", f"/platform/v1/subscriptions/{sid}/unsubscribe", {"order_id": "u"})
    status, body = await home.platform("DELETE", unbind)
    assert status == 200, body
    assert (body["credentials_revoked"], body["kind"]) == (True, "camera")
    status, _ = await home.platform("DELETE", unbind)
    assert status == 404, "unbound already"

    # acc-1 no longer sees the camera; its old credentials are refused.
    r = await home.app("/app/v1/devices")
    assert "cam-1" not in [d["device_id"] for d in (await r.json())["devices"]]
    for path in ("/app/v1/devices/cam-1/timeline", "/app/v1/devices/cam-1/playlist.m3u8"):
        r = await home.app(path, **window)
        assert r.status == 404, path
    r = await home.app(f"/app/v1/segments/{app_id(old)}")
    assert r.status == 404
    assert not await authenticate(
        services, client_id="cam-1", username="cam-1", password=issued["password"]
    )
    async with services.db.session() as session:
        desired = await session.get(DesiredState, "cam-1")
    assert desired is not None
    assert desired.document == {"service": {"suspended": False}, "recording": {"mode": "off"}}

    # Bound to acc-2, which orders its own plan and records: it sees only its own.
    await home.platform("PUT", "/platform/v1/accounts/acc-2", {"owner_id": "o2", "star_level": 3})
    status, _ = await home.platform(
        "POST", "/platform/v1/accounts/acc-2/devices", {"device_id": "cam-1", "kind": "camera"}
    )
    assert status == 201
    status, token = await home.platform(
        "POST", "/platform/v1/app-tokens", {"account_id": "acc-2", "user_id": "u2"}
    )
    b = Home(home.gw, home.http, token["token"], clock)
    r = await b.app("/app/v1/devices/cam-1/timeline", **window)
    assert r.status == 403
    assert (await r.json())["error"]["code"] == "not_entitled", "acc-1's unsubscription is not told"
    status, body = await b.platform(
        "POST",
        "/platform/v1/subscriptions",
        {"order_id": "o-b", "account_id": "acc-2", "device_id": "cam-1",
         "plan": "continuous-7d", "orderer_id": "o2", "channel": "electronic"},
    )  # fmt: skip
    assert status == 201, body
    new_sid = body["subscription_id"]
    await b.advance(60)
    status, fresh = await b.platform("POST", "/platform/v1/devices/cam-1/credentials")
    assert status in (200, 201)
    assert fresh["password"] != issued["password"]
    cam = camera(broker, clock)
    async with running(cam):
        mine = await cam.upload(b.http, start=clock.now() - timedelta(seconds=10), seconds=10)
    assert mine.ok
    await b.wait_indexed(2)
    r = await b.app(f"/app/v1/segments/{app_id(old)}")
    assert r.status == 404, "acc-1's video is not acc-2's"
    r = await b.app(f"/app/v1/segments/{app_id(old)}/thumbnail.jpg")
    assert r.status == 404
    r = await b.http.post(
        f"{b.gw.url}/app/v1/segments/{app_id(old)}/save",
        headers={"Authorization": f"Bearer {b.app_token}"},
    )
    assert r.status == 404, "nor can it be saved to acc-2's family cloud"
    r = await b.app("/app/v1/devices/cam-1/timeline", **window)
    body = await r.json()
    assert r.status == 200, body
    assert body["events"] == [], "acc-1's event is not on acc-2's timeline"
    assert len(body["ranges"]) == 1
    async with services.db.session() as session:
        segment_rows = (await session.exec(select(Segment))).all()
    by_id = {s.segment_id: s for s in segment_rows}
    assert (by_id[app_id(mine)].account_id, by_id[app_id(mine)].subscription_id) == (
        "acc-2", new_sid,
    )  # fmt: skip
    assert by_id[app_id(old)].account_id == "acc-1"
    assert datetime.fromisoformat(body["ranges"][0]["start"]) >= by_id[app_id(mine)].start

    # acc-1's video is swept at its 1-day retention, acc-2's kept.
    assert old.key is not None
    assert mine.key is not None
    assert await services.store.head(old.key) is not None
    await b.advance(86400)
    assert await services.store.head(old.key) is None
    assert await services.store.head(mine.key) is not None
