"""Uploads cannot be replaced (issue 13, item 5; issue 14, "re-upload over an indexed
segment"), and the store takes only the bytes granted (issue 16, item 2; issue 14, item 5),
end to end on each stack (filesystem store; SeaweedFS with SQLite and PostgreSQL).

An eavesdropper on the broker reads the upload URL the service hands a camera in
``upload/res``. Once the segment is indexed, neither that URL (still valid) nor a new
``upload/req`` for the same ``segment_id`` can put other bytes under it: the family goes on
downloading what the camera recorded. A ``segment_id`` is the camera's own (issue 14): the
same id from another camera is that camera's segment, and no camera can take another's.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from datetime import timedelta
from typing import Any

import aiohttp
import aiomqtt
from yarl import URL

from devices.clock import ManualClock
from replay.object_keys import service_segment_id
from storage.s3store import S3ObjectStore
from tests.conftest import eventually
from tests.services import Broker
from tests.test_presence import running
from tests.test_recording_e2e import Home, app_id, camera, home, home_settings
from tests.test_s3store import counting

__all__ = ["home", "home_settings"]  # the fixtures, shared with the recording tests

ATTACKER = b"\x47" * 1880  # one TS packet's sync byte, ten packets: not the camera's video


@asynccontextmanager
async def eavesdropping(broker: Broker, device_id: str) -> AsyncIterator[aiomqtt.Client]:
    """A client on the (unauthenticated, in this suite) broker reading the device's answers."""
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier=f"spy-{device_id}") as spy:
        await spy.subscribe(f"kj/v1/dev/{device_id}/upload/res", qos=1)
        yield spy


async def answer_for(
    spy: aiomqtt.Client, segment_id: str, device_id: str | None = None
) -> dict[str, Any]:
    """The next ``upload/res`` about ``segment_id`` (to ``device_id``, if given) the spy reads."""
    async with asyncio.timeout(10):
        async for message in spy.messages:
            body: dict[str, Any] = json.loads(bytes(message.payload))
            to = message.topic.value.split("/")[3]
            if body.get("segment_id") == segment_id and device_id in (None, to):
                return body
    raise AssertionError(f"no upload/res for {segment_id}")


def declared(segment_id: str, home: Home, data: bytes = ATTACKER) -> dict[str, Any]:
    """The fields of an ``upload/req`` (and its ``segment`` notice) declaring ``data``."""
    start = home.clock.now() - timedelta(seconds=10)
    return {
        "segment_id": segment_id,
        "kind": "continuous",
        "start": start.isoformat(),
        "end": (start + timedelta(seconds=10)).isoformat(),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


async def ask(
    spy: aiomqtt.Client, device_id: str, segment_id: str, home: Home, data: bytes = ATTACKER
) -> dict[str, Any]:
    """Publish an ``upload/req`` for ``segment_id`` as ``device_id``; return the answer."""
    request = {"req_id": f"again-{device_id}", **declared(segment_id, home, data)}
    await spy.subscribe(f"kj/v1/dev/{device_id}/upload/res", qos=1)
    await spy.publish(f"kj/v1/dev/{device_id}/upload/req", json.dumps(request), qos=1)
    return await answer_for(spy, segment_id, device_id)


async def put(url: str, data: bytes, headers: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.put(URL(url, encoded=True), data=data, headers=headers) as response,
    ):
        return response.status


async def served(home: Home, segment_id: str) -> bytes:
    """The bytes the app downloads for the segment."""
    r = await home.app(f"/app/v1/segments/{segment_id}")
    assert r.status == 200, await r.text()
    async with aiohttp.ClientSession() as anonymous, anonymous.get((await r.json())["url"]) as got:
        assert got.status == 200
        return await got.read()


async def test_an_indexed_segment_cannot_be_replaced_nor_requested_again(
    home: Home, broker: Broker, clock: ManualClock
) -> None:
    await home.subscribe("cam-1", "continuous-7d", "o-1")
    await home.subscribe("cam-2", "continuous-7d", "o-2")
    cam = camera(broker, clock)
    async with eavesdropping(broker, "cam-1") as spy:
        async with running(cam):
            seg = await cam.upload(home.http, start=clock.now() - timedelta(seconds=10), seconds=10)
        assert seg.ok, seg.code
        await home.wait_indexed(1)
        sniffed = await answer_for(spy, seg.segment_id)
        assert seg.data is not None
        assert await served(home, app_id(seg)) == seg.data

        # The handed-out URL is still valid, but it stores only a new object...
        assert await put(sniffed["url"], seg.data, sniffed["headers"]) == 412
        # ... of the granted bytes only (issue 16): other ones are refused by the binding.
        assert await put(sniffed["url"], ATTACKER, sniffed["headers"]) in (400, 403, 413)
        # Without the headers: S3 refuses the signature (403), the filesystem store the key.
        assert await put(sniffed["url"], seg.data, {}) in (403, 412)

        # A new request for the indexed segment by its camera gets no URL (issue 14)...
        again = await ask(spy, "cam-1", seg.segment_id, home)
        assert (again["ok"], again["code"]) == (False, "segment_exists"), again
        assert "url" not in again
        # ...while the same id is another camera's own: a URL for its own object.
        theirs = await ask(spy, "cam-2", seg.segment_id, home)
        assert theirs["ok"], theirs
        assert theirs["key"].startswith("rec/7d/")
        assert theirs["key"].endswith(f"-continuous-{seg.segment_id}@cam-2.ts")
        assert theirs["key"] != sniffed["key"]

    assert await served(home, app_id(seg)) == seg.data
    assert await home.segment_count() == 1


async def record(
    client: aiomqtt.Client, home: Home, device_id: str, segment_id: str, data: bytes
) -> dict[str, Any]:
    """Ask for, PUT and announce one segment as ``device_id``; return the upload answer."""
    answer = await ask(client, device_id, segment_id, home, data)
    assert answer["ok"], answer
    assert await put(answer["url"], data, answer["headers"]) in (200, 201)
    notice = json.dumps(declared(segment_id, home, data))
    await client.publish(f"kj/v1/dev/{device_id}/segment", notice, qos=1)
    return answer


async def test_two_cameras_record_under_the_same_segment_id_and_neither_squats(
    home: Home, broker: Broker
) -> None:
    """Issue 14: a camera's segment_id is its own. cam-2 asking first for the id cam-1 is
    about to use (a squat: it used to refuse cam-1 "segment_id already in use") takes
    nothing from cam-1; both index and the family plays each camera's own video."""
    await home.subscribe("cam-1", "continuous-7d", "o-1")
    await home.subscribe("cam-2", "continuous-7d", "o-2")
    video = {"cam-1": b"\x47" * 1880, "cam-2": b"\x47" * 3760}
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="cams") as client:
        squat = await ask(client, "cam-2", "seg-0001", home, video["cam-2"])
        assert squat["ok"], squat
        mine = await record(client, home, "cam-1", "seg-0001", video["cam-1"])
        # Redelivered before it is indexed, a request gets its grant again: the same key.
        again = await ask(client, "cam-2", "seg-0001", home, video["cam-2"])
        assert (again["ok"], again["key"]) == (True, squat["key"]), again
        await record(client, home, "cam-2", "seg-0001", video["cam-2"])
        await home.wait_indexed(2)
        assert mine["key"] != squat["key"]
        assert mine["segment_id"] == squat["segment_id"] == "seg-0001", "the camera's own id"
        # A repeated notice changes nothing; each camera's id is indexed, so refused.
        for device_id in ("cam-1", "cam-2"):
            notice = json.dumps(declared("seg-0001", home, video[device_id]))
            await client.publish(f"kj/v1/dev/{device_id}/segment", notice, qos=1)
            refused = await ask(client, device_id, "seg-0001", home, video[device_id])
            assert refused["code"] == "segment_exists", refused
    registry = home.gw.services.metrics.registry
    assert registry.get_sample_value("kanjia_segments_indexed_total") == 2
    assert (
        registry.get_sample_value("kanjia_segments_rejected_total", {"reason": "no_grant"}) is None
    )
    assert await home.segment_count() == 2
    for device_id, data in video.items():
        assert await served(home, service_segment_id(device_id, "seg-0001")) == data


async def test_an_upload_url_lives_upload_url_ttl_seconds(
    home: Home, broker: Broker, clock: ManualClock, stack: dict[str, str]
) -> None:
    """``KANJIA_UPLOAD_URL_TTL_SECONDS`` (60 by default), apart from download URLs (300).
    The filesystem store signs on the service clock; S3 checks its own (wall) clock."""
    await home.subscribe("cam-1", "continuous-7d", "o-1")
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="cam-1") as device:
        answer = await ask(device, "cam-1", "cam-1-ttl", home)
        assert (answer["ok"], answer["expires_in"]) == (True, 60), answer
        await home.advance(61)
        status = await put(answer["url"], ATTACKER, answer["headers"])
    on_s3 = stack.get("object_store_url", "").startswith("s3://")
    assert status == (200 if on_s3 else 403)


async def test_the_store_takes_only_the_granted_bytes_and_indexing_trusts_it(
    home: Home, broker: Broker, stack: dict[str, str]
) -> None:
    """Issue 16 item 2, issue 14 item 5: the upload URL binds the declared size and SHA-256,
    so the store refuses a longer, shorter or altered body before storing anything; the
    notice of the good one is indexed without a read-back, those of the refused ones are
    rejected as missing, and the indexed object still cannot be overwritten."""
    await home.subscribe("cam-1", "continuous-7d", "o-1")
    video = bytes(range(256)) * 80
    bodies = {
        "long": video + b"\x00",
        "short": video[:-1],
        "altered": b"\x47" + video[1:],
        "absent": None,
        "good": video,
    }
    on_s3 = stack.get("object_store_url", "").startswith("s3://")
    refused = {"long": 403 if on_s3 else 413, "short": 403 if on_s3 else 400, "altered": 400}
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="cam-1") as device:
        answers = {name: await ask(device, "cam-1", f"seg-{name}", home, video) for name in bodies}
        assert all(answer["ok"] for answer in answers.values()), answers
        for name, status in refused.items():
            answer = answers[name]
            assert await put(answer["url"], bodies[name] or b"", answer["headers"]) == status
        store = home.gw.services.store
        assert isinstance(store, S3ObjectStore) == on_s3
        keys = [answers[name]["key"] for name in bodies]
        assert await store.stat_many(keys) == [None] * len(keys)  # nothing left behind
        good = answers["good"]
        assert await put(good["url"], video, good["headers"]) == 200
        with ExitStack() as watching:
            calls = Counter[str]()
            if isinstance(store, S3ObjectStore):
                calls = watching.enter_context(counting(store))
            for name in bodies:
                notice = json.dumps(declared(f"seg-{name}", home, video))
                await device.publish("kj/v1/dev/cam-1/segment", notice, qos=1)
            registry = home.gw.services.metrics.registry

            async def settled() -> bool:
                missing = {"reason": "missing_object"}
                return registry.get_sample_value("kanjia_segments_rejected_total", missing) == 4

            await eventually(settled)
    assert calls["GetObject"] == 0, "indexing read an object back"
    await home.wait_indexed(1)
    assert await served(home, service_segment_id("cam-1", "seg-good")) == video
    # Still no overwrite: neither the same bytes (the key is taken) nor others (the binding).
    assert await put(good["url"], video, good["headers"]) == 412
    assert await put(good["url"], bodies["altered"] or b"", good["headers"]) in (400, 412)
    assert await served(home, service_segment_id("cam-1", "seg-good")) == video
