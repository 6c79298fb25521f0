"""Device identity (issue 13): credentials, the topic rule, the broker's HTTP hooks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import inspect, text

from devices.credentials import (
    DeviceCredential,
    hash_password,
    may_access,
    may_connect,
    new_password,
)
from replay.migrations import SCHEMA_VERSION, open_database

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


def _credential(password: str, *, revoked: bool = False) -> DeviceCredential:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    return DeviceCredential(
        device_id=CAM,
        password_hash=hash_password(KEY, password),
        issued_at=at,
        revoked_at=at if revoked else None,
    )


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
    credential = _credential("right", revoked=revoked)
    verdict = may_connect(
        credential, key=KEY, client_id=client_id, username=username, password=password
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
