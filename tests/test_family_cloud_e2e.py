"""MP4 clips and the family cloud end to end (issue 15, items 2 and 3; R5, R8, R14, R15).

A simulated camera uploads real H.264 through the MQTT handshake; the app downloads
``clip.mp4`` and ffprobe reads it (acceptance: a 10-minute continuous range and an event
range, the expected duration, no backwards timestamps); the family saves ranges to its
family cloud, lists, downloads and deletes them (acceptance: the round trip frees the
quota), on the filesystem store and on SeaweedFS (S3) with SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devices.clock import ManualClock
from replay.models import FamilyCloudItem
from simulators.stream import KEYFRAME_SECONDS
from tests.conftest import T0
from tests.services import Broker
from tests.test_export import Probe, assert_monotonic, probe, segment
from tests.test_presence import running
from tests.test_recording_e2e import Home, app_id, camera, home, home_settings

__all__ = ["home", "home_settings"]  # the fixtures, shared with the recording tests

S = timedelta(seconds=1)
#: The stacks of the heavier tests: the embedded default and the production pair.
TWO_STACKS = pytest.mark.parametrize(
    "stack", ["sqlite+file", pytest.param("postgresql+s3", marks=pytest.mark.postgres)],
    indirect=True,
)  # fmt: skip
ONE_STACK = pytest.mark.parametrize("stack", ["sqlite+file"], indirect=True)


async def record(home: Home, broker: Broker, clock: ManualClock, starts: list[datetime],
                 seconds: int = 10, kind: str = "continuous") -> list[str]:  # fmt: skip
    """cam-1 uploads a segment (or, for ``kind="event"``, a clip with its event) from each
    of ``starts``; all are indexed on return. Their ids, as the app knows them."""
    cam = camera(broker, clock)
    before = await home.segment_count()
    ids = []
    async with running(cam):
        for n, start in enumerate(starts):
            event_id = None
            if kind == "event":
                event_id = f"ev-{n}"
                await cam.report_event(event_id=event_id, kind="person", at=start + 5 * S, score=1)
            done = await cam.upload(
                home.http,
                start=start,
                seconds=seconds,
                kind=kind,
                event_id=event_id,
                data=segment(start, seconds),
            )
            assert done.ok, done.code
            ids.append(app_id(done))
    await home.wait_indexed(before + len(starts))
    return ids


async def clip(home: Home, tmp_path: Path, start: datetime, end: datetime) -> Probe:
    r = await home.app(
        "/app/v1/devices/cam-1/clip.mp4", start=start.isoformat(), end=end.isoformat()
    )
    assert r.status == 200, await r.text()
    assert r.content_type == "video/mp4"
    assert r.headers["Content-Disposition"].startswith('attachment; filename="cam-1-')
    path = tmp_path / "clip.mp4"
    path.write_bytes(await r.read())
    found = probe(path)
    assert float(r.headers["X-Recorded-Seconds"]) == pytest.approx(found.duration, abs=0.1)
    return found


async def error_of(r: aiohttp.ClientResponse) -> tuple[int, str]:
    return r.status, (await r.json())["error"]["code"]


@TWO_STACKS
async def test_a_ten_minute_continuous_range_exports_as_one_mp4(
    home: Home, broker: Broker, clock: ManualClock, tmp_path: Path
) -> None:
    """Acceptance: sixty 10-s segments, ffprobe reads 600 s ± 1, no backwards timestamps."""
    await home.subscribe("cam-1", "continuous-1d", "o-1")  # from T0; now T0 + 120 s
    await home.advance(600)
    start = T0 + 100 * S
    await record(home, broker, clock, [start + 10 * i * S for i in range(60)])
    found = await clip(home, tmp_path, start, start + 600 * S)
    assert abs(found.duration - 600) <= 1
    assert len(found.dts) == 6000, "every frame copied"
    assert_monotonic(found)


@ONE_STACK
async def test_an_event_range_exports_its_clips_back_to_back(
    home: Home, broker: Broker, clock: ManualClock, tmp_path: Path
) -> None:
    """Acceptance: two one-minute event clips four minutes apart; the range around both is
    their 120 recorded seconds (the gap skipped), no backwards timestamps."""
    await home.subscribe("cam-1", "event-1d", "o-1")
    await home.advance(400)
    first, second = T0 + 130 * S, T0 + 430 * S
    await record(home, broker, clock, [first, second], seconds=60, kind="event")
    found = await clip(home, tmp_path, first - 30 * S, second + 90 * S)
    assert abs(found.duration - 120) <= 1
    assert found.keyframes == 120 // KEYFRAME_SECONDS, "copied as recorded: no re-encoding"
    assert_monotonic(found)


@ONE_STACK
async def test_exports_serve_only_what_the_family_may_watch(
    home: Home, broker: Broker, clock: ManualClock
) -> None:
    """At most an hour; nothing recorded is 404; another account's camera is 404; a
    stopped account's video is not served (R8), nor an unsubscribed one's (R5)."""
    sid = await home.subscribe("cam-1", "continuous-1d", "o-1")
    start = T0 + 100 * S
    await record(home, broker, clock, [start])

    async def ask(device_id: str, a: datetime, b: datetime) -> tuple[int, str]:
        path = f"/app/v1/devices/{device_id}/clip.mp4"
        return await error_of(await home.app(path, start=a.isoformat(), end=b.isoformat()))

    hour = timedelta(hours=1)
    assert await ask("cam-1", start, start + hour + S) == (400, "range_too_long")
    assert await ask("cam-1", start, start - S) == (400, "invalid_range")
    assert await ask("cam-1", start + 20 * S, start + 60 * S) == (404, "no_recording")
    assert await ask("cam-9", start, start + 10 * S) == (404, "not_found")
    r = await home.http.get(
        f"{home.gw.url}/app/v1/devices/cam-1/clip.mp4",
        params={"start": start.isoformat(), "end": (start + 10 * S).isoformat()},
    )
    assert (await error_of(r)) == (401, "unauthorized")

    status, _ = await home.platform(
        "POST", "/platform/v1/broadband/acc-1/stop", {"order_id": "b-1", "stop_type": "requested"}
    )
    assert status == 200
    assert await ask("cam-1", start, start + 10 * S) == (403, "broadband_inactive")
    await home.platform(
        "POST", "/platform/v1/broadband/acc-1/resume", {"order_id": "b-2", "stop_type": "requested"}
    )
    window = {"start": start.isoformat(), "end": (start + 10 * S).isoformat()}
    r = await home.app("/app/v1/devices/cam-1/clip.mp4", **window)
    assert (r.status, r.content_type) == (200, "video/mp4"), "resumed: served again"
    await home.platform(
        "POST", f"/platform/v1/subscriptions/{sid}/unsubscribe", {"order_id": "u-1"}
    )
    assert await ask("cam-1", start, start + 10 * S) == (403, "unsubscribed")


# --- the family cloud --------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(home: Home, method: str, path: str, body: Any = None, token: str = "") -> Any:
    r = await home.http.request(
        method, f"{home.gw.url}{path}", json=body, headers=bearer(token or home.app_token)
    )
    return r.status, await r.json()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def asked(start: datetime, end: datetime) -> dict[str, str]:
    return {"device_id": "cam-1", "start": start.isoformat(), "end": end.isoformat()}


async def stored_keys(home: Home) -> list[str]:
    return [info.key async for info in home.gw.services.store.list("family/acc-1/")]


async def other_account(home: Home) -> str:
    """acc-2 and an app token of it."""
    status, _ = await home.platform(
        "PUT", "/platform/v1/accounts/acc-2", {"owner_id": "owner-2", "star_level": 3}
    )
    assert status in (200, 201)
    status, body = await home.platform(
        "POST", "/platform/v1/app-tokens", {"account_id": "acc-2", "user_id": "v"}
    )
    assert status == 201, body
    return str(body["token"])


async def test_the_family_cloud_round_trip_frees_the_quota(
    home: Home, broker: Broker, clock: ManualClock, tmp_path: Path
) -> None:
    """Acceptance: save a range (an MP4) and a segment, list them with the quota, download
    the MP4 through its URL (ffprobe reads it), delete both: the quota is free again and
    the objects are gone."""
    await home.subscribe("cam-1", "continuous-1d", "o-1")
    start = T0 + 100 * S
    first, *_ = await record(home, broker, clock, [start + 10 * i * S for i in range(3)])
    quota = home.gw.services.settings.family_cloud_quota_bytes

    status, saved = await call(home, "POST", "/app/v1/family-cloud", asked(start, start + 30 * S))
    assert status == 201, saved
    assert saved["content_type"] == "video/mp4"
    assert "segment_id" not in saved
    assert (saved["device_id"], at(saved["start"]), at(saved["end"])) == (
        "cam-1",
        start,
        start + 30 * S,
    )
    assert (saved["used_bytes"], saved["left_bytes"]) == (saved["bytes"], quota - saved["bytes"])
    again = await call(home, "POST", "/app/v1/family-cloud", asked(start, start + 30 * S))
    assert again == (200, saved), "the same range: the same item"
    status, seg = await call(home, "POST", f"/app/v1/segments/{first}/save")
    assert status == 201, seg
    assert (seg["content_type"], at(seg["start"])) == ("video/mp2t", start)
    assert len(await stored_keys(home)) == 2

    status, listed = await call(home, "GET", "/app/v1/family-cloud")
    assert status == 200
    used = saved["bytes"] + seg["bytes"]
    assert (
        listed["status"],
        listed["used_bytes"],
        listed["left_bytes"],
        listed["quota_bytes"],
    ) == (
        "open",
        used,
        quota - used,
        quota,
    )
    assert [i["item_id"] for i in listed["items"]] == [seg["item_id"], saved["item_id"]]

    status, item = await call(home, "GET", f"/app/v1/family-cloud/{saved['item_id']}")
    assert status == 200
    assert item["expires_in"] == home.gw.services.settings.url_ttl_seconds
    async with aiohttp.ClientSession() as anonymous, anonymous.get(item["url"]) as got:
        assert got.status == 200
        (tmp_path / "saved.mp4").write_bytes(await got.read())
    found = probe(tmp_path / "saved.mp4")
    assert abs(found.duration - 30) <= 1
    assert_monotonic(found)

    status, deleted = await call(home, "DELETE", f"/app/v1/family-cloud/{saved['item_id']}")
    assert (status, deleted["used_bytes"], deleted["left_bytes"]) == (
        200,
        seg["bytes"],
        quota - seg["bytes"],
    )
    status, _ = await call(home, "GET", f"/app/v1/family-cloud/{saved['item_id']}")
    assert status == 404
    status, _ = await call(home, "DELETE", f"/app/v1/family-cloud/{saved['item_id']}")
    assert status == 404
    status, deleted = await call(home, "DELETE", f"/app/v1/family-cloud/{seg['item_id']}")
    assert (status, deleted["used_bytes"], deleted["left_bytes"]) == (200, 0, quota)
    assert await stored_keys(home) == []
    status, listed = await call(home, "GET", "/app/v1/family-cloud")
    assert (listed["items"], listed["used_bytes"]) == ([], 0)
    assert (await call(home, "GET", "/app/v1/family-cloud/x1"))[0] == 404


@ONE_STACK
async def test_another_account_sees_nothing_of_the_family_cloud(
    home: Home, broker: Broker, clock: ManualClock
) -> None:
    """Items and cameras of another account are 404, never 403 (no probing)."""
    await home.subscribe("cam-1", "continuous-1d", "o-1")
    start = T0 + 100 * S
    await record(home, broker, clock, [start])
    status, saved = await call(home, "POST", "/app/v1/family-cloud", asked(start, start + 10 * S))
    assert status == 201, saved
    stranger = await other_account(home)
    for method in ("GET", "DELETE"):
        status, body = await call(
            home, method, f"/app/v1/family-cloud/{saved['item_id']}", token=stranger
        )
        assert (status, body["error"]["code"]) == (404, "not_found")
    status, theirs = await call(home, "GET", "/app/v1/family-cloud", token=stranger)
    assert (status, theirs["items"], theirs["used_bytes"]) == (200, [], 0)
    status, body = await call(
        home, "POST", "/app/v1/family-cloud", asked(start, start + 10 * S), token=stranger
    )
    assert (status, body["error"]["code"]) == (404, "not_found"), "not their camera"

    status, mine = await call(home, "GET", "/app/v1/family-cloud")
    assert [item["item_id"] for item in mine["items"]] == [saved["item_id"]], "still there"


@ONE_STACK
@pytest.mark.parametrize("home_settings", [{"family_cloud_quota_bytes": 100_000}])
async def test_a_range_that_does_not_fit_is_refused_until_room_is_freed(
    home: Home, broker: Broker, clock: ManualClock
) -> None:
    """R14: two 20-s MP4s (about 70 kB each) do not fit in 100 kB: the second is refused and
    leaves no object behind; once the first is deleted, it fits."""
    await home.subscribe("cam-1", "continuous-1d", "o-1")
    await home.advance(120)  # now T0 + 240 s
    a, b = T0 + 100 * S, T0 + 200 * S
    await record(home, broker, clock, [a, a + 10 * S, b, b + 10 * S])
    status, first = await call(home, "POST", "/app/v1/family-cloud", asked(a, a + 20 * S))
    assert status == 201, first
    assert 50_000 < first["bytes"] <= 100_000 < 2 * first["bytes"], "the test's premise"
    status, body = await call(home, "POST", "/app/v1/family-cloud", asked(b, b + 20 * S))
    assert (status, body["error"]["code"], body["error"]["rule"]) == (409, "quota_exceeded", "R14")
    assert len(await stored_keys(home)) == 1, "the refused MP4 is not kept"
    status, _ = await call(home, "DELETE", f"/app/v1/family-cloud/{first['item_id']}")
    assert status == 200
    status, second = await call(home, "POST", "/app/v1/family-cloud", asked(b, b + 20 * S))
    assert (status, second["used_bytes"]) == (201, second["bytes"])
    assert len(await stored_keys(home)) == 1


@ONE_STACK
@pytest.mark.parametrize("home_settings", [{"app_token_ttl_days": 365}])
async def test_long_stops_close_the_family_cloud_to_saves_then_delete_it_r15(
    home: Home, broker: Broker, clock: ManualClock, tmp_path: Path
) -> None:
    """R15, read in ``replay.clips``: three months stopped, the family cloud is closed to
    saves while the family still lists, downloads and deletes; six months, it is gone
    (404 ``family_cloud_deleted``, R15)."""
    await home.subscribe("cam-1", "continuous-1d", "o-1")
    start = T0 + 100 * S
    await record(home, broker, clock, [start, start + 10 * S])
    _, one = await call(home, "POST", "/app/v1/family-cloud", asked(start, start + 10 * S))
    _, two = await call(home, "POST", "/app/v1/family-cloud", asked(start, start + 20 * S))
    status, _ = await home.platform(
        "POST", "/platform/v1/broadband/acc-1/stop", {"order_id": "b-1", "stop_type": "arrears"}
    )
    assert status == 200
    await home.advance(95 * 86400)  # past three calendar months (20 Feb)
    status, listed = await call(home, "GET", "/app/v1/family-cloud")
    assert status == 200, listed
    assert (listed["status"], len(listed["items"])) == ("closed", 2)
    status, item = await call(home, "GET", f"/app/v1/family-cloud/{one['item_id']}")
    assert status == 200
    async with aiohttp.ClientSession() as anonymous, anonymous.get(item["url"]) as got:
        assert got.status == 200, "downloads go on while closed"
    status, freed = await call(home, "DELETE", f"/app/v1/family-cloud/{one['item_id']}")
    assert (status, freed["used_bytes"]) == (200, two["bytes"]), "deleting goes on"
    # No save: the stopped account's video is not served (R8) before R15 is asked.
    status, body = await call(home, "POST", "/app/v1/family-cloud", asked(start, start + 10 * S))
    assert (status, body["error"]["code"]) == (403, "broadband_inactive")
    async with home.gw.services.db.session() as session:
        assert await session.get(FamilyCloudItem, two["item_id"]) is not None

    await home.advance(95 * 86400)  # past six (20 May)
    for method, path in [
        ("GET", "/app/v1/family-cloud"),
        ("GET", f"/app/v1/family-cloud/{two['item_id']}"),
        ("DELETE", f"/app/v1/family-cloud/{two['item_id']}"),
    ]:
        status, body = await call(home, method, path)
        assert (status, body["error"]["code"], body["error"]["rule"]) == (
            404,
            "family_cloud_deleted",
            "R15",
        ), (method, path)
