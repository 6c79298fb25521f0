"""Issue 13's acceptance: the attacker of the issue against Mosquitto with dynamic security
and a real gateway (``KANJIA_MQTT_AUTH=mosquitto-dynsec``).

A household's camera gets its credentials through the platform API and records; a second
camera's credentials are the attacker's. Each attack of the issue is tried and refused, the
credentialed camera still uploads, plays back and converges, revocation drops it within a
second, rotation refuses the old password, and restarts of the gateway and of Mosquitto (on
the same plugin file) keep the rules.

A publish the broker refuses is still acknowledged to an MQTT 3.1.1 client and dropped, so a
refused publish is shown by the gateway never hearing it: the attacker sends a marker of its
own after the forgeries, and once the gateway has counted the marker [MQTT-4.6.0-6: one
client's messages keep their order], the forged kinds' counts are unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from sqlmodel import func, select

from devices.clock import ManualClock
from gateway.mqtt.messages import topic
from gateway.service import Gateway
from replay.models import Segment
from replay.object_keys import service_segment_id
from simulators.camera import CameraSimulator
from simulators.device import BrokerLogin
from tests.conftest import StartGateway, eventually, platform_headers
from tests.services import DYNSEC_ADMIN, DynsecBroker, dynsec_mosquitto
from tests.test_dynsec import REFUSED, connect, granted, refused
from tests.test_presence import running
from tests.test_uploads_e2e import ATTACKER, answer_for, put

H = platform_headers()
ACCOUNT, CAM, OTHER = "acc-1", "cam-1", "cam-2"


@dataclass
class Site:
    """A gateway on the dynsec broker, the household's account and its two cameras."""

    gw: Gateway
    broker: DynsecBroker
    http: aiohttp.ClientSession
    clock: ManualClock
    app_token: str
    #: Devices, observers and the gateway on the broker's TLS listener (``mqtts://``).
    tls: bool = False

    async def platform(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        r = await self.http.request(method, f"{self.gw.url}{path}", json=body, headers=H)
        return r.status, await r.json(content_type=None)

    async def app(self, path: str, **params: str) -> aiohttp.ClientResponse:
        auth = {"Authorization": f"Bearer {self.app_token}"}
        return await self.http.get(f"{self.gw.url}{path}", params=params, headers=auth)

    async def issue(self, device_id: str) -> str:
        status, body = await self.platform("POST", f"/platform/v1/devices/{device_id}/credentials")
        assert status == 201, body
        assert body["username"] == device_id
        return str(body["password"])

    @property
    def ca_file(self) -> Path | None:
        return self.broker.ca_file if self.tls else None

    def address(self, user: str | None = None, password: str | None = None) -> str:
        """The broker's URL on this site's listener (plain or TLS), with a login or none."""
        return self.broker.address(user, password, tls=self.tls)

    def url(self, device_id: str, password: str) -> str:
        return self.address(device_id, password)

    @property
    def admin_url(self) -> str:
        """The plugin's admin, who may read everything (an eavesdropper's view)."""
        return self.address(DYNSEC_ADMIN, self.broker.admin_password)

    def connect(self, url: str, *, client_id: str) -> aiomqtt.Client:
        return connect(url, client_id=client_id, ca_file=self.ca_file)

    async def refused(self, url: str, *, client_id: str) -> bool:
        return await refused(url, client_id=client_id, ca_file=self.ca_file)

    def camera(self, password: str) -> CameraSimulator:
        ca_file = str(self.ca_file) if self.ca_file else None
        return CameraSimulator(
            device_id=CAM,
            mqtt_url=self.address(),
            clock=self.clock,
            telemetry_interval=None,
            record=False,
            login=BrokerLogin(username=CAM, password=password, ca_file=ca_file),
        )

    def heard(self, kind: str) -> float:
        """How many ``kind`` messages the gateway received (its metric)."""
        registry = self.gw.services.metrics.registry
        value = registry.get_sample_value("kanjia_mqtt_messages_total", {"kind": kind})
        return value or 0.0

    def reconnects(self) -> float:
        """How many times the gateway's MQTT session has connected (its metric)."""
        registry = self.gw.services.metrics.registry
        return registry.get_sample_value("kanjia_mqtt_reconnects_total") or 0.0

    async def segments(self) -> int:
        async with self.gw.services.db.session() as session:
            return int((await session.exec(select(func.count()).select_from(Segment))).one())

    async def device_view(self, device_id: str) -> dict[str, Any]:
        status, view = await self.platform("GET", f"/platform/v1/broadband/{ACCOUNT}")
        assert status == 200, view
        [device] = [d for d in view["devices"] if d["device_id"] == device_id]
        return dict(device)


@asynccontextmanager
async def site(
    start_gateway: StartGateway,
    broker: DynsecBroker,
    clock: ManualClock,
    gateway_id: str,
    *,
    tls: bool = False,
) -> AsyncIterator[Site]:
    async with (
        start_gateway(
            clock=clock,
            mqtt_url=broker.address(DYNSEC_ADMIN, broker.admin_password, tls=tls),
            mqtt_ca_file=str(broker.ca_file) if tls else "",
            mqtt_auth="mosquitto-dynsec",
            mqtt_client_id=gateway_id,
        ) as gw,
        aiohttp.ClientSession() as http,
    ):
        r = await http.post(
            f"{gw.url}/platform/v1/app-tokens",
            json={"account_id": ACCOUNT, "user_id": "u"},
            headers=H,
        )
        token = (await r.json())["token"] if r.status == 201 else ""  # none before provision
        yield Site(gw, broker, http, clock, token, tls=tls)


async def provision(s: Site) -> dict[str, str]:
    """The account, both cameras bound, a continuous plan for the household's camera, and
    credentials for both through the platform API: the passwords."""
    status, body = await s.platform(
        "PUT", f"/platform/v1/accounts/{ACCOUNT}", {"owner_id": "owner-1", "star_level": 3}
    )
    assert status in (200, 201), body
    for device_id in (CAM, OTHER):
        path = f"/platform/v1/accounts/{ACCOUNT}/devices"
        status, body = await s.platform("POST", path, {"device_id": device_id, "kind": "camera"})
        assert status == 201, body
    order = {
        "order_id": "o-1",
        "account_id": ACCOUNT,
        "device_id": CAM,
        "plan": "continuous-7d",
        "orderer_id": "owner-1",
        "channel": "electronic",
    }
    status, body = await s.platform("POST", "/platform/v1/subscriptions", order)
    assert status == 201, body
    await s.platform("POST", "/ops/v1/clock", {"advance_seconds": 120})  # R6
    r = await s.http.post(
        f"{s.gw.url}/platform/v1/app-tokens",
        json={"account_id": ACCOUNT, "user_id": "u"},
        headers=H,
    )
    s.app_token = (await r.json())["token"]
    return {device_id: await s.issue(device_id) for device_id in (CAM, OTHER)}


@pytest.fixture
def transport() -> str:
    """How the site's clients reach the broker: plain MQTT, unless a test asks for both
    (:data:`OVER_TLS_TOO`)."""
    return "mqtt"


#: The key attacks run again with every client (gateway, devices, attacker, observers) on
#: the broker's TLS listener, with dynamic security as on the plain one (issue 13, item 4).
OVER_TLS_TOO = pytest.mark.parametrize("transport", ["mqtt", "mqtts"])


@pytest.fixture
async def dynsec(tmp_path: Path, transport: str) -> AsyncIterator[DynsecBroker]:
    """A Mosquitto of this test's own (its file is restarted on in one test), with a TLS
    listener too when the test runs over ``mqtts``."""
    (tmp_path / "broker").mkdir()
    with dynsec_mosquitto(tmp_path / "broker", tls=transport == "mqtts") as broker:
        yield broker


@pytest.fixture
async def household(
    start_gateway: StartGateway, dynsec: DynsecBroker, clock: ManualClock, transport: str
) -> AsyncIterator[tuple[Site, dict[str, str]]]:
    async with site(start_gateway, dynsec, clock, "kanjia-gw-1", tls=transport == "mqtts") as s:
        assert s.address().startswith(f"{transport}://")
        assert s.gw.settings.mqtt_url.startswith(f"{transport}://")
        yield s, await provision(s)


async def upload_one(s: Site, cam: CameraSimulator, at: float = 30) -> tuple[Any, dict[str, Any]]:
    """One segment uploaded by the running camera, and the ``upload/res`` it was handed (as
    the plugin's admin, with every right, saw it: what an eavesdropper would need)."""
    async with s.connect(s.admin_url, client_id="observer") as observer:
        await observer.subscribe(topic(CAM, "upload/res"), qos=1)
        seg = await cam.upload(s.http, start=s.clock.now() - timedelta(seconds=at), seconds=10)
        assert seg.ok, seg.code
        return seg, await answer_for(observer, seg.segment_id)


@OVER_TLS_TOO
async def test_a_credentialed_camera_uploads_plays_back_and_converges(
    household: tuple[Site, dict[str, str]],
) -> None:
    s, passwords = household
    t0 = s.clock.now() - timedelta(seconds=30)
    async with running(s.camera(passwords[CAM])) as cam:
        assert isinstance(cam, CameraSimulator)
        seg, _ = await upload_one(s, cam)
        await eventually(lambda: _equals(s.segments(), 1))
        window = {
            "start": (t0 - timedelta(minutes=1)).isoformat(),
            "end": s.clock.now().isoformat(),
        }
        r = await s.app(f"/app/v1/devices/{CAM}/timeline", **window)
        assert r.status == 200
        assert len((await r.json())["ranges"]) == 1
        r = await s.app(f"/app/v1/devices/{CAM}/playlist.m3u8", **window)
        assert r.status == 200
        [url] = [line for line in (await r.text()).splitlines() if line.startswith("http")]
        async with s.http.get(url) as got:
            assert await got.read() == seg.data

        body = {"order_id": "stop-1", "stop_type": "arrears"}
        status, answer = await s.platform("POST", f"/platform/v1/broadband/{ACCOUNT}/stop", body)
        assert status == 200, answer

        async def converged() -> bool:
            view = await s.device_view(CAM)
            return bool(view["reported_version"] == view["desired_version"] >= 1)

        await eventually(converged)
        assert cam.applied_version >= 1


async def _equals(value: Any, wanted: Any) -> bool:
    return bool(await value == wanted)


async def heard_marker(s: Site, attacker: aiomqtt.Client) -> None:
    """The attacker's own telemetry, sent after its forgeries, has reached the gateway."""
    before = s.heard("telemetry")
    await attacker.publish(topic(OTHER, "telemetry"), b"{}", qos=1)
    await eventually(lambda: _true(s.heard("telemetry") > before))


async def _true(value: bool) -> bool:
    return value


@OVER_TLS_TOO
async def test_anonymous_wrong_password_and_borrowed_client_ids_are_refused(
    household: tuple[Site, dict[str, str]],
) -> None:
    s, passwords = household
    gateway_id = s.gw.settings.mqtt_client_id
    assert await s.refused(s.address(), client_id=CAM)
    assert await s.refused(s.url(CAM, "not-the-password"), client_id=CAM)
    async with running(s.camera(passwords[CAM])) as cam:
        # The camera's client id, or the gateway's, with the attacker's own credentials.
        assert await s.refused(s.url(OTHER, passwords[OTHER]), client_id=CAM)
        assert await s.refused(s.url(OTHER, passwords[OTHER]), client_id=gateway_id)
        # The camera's username with the attacker's password.
        assert await s.refused(s.url(CAM, passwords[OTHER]), client_id=CAM)
        await asyncio.sleep(0.2)
        assert cam.connected.is_set(), "the real camera was not kicked"
        # Shown online once presence is flushed (every 0.25 s), and it stays so.
        await eventually(lambda: _view_is(s, CAM, "online", True))
        assert s.gw.services.mqtt is not None
        assert s.gw.services.mqtt.connected.is_set(), "the gateway's session was not taken"


@OVER_TLS_TOO
async def test_subscribing_to_everything_is_refused_and_delivers_nothing(
    household: tuple[Site, dict[str, str]],
) -> None:
    s, passwords = household
    async with (
        running(s.camera(passwords[CAM])) as cam,
        s.connect(s.url(OTHER, passwords[OTHER]), client_id=OTHER) as attacker,
    ):
        assert isinstance(cam, CameraSimulator)
        assert await granted(attacker, "#") == REFUSED
        assert await granted(attacker, "kj/v1/dev/+/upload/res") == REFUSED
        for suffix in ("desired", "upload/res", "rpc/req", "state"):
            assert await granted(attacker, topic(CAM, suffix)) == REFUSED
        await upload_one(s, cam)  # an upload/res with a URL goes to the camera meanwhile
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(attacker.messages), 0.5)
    print("subscribe '#' as a device: SUBACK 0x80, nothing delivered")


@OVER_TLS_TOO
async def test_another_devices_topics_change_nothing(
    household: tuple[Site, dict[str, str]],
) -> None:
    s, passwords = household
    async with running(s.camera(passwords[CAM])):
        await eventually(lambda: _view_is(s, CAM, "online", True))
        before = {kind: s.heard(kind) for kind in ("upload/req", "segment", "state")}
        async with s.connect(s.url(OTHER, passwords[OTHER]), client_id=OTHER) as attacker:
            start = s.clock.now() - timedelta(seconds=20)
            notice = {
                "segment_id": f"{CAM}-forged",
                "kind": "continuous",
                "start": start.isoformat(),
                "end": (start + timedelta(seconds=10)).isoformat(),
                "bytes": len(ATTACKER),
                "sha256": "0" * 64,
            }
            forged = {
                "upload/req": {"req_id": "x", **notice},
                "segment": notice,
                "state": {"online": False, "fw": "evil"},
            }
            for suffix, body in forged.items():
                await attacker.publish(topic(CAM, suffix), json.dumps(body), qos=1)
            await heard_marker(s, attacker)
        assert {kind: s.heard(kind) for kind in before} == before
        assert await s.segments() == 0
        assert (await s.device_view(CAM))["online"]


async def _view_is(s: Site, device_id: str, key: str, wanted: Any) -> bool:
    return bool((await s.device_view(device_id))[key] == wanted)


async def retained_desired(s: Site) -> dict[str, Any]:
    """The camera's retained ``desired``, as a client with every right reads it."""
    async with s.connect(s.admin_url, client_id="reader") as reader:
        await reader.subscribe(topic(CAM, "desired"), qos=1)
        async with asyncio.timeout(5):
            message = await anext(reader.messages)
    assert isinstance(message.payload, bytes)
    body: dict[str, Any] = json.loads(message.payload)
    return body


async def test_a_forged_retained_desired_and_rpc_answer_are_dropped(
    household: tuple[Site, dict[str, str]],
) -> None:
    s, passwords = household
    async with running(s.camera(passwords[CAM])) as cam:
        await eventually(lambda: _view_is(s, CAM, "online", True))
        await eventually(lambda: _true(cam.applied_version >= 1))
        desired = await retained_desired(s)
        body = {"order_id": "c-1", "method": "snapshot", "params": {}, "deadline_seconds": 30}
        status, command = await s.platform("POST", f"/platform/v1/devices/{CAM}/commands", body)
        assert status == 201, command
        await eventually(lambda: _command_is(s, "sent"))
        async with s.connect(s.url(OTHER, passwords[OTHER]), client_id=OTHER) as attacker:
            stop = {  # the camera told, in the document's own shape, to stop and suspend
                **desired,
                "version": desired["version"] + 1,
                "recording": {"mode": "off"},
                "service": {"suspended": True},
            }
            await attacker.publish(topic(CAM, "desired"), json.dumps(stop), qos=1, retain=True)
            answer = {"id": command["command_id"], "ok": True, "result": {"forged": True}}
            await attacker.publish(topic(CAM, "rpc/res"), json.dumps(answer), qos=1)
            await attacker.publish(topic(OTHER, "rpc/res"), json.dumps(answer), qos=1)
            await heard_marker(s, attacker)
        await asyncio.sleep(0.3)
        assert await retained_desired(s) == desired
        assert cam.desired == desired
        assert await _command_is(s, "sent"), "the command stays unanswered"


async def _command_is(s: Site, wanted: str) -> bool:
    status, body = await s.platform("GET", f"/platform/v1/devices/{CAM}/commands")
    assert status == 200, body
    return bool(body["commands"][0]["status"] == wanted)


async def test_an_indexed_object_cannot_be_overwritten_through_its_url(
    household: tuple[Site, dict[str, str]],
) -> None:
    s, passwords = household
    async with running(s.camera(passwords[CAM])) as cam:
        assert isinstance(cam, CameraSimulator)
        seg, handed = await upload_one(s, cam)
    await eventually(lambda: _equals(s.segments(), 1))
    # Other bytes are refused by the URL's binding of the grant (issue 16): 400/413 by the
    # filesystem store, 400/403 by S3; the granted bytes again by the key taken (412).
    assert await put(handed["url"], ATTACKER, handed["headers"]) in (400, 403, 413)
    assert seg.data is not None
    assert await put(handed["url"], seg.data, handed["headers"]) == 412
    r = await s.app(f"/app/v1/segments/{service_segment_id(CAM, seg.segment_id)}")
    assert r.status == 200
    async with s.http.get((await r.json())["url"]) as got:
        assert await got.read() == seg.data


@asynccontextmanager
async def live(cam: CameraSimulator) -> AsyncIterator[asyncio.Task[None]]:
    """The camera running until the broker drops it: its task, which then ends in error."""
    task = asyncio.create_task(cam.run(), name=f"test[{cam.device_id}]")
    try:
        await asyncio.wait_for(cam.connected.wait(), 10)
        yield task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task


async def dropped_after(task: asyncio.Task[None], started: float) -> float:
    """Seconds from ``started`` until the camera's connection was dropped (its run ended
    with the broker's disconnect)."""
    done, _ = await asyncio.wait({task}, timeout=5)
    ended = time.monotonic()
    assert done, "the camera is still connected"
    error = task.exception()
    assert isinstance(error, ExceptionGroup), error
    assert error.subgroup(aiomqtt.MqttError) is not None, error
    return ended - started


async def test_revocation_drops_the_camera_at_once_and_rotation_refuses_the_old_password(
    household: tuple[Site, dict[str, str]],
) -> None:
    s, passwords = household
    path = f"/platform/v1/devices/{CAM}/credentials"
    async with live(s.camera(passwords[CAM])) as task:
        started = time.monotonic()
        status, _ = await s.platform("DELETE", path)
        latency = await dropped_after(task, started)
    assert status == 204
    print(f"revocation: DELETE credentials → camera disconnected in {latency * 1000:.1f} ms")
    assert latency < 1.0
    assert await s.refused(s.url(CAM, passwords[CAM]), client_id=CAM)
    status, body = await s.platform("GET", f"/platform/v1/accounts/{ACCOUNT}/devices")
    assert [d["has_credentials"] for d in body["devices"] if d["device_id"] == CAM] == [False]

    new = await s.issue(CAM)
    async with live(s.camera(new)) as task:
        started = time.monotonic()
        newer = await s.issue(CAM)  # rotation drops the live connection too
        latency = await dropped_after(task, started)
    print(f"rotation: POST credentials → camera disconnected in {latency * 1000:.1f} ms")
    assert await s.refused(s.url(CAM, new), client_id=CAM)
    assert not await s.refused(s.url(CAM, newer), client_id=CAM)


async def rules_hold(s: Site, passwords: dict[str, str]) -> None:
    """A quick subset of the attacks, re-checked; then the camera still connects and uploads."""
    assert await s.refused(s.address(), client_id=CAM)
    assert await s.refused(s.url(CAM, "not-the-password"), client_id=CAM)
    assert await s.refused(s.url(OTHER, passwords[OTHER]), client_id=CAM)
    assert await s.refused(s.url(OTHER, passwords[OTHER]), client_id=s.gw.settings.mqtt_client_id)
    segments = await s.segments()
    async with s.connect(s.url(OTHER, passwords[OTHER]), client_id=OTHER) as attacker:
        assert await granted(attacker, "#") == REFUSED
        await attacker.publish(topic(CAM, "segment"), b'{"segment_id": "forged"}', qos=1)
        before = s.heard("segment")
        await heard_marker(s, attacker)
        assert s.heard("segment") == before
    async with running(s.camera(passwords[CAM])) as cam:
        assert isinstance(cam, CameraSimulator)
        await upload_one(s, cam, at=30 + 10 * segments)
    await eventually(lambda: _equals(s.segments(), segments + 1))


async def test_gateway_and_mosquitto_restarts_keep_every_rule(
    start_gateway: StartGateway, clock: ManualClock, tmp_path: Path
) -> None:
    (tmp_path / "broker").mkdir()
    with ExitStack() as first:
        broker = first.enter_context(dynsec_mosquitto(tmp_path / "broker"))
        async with site(start_gateway, broker, clock, "kanjia-gw-1") as s:
            passwords = await provision(s)
            await rules_hold(s, passwords)
        # The gateway restarted (same database, same service identity).
        async with site(start_gateway, broker, clock, "kanjia-gw-1") as s:
            await rules_hold(s, passwords)
            connects = s.reconnects()
            first.close()  # Mosquitto stopped, then started again on the same file and port
            with dynsec_mosquitto(tmp_path / "broker", port=broker.port) as restarted:
                s.broker = restarted
                await eventually(lambda: _true(s.reconnects() > connects), timeout=15)
                await rules_hold(s, passwords)
