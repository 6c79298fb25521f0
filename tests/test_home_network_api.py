"""Home-network orders through the platform API, on SQLite and PostgreSQL (issue 18; R7,
R12, R16, R17): orders and their refusals, idempotency, the visit lock, the refund in the
month's charges, the expiry job (idempotent, catching up) and the catalog.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy import Connection, inspect, text
from sqlmodel import select

from devices.accounts import get_account
from devices.clock import ManualClock
from devices.models import CallbackReport
from gateway import home_network
from gateway.service import Gateway
from replay.migrations import MIGRATIONS, SCHEMA_VERSION, open_database
from tests.conftest import StartGateway, platform_headers

H = platform_headers()
#: 2026-11-20 10:00 Shanghai.
ORDERED = "2026-11-20T02:00:00+00:00"


@dataclass
class Platform:
    gw: Gateway
    http: aiohttp.ClientSession

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        r = await self.http.request(method, f"{self.gw.url}{path}", json=body, headers=H)
        return r.status, await r.json()

    async def home(self, account_id: str, owner: str, devices: dict[str, str]) -> None:
        status, _ = await self.call(
            "PUT", f"/platform/v1/accounts/{account_id}", {"owner_id": owner, "star_level": 3}
        )
        assert status in (200, 201)
        for device_id, kind in devices.items():
            status, _ = await self.call(
                "POST",
                f"/platform/v1/accounts/{account_id}/devices",
                {"device_id": device_id, "kind": kind},
            )
            assert status == 201

    async def order(
        self,
        order_id: str,
        product: str = "wifi-gift-299",
        devices: tuple[str, ...] = ("rt-1", "rt-2"),
        **extra: Any,
    ) -> tuple[int, Any]:
        body = {
            "order_id": order_id,
            "account_id": "acc-1",
            "product": product,
            "orderer_id": "owner-1",
            "channel": "physical",
            "devices": list(devices),
            "ordered_at": ORDERED,
            **extra,
        }
        return await self.call("POST", "/platform/v1/home-network/orders", body)

    async def step(self, package_id: str, action: str, order_id: str, **extra: Any) -> Any:
        path = f"/platform/v1/home-network/orders/{package_id}/{action}"
        return await self.call("POST", path, {"order_id": order_id, **extra})

    async def get(self, package_id: str) -> dict[str, Any]:
        status, body = await self.call("GET", f"/platform/v1/home-network/orders/{package_id}")
        assert status == 200
        found: dict[str, Any] = body
        return found

    async def charges(self, month: str) -> dict[str, Any]:
        status, body = await self.call("GET", f"/platform/v1/accounts/acc-1/charges?month={month}")
        assert status == 200
        found: dict[str, Any] = body
        return found


@pytest.fixture
async def platform(
    start_gateway: StartGateway, clock: ManualClock, database_url: str
) -> AsyncIterator[Platform]:
    """The gateway on SQLite and PostgreSQL: acc-1 with three routers and a camera, acc-2
    with one router."""
    async with (
        start_gateway(clock=clock, mqtt=False, database_url=database_url) as gw,
        aiohttp.ClientSession() as http,
    ):
        p = Platform(gw, http)
        routers = {"rt-1": "router", "rt-2": "router", "rt-3": "router", "cam-1": "camera"}
        await p.home("acc-1", "owner-1", routers)
        await p.home("acc-2", "owner-2", {"rt-9": "router"})
        yield p


async def test_a_gift_is_effective_at_once_for_a_year_and_charged_on_the_order_day(
    platform: Platform,
) -> None:
    status, body = await platform.order("o-1")
    assert status == 201, body
    assert body["status"] == "active"
    assert body["product"] == "wifi-gift-299"
    assert body["channel"] == "physical"
    assert body["valid_until"] == "2027-11-19"  # R16: through the day before a year later
    assert body["ends_at"] == "2027-11-19T16:00:00Z"  # midnight Shanghai
    assert body["charge"] == {
        "kind": "home_network",
        "package_id": body["id"],
        "product": "wifi-gift-299",
        "day": "2026-11-20",
        "amount": "299.00",
    }
    assert [(d["device_id"], d["tunings"], d["used"]) for d in body["devices"]] == [
        ("rt-1", 1, 0),
        ("rt-2", 1, 0),
    ]
    assert await platform.get(body["id"]) == body
    async with platform.gw.services.db.session() as session:
        reports = (
            await session.exec(select(CallbackReport).where(CallbackReport.order_id == "o-1"))
        ).all()
    assert [r.payload["action"] for r in reports] == ["home_network.order"]


async def test_a_tuning_pack_is_valid_one_month_to_the_end_of_a_short_month(
    platform: Platform,
) -> None:
    """R17: ordered 31 January (Shanghai), valid through 28 February."""
    status, body = await platform.order(
        "o-1", "wifi-tuning-70", ("rt-1",), ordered_at="2027-01-30T17:00:00+00:00"
    )
    assert status == 201, body
    assert body["valid_until"] == "2027-02-28"
    assert body["charge"]["day"] == "2027-01-31"


async def test_a_repeated_order_id_answers_the_first_result(platform: Platform) -> None:
    first = await platform.order("o-1")
    assert await platform.order("o-1") == first
    _, listed = await platform.call("GET", "/platform/v1/accounts/acc-1/home-network")
    assert [p["id"] for p in listed["packages"]] == [first[1]["id"]]
    status, body = await platform.order("o-1", product="wifi-gift-499")
    assert (status, body["error"]["code"]) == (409, "order_id_reused")


@pytest.mark.parametrize(
    ("changes", "status", "code", "rule"),
    [
        ({"orderer_id": "someone-else"}, 403, "not_account_owner", "R7"),
        ({"product": "wifi-gift-999"}, 400, "unknown_product", "R16"),
        ({"devices": ["rt-1", "rt-2", "rt-3"]}, 400, "too_many_devices", "R16"),
        ({"product": "wifi-addon-40", "devices": ["rt-1", "rt-2"]}, 400, "too_many_devices", "R17"),
        ({"devices": ["rt-9"]}, 404, "not_found", None),  # another account's router
        ({"devices": ["cam-1"]}, 404, "not_found", None),  # a camera is not a router
        ({"devices": []}, 400, "invalid_body", None),
        ({"channel": "carrier-pigeon"}, 400, "invalid_body", None),
        ({"ordered_at": "2026-11-20T10:00:00"}, 400, "invalid_body", None),
    ],
)
async def test_refused_orders_cite_their_rule(
    platform: Platform, changes: dict[str, Any], status: int, code: str, rule: str | None
) -> None:
    got, body = await platform.order("o-x", **changes)
    assert (got, body["error"]["code"], body["error"].get("rule")) == (status, code, rule)


async def test_no_order_while_broadband_is_stopped(platform: Platform) -> None:
    """R8, R12: no new product while the account's broadband is not active."""
    async with platform.gw.services.db.session() as session:
        account = await get_account(session, "acc-1")
        account.broadband_state = "stopped"
        session.add(account)
        await session.commit()
    for product, devices in (("wifi-gift-299", ("rt-1",)), ("wifi-addon-30", ("rt-1",))):
        status, body = await platform.order(f"o-{product}", product, devices)
        assert (status, body["error"]["code"], body["error"]["rule"]) == (
            409,
            "broadband_inactive",
            "R12",
        )


async def test_a_router_holds_one_gift_at_a_time_and_packs_stack(platform: Platform) -> None:
    assert (await platform.order("o-1"))[0] == 201
    status, body = await platform.order("o-2", "wifi-gift-499", ("rt-2", "rt-3"))
    assert (status, body["error"]["code"], body["error"]["rule"]) == (409, "already_covered", "R16")
    assert (await platform.order("o-3", "wifi-gift-499", ("rt-3",)))[0] == 201
    assert (await platform.order("o-4", "wifi-tuning-70", ("rt-1",)))[0] == 201
    assert (await platform.order("o-5", "wifi-addon-60", ("rt-1",)))[0] == 201


async def test_unsubscribed_before_the_visit_refunds_in_full_in_that_month(
    platform: Platform,
) -> None:
    """R16: unsubscription is at once; the fee comes back as a correction line of the
    unsubscription's month; the order month stays as billed. The router can take a new
    gift afterwards."""
    _, ordered = await platform.order("o-1")
    status, body = await platform.step(
        ordered["id"], "unsubscribe", "u-1", at="2026-12-02T01:00:00Z"
    )
    assert status == 200, body
    assert body["status"] == "unsubscribed"
    assert body["refund"] == {
        "kind": "home_network_refund",
        "package_id": ordered["id"],
        "product": "wifi-gift-299",
        "day": "2026-12-02",
        "amount": "-299.00",
    }
    assert await platform.step(ordered["id"], "unsubscribe", "u-1", at="2026-12-02T01:00:00Z") == (
        200,
        body,
    )
    nov, dec = await platform.charges("2026-11"), await platform.charges("2026-12")
    assert [(x["kind"], x["amount"]) for x in nov["package_lines"]] == [("home_network", "299.00")]
    assert nov["total"] == "299.00"
    assert [(x["kind"], x["amount"]) for x in dec["package_lines"]] == [
        ("home_network_refund", "-299.00")
    ]
    assert dec["total"] == "-299.00"
    status, again = await platform.step(ordered["id"], "unsubscribe", "u-2")
    assert (status, again["error"]["code"], again["error"]["rule"]) == (
        409,
        "package_not_active",
        "R16",
    )
    assert (await platform.order("o-2", devices=("rt-1",)))[0] == 201


async def test_after_the_visit_unsubscription_is_refused(platform: Platform) -> None:
    _, pack = await platform.order("o-1", "wifi-tuning-140", ("rt-1",))
    status, visited = await platform.step(pack["id"], "visit", "v-1", at="2026-11-21T02:00:00Z")
    assert status == 200, visited
    assert visited["visited_at"] == "2026-11-21T02:00:00Z"
    status, body = await platform.step(pack["id"], "unsubscribe", "u-1")
    assert (status, body["error"]["code"], body["error"]["rule"]) == (409, "visit_done", "R17")
    status, body = await platform.step(pack["id"], "visit", "v-2")
    assert (status, body["error"]["code"]) == (409, "already_visited")
    assert (await platform.get(pack["id"]))["status"] == "active"
    dec = await platform.charges("2026-11")
    assert [x["amount"] for x in dec["package_lines"]] == ["140.00"]


async def test_times_out_of_order_and_unknown_packages(platform: Platform) -> None:
    _, pack = await platform.order("o-1", "wifi-addon-30", ("rt-1",))
    status, body = await platform.step(pack["id"], "unsubscribe", "u-1", at="2026-11-19T00:00:00Z")
    assert (status, body["error"]["code"]) == (400, "invalid_time")
    status, body = await platform.step("hn_nope", "visit", "v-1")
    assert (status, body["error"]["code"]) == (404, "not_found")
    status, _ = await platform.call("GET", "/platform/v1/home-network/orders/hn_nope")
    assert status == 404


async def test_expiry_ends_packages_at_their_own_end_idempotently_and_catches_up(
    platform: Platform, clock: ManualClock
) -> None:
    """R16/R17: a month's pack and a year's gift end at the end of their validity; a job
    run long after (downtime) ends both as of their own ends, and runs again change
    nothing."""
    _, gift = await platform.order("o-1", devices=("rt-1",))
    _, pack = await platform.order("o-2", "wifi-addon-40", ("rt-2",))
    services = platform.gw.services
    clock.set(datetime(2026, 12, 19, 15, 59, tzinfo=UTC))  # 23:59 on the pack's last day
    await home_network.expire(services)
    assert (await platform.get(pack["id"]))["status"] == "active"
    clock.set(datetime(2028, 3, 1, tzinfo=UTC))  # long after both ended: catch up
    await home_network.expire(services)
    ended_pack, ended_gift = await platform.get(pack["id"]), await platform.get(gift["id"])
    assert (ended_pack["status"], ended_pack["ended_at"]) == ("ended", "2026-12-19T16:00:00Z")
    assert (ended_gift["status"], ended_gift["ended_at"]) == ("ended", "2027-11-19T16:00:00Z")
    clock.advance(timedelta(days=1).total_seconds())
    await home_network.expire(services)
    assert await platform.get(pack["id"]) == ended_pack
    assert await platform.get(gift["id"]) == ended_gift
    status, body = await platform.step(pack["id"], "unsubscribe", "u-1")
    assert (status, body["error"]["code"]) == (409, "package_not_active")
    # The ended gift no longer holds its router: another can be ordered.
    assert (await platform.order("o-3", devices=("rt-1",), ordered_at=None))[0] == 201


async def test_the_catalog_lists_every_product(platform: Platform) -> None:
    status, body = await platform.call("GET", "/platform/v1/catalog")
    assert status == 200
    by_id = {p["id"]: p for p in body["products"]}
    assert set(by_id) >= {
        "continuous-1d",
        "event-30d",
        "wifi-gift-299",
        "wifi-gift-499",
        "wifi-gift-699",
        "wifi-tuning-70",
        "wifi-tuning-140",
        "wifi-addon-40",
        "wifi-addon-60",
        "wifi-addon-30",
        "ordinary",
        "gold",
        "platinum",
    }
    assert by_id["wifi-gift-499"] == {
        "id": "wifi-gift-499",
        "kind": "home_network",
        "family": "gift",
        "rule": "R16",
        "billing": "one_time",
        "fee": "499.00",
        "validity_months": 12,
        "devices": 3,
        "tunings_per_device": 1,
    }
    assert by_id["event-7d"]["billing"] == "monthly"
    assert by_id["event-7d"]["retention_days"] == 7
    assert by_id["gold"]["rule"] == "R18"
    assert by_id["gold"]["quota_bytes"] > by_id["ordinary"]["quota_bytes"]


async def test_the_schema_step_adds_the_package_tables(database_url: str) -> None:
    """A database of the schema before the home-network step gets its tables (and the R16
    index) at start."""
    (step,) = [m for m in MIGRATIONS if "home-network" in m.description]
    async with open_database(database_url) as db, db.engine.begin() as conn:
        await conn.execute(text("DROP TABLE home_package_devices"))
        await conn.execute(text("DROP TABLE home_packages"))
        before = {"v": step.version - 1}
        await conn.execute(text("UPDATE kanjia_schema SET version = :v"), before)
    async with open_database(database_url) as db, db.engine.connect() as conn:
        version = (await conn.execute(text("SELECT version FROM kanjia_schema"))).scalar_one()
        assert version == SCHEMA_VERSION

        def names(sync: Connection) -> tuple[set[str], set[str | None]]:
            inspector = inspect(sync)
            indexes = {i["name"] for i in inspector.get_indexes("home_package_devices")}
            return set(inspector.get_table_names()), indexes

        tables, indexes = await conn.run_sync(names)
    assert {"home_packages", "home_package_devices"} <= tables
    assert "one_active_gift_per_router" in indexes
