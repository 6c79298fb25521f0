"""The charge ledger (issue 17 item 1; R3-R5, R7): closed months outlive R5's purge, the
billing run reads a month of every account (JSON pages and CSV), months close once and
catch up, corrections are new lines, lines are kept for the configured years.

Runs on SQLite and PostgreSQL (``database_url``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from sqlalchemy import insert
from sqlmodel import func, select

from devices.clock import ManualClock
from devices.models import Account
from gateway.schedule import close_months
from gateway.service import Gateway
from replay import ledger, subscriptions
from replay.billing import Month
from replay.models import ChargeLine, ClosedMonth
from tests.conftest import StartGateway, platform_headers

H = platform_headers()
REFUND = "home_network_refund"
DAY = 86400


class Billing:
    def __init__(self, gw: Gateway, http: aiohttp.ClientSession, clock: ManualClock) -> None:
        self.gw, self.http, self.clock = gw, http, clock

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        r = await self.http.request(method, f"{self.gw.url}{path}", json=body, headers=H)
        return r.status, await r.json()

    async def account(self, account_id: str, cameras: tuple[str, ...]) -> None:
        status, _ = await self.call(
            "PUT", f"/platform/v1/accounts/{account_id}", {"owner_id": "owner", "star_level": 3}
        )
        assert status in (200, 201)
        for cam in cameras:
            status, _ = await self.call(
                "POST",
                f"/platform/v1/accounts/{account_id}/devices",
                {"device_id": cam, "kind": "camera"},
            )
            assert status == 201

    async def order(self, order_id: str, account_id: str, device: str, plan: str) -> str:
        status, body = await self.call(
            "POST",
            "/platform/v1/subscriptions",
            {
                "order_id": order_id,
                "account_id": account_id,
                "device_id": device,
                "plan": plan,
                "orderer_id": "owner",
                "channel": "electronic",
            },
        )
        assert status == 201, body
        return str(body["subscription_id"])

    async def unsubscribe(self, sid: str, order_id: str) -> None:
        status, body = await self.call(
            "POST", f"/platform/v1/subscriptions/{sid}/unsubscribe", {"order_id": order_id}
        )
        assert status == 200, body

    async def advance_to(self, at: datetime) -> None:
        seconds = (at - self.clock.now()).total_seconds()
        status, _ = await self.call("POST", "/ops/v1/clock", {"advance_seconds": seconds})
        assert status == 200

    async def charges(self, account_id: str, month: str) -> Any:
        status, body = await self.call(
            "GET", f"/platform/v1/accounts/{account_id}/charges?month={month}"
        )
        assert status == 200, body
        return body


@pytest.fixture
async def billing(
    start_gateway: StartGateway, clock: ManualClock, database_url: str
) -> AsyncIterator[Billing]:
    async with (
        start_gateway(clock=clock, mqtt=False, database_url=database_url) as gw,
        aiohttp.ClientSession() as http,
    ):
        yield Billing(gw, http, clock)


def months(first: str, last: str) -> list[str]:
    found, month = [], Month.parse(first)
    while month <= Month.parse(last):
        found.append(str(month))
        month = month.next()
    return found


def shanghai(text: str) -> datetime:
    return datetime.fromisoformat(text + "+08:00").astimezone(UTC)


async def test_closed_months_read_the_same_before_and_after_the_purge(billing: Billing) -> None:
    """Acceptance 1: orders and unsubscriptions in 2026-2027, every month read; the clock
    moves past R5's purge of every record; every month reads the same, none 0.00."""
    await billing.account("acc-1", ("cam-1", "cam-2"))
    await billing.account("acc-2", ("cam-3",))
    # 20 Nov 2026, 10:00 Shanghai (T0).
    a = await billing.order("o-1", "acc-1", "cam-1", "continuous-7d")
    b = await billing.order("o-2", "acc-1", "cam-2", "event-30d")
    await billing.advance_to(shanghai("2026-12-10T09:00:00"))
    c = await billing.order("o-3", "acc-2", "cam-3", "continuous-30d")
    await billing.unsubscribe(a, "u-1")
    await billing.advance_to(shanghai("2027-02-03T09:00:00"))
    await billing.unsubscribe(b, "u-2")
    await billing.unsubscribe(c, "u-3")
    every = months("2026-11", "2027-02")
    before = {
        (acc, month): await billing.charges(acc, month)
        for acc in ("acc-1", "acc-2")
        for month in every
    }
    # cam-1: 11 of 30 November days of 10.00 = 3.666… → 3.67 (R3).
    november = {i["device_id"]: i["amount"] for i in before["acc-1", "2026-11"]["items"]}
    assert november["cam-1"] == "3.67"
    assert before["acc-1", "2027-02"]["total"] != "0.00", "February is read live"

    await billing.advance_to(shanghai("2027-09-01T09:00:00"))  # past every purge (R5)
    for sid in (a, b, c):
        status, _ = await billing.call("GET", f"/platform/v1/subscriptions/{sid}")
        assert status == 404, "the subscription record is purged"
    after = {key: await billing.charges(*key) for key in before}
    assert after == before
    nonzero = [key for key, body in after.items() if body["total"] != "0.00"]
    assert len(nonzero) == 7, nonzero  # acc-1: Nov to Feb; acc-2: Dec to Feb
    status, jan = await billing.call("GET", "/platform/v1/charges?month=2027-01")
    assert status == 200
    assert Decimal(jan["month_total"]) == sum(
        Decimal(after[acc, "2027-01"]["total"]) for acc in ("acc-1", "acc-2")
    )


async def test_an_open_month_is_not_in_the_ledger_yet(billing: Billing) -> None:
    status, body = await billing.call("GET", "/platform/v1/charges?month=2026-11")
    assert status == 409
    assert (body["error"]["code"], body["error"]["rule"]) == ("month_not_closed", "R7")
    status, body = await billing.call("GET", "/platform/v1/charges?month=2026-13")
    assert status == 400


LINES = 10_000
ACCOUNTS = 100


async def _fill_month(gw: Gateway, month: str) -> dict[str, Decimal]:
    """Bulk-insert LINES lines of ``month`` over ACCOUNTS accounts and close the month;
    answer each account's total."""
    now = gw.services.clock.now()
    totals: dict[str, Decimal] = {}
    rows = []
    for n in range(LINES):
        account = f"bulk-{n % ACCOUNTS:03d}"
        cents = 1 + (n * 7919) % 1500  # 0.01 to 15.00
        totals[account] = totals.get(account, Decimal("0.00")) + Decimal(cents) / 100
        rows.append(
            {
                "month": month,
                "account_id": account,
                "subscription_id": f"sub-{n:05d}",
                "device_id": f"cam-{n:05d}",
                "plan": "continuous-7d",
                "line_no": 0,
                "days": 1 + n % 30,
                "amount_cents": cents,
                "reason": None,
                "recorded_at": now,
            }
        )
    accounts = [
        {
            "account_id": account,
            "owner_id": "owner",
            "star_level": 3,
            "broadband_state": "active",
            "created_at": now,
            "updated_at": now,
        }
        for account in totals
    ]
    async with gw.services.db.writing() as session:
        connection = await session.connection()
        await connection.execute(insert(Account.__table__), accounts)  # type: ignore[attr-defined]
        await connection.execute(insert(ChargeLine.__table__), rows)  # type: ignore[attr-defined]
        session.add(ClosedMonth(month=month, lines=LINES, closed_at=now))
        await session.commit()
    return totals


async def test_the_billing_run_pages_through_ten_thousand_lines(billing: Billing) -> None:
    """Acceptance 2: 10,000 lines through JSON pages and one CSV, totals equal the sum of
    the accounts' own charges."""
    totals = await _fill_month(billing.gw, "2026-10")
    expected_total = sum(totals.values(), Decimal("0.00"))
    seen: list[tuple[str, str, str, int, str]] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = "month=2026-10&limit=999" + (f"&cursor={cursor}" if cursor else "")
        status, page = await billing.call("GET", f"/platform/v1/charges?{query}")
        assert status == 200, page
        pages += 1
        assert page["month"] == "2026-10"
        assert Decimal(page["month_total"]) == expected_total  # the month's, on every page
        seen += [
            (i["account_id"], i["subscription_id"], i["device_id"], i["days"], i["amount"])
            for i in page["items"]
        ]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 11  # 10 pages of 999 and one of 10
    assert len(seen) == LINES
    assert len({row[1] for row in seen}) == LINES, "no line twice, none skipped"
    assert sum((Decimal(row[4]) for row in seen), Decimal("0.00")) == expected_total

    r = await billing.http.get(
        f"{billing.gw.url}/platform/v1/charges?month=2026-10",
        headers={**H, "Accept": "text/csv"},
    )
    assert r.status == 200
    assert r.content_type == "text/csv"
    assert r.headers.get("Content-Length") is None, "streamed, not built whole"
    rows = list(csv.reader(io.StringIO(await r.text())))
    assert rows[0] == [
        "account_id",
        "subscription_id",
        "device_id",
        "plan",
        "days",
        "amount",
        "kind",
        "day",
    ]
    assert [(a, s, d, int(n), m) for a, s, d, _, n, m, _, _ in rows[1:]] == seen
    assert {(k, day) for *_, k, day in rows[1:]} == {("cloud_replay", "")}

    by_account = {
        account: Decimal((await billing.charges(account, "2026-10"))["total"]) for account in totals
    }
    assert by_account == totals
    assert sum(by_account.values(), Decimal("0.00")) == expected_total


async def test_months_close_once_and_catch_up_after_downtime(billing: Billing) -> None:
    """The closing job is idempotent, and a gateway that missed months closes each of them."""
    await billing.account("acc-1", ("cam-1",))
    await billing.order("o-1", "acc-1", "cam-1", "continuous-7d")
    services = billing.gw.services
    # The clock jumps a year without the jobs (a gateway down): 12 months are due.
    billing.clock.set(shanghai("2027-11-15T09:00:00"))
    async with services.db.session() as session:
        due = await ledger.months_to_close(session, billing.clock.now())
    assert [str(m) for m in due] == months("2026-11", "2027-10")
    # The gateway's own job may close some of them meanwhile: each month closes once.
    await close_months(services)
    assert await close_months(services) == 0
    async with services.db.session() as session:
        count = (await session.exec(select(func.count()).select_from(ChargeLine))).one()
        closed = (await session.exec(select(func.count()).select_from(ClosedMonth))).one()
    assert (count, closed) == (12, 12)
    for month in months("2026-11", "2027-10"):
        body = await billing.charges("acc-1", month)
        assert body["total"] == ("3.67" if month == "2026-11" else "10.00")
    async with services.db.writing() as session:
        with pytest.raises(ValueError, match="has not ended"):
            await ledger.close_month(session, Month.parse("2027-11"), billing.clock.now())


async def test_a_correction_is_a_new_line(billing: Billing) -> None:
    """Corrections never edit a line: the month shows both, and its total their sum."""
    await billing.account("acc-1", ("cam-1",))
    sid = await billing.order("o-1", "acc-1", "cam-1", "continuous-7d")
    await billing.advance_to(shanghai("2026-12-02T09:00:00"))
    services = billing.gw.services
    async with services.db.writing() as session:
        await ledger.add_correction(
            session,
            subscription_id=sid,
            month=Month.parse("2026-11"),
            amount=Decimal("-1.00"),
            reason="goodwill",
            now=billing.clock.now(),
        )
        await session.commit()
    body = await billing.charges("acc-1", "2026-11")
    assert [(i["days"], i["amount"]) for i in body["items"]] == [(11, "3.67"), (0, "-1.00")]
    assert body["total"] == "2.67"
    status, page = await billing.call("GET", "/platform/v1/charges?month=2026-11")
    assert (status, page["month_total"]) == (200, "2.67")


async def test_lines_are_kept_for_the_configured_years(billing: Billing) -> None:
    """KANJIA_LEDGER_RETENTION_YEARS (7 by default): a month's lines go when it ended more
    than that long ago; the month stays closed, never written again."""
    assert billing.gw.services.settings.ledger_retention_years == 7
    await billing.account("acc-1", ("cam-1",))
    await billing.order("o-1", "acc-1", "cam-1", "continuous-7d")
    await billing.advance_to(shanghai("2026-12-02T09:00:00"))
    assert (await billing.charges("acc-1", "2026-11"))["total"] == "3.67"
    services = billing.gw.services
    async with services.db.writing() as session:
        kept = await ledger.purge_expired(session, shanghai("2033-11-30T09:00:00"), 7)
        gone = await ledger.purge_expired(session, shanghai("2033-12-01T09:00:00"), 7)
        await session.commit()
    assert (kept, gone) == (0, 1)
    async with services.db.session() as session:
        assert await ledger.is_closed(session, Month.parse("2026-11"))


@pytest.mark.parametrize(
    ("amount", "cents"),
    [("0.01", 1), ("15.00", 1500), ("-1.00", -100), ("3.67", 367)],
)
def test_cents(amount: str, cents: int) -> None:
    assert ledger.to_cents(Decimal(amount)) == cents
    assert ledger.from_cents(cents) == Decimal(amount)


def test_cents_refuse_fractions_of_a_cent() -> None:
    with pytest.raises(ValueError, match="cents"):
        ledger.to_cents(Decimal("0.005"))


def test_the_retention_cutoff_is_whole_months() -> None:
    now = datetime(2033, 12, 1, 1, 0, tzinfo=UTC)  # 09:00 on 1 Dec 2033 in Shanghai
    assert str(ledger.retention_cutoff(now, 7)) == "2026-12"
    assert str(ledger.retention_cutoff(now - timedelta(hours=10), 7)) == "2026-11"


async def test_changes_dated_in_a_closed_month_are_new_lines(billing: Billing) -> None:
    """An unsubscription and an order dated in November, arriving after November closed,
    reach the ledger as new lines: a correction, a first line; nothing is edited."""
    await billing.account("acc-1", ("cam-1", "cam-2"))
    a = await billing.order("o-1", "acc-1", "cam-1", "continuous-7d")  # 20 Nov: 3.67
    await billing.advance_to(shanghai("2026-12-05T09:00:00"))
    assert (await billing.charges("acc-1", "2026-11"))["total"] == "3.67"
    status, body = await billing.call(
        "POST",
        f"/platform/v1/subscriptions/{a}/unsubscribe",
        {"order_id": "u-1", "at": shanghai("2026-11-25T12:00:00").isoformat()},
    )
    assert status == 200, body
    status, body = await billing.call(
        "POST",
        "/platform/v1/subscriptions",
        {"order_id": "o-2", "account_id": "acc-1", "device_id": "cam-2",
         "plan": "continuous-7d", "orderer_id": "owner", "channel": "electronic",
         "ordered_at": shanghai("2026-11-28T12:00:00").isoformat()},
    )  # fmt: skip
    assert status == 201, body
    november = await billing.charges("acc-1", "2026-11")
    # cam-1: 20-25 Nov, 6 of 30 days = 2.00 (3.67 then -1.67); cam-2: 28-30 Nov = 1.00.
    assert [(i["device_id"], i["days"], i["amount"]) for i in november["items"]] == [
        ("cam-1", 11, "3.67"),
        ("cam-1", 0, "-1.67"),
        ("cam-2", 3, "1.00"),
    ]
    assert november["total"] == "3.00"
    status, page = await billing.call("GET", "/platform/v1/charges?month=2026-11")
    assert (status, page["month_total"]) == (200, "3.00")


async def test_no_record_is_purged_before_its_months_are_in_the_ledger(billing: Billing) -> None:
    """R5's purge waits for the ledger: even when the clock jumps past the purge with no
    month closed (jobs not run), the record stays until its months are closed."""
    await billing.account("acc-1", ("cam-1",))
    sid = await billing.order("o-1", "acc-1", "cam-1", "continuous-7d")
    await billing.unsubscribe(sid, "u-1")  # 20 Nov 2026: purge due 20 May 2027
    services = billing.gw.services
    billing.clock.set(shanghai("2027-06-01T09:00:00"))  # no job has run
    now = billing.clock.now()
    async with services.db.writing() as session:
        assert await subscriptions.purge_unsubscribed(session, now) == 0
    assert await close_months(services, now) == 7  # Nov 2026 to May 2027
    async with services.db.writing() as session:
        assert await subscriptions.purge_unsubscribed(session, now) == 1
    assert (await billing.charges("acc-1", "2026-11"))["total"] == "0.33"  # 1 of 30 days


async def test_a_month_closes_page_by_page_in_the_order_of_the_orders(
    billing: Billing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing reads the subscriptions in keyset pages (here of 2) by order time, so the
    ledger lists an account's month as the live route did, none lost between pages."""
    monkeypatch.setattr(ledger, "CLOSE_PAGE", 2)
    cameras = tuple(f"cam-{n}" for n in range(5))
    await billing.account("acc-1", cameras)
    for n, cam in enumerate(cameras):
        await billing.order(f"o-{n}", "acc-1", cam, "continuous-7d")
        if n % 2:  # two orders at each instant, the pages split some of them
            await billing.advance_to(billing.clock.now() + timedelta(days=1))
    live = await billing.charges("acc-1", "2026-11")
    await billing.advance_to(shanghai("2026-12-02T09:00:00"))
    closed = await billing.charges("acc-1", "2026-11")
    assert closed == live
    assert len(closed["items"]) == 5
    async with billing.gw.services.db.session() as session:
        assert await ledger.is_closed(session, Month.parse("2026-11"))


async def test_memberships_and_packages_close_into_the_ledger(billing: Billing) -> None:
    """Issue 18: a month closes into lines of four kinds (R7, R16-R18): a subscription's, a
    membership's, a package's fee and its refund. The account's charges read the same
    before (live) and after the close (ledger); the billing run lists every kind, and its
    total is the sum of its lines."""
    await billing.account("acc-1", ("cam-1",))
    for router in ("rt-1", "rt-2", "rt-3"):
        status, body = await billing.call(
            "POST", "/platform/v1/accounts/acc-1/devices", {"device_id": router, "kind": "router"}
        )
        assert status == 201, body
    await billing.order("o-1", "acc-1", "cam-1", "continuous-7d")
    status, member = await billing.call(
        "POST",
        "/platform/v1/family-cloud/memberships",
        {
            "order_id": "m-1",
            "account_id": "acc-1",
            "tier": "gold",
            "orderer_id": "owner",
            "channel": "physical",
        },
    )
    assert status == 201, member
    packages = {}
    for order_id, product, routers in (
        ("p-1", "wifi-gift-299", ["rt-1", "rt-2"]),
        ("p-2", "wifi-tuning-140", ["rt-3"]),
    ):
        status, body = await billing.call(
            "POST",
            "/platform/v1/home-network/orders",
            {
                "order_id": order_id,
                "account_id": "acc-1",
                "product": product,
                "orderer_id": "owner",
                "channel": "physical",
                "devices": routers,
            },
        )
        assert status == 201, body
        packages[order_id] = body["id"]
    # p-1 is refunded in its order's month (R16), p-2 in the next one.
    for order_id, at in (("p-1", "2026-11-25T01:00:00Z"), ("p-2", "2026-12-02T01:00:00Z")):
        path = f"/platform/v1/home-network/orders/{packages[order_id]}/unsubscribe"
        status, body = await billing.call("POST", path, {"order_id": f"u-{order_id}", "at": at})
        assert status == 200, body
    services = billing.gw.services
    async with services.db.session() as session:
        assert not await ledger.is_closed(session, Month.parse("2026-11"))
    before = {m: await billing.charges("acc-1", m) for m in ("2026-11", "2026-12")}
    assert sorted((x["kind"], x["amount"]) for x in before["2026-11"]["package_lines"]) == [
        ("home_network", "140.00"),
        ("home_network", "299.00"),
        ("home_network_refund", "-299.00"),
    ]
    assert [x["kind"] for x in before["2026-11"]["items"]] == [
        "cloud_replay",
        "family_cloud_membership",
    ]

    billing.clock.set(shanghai("2027-01-05T09:00:00"))
    await close_months(services)
    async with services.db.session() as session:
        assert await ledger.is_closed(session, Month.parse("2026-12"))
        rows = (
            await session.exec(select(ChargeLine.month, ChargeLine.kind, ChargeLine.line_no))
        ).all()
    assert sorted(rows) == sorted(
        [
            ("2026-11", "cloud_replay", 0),
            ("2026-11", "family_cloud_membership", 0),
            ("2026-11", "home_network", 0),
            ("2026-11", "home_network", 0),
            ("2026-11", "home_network_refund", 1),
            ("2026-12", "cloud_replay", 0),
            ("2026-12", "family_cloud_membership", 0),
            ("2026-12", "home_network_refund", 1),
        ]
    )
    after = {m: await billing.charges("acc-1", m) for m in before}
    assert after == before

    for month, body in after.items():
        status, page = await billing.call("GET", f"/platform/v1/charges?month={month}")
        assert status == 200, page
        assert page["month_total"] == body["total"]
        assert sum((Decimal(i["amount"]) for i in page["items"]), Decimal("0.00")) == Decimal(
            page["month_total"]
        )
        kinds = sorted(i["kind"] for i in page["items"])
        expected = (
            ["cloud_replay", "family_cloud_membership", "home_network", "home_network", REFUND]
            if month == "2026-11"
            else ["cloud_replay", "family_cloud_membership", REFUND]
        )
        assert kinds == expected
        by_kind = {i["kind"]: i for i in page["items"]}
        assert by_kind["family_cloud_membership"]["subscription_id"] == member["membership_id"]
        assert by_kind["family_cloud_membership"]["plan"] == "gold"
        assert by_kind["home_network_refund"]["days"] == 0
        r = await billing.http.get(
            f"{billing.gw.url}/platform/v1/charges?month={month}",
            headers={**H, "Accept": "text/csv"},
        )
        rows_csv = list(csv.DictReader(io.StringIO(await r.text())))
        assert [(x["kind"], x["amount"], x["day"] or None) for x in rows_csv] == [
            (i["kind"], i["amount"], i["day"]) for i in page["items"]
        ]
    refund = [
        i
        for i in (await billing.call("GET", "/platform/v1/charges?month=2026-12"))[1]["items"]
        if i["kind"] == "home_network_refund"
    ]
    assert [(i["subscription_id"], i["plan"], i["day"], i["amount"]) for i in refund] == [
        (packages["p-2"], "wifi-tuning-140", "2026-12-02", "-140.00")
    ]


async def test_products_dated_back_into_a_closed_month_reach_its_ledger(billing: Billing) -> None:
    """Issue 18 with issue 17's ledger: a membership ordered, and a package ordered and then
    refunded, with business times in months already closed reach those months' lines (line
    0, then the refund), and the account's charges of the closed months answer them."""
    await billing.account("acc-1", ("cam-1",))
    status, body = await billing.call(
        "POST", "/platform/v1/accounts/acc-1/devices", {"device_id": "rt-1", "kind": "router"}
    )
    assert status == 201, body
    await billing.order("o-1", "acc-1", "cam-1", "continuous-7d")  # gives the ledger a start
    billing.clock.set(shanghai("2027-01-05T09:00:00"))
    await close_months(billing.gw.services)  # November and December 2026 closed
    status, member = await billing.call(
        "POST",
        "/platform/v1/family-cloud/memberships",
        {
            "order_id": "m-1",
            "account_id": "acc-1",
            "tier": "gold",
            "orderer_id": "owner",
            "channel": "physical",
            "ordered_at": "2026-12-17T02:00:00Z",  # a business time in closed December
        },
    )
    assert status == 201, member
    status, package = await billing.call(
        "POST",
        "/platform/v1/home-network/orders",
        {
            "order_id": "p-1",
            "account_id": "acc-1",
            "product": "wifi-gift-299",
            "orderer_id": "owner",
            "channel": "physical",
            "ordered_at": "2026-11-25T02:00:00Z",
            "devices": ["rt-1"],
        },
    )
    assert status == 201, package
    path = f"/platform/v1/home-network/orders/{package['id']}/unsubscribe"
    status, body = await billing.call(
        "POST", path, {"order_id": "u-1", "at": "2026-12-02T02:00:00Z"}
    )
    assert status == 200, body
    async with billing.gw.services.db.session() as session:
        rows = (
            await session.exec(
                select(
                    ChargeLine.month, ChargeLine.kind, ChargeLine.line_no, ChargeLine.amount_cents
                ).where(ChargeLine.kind != "cloud_replay")
            )
        ).all()
    assert sorted(rows) == [
        ("2026-11", "home_network", 0, 29900),
        ("2026-12", "family_cloud_membership", 0, 968),  # 15 of 31 days of 20.00 (R3)
        ("2026-12", "home_network_refund", 0, -29900),
    ]
    december = await billing.charges("acc-1", "2026-12")
    assert [(i["kind"], i["amount"]) for i in december["items"]][1:] == [
        ("family_cloud_membership", "9.68")
    ]
    assert [(x["kind"], x["amount"]) for x in december["package_lines"]] == [
        ("home_network_refund", "-299.00")
    ]
