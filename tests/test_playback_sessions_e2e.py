"""Playback sessions end to end (issue 15 item 1; R5, R6, R8).

A simulated camera records real H.264 through the MQTT handshake; the app opens a
session; ffmpeg (Debian's, no header, as ``<video src>`` would) plays its whole playlist
after the old 300-s URL life has passed: on the filesystem store with the manual clock
moved past it, and on S3 (SeaweedFS) with a 2-s presign life and real seconds waited.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urljoin

import aiohttp
import pytest

from devices.clock import ManualClock
from gateway.service import Gateway
from replay import index_store
from replay.object_keys import service_segment_id
from simulators.camera import CameraSimulator, UploadOutcome
from simulators.media import encode_segment
from tests.conftest import StartGateway, eventually, platform_headers
from tests.seaweed import SeaweedServer
from tests.services import Broker
from tests.test_presence import running

P = platform_headers()
MIN = timedelta(minutes=1)
#: The acceptance's playlist: 16 one-minute segments (more than 15 minutes), 2 fps.
LONG_SEGMENTS, SEGMENT_S, FPS = 16, 60, 2


@dataclass
class Home:
    gw: Gateway
    http: aiohttp.ClientSession
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def platform(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        r = await self.http.request(method, f"{self.gw.url}{path}", json=body, headers=P)
        return r.status, await r.json()

    async def advance(self, seconds: float) -> None:
        status, _ = await self.platform("POST", "/ops/v1/clock", {"advance_seconds": seconds})
        assert status == 200

    async def subscribe(self, device_id: str, order_id: str) -> str:
        status, body = await self.platform(
            "POST",
            "/platform/v1/subscriptions",
            {
                "order_id": order_id,
                "account_id": "acc-1",
                "device_id": device_id,
                "plan": "continuous-7d",
                "orderer_id": "owner-1",
                "channel": "electronic",
            },
        )
        assert status == 201, body
        return str(body["subscription_id"])

    async def open_session(
        self, device_id: str, start: datetime, end: datetime, token: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        r = await self.http.post(
            f"{self.gw.url}/app/v1/devices/{device_id}/playback",
            json={"start": start.isoformat(), "end": end.isoformat()},
            headers={"Authorization": f"Bearer {token or self.token}"},
        )
        return r.status, await r.json()

    async def session_url(self, device_id: str, start: datetime, end: datetime) -> str:
        status, body = await self.open_session(device_id, start, end)
        assert status == 201, body
        return str(body["url"])

    async def get(self, url: str) -> tuple[int, str]:
        """A GET with no header at all, redirects followed (as a player does)."""
        async with aiohttp.ClientSession() as anonymous, anonymous.get(url) as r:
            return r.status, (await r.read()).decode("latin-1")

    async def refusal(self, url: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as anonymous, anonymous.get(url) as r:
            return r.status, (await r.json())["error"]["code"]


async def _bind(http: aiohttp.ClientSession, gw: Gateway, account: str, *devices: str) -> None:
    r = await http.put(
        f"{gw.url}/platform/v1/accounts/{account}",
        json={"owner_id": f"owner-{account[-1]}", "star_level": 3},
        headers=P,
    )
    assert r.status in (200, 201)
    for device_id in devices:
        r = await http.post(
            f"{gw.url}/platform/v1/accounts/{account}/devices",
            json={"device_id": device_id, "kind": "camera"},
            headers=P,
        )
        assert r.status == 201


@asynccontextmanager
async def household(
    start_gateway: StartGateway, broker: Broker, clock: ManualClock, **settings: Any
) -> AsyncIterator[Home]:
    """acc-1 with cam-1 and cam-2, acc-2 with cam-9, and an app token of acc-1."""
    async with (
        start_gateway(clock=clock, mqtt_url=broker.url, **settings) as gw,
        aiohttp.ClientSession() as http,
    ):
        await _bind(http, gw, "acc-1", "cam-1", "cam-2")
        await _bind(http, gw, "acc-2", "cam-9")
        r = await http.post(
            f"{gw.url}/platform/v1/app-tokens",
            json={"account_id": "acc-1", "user_id": "u"},
            headers=P,
        )
        yield Home(gw, http, (await r.json())["token"])


async def record(
    home: Home, broker: Broker, clock: ManualClock, device_id: str, count: int, seconds: int
) -> tuple[str, datetime, list[UploadOutcome]]:
    """Subscribe ``device_id``, let the time pass, upload ``count`` continuous segments of
    ``seconds`` (real H.264 at 2 fps) that follow each other; wait until all are indexed.
    Returns the subscription, the first segment's start and the uploads."""
    sid = await home.subscribe(device_id, f"o-{device_id}-{secrets.token_hex(3)}")
    t0 = clock.now() + timedelta(seconds=30)  # after the order (R6)
    await home.advance(30 + count * seconds + 30)
    cam = CameraSimulator(
        device_id=device_id,
        mqtt_url=broker.url,
        clock=clock,
        telemetry_interval=None,
        record=False,
    )
    uploads = []
    async with running(cam):
        for i in range(count):
            start = t0 + timedelta(seconds=seconds * i)
            data = await asyncio.to_thread(encode_segment, cam.scene, start, seconds, fps=FPS)
            uploads.append(await cam.upload(home.http, start=start, seconds=seconds, data=data))
    assert all(u.ok for u in uploads), [u.code for u in uploads]
    mine = {service_segment_id(device_id, u.segment_id) for u in uploads}

    async def indexed() -> bool:
        async with home.gw.services.db.session() as db:
            return all([await index_store.segment(db, s) is not None for s in mine])

    await eventually(indexed, timeout=20)
    return sid, t0, uploads


@dataclass(frozen=True)
class Played:
    returncode: int
    stderr: str
    frames: int
    seconds: float


async def ffmpeg_play(url: str) -> Played:
    """``ffmpeg -i <url> -f null -``: decode the whole playlist, nothing but the URL."""
    process = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-v", "error", "-i", url, "-progress", "pipe:1", "-f", "null", "-",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 300)
    progress = dict(re.findall(r"^(\w+)=(.*)$", out.decode(), re.MULTILINE))
    assert process.returncode is not None
    return Played(
        process.returncode,
        err.decode(errors="replace"),
        int(progress.get("frame", "0")),
        int(progress.get("out_time_us", "0")) / 1e6,
    )


def assert_played_whole(played: Played) -> None:
    assert played.returncode == 0, played.stderr
    # Nothing on stderr (no 403, no "expired", no "Server returned", nothing else) but the
    # one message allowed: ffmpeg's keep-alive cannot follow a redirect to the S3 host on
    # the connection it holds to the gateway, and opens a new one (ffmpeg 5.1 says so at
    # the error level). Its lines carry hexadecimal addresses, which may hold "403".
    others = [
        line
        for line in played.stderr.splitlines()
        if line and "Cannot reuse HTTP connection for different host" not in line
    ]
    assert others == [], played.stderr
    # 16 segments x 60 s x 2 fps: every frame decoded, over 15 minutes of video.
    assert played.frames == LONG_SEGMENTS * SEGMENT_S * FPS, played
    assert played.seconds >= 15 * 60, played


def segment_uris(playlist: str, base: str) -> list[str]:
    return [urljoin(base, line) for line in playlist.splitlines() if not line.startswith("#")]


# --- the acceptance: the filesystem store on the manual clock -----------------------------


async def test_ffmpeg_plays_a_long_session_after_the_old_url_life_on_the_filesystem_store(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    """Issue 15 acceptance: a 16-minute session plays whole, by URL alone, 10 minutes after
    it was made (the old playlist's URLs died after 300 s); its segments are presigned
    when fetched; it lives until the range has played through plus 5 minutes, no more."""
    async with household(start_gateway, broker, clock) as home:
        _, t0, uploads = await record(home, broker, clock, "cam-1", LONG_SEGMENTS, SEGMENT_S)
        end = t0 + LONG_SEGMENTS * SEGMENT_S * timedelta(seconds=1)
        old = await home.http.get(
            f"{home.gw.url}/app/v1/devices/cam-1/playlist.m3u8",
            params={"start": t0.isoformat(), "end": end.isoformat()},
            headers=home.auth,
        )
        first_old_url = segment_uris(await old.text(), str(old.url))[0]
        made = clock.now()
        status, body = await home.open_session("cam-1", t0, end)
        assert status == 201, body
        url = body["url"]
        assert url.startswith(home.gw.url)
        assert datetime.fromisoformat(body["expires_at"]) == made + 16 * MIN + 5 * MIN

        await home.advance(301)
        assert (await home.get(first_old_url))[0] == 403, "the old URLs died after 300 s"
        await home.advance(300)
        assert_played_whole(await ffmpeg_play(url))

        # A playlist fetched now, its segments fetched after the clock moved on again.
        status, playlist = await home.get(url)
        assert status == 200
        uris = segment_uris(playlist, url)
        assert len(uris) == LONG_SEGMENTS
        await home.advance(301)
        for uri, upload in zip(uris, uploads, strict=True):
            status, data = await home.get(uri)
            assert (status, data.encode("latin-1")) == (200, upload.data)

        # Alive until the range played through plus 5 minutes from its making, not after.
        await home.advance((made + 21 * MIN - clock.now()).total_seconds() - 1)
        assert (await home.get(url))[0] == 200
        await home.advance(1)
        assert await home.refusal(url) == (401, "session_expired")
        assert await home.refusal(uris[0]) == (401, "session_expired")


async def test_a_session_is_refused_as_soon_as_viewing_is_not_allowed(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    """R8: refused while broadband is stopped, served again once resumed; R5: refused from
    the unsubscription on; R6: a new order does not reopen it."""
    async with household(start_gateway, broker, clock) as home:
        sid, t0, _ = await record(home, broker, clock, "cam-1", 2, 10)
        url = await home.session_url("cam-1", t0, t0 + 20 * timedelta(seconds=1))
        status, playlist = await home.get(url)
        assert status == 200
        segment = segment_uris(playlist, url)[0]
        assert (await home.get(segment))[0] == 200

        status, _ = await home.platform(
            "POST", "/platform/v1/broadband/acc-1/stop", {"order_id": "s-1", "stop_type": "arrears"}
        )
        assert status == 200
        assert await home.refusal(url) == (403, "broadband_inactive")
        assert await home.refusal(segment) == (403, "broadband_inactive")
        status, _ = await home.platform(
            "POST",
            "/platform/v1/broadband/acc-1/resume",
            {"order_id": "r-1", "stop_type": "arrears"},
        )
        assert status == 200
        assert (await home.get(url))[0] == 200
        assert (await home.get(segment))[0] == 200

        status, _ = await home.platform(
            "POST", f"/platform/v1/subscriptions/{sid}/unsubscribe", {"order_id": "u-1"}
        )
        assert status == 200
        assert await home.refusal(url) == (403, "unsubscribed")
        assert await home.refusal(segment) == (403, "unsubscribed")
        await home.subscribe("cam-1", "o-again")
        assert await home.refusal(url) == (403, "previous_subscription")
        assert await home.refusal(segment) == (403, "previous_subscription")


async def test_a_session_is_scoped_to_its_device_range_and_account(
    broker: Broker,
    start_gateway: StartGateway,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At most 12 hours; another account's device is 404; a session serves its own
    device's segments in its own range only; a bad or missing credential is 401; the
    access log never writes the credential."""
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    async with household(start_gateway, broker, clock) as home:
        _, t0, cam1 = await record(home, broker, clock, "cam-1", 2, 10)
        _, _, cam2 = await record(home, broker, clock, "cam-2", 1, 10)
        s = timedelta(seconds=1)

        status, body = await home.open_session("cam-1", t0, t0 + 12 * 3600 * s + s)
        assert (status, body["error"]["code"]) == (400, "range_too_long")
        status, body = await home.open_session("cam-1", t0 - 12 * 3600 * s + 20 * s, t0 + 20 * s)
        assert status == 201, "exactly 12 hours is allowed"
        status, body = await home.open_session("cam-1", t0 + 20 * s, t0)
        assert (status, body["error"]["code"]) == (400, "invalid_range")
        status, body = await home.open_session("cam-9", t0, t0 + 20 * s)
        assert status == 404, "another account's device"
        status, body = await home.open_session("cam-1", t0 + 3600 * s, t0 + 3700 * s)
        assert (status, body["error"]["code"]) == (404, "no_recording")
        status, body = await home.open_session("cam-1", t0, t0 + 20 * s, token="kja_forged")
        assert status == 401

        # A session of cam-1's first segment only.
        url = await home.session_url("cam-1", t0, t0 + 10 * s)
        credential = url.partition("session=")[2]
        base = f"{home.gw.url}/app/v1/devices"
        status, playlist = await home.get(url)
        assert len(segment_uris(playlist, url)) == 1
        first, second = (service_segment_id("cam-1", u.segment_id) for u in cam1)
        other = service_segment_id("cam-2", cam2[0].segment_id)
        mine = f"{base}/cam-1/playback/segments/{first}.ts?session={credential}"
        assert (await home.get(mine))[0] == 200
        for path, expected in [
            (f"cam-1/playback/segments/{second}.ts", (404, "not_found")),  # out of its range
            (f"cam-1/playback/segments/{other}.ts", (404, "not_found")),  # cam-2's, by id
            (f"cam-2/playback/segments/{other}.ts", (403, "session_scope")),
            ("cam-2/playback/playlist.m3u8", (403, "session_scope")),
        ]:
            assert await home.refusal(f"{base}/{path}?session={credential}") == expected, path
        playlist_url = f"{base}/cam-1/playback/playlist.m3u8"
        tampered = credential[:-3] + ("AAA" if credential[-3:] != "AAA" else "BBB")
        assert await home.refusal(f"{playlist_url}?session={tampered}") == (401, "session_invalid")
        assert await home.refusal(playlist_url) == (401, "unauthorized")
        r = await home.http.get(playlist_url, headers=home.auth)  # the app token is not one
        assert r.status == 401

        r = await home.http.get(f"{home.gw.url}/openapi.json")
        document = await r.json()
        assert document["components"]["securitySchemes"]["session"] == {
            "type": "apiKey",
            "in": "query",
            "name": "session",
        }
        paths = document["paths"]
        assert paths["/app/v1/devices/{device_id}/playback"]["post"]["security"] == [{"app": []}]
        for path in ("playback/playlist.m3u8", "playback/segments/{segment_id}.ts"):
            operation = paths[f"/app/v1/devices/{{device_id}}/{path}"]["get"]
            assert operation["security"] == [{"session": []}], path

    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "aiohttp.access")
    assert "session=***" in logged
    assert credential not in logged
    assert credential.split(".")[2] not in logged


# --- the acceptance on S3: a real minute past the presign life ---------------------------


#: The presigned URLs' life in the S3 test: a real minute waited past it.
URL_LIFE_S = 60


async def test_ffmpeg_plays_a_long_session_on_s3_past_the_presign_life(
    broker: Broker,
    start_gateway: StartGateway,
    clock: ManualClock,
    seaweed: SeaweedServer,
) -> None:
    """Issue 15 acceptance on S3: with presigned URLs living 60 s (``KANJIA_URL_TTL_SECONDS``,
    300 by default), the old playlist's URLs are refused by the store once a real minute
    has passed, and the session, whose segments are presigned as they are fetched, plays
    whole. Real time: S3 checks its signatures on the wall clock, not the service's."""
    store = seaweed.url_for_bucket(f"kanjia-{secrets.token_hex(4)}")
    async with household(
        start_gateway, broker, clock, object_store_url=store, url_ttl_seconds=URL_LIFE_S
    ) as home:
        _, t0, uploads = await record(home, broker, clock, "cam-1", LONG_SEGMENTS, SEGMENT_S)
        end = t0 + LONG_SEGMENTS * SEGMENT_S * timedelta(seconds=1)
        old = await home.http.get(
            f"{home.gw.url}/app/v1/devices/cam-1/playlist.m3u8",
            params={"start": t0.isoformat(), "end": end.isoformat()},
            headers=home.auth,
        )
        first_old_url = segment_uris(await old.text(), str(old.url))[0]
        assert first_old_url.startswith(seaweed.endpoint), "presigned by the S3 store"
        url = await home.session_url("cam-1", t0, end)
        status, playlist = await home.get(url)
        assert status == 200
        uris = segment_uris(playlist, url)
        await asyncio.sleep(URL_LIFE_S + 1)
        assert (await home.get(first_old_url))[0] == 403, "the old URLs died after their life"
        # The session's URIs, fetched a minute after the playlist, each presigned when fetched.
        for uri, upload in zip(uris, uploads, strict=True):
            status, data = await home.get(uri)
            assert (status, data.encode("latin-1")) == (200, upload.data)
        assert_played_whole(await ffmpeg_play(url))


async def test_the_mp4_export_takes_a_session_credential_instead_of_the_app_token(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    """``clip.mp4`` is ``app_or_session``: with a session's ``session`` value and no header
    it exports the session's range (a link or a player needs no token); a range outside
    the session, or another device, is ``session_scope``; no credential at all is 401."""
    async with household(start_gateway, broker, clock) as home:
        _, t0, _ = await record(home, broker, clock, "cam-1", 2, 10)
        url = await home.session_url("cam-1", t0, t0 + timedelta(seconds=20))
        credential = url.partition("session=")[2]

        def clip(device_id: str, start: datetime, end: datetime, **query: str) -> str:
            asked = {"start": start.isoformat(), "end": end.isoformat(), **query}
            return f"{home.gw.url}/app/v1/devices/{device_id}/clip.mp4?{urlencode(asked)}"

        async with aiohttp.ClientSession() as anonymous:
            wide = clip("cam-1", t0 - timedelta(hours=0.5), t0 + timedelta(hours=0.5))
            async with anonymous.get(wide + f"&session={credential}") as r:
                assert r.status == 200, await r.text()
                assert r.headers["Content-Type"] == "video/mp4"
                assert float(r.headers["X-Recorded-Seconds"]) == 20.0, "the session's range"
                assert (await r.read())[4:8] == b"ftyp"
            later = clip("cam-1", t0 + timedelta(minutes=5), t0 + timedelta(minutes=6))
            assert await home.refusal(later + f"&session={credential}") == (403, "session_scope")
            other = clip("cam-2", t0, t0 + timedelta(seconds=20))
            assert await home.refusal(other + f"&session={credential}") == (403, "session_scope")
            assert (await home.refusal(wide))[0] == 401
