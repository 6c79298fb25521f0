"""Device identity (issue 13): credentials, the topic rule, the broker's HTTP hooks."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aiohttp
import pytest
from openapi_spec_validator import validate
from sqlalchemy import inspect, text

from devices.clock import ManualClock
from devices.credentials import (
    current_credential,
    hash_password,
    may_access,
    may_connect,
    new_password,
)
from gateway import credentials
from gateway.config import load_settings
from gateway.service import Gateway
from replay.migrations import SCHEMA_VERSION, open_database
from tests.conftest import PLATFORM_TOKEN, StartGateway, platform_headers

KEY = b"k" * 32
CAM = "cam-1"
OTHER = "cam-2"


def own(suffix: str, device_id: str = CAM) -> str:
    return f"kj/v1/dev/{device_id}/{suffix}"


OWN_PUBLISH = ["state", "telemetry", "event", "upload/req", "segment", "reported", "rpc/res"]
OWN_SUBSCRIBE = ["desired", "upload/res", "rpc/req"]


@pytest.mark.parametrize(
    ("topic", "action"),
    [pytest.param(own(s), "publish", id=f"publish-{s}") for s in OWN_PUBLISH]
    + [pytest.param(own(s), "subscribe", id=f"subscribe-{s}") for s in OWN_SUBSCRIBE],
)
def test_a_device_may_use_its_own_topics(topic: str, action: str) -> None:
    assert may_access(CAM, topic, action)


@pytest.mark.parametrize(
    ("device_id", "topic", "action"),
    [
        pytest.param(CAM, "#", "subscribe", id="subscribe-everything"),
        pytest.param(CAM, "kj/v1/dev/+/state", "subscribe", id="subscribe-every-state"),
        pytest.param(CAM, "kj/v1/dev/#", "subscribe", id="subscribe-every-device"),
        pytest.param(CAM, own("#"), "subscribe", id="subscribe-own-wildcard"),
        pytest.param(CAM, own("+"), "subscribe", id="subscribe-own-plus"),
        pytest.param(CAM, "$share/kanjia/" + own("desired"), "subscribe", id="shared"),
        pytest.param(CAM, own("desired", OTHER), "subscribe", id="another-desired"),
        pytest.param(CAM, own("upload/res", OTHER), "subscribe", id="another-upload-urls"),
        pytest.param(CAM, own("state"), "subscribe", id="subscribe-own-state"),
        pytest.param(CAM, own("desired"), "publish", id="forge-own-desired"),
        pytest.param(CAM, own("upload/res"), "publish", id="forge-own-upload-res"),
        pytest.param(CAM, own("rpc/req"), "publish", id="forge-own-rpc-req"),
        pytest.param(CAM, own("desired", OTHER), "publish", id="forge-another-desired"),
        pytest.param(CAM, own("rpc/res", OTHER), "publish", id="forge-another-rpc-res"),
        pytest.param(CAM, own("upload/req", OTHER), "publish", id="another-upload-req"),
        pytest.param(CAM, own("segment", OTHER), "publish", id="another-segment"),
        pytest.param(CAM, own("state", OTHER), "publish", id="another-state"),
        pytest.param(CAM, own("state/extra"), "publish", id="below-own-topic"),
        pytest.param(CAM, own("state") + "/", "publish", id="trailing-slash"),
        pytest.param(CAM, "kj/v1/gateway/anything", "publish", id="gateway-topic"),
        pytest.param(CAM, "$SYS/broker/clients", "subscribe", id="sys"),
        pytest.param(CAM, own("state"), "all", id="unknown-action"),
        pytest.param("cam-1/x", "kj/v1/dev/cam-1/x/state", "publish", id="id-with-slash"),
        pytest.param("+", "kj/v1/dev/+/state", "publish", id="id-is-a-wildcard"),
        pytest.param("", "kj/v1/dev//state", "publish", id="empty-id"),
    ],
)
def test_everything_else_is_denied(device_id: str, topic: str, action: str) -> None:
    assert not may_access(device_id, topic, action)


def test_passwords_are_long_random_and_stored_only_hashed() -> None:
    first, second = new_password(), new_password()
    assert first != second
    assert len(first) >= 22, "at least 128 bits in URL-safe base64"
    stored = hash_password(KEY, first)
    assert first not in stored
    assert stored != hash_password(b"another key" * 3, first), "the hash is keyed"


@pytest.mark.parametrize(
    ("client_id", "username", "password", "revoked", "allowed"),
    [
        pytest.param(CAM, CAM, "right", False, True, id="the-device"),
        pytest.param(CAM, CAM, "wrong", False, False, id="wrong-password"),
        pytest.param(CAM, CAM, "right", True, False, id="revoked"),
        pytest.param(None, None, None, False, False, id="anonymous"),
        pytest.param(CAM, CAM, "", False, False, id="empty-password"),
        pytest.param("kanjia-gateway", CAM, "right", False, False, id="gateway-client-id"),
        pytest.param(OTHER, CAM, "right", False, False, id="another-client-id"),
        pytest.param(OTHER, OTHER, "right", False, False, id="another-device"),
    ],
)
def test_who_may_connect(
    client_id: str | None, username: str | None, password: str | None, revoked: bool, allowed: bool
) -> None:
    # What the hooks read for the client's username: CAM's password is "right".
    stored_by_device = {CAM: hash_password(KEY, "right"), OTHER: hash_password(KEY, "other's")}
    stored = None if revoked or username is None else stored_by_device.get(username)
    verdict = may_connect(
        stored, key=KEY, client_id=client_id, username=username, password=password
    )
    assert verdict is allowed


def test_no_credentials_no_connection() -> None:
    assert not may_connect(None, key=KEY, client_id=CAM, username=CAM, password="right")


async def test_schema_3_adds_the_credentials_to_a_version_2_database(database_url: str) -> None:
    async with open_database(database_url) as db, db.engine.begin() as conn:
        await conn.execute(text("DROP TABLE device_credentials"))
        await conn.execute(text("UPDATE kanjia_schema SET version = 2"))
    async with open_database(database_url) as db, db.engine.connect() as conn:
        tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
        version = (await conn.execute(text("SELECT version FROM kanjia_schema"))).scalar()
    assert "device_credentials" in tables
    assert version == SCHEMA_VERSION >= 3


# --- over HTTP ---------------------------------------------------------------------------

HOOK_TOKEN = "test-broker-hook-token"
HOOKS = {"Authorization": f"Bearer {HOOK_TOKEN}"}


@pytest.fixture
async def gw(start_gateway: StartGateway, clock: ManualClock) -> AsyncIterator[Gateway]:
    """A gateway with the broker hooks on, an account ``a1`` and two bound cameras."""
    async with (
        start_gateway(clock=clock, mqtt=False, broker_hook_token=HOOK_TOKEN) as gateway,
        aiohttp.ClientSession() as http,
    ):
        await bind_cameras(http, gateway.url)
        yield gateway


async def bind_cameras(http: aiohttp.ClientSession, url: str) -> None:
    """Account ``a1`` with the cameras ``CAM`` and ``OTHER`` bound, through ``url``."""
    r = await http.put(
        f"{url}/platform/v1/accounts/a1",
        json={"owner_id": "o1", "star_level": 4},
        headers=platform_headers(),
    )
    assert r.status == 201
    for device_id in (CAM, OTHER):
        r = await http.post(
            f"{url}/platform/v1/accounts/a1/devices",
            json={"device_id": device_id, "kind": "camera"},
            headers=platform_headers(),
        )
        assert r.status == 201


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def creds_url(gw: Gateway, device_id: str) -> str:
    return f"{gw.url}/platform/v1/devices/{device_id}/credentials"


async def issue(gw: Gateway, http: aiohttp.ClientSession, device_id: str) -> dict[str, Any]:
    r = await http.post(creds_url(gw, device_id), headers=platform_headers())
    assert r.status == 201, await r.text()
    body: dict[str, Any] = await r.json()
    return body


async def hook(gw: Gateway, http: aiohttp.ClientSession, name: str, body: dict[str, Any]) -> str:
    r = await http.post(f"{gw.url}/broker/v1/{name}", json=body, headers=HOOKS)
    assert r.status == 200, await r.text()
    verdict = await r.json()
    assert verdict["is_superuser"] is False
    result: str = verdict["result"]
    return result


def connect(client_id: str | None, username: str | None, password: str | None) -> dict[str, Any]:
    """An EMQX HTTP authentication request, with the fields EMQX may add."""
    return {
        "clientid": client_id,
        "username": username,
        "password": password,
        "peerhost": "192.0.2.7",
        "protocol": "mqtt",
    }


def access(client_id: str, topic: str, action: str, username: str | None = None) -> dict[str, Any]:
    """An EMQX HTTP authorization request."""
    username = client_id if username is None else username
    return {"clientid": client_id, "username": username, "topic": topic, "action": action}


async def listed(gw: Gateway, http: aiohttp.ClientSession) -> dict[str, dict[str, Any]]:
    r = await http.get(f"{gw.url}/platform/v1/accounts/a1/devices", headers=platform_headers())
    assert r.status == 200
    return {d["device_id"]: d for d in (await r.json())["devices"]}


async def stored_hashes(gw: Gateway) -> list[str]:
    async with gw.services.db.engine.connect() as conn:
        rows = await conn.execute(text("SELECT password_hash FROM device_credentials"))
        return [str(row[0]) for row in rows]


async def test_issue_rotate_and_revoke(gw: Gateway, http: aiohttp.ClientSession) -> None:
    first = await issue(gw, http, CAM)
    assert set(first) == {"device_id", "username", "password", "issued_at"}
    assert first["device_id"] == first["username"] == CAM
    assert len(first["password"]) >= 22
    hashes = await stored_hashes(gw)
    assert len(hashes) == 1
    assert first["password"] not in hashes[0], "only a keyed hash is stored"
    assert await hook(gw, http, "authenticate", connect(CAM, CAM, first["password"])) == "allow"

    devices = await listed(gw, http)
    assert devices[CAM]["has_credentials"] is True
    assert devices[CAM]["credentials_issued_at"] == first["issued_at"]
    assert devices[OTHER]["has_credentials"] is False
    assert "password" not in str(devices)
    assert first["password"] not in str(devices)

    second = await issue(gw, http, CAM)  # rotation
    assert second["password"] != first["password"]
    assert await hook(gw, http, "authenticate", connect(CAM, CAM, first["password"])) == "deny"
    assert await hook(gw, http, "authenticate", connect(CAM, CAM, second["password"])) == "allow"

    r = await http.delete(creds_url(gw, CAM), headers=platform_headers())
    assert r.status == 204
    assert await hook(gw, http, "authenticate", connect(CAM, CAM, second["password"])) == "deny"
    own_state = access(CAM, own("state"), "publish")
    assert await hook(gw, http, "authorize", own_state) == "deny", "revoked: next publish"
    assert (await listed(gw, http))[CAM]["has_credentials"] is False
    r = await http.delete(creds_url(gw, CAM), headers=platform_headers())
    assert r.status == 404, "nothing left to revoke"


async def test_credentials_need_a_bound_device_and_the_platform_token(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    r = await http.post(creds_url(gw, "cam-unbound"), headers=platform_headers())
    assert r.status == 404
    assert (await r.json())["error"]["code"] == "not_found"
    r = await http.delete(creds_url(gw, OTHER), headers=platform_headers())
    assert r.status == 404, "no credentials to revoke"
    for headers in ({}, HOOKS):
        r = await http.post(creds_url(gw, CAM), headers=headers)
        assert r.status == 401


async def test_no_device_takes_the_gateways_client_id(
    start_gateway: StartGateway, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    async with start_gateway(clock=clock, mqtt=False, mqtt_client_id="kanjia-gateway") as gw:
        await http.put(
            f"{gw.url}/platform/v1/accounts/a1",
            json={"owner_id": "o1", "star_level": 4},
            headers=platform_headers(),
        )
        r = await http.post(
            f"{gw.url}/platform/v1/accounts/a1/devices",
            json={"device_id": "kanjia-gateway", "kind": "camera"},
            headers=platform_headers(),
        )
        assert r.status == 201
        r = await http.post(creds_url(gw, "kanjia-gateway"), headers=platform_headers())
        assert r.status == 409
        assert (await r.json())["error"]["code"] == "reserved_client_id"


ATTACKS_ON_CONNECT = [
    pytest.param(connect(None, None, None), id="anonymous"),
    pytest.param(connect("anyone", "", ""), id="anonymous-empty"),
    pytest.param(connect(CAM, CAM, "guessed"), id="wrong-password"),
    pytest.param(connect("kanjia-gateway", "kanjia-gateway", "guessed"), id="gateway-identity"),
    pytest.param(connect("kanjia-gateway", OTHER, "<other>"), id="gateway-client-id"),
    pytest.param(connect(CAM, OTHER, "<other>"), id="another-devices-client-id"),
    pytest.param(connect(CAM, CAM, "<other>"), id="another-devices-password"),
]


@pytest.mark.parametrize("request_body", ATTACKS_ON_CONNECT)
async def test_authenticate_denies_each_attack(
    gw: Gateway, http: aiohttp.ClientSession, request_body: dict[str, Any]
) -> None:
    await issue(gw, http, CAM)
    other = (await issue(gw, http, OTHER))["password"]
    if request_body["password"] == "<other>":
        request_body = {**request_body, "password": other}
    assert await hook(gw, http, "authenticate", request_body) == "deny"
    assert await hook(gw, http, "authenticate", connect(OTHER, OTHER, other)) == "allow"


ATTACKS_ON_TOPICS = [
    pytest.param(access(CAM, "#", "subscribe"), id="subscribe-everything"),
    pytest.param(access(CAM, "kj/v1/dev/+/state", "subscribe"), id="subscribe-every-state"),
    pytest.param(access(CAM, own("upload/res", OTHER), "subscribe"), id="sniff-upload-urls"),
    pytest.param(access(CAM, own("desired"), "publish"), id="forge-own-desired"),
    pytest.param(access(CAM, own("desired", OTHER), "publish"), id="forge-another-desired"),
    pytest.param(access(CAM, own("rpc/res", OTHER), "publish"), id="forge-another-rpc-res"),
    pytest.param(access(CAM, own("upload/req", OTHER), "publish"), id="another-upload-req"),
    pytest.param(access(CAM, own("segment", OTHER), "publish"), id="another-segment"),
    pytest.param(access(CAM, own("state", OTHER), "publish"), id="another-state"),
    pytest.param(access(OTHER, own("state", OTHER), "publish", CAM), id="another-client-id"),
    pytest.param(access("kanjia-gateway", own("state"), "publish", CAM), id="gateway-client-id"),
    pytest.param(access("kanjia-gateway", own("state"), "subscribe"), id="gateway-identity"),
    pytest.param(access("", own("state"), "publish", ""), id="anonymous"),
    pytest.param(access("cam-unbound", own("state", "cam-unbound"), "publish"), id="no-creds"),
]


@pytest.mark.parametrize("request_body", ATTACKS_ON_TOPICS)
async def test_authorize_denies_each_attack(
    gw: Gateway, http: aiohttp.ClientSession, request_body: dict[str, Any]
) -> None:
    await issue(gw, http, CAM)
    await issue(gw, http, OTHER)
    assert await hook(gw, http, "authorize", request_body) == "deny"


async def test_authorize_allows_a_credentialed_devices_own_topics(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    await issue(gw, http, CAM)
    for suffix in OWN_PUBLISH:
        assert await hook(gw, http, "authorize", access(CAM, own(suffix), "publish")) == "allow"
    for suffix in OWN_SUBSCRIBE:
        assert await hook(gw, http, "authorize", access(CAM, own(suffix), "subscribe")) == "allow"


@pytest.mark.parametrize("name", ["authenticate", "authorize"])
async def test_the_hooks_need_their_own_token(
    gw: Gateway, http: aiohttp.ClientSession, name: str
) -> None:
    body = access(CAM, own("state"), "publish")
    for headers in ({}, platform_headers(), {"Authorization": "Bearer wrong"}):
        r = await http.post(f"{gw.url}/broker/v1/{name}", json=body, headers=headers)
        assert r.status == 401
        assert (await r.json())["error"]["code"] == "unauthorized"


async def test_the_hooks_are_absent_without_their_token(
    start_gateway: StartGateway, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    async with start_gateway(clock=clock, mqtt=False) as gw:
        for headers in ({}, {"Authorization": "Bearer "}, platform_headers()):
            r = await http.post(
                f"{gw.url}/broker/v1/authenticate", json=connect(CAM, CAM, "x"), headers=headers
            )
            assert r.status == 404


async def test_the_openapi_document_lists_the_identity_routes(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    doc = await (await http.get(f"{gw.url}/openapi.json")).json()
    validate(doc)
    paths = doc["paths"]
    assert {"post", "delete"} <= set(paths["/platform/v1/devices/{device_id}/credentials"])
    for name in ("authenticate", "authorize"):
        assert paths[f"/broker/v1/{name}"]["post"]["security"] == [{"broker": []}]


class RecordingBrokerAdmin:
    """Records what the broker is told, and whether the database already held it."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.calls: list[tuple[str, str, bool]] = []

    async def _committed(self, device_id: str) -> bool:
        async with self.gw.services.db.session() as session:
            return await current_credential(session, device_id) is not None

    async def issue(self, device_id: str, username: str, password: str) -> None:
        self.calls.append(("issue", device_id, await self._committed(device_id)))

    async def revoke(self, device_id: str) -> None:
        self.calls.append(("revoke", device_id, await self._committed(device_id)))

    async def sync(self, credentialed: Iterable[str]) -> set[str]:
        return set()


async def test_the_broker_is_told_after_the_commit(gw: Gateway) -> None:
    admin = RecordingBrokerAdmin(gw)
    services = dataclasses.replace(gw.services, broker_admin=admin)
    issued = await credentials.issue_credentials(services, CAM)
    assert repr(issued).count(issued.password) == 0, "the password never shows in a repr"
    await credentials.revoke_credentials(services, CAM)
    assert admin.calls == [("issue", CAM, True), ("revoke", CAM, False)]


def test_the_credential_key_is_derived_unless_set() -> None:
    derived = load_settings(environ={}, overrides={"platform_token": PLATFORM_TOKEN})
    assert credentials.credential_key(derived) not in (b"", PLATFORM_TOKEN.encode())
    explicit = derived.model_copy(update={"credential_key": "k" * 32})
    assert credentials.credential_key(explicit) == b"k" * 32
