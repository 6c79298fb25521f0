"""The broker hooks' credential cache (issue 13): answers from memory, and a rotation or a
revocation still bites at the device's next connect or publish; through another gateway
process within ``KANJIA_BROKER_HOOK_CACHE_SECONDS``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text

from devices.clock import ManualClock
from devices.credentials import DeviceCredential, hash_password
from devices.models import Device, DeviceKind
from gateway.credentials import credential_key
from gateway.service import Gateway
from tests.conftest import StartGateway, eventually, platform_headers
from tests.test_credentials import (
    CAM,
    HOOK_TOKEN,
    OTHER,
    access,
    bind_cameras,
    connect,
    creds_url,
    gw,
    hook,
    http,
    issue,
    own,
)

__all__ = ["gw", "http"]  # the fixtures, shared with test_credentials

OWN_STATE = access(CAM, own("state"), "publish")


def metric(gateway: Gateway, name: str, labels: dict[str, str] | None = None) -> float:
    return gateway.services.metrics.registry.get_sample_value(name, labels or {}) or 0.0


def from_cache(gateway: Gateway) -> float:
    return metric(gateway, "kanjia_broker_hook_lookups_total", {"source": "cache"})


def reads(gateway: Gateway) -> float:
    return metric(gateway, "kanjia_broker_hook_reads_total")


async def verdict(gateway: Gateway, http: aiohttp.ClientSession, body: dict[str, Any]) -> str:
    return await hook(gateway, http, "authorize", body)


async def test_rotation_and_revocation_bite_at_once_through_a_warm_cache(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    first = (await issue(gw, http, CAM))["password"]
    for _ in range(3):
        assert await hook(gw, http, "authenticate", connect(CAM, CAM, first)) == "allow"
        assert await verdict(gw, http, OWN_STATE) == "allow"
    assert from_cache(gw) >= 5, "the hooks answer from memory"

    second = (await issue(gw, http, CAM))["password"]  # rotation
    assert await hook(gw, http, "authenticate", connect(CAM, CAM, first)) == "deny"
    assert await hook(gw, http, "authenticate", connect(CAM, CAM, second)) == "allow"
    assert await hook(gw, http, "authenticate", connect(CAM, CAM, second)) == "allow"

    r = await http.delete(creds_url(gw, CAM), headers=platform_headers())
    assert r.status == 204
    assert await verdict(gw, http, OWN_STATE) == "deny"
    assert await hook(gw, http, "authenticate", connect(CAM, CAM, second)) == "deny"


async def add_credentialed(gw: Gateway, count: int) -> dict[str, str]:
    """``count`` more cameras of account ``a1`` with credentials, straight into the database
    (as another gateway process would have issued them): their passwords."""
    at = datetime(2026, 12, 1, tzinfo=UTC)
    passwords = {f"cam-burst-{n:03d}": f"password-{n:03d}" for n in range(count)}
    key = credential_key(gw.settings)
    async with gw.services.db.session() as session:
        session.add_all(
            Device(device_id=d, account_id="a1", kind=DeviceKind.CAMERA, bound_at=at)
            for d in passwords
        )
        await session.commit()
        session.add_all(
            DeviceCredential(device_id=d, password_hash=hash_password(key, p), issued_at=at)
            for d, p in passwords.items()
        )
        await session.commit()
    return passwords


async def test_a_burst_of_connects_is_read_in_a_few_queries(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    """A reconnect storm (a broker restart): every device asked meanwhile in one query."""
    passwords = await add_credentialed(gw, 200)
    before = reads(gw)
    answers = await asyncio.gather(
        *(hook(gw, http, "authenticate", connect(d, d, p)) for d, p in passwords.items()),
        hook(gw, http, "authenticate", connect(CAM, CAM, "no credentials")),
    )
    assert answers == ["allow"] * len(passwords) + ["deny"]
    queries = reads(gw) - before
    print(f"200 concurrent connects: {queries:.0f} database queries")
    assert queries <= 20


async def test_what_cannot_be_a_device_is_denied_without_a_read(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    before = reads(gw)
    for name in ("#", "kj/v1/dev/cam-1", "+", "x" * 65):
        assert await hook(gw, http, "authenticate", connect(name, name, "guess")) == "deny"
    assert reads(gw) == before


async def test_a_lookup_given_up_does_not_cancel_the_read_others_wait_for(gw: Gateway) -> None:
    cache = gw.services.credential_cache
    passwords = await add_credentialed(gw, 1)
    [device_id] = passwords
    impatient = asyncio.create_task(cache.stored_hash(device_id), name="test[impatient]")
    patient = asyncio.create_task(cache.stored_hash(device_id), name="test[patient]")
    await asyncio.sleep(0)
    impatient.cancel()
    assert await patient == hash_password(credential_key(gw.settings), passwords[device_id])
    with pytest.raises(asyncio.CancelledError):
        await impatient


@asynccontextmanager
async def two_gateways(
    start_gateway: StartGateway, clock: ManualClock, cache_seconds: float
) -> AsyncIterator[tuple[Gateway, Gateway]]:
    """Two gateway processes' worth (one database), the hooks on, account ``a1`` and its
    cameras bound through the first."""
    settings = {"broker_hook_token": HOOK_TOKEN, "broker_hook_cache_seconds": cache_seconds}
    async with (
        start_gateway(clock=clock, mqtt=False, **settings) as first,
        start_gateway(clock=clock, mqtt=False, **settings) as second,
        aiohttp.ClientSession() as http,
    ):
        await bind_cameras(http, first.url)
        yield first, second


async def test_another_gateway_learns_of_changes_within_its_cache_period(
    start_gateway: StartGateway, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    period = 0.5
    async with two_gateways(start_gateway, clock, period) as (first, second):
        password = (await issue(first, http, CAM))["password"]
        other_state = access(OTHER, own("state", OTHER), "publish")
        for gateway in (first, second):
            assert await verdict(gateway, http, OWN_STATE) == "allow"
            assert await verdict(gateway, http, other_state) == "deny", "no credentials yet"

        r = await http.delete(creds_url(first, CAM), headers=platform_headers())
        assert r.status == 204
        await issue(first, http, OTHER)
        started = time.monotonic()
        assert await verdict(first, http, OWN_STATE) == "deny", "at once where it was revoked"
        assert await verdict(first, http, other_state) == "allow"

        async def second_knows() -> bool:
            denied = await verdict(second, http, OWN_STATE) == "deny"
            allowed = await verdict(second, http, other_state) == "allow"
            return denied and allowed

        await eventually(second_knows, timeout=period + 5, interval=0.02)
        took = time.monotonic() - started
        print(f"the other gateway learnt of a revocation and an issue in {took * 1000:.0f} ms")
        assert took < period + 1.0, "the bound: one period, plus a read"
        assert await hook(second, http, "authenticate", connect(CAM, CAM, password)) == "deny"


async def test_without_a_cache_period_another_gateway_knows_at_once(
    start_gateway: StartGateway, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    async with two_gateways(start_gateway, clock, 0) as (first, second):
        password = (await issue(first, http, CAM))["password"]
        for _ in range(2):
            assert await hook(second, http, "authenticate", connect(CAM, CAM, password)) == "allow"
        r = await http.delete(creds_url(first, CAM), headers=platform_headers())
        assert r.status == 204
        assert await hook(second, http, "authenticate", connect(CAM, CAM, password)) == "deny"
        assert await verdict(second, http, OWN_STATE) == "deny"
        assert from_cache(second) == 0


@pytest.mark.postgres
async def test_the_reader_survives_its_connection_being_dropped(
    start_gateway: StartGateway, clock: ManualClock, http: aiohttp.ClientSession, pg_url: str
) -> None:
    async with start_gateway(
        clock=clock, mqtt=False, broker_hook_token=HOOK_TOKEN, database_url=pg_url
    ) as gateway:
        await http.put(
            f"{gateway.url}/platform/v1/accounts/a1",
            json={"owner_id": "o1", "star_level": 4},
            headers=platform_headers(),
        )
        passwords = await add_credentialed(gateway, 2)
        [one, two] = passwords
        assert await hook(gateway, http, "authenticate", connect(one, one, passwords[one])) == (
            "allow"
        )
        async with gateway.services.db.engine.connect() as conn:
            dropped = await conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            assert dropped.all(), "the reader's connection was there to drop"
        assert await hook(gateway, http, "authenticate", connect(two, two, passwords[two])) == (
            "allow"
        )
