"""The operator's lists (issue 15 item 5): accounts paged and filtered, orders with results.

Paged with an opaque cursor (``gateway.http.paging``, table-tested here); run on SQLite
and PostgreSQL (keyset paging, prefix filters with LIKE's wildcards escaped, the grouped
device counts, the orders' join with their completion reports).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text

from devices.clock import ManualClock
from devices.models import Device
from gateway.http.api import ApiError
from gateway.http.paging import decode_cursor, encode_cursor, page
from gateway.service import Gateway
from replay.migrations import open_database
from tests.conftest import T0, StartGateway, platform_headers

H = platform_headers()

# --- the cursor, pure -------------------------------------------------------------------------

ROUND_TRIPS = [
    pytest.param(("acc-1",), id="one-key"),
    pytest.param(("2026-11-20T02:00:00+00:00", "o-9"), id="time-and-id"),
    pytest.param(("a_b%c",), id="like-wildcards-kept-verbatim"),
    pytest.param(("看家",), id="non-ascii"),
]


@pytest.mark.parametrize("keys", ROUND_TRIPS)
def test_a_cursor_gives_back_its_key(keys: tuple[str, ...]) -> None:
    cursor = encode_cursor(*keys)
    assert "=" not in cursor, "no padding: the cursor goes into a query string as is"
    assert decode_cursor(cursor, len(keys)) == keys


BAD_CURSORS = [
    pytest.param("%%%", 1, id="not-base64"),
    pytest.param(encode_cursor("a", "b"), 1, id="wrong-arity"),
    pytest.param("eyJhIjoxfQ", 1, id="an-object-not-a-list"),  # {"a":1}
    pytest.param("WzFd", 1, id="a-number-not-a-string"),  # [1]
    pytest.param("bm90IGpzb24", 1, id="not-json"),  # "not json"
    pytest.param("A" * 600, 1, id="too-long"),
]


@pytest.mark.parametrize(("cursor", "arity"), BAD_CURSORS)
def test_a_cursor_the_service_did_not_give_is_refused(cursor: str, arity: int) -> None:
    with pytest.raises(ApiError) as caught:
        decode_cursor(cursor, arity)
    assert (caught.value.status, caught.value.code) == (400, "invalid_cursor")


PAGES = [
    # rows read (limit + 1 asked), limit -> shown, the key of the next page's cursor
    pytest.param(["a", "b", "c"], 2, ["a", "b"], "b", id="more-follow"),
    pytest.param(["a", "b"], 2, ["a", "b"], None, id="exactly-full-is-last"),
    pytest.param(["a"], 2, ["a"], None, id="short-is-last"),
    pytest.param([], 2, [], None, id="empty"),
]


@pytest.mark.parametrize(("rows", "limit", "shown", "next_key"), PAGES)
def test_a_page_shows_limit_rows_and_says_if_more_follow(
    rows: list[str], limit: int, shown: list[str], next_key: str | None
) -> None:
    got, cursor = page(rows, limit, lambda r: (r,))
    assert got == shown
    assert (None if cursor is None else decode_cursor(cursor, 1)[0]) == next_key


def test_a_page_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        page(["a"], 0, lambda r: (r,))


# --- the routes, on both databases ------------------------------------------------------------


class Platform:
    def __init__(self, gw: Gateway, http: aiohttp.ClientSession) -> None:
        self.gw, self.http = gw, http

    async def call(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        r = await self.http.request(
            method, f"{self.gw.url}{path}", json=body, params=params, headers=H
        )
        return r.status, await r.json()

    async def get(self, path: str, **params: str) -> Any:
        status, body = await self.call("GET", path, **params)
        assert status == 200, body
        return body

    async def account(self, account_id: str, owner_id: str = "owner") -> None:
        body = {"owner_id": owner_id, "star_level": 4}
        status, _ = await self.call("PUT", f"/platform/v1/accounts/{account_id}", body)
        assert status == 201

    async def bind(self, account_id: str, device_id: str, kind: str = "camera") -> None:
        status, _ = await self.call(
            "POST",
            f"/platform/v1/accounts/{account_id}/devices",
            {"device_id": device_id, "kind": kind},
        )
        assert status == 201

    async def subscribe(self, order_id: str, account_id: str, device_id: str) -> Any:
        return await self.call(
            "POST",
            "/platform/v1/subscriptions",
            {
                "order_id": order_id,
                "account_id": account_id,
                "device_id": device_id,
                "plan": "continuous-7d",
                "orderer_id": "owner",
                "channel": "electronic",
            },
        )


@pytest.fixture
async def platform(
    start_gateway: StartGateway, clock: ManualClock, database_url: str
) -> AsyncIterator[Platform]:
    async with (
        start_gateway(clock=clock, mqtt=False, database_url=database_url) as gw,
        aiohttp.ClientSession() as http,
    ):
        yield Platform(gw, http)


async def _all_pages(platform: Platform, path: str, key: str, **params: str) -> list[Any]:
    """Every item of a list route, following ``next_cursor``; each page at most ``limit``."""
    items: list[Any] = []
    cursor: str | None = None
    while True:
        asked = dict(params, **({"cursor": cursor} if cursor else {}))
        body = await platform.get(path, **asked)
        assert len(body[key]) <= int(params.get("limit", "50"))
        items += body[key]
        cursor = body.get("next_cursor")
        if cursor is None:
            return items


async def test_accounts_are_paged_filtered_and_counted(platform: Platform) -> None:
    """Pages of 2 walk all seven accounts once, in id order; ``q`` matches the start of the
    account or owner id, ``_`` matching itself only; the counts are per account."""
    ids = ["acc-01", "acc-02", "acc-03", "acc_04", "accX05", "home-1", "home-2"]
    for account_id in ids:
        await platform.account(account_id, owner_id=f"own-{account_id}")
    await platform.bind("acc-01", "cam-a")
    await platform.bind("acc-01", "rt-a", kind="router")
    await platform.bind("acc-02", "cam-b")
    async with platform.gw.services.db.writing() as session:
        device = await session.get(Device, "cam-a")
        assert device is not None
        device.online = True
        session.add(device)
        await session.commit()

    listed = await _all_pages(platform, "/platform/v1/accounts", "accounts", limit="2")
    assert [a["account_id"] for a in listed] == sorted(ids)
    counts = {a["account_id"]: (a["devices"], a["online"]) for a in listed}
    assert counts["acc-01"] == (2, 1)
    assert counts["acc-02"] == (1, 0)
    assert counts["home-1"] == (0, 0)
    assert {a["broadband_state"] for a in listed} == {"active"}

    async def matching(q: str) -> list[str]:
        body = await platform.get("/platform/v1/accounts", q=q)
        return [a["account_id"] for a in body["accounts"]]

    assert await matching("acc_") == ["acc_04"], "_ is not a wildcard"
    assert await matching("acc-0") == ["acc-01", "acc-02", "acc-03"]
    assert await matching("own-home") == ["home-1", "home-2"], "the owner's id matches too"
    assert await matching("nobody") == []


async def test_accounts_are_filtered_by_broadband_state(platform: Platform) -> None:
    for account_id in ("a-1", "a-2", "a-3"):
        await platform.account(account_id)
    status, body = await platform.call(
        "POST",
        "/platform/v1/broadband/a-2/stop",
        {"order_id": "stop-1", "stop_type": "arrears"},
    )
    assert status == 200, body
    stopped = await platform.get("/platform/v1/accounts", broadband_state="stopped")
    assert [a["account_id"] for a in stopped["accounts"]] == ["a-2"]
    active = await platform.get("/platform/v1/accounts", broadband_state="active")
    assert [a["account_id"] for a in active["accounts"]] == ["a-1", "a-3"]


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"limit": "0"}, id="limit-0"),
        pytest.param({"limit": "201"}, id="limit-201"),
        pytest.param({"q": "a b"}, id="q-not-an-id"),
        pytest.param({"broadband_state": "asleep"}, id="unknown-state"),
        pytest.param({"colour": "red"}, id="unknown-parameter"),
    ],
)
async def test_bad_account_queries_are_400(platform: Platform, params: dict[str, str]) -> None:
    status, body = await platform.call("GET", "/platform/v1/accounts", **params)
    assert (status, body["error"]["code"]) == (400, "invalid_query")


async def test_a_forged_cursor_is_400(platform: Platform) -> None:
    for path in ("/platform/v1/accounts", "/platform/v1/orders"):
        status, body = await platform.call("GET", path, cursor="not-a-cursor")
        assert (status, body["error"]["code"]) == (400, "invalid_cursor")
    # Well-formed, but its time is not one.
    status, body = await platform.call(
        "GET", "/platform/v1/orders", cursor=encode_cursor("yesterday", "o-1")
    )
    assert (status, body["error"]["code"]) == (400, "invalid_cursor")


async def test_orders_list_every_kind_with_its_result_newest_first(
    platform: Platform, clock: ManualClock
) -> None:
    """Subscribe, a refused repeat order, unsubscribe, broadband stop and a device command:
    each recorded once under its account, with the answer it was given (the refusal too)."""
    await platform.account("acc-1")
    await platform.account("acc-2")
    await platform.bind("acc-1", "cam-1")
    await platform.bind("acc-2", "cam-2")
    status, sub = await platform.subscribe("o-sub", "acc-1", "cam-1")
    assert status == 201, sub
    clock.advance(60)
    status, refused = await platform.subscribe("o-again", "acc-1", "cam-1")  # R2
    assert status == 409
    clock.advance(60)
    status, _ = await platform.call(
        "POST",
        f"/platform/v1/subscriptions/{sub['subscription_id']}/unsubscribe",
        {"order_id": "o-unsub"},
    )
    assert status == 200
    clock.advance(60)
    status, _ = await platform.call(
        "POST", "/platform/v1/broadband/acc-2/stop", {"order_id": "o-stop", "stop_type": "lost"}
    )
    assert status == 200
    clock.advance(60)
    status, _ = await platform.call(
        "POST",
        "/platform/v1/devices/cam-2/commands",
        {"order_id": "o-cmd", "method": "reboot", "params": {}},
    )
    assert status == 201

    every = await _all_pages(platform, "/platform/v1/orders", "orders", limit="2")
    assert [(o["order_id"], o["action"], o.get("account_id"), o["status"]) for o in every] == [
        ("o-cmd", "device.command", "acc-2", 201),
        ("o-stop", "broadband.stop", "acc-2", 200),
        ("o-unsub", "unsubscribe", "acc-1", 200),
        ("o-again", "subscribe", "acc-1", 409),
        ("o-sub", "subscribe", "acc-1", 201),
    ]
    by_id = {o["order_id"]: o for o in every}
    assert by_id["o-again"]["result"] == refused, "the refusal as it was answered"
    assert by_id["o-sub"]["result"]["subscription_id"] == sub["subscription_id"]
    assert by_id["o-unsub"]["target"] == sub["subscription_id"]
    assert by_id["o-cmd"]["target"] == "cam-2"
    assert by_id["o-sub"]["answered_at"] == T0.isoformat().replace("+00:00", "Z")
    # A completed order owes a report (no callback URL here: never delivered); a refusal not.
    assert by_id["o-sub"]["report"] == {"delivered": False, "attempts": 0}
    assert "report" not in by_id["o-again"]

    mine = await platform.get("/platform/v1/orders", account_id="acc-1")
    assert [o["order_id"] for o in mine["orders"]] == ["o-unsub", "o-again", "o-sub"]
    broadband = await platform.get("/platform/v1/orders", action="broadband")
    assert [o["order_id"] for o in broadband["orders"]] == ["o-stop"]
    subscribes = await platform.get("/platform/v1/orders", action="subscribe", account_id="acc-1")
    assert [o["order_id"] for o in subscribes["orders"]] == ["o-again", "o-sub"]


async def test_orders_answered_at_one_instant_page_by_their_id(platform: Platform) -> None:
    """A batch is answered at one clock instant: the order id breaks the tie, so paging
    neither repeats nor skips an order."""
    ids = [f"acc-{i}" for i in range(5)]
    for account_id in ids:
        await platform.account(account_id)
    orders = [
        {"order_id": f"b-{i}", "account_id": a, "action": "stop", "stop_type": "requested"}
        for i, a in enumerate(ids)
    ]
    status, _ = await platform.call("POST", "/platform/v1/broadband/batch", {"orders": orders})
    assert status == 200
    listed = await _all_pages(platform, "/platform/v1/orders", "orders", limit="2")
    assert [o["order_id"] for o in listed] == ["b-4", "b-3", "b-2", "b-1", "b-0"]


async def test_schema_7_gives_older_orders_the_account_their_answer_names(
    database_url: str,
) -> None:
    """Orders recorded before schema 7 had no account: the step fills it from the answer
    where the answer names one (a subscription, a broadband view), else leaves it empty."""
    async with open_database(database_url) as db, db.engine.begin() as conn:
        await conn.execute(text("DROP INDEX ix_platform_orders_account_id"))
        await conn.execute(text("ALTER TABLE platform_orders DROP COLUMN account_id"))
        await conn.execute(text("ALTER TABLE platform_orders DROP COLUMN target"))
        await conn.execute(text("UPDATE kanjia_schema SET version = 6"))
        insert = text(
            "INSERT INTO platform_orders "
            "(order_id, action, fingerprint, status_code, response, created_at) "
            "VALUES (:o, :a, 'f', :s, :r, :t)"
        )
        at = datetime(2026, 11, 1, tzinfo=None)  # noqa: DTZ001 (stored as naive UTC text)
        old = [
            ("o-1", "subscribe", 201, '{"account_id": "acc-1"}'),
            ("o-2", "unsubscribe", 200, '{"status": "unsubscribed"}'),
        ]
        for order_id, action, status, response in old:
            await conn.execute(
                insert, {"o": order_id, "a": action, "s": status, "r": response, "t": at}
            )
    async with open_database(database_url) as db, db.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT order_id, account_id, target FROM platform_orders ORDER BY order_id")
        )
        assert [tuple(row) for row in rows] == [("o-1", "acc-1", None), ("o-2", None, None)]
