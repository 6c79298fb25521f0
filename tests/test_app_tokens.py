"""App tokens expire and can be revoked; secrets stay out of the access log (issue 14,
item 7)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from sqlalchemy import text

from devices.accounts import resolve_app_token
from devices.clock import ManualClock
from gateway.http.access_log import redact
from replay.migrations import open_database
from tests.conftest import StartGateway, platform_headers


async def _account(http: aiohttp.ClientSession, url: str) -> None:
    r = await http.put(
        f"{url}/platform/v1/accounts/acc-t",
        json={"owner_id": "owner-t", "star_level": 3},
        headers=platform_headers(),
    )
    assert r.status == 201


async def _token(http: aiohttp.ClientSession, url: str, user: str) -> dict[str, str]:
    r = await http.post(
        f"{url}/platform/v1/app-tokens",
        json={"account_id": "acc-t", "user_id": user},
        headers=platform_headers(),
    )
    assert r.status == 201
    body: dict[str, str] = await r.json()
    return body


async def _devices(http: aiohttp.ClientSession, url: str, token: str) -> int:
    r = await http.get(f"{url}/app/v1/devices", headers={"Authorization": f"Bearer {token}"})
    return r.status


async def test_a_token_expires_after_its_lifetime(
    start_gateway: StartGateway, clock: ManualClock
) -> None:
    async with (
        start_gateway(clock=clock, mqtt=False, app_token_ttl_days=2) as gw,
        aiohttp.ClientSession() as http,
    ):
        await _account(http, gw.url)
        issued = await _token(http, gw.url, "u1")
        assert issued["token_id"].startswith("tok_")
        assert issued["token_id"] not in issued["token"]
        expires = datetime.fromisoformat(issued["expires_at"])
        assert expires == clock.now() + timedelta(days=2)
        assert await _devices(http, gw.url, issued["token"]) == 200
        clock.advance(2 * 86400 - 1)
        assert await _devices(http, gw.url, issued["token"]) == 200
        clock.advance(1)
        assert await _devices(http, gw.url, issued["token"]) == 401


async def test_tokens_are_revoked_one_by_one_or_all_of_an_account(
    start_gateway: StartGateway, clock: ManualClock
) -> None:
    async with (
        start_gateway(clock=clock, mqtt=False) as gw,
        aiohttp.ClientSession() as http,
    ):
        await _account(http, gw.url)
        first, second, third = [await _token(http, gw.url, f"u{n}") for n in range(3)]
        r = await http.delete(
            f"{gw.url}/platform/v1/app-tokens/{first['token_id']}", headers=platform_headers()
        )
        assert r.status == 204
        assert await _devices(http, gw.url, first["token"]) == 401
        assert await _devices(http, gw.url, second["token"]) == 200
        r = await http.delete(
            f"{gw.url}/platform/v1/app-tokens/{first['token_id']}", headers=platform_headers()
        )
        assert r.status == 404
        r = await http.delete(
            f"{gw.url}/platform/v1/accounts/acc-t/app-tokens", headers=platform_headers()
        )
        assert (r.status, await r.json()) == (200, {"revoked": 2})
        assert await _devices(http, gw.url, second["token"]) == 401
        assert await _devices(http, gw.url, third["token"]) == 401
        r = await http.delete(
            f"{gw.url}/platform/v1/accounts/nobody/app-tokens", headers=platform_headers()
        )
        assert r.status == 404


@pytest.mark.parametrize(
    ("logged", "expected"),
    [
        ("/app/v1/devices", "/app/v1/devices"),
        ("/o/rec/a.ts?exp=123&sig=abcdef", "/o/rec/a.ts?exp=123&sig=***"),
        ("/p.m3u8?session=s3cr3t&start=1", "/p.m3u8?session=***&start=1"),
        ("/x?token=kja_1&Password=pw&q=ok", "/x?token=***&Password=***&q=ok"),
    ],
)
def test_the_access_log_never_writes_a_secret(logged: str, expected: str) -> None:
    assert redact(logged) == expected


async def test_schema_4_keeps_the_tokens_issued_before(database_url: str) -> None:
    """A version-3 app_tokens table (no id, no expiry) is upgraded in place: the token
    issued before gets an id and runs out ``ttl`` after its creation."""
    created = datetime(2026, 11, 1, tzinfo=UTC)
    async with open_database(database_url) as db, db.engine.begin() as conn:
        await conn.execute(text("DROP TABLE app_tokens"))
        await conn.execute(
            text(
                "CREATE TABLE app_tokens (token_hash VARCHAR(64) PRIMARY KEY, "
                "account_id VARCHAR(64), user_id VARCHAR(64), created_at TIMESTAMP)"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO accounts (account_id, owner_id, star_level, broadband_state, "
                "created_at, updated_at) VALUES ('acc-o', 'o', 3, 'active', :t, :t)"
            ),
            {"t": created.replace(tzinfo=None)},
        )
        await conn.execute(
            text("INSERT INTO app_tokens VALUES (:h, 'acc-o', 'u', :t)"),
            {"h": hashlib.sha256(b"kja_old").hexdigest(), "t": created.replace(tzinfo=None)},
        )
        await conn.execute(text("UPDATE kanjia_schema SET version = 3"))
    ttl = timedelta(days=30)
    async with open_database(database_url) as db, db.session() as session:
        found = await resolve_app_token(session, "kja_old", now=created + ttl / 2, ttl=ttl)
        assert found is not None
        assert found.token_id is not None
        assert found.token_id.startswith("tok_")
        gone = await resolve_app_token(session, "kja_old", now=created + ttl, ttl=ttl)
        assert gone is None
