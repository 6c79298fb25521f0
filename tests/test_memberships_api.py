"""Family-cloud memberships through the platform API (issue 18, R18 with R3, R7, R8), on
SQLite and PostgreSQL: orders and their refusals, idempotency, completion reports, the
next-month unsubscription, charges, renewal and the job's idempotence and catch-up.

The manual clock starts at T0 = 2026-11-20T02:00Z (20 November, 10:00 in Shanghai).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from sqlmodel import col, select

from devices.clock import ManualClock
from devices.models import CallbackReport
from gateway import memberships
from replay import membership_store
from replay.billing import Month
from replay.models import FamilyCloudMembership
from tests.conftest import StartGateway
from tests.test_subscriptions_api import Platform

BASE = "/platform/v1/family-cloud/memberships"


class Members(Platform):
    async def member(self, order_id: str, tier: str = "gold", **extra: Any) -> tuple[int, Any]:
        body = {
            "order_id": order_id,
            "account_id": "acc-1",
            "tier": tier,
            "orderer_id": "owner-1",
            "channel": "physical",
            **extra,
        }
        return await self.call("POST", BASE, body)

    async def unsubscribe(self, membership_id: str, order_id: str, **extra: Any) -> Any:
        return await self.call(
            "POST", f"{BASE}/{membership_id}/unsubscribe", {"order_id": order_id, **extra}
        )

    async def read(self, membership_id: str) -> Any:
        status, body = await self.call("GET", f"{BASE}/{membership_id}")
        assert status == 200, body
        return body

    async def advance_to(self, at: str) -> None:
        delta = datetime.fromisoformat(at) - self.gw.services.clock.now()
        status, _ = await self.call(
            "POST", "/ops/v1/clock", {"advance_seconds": delta.total_seconds()}
        )
        assert status == 200

    async def charges(self, month: str) -> Any:
        status, body = await self.call("GET", f"/platform/v1/accounts/acc-1/charges?month={month}")
        assert status == 200, body
        return body

    async def stored(self, membership_id: str) -> FamilyCloudMembership:
        async with self.gw.services.db.session() as session:
            found = await session.get(FamilyCloudMembership, membership_id)
        assert found is not None
        return found


@pytest.fixture
async def members(
    start_gateway: StartGateway, clock: ManualClock, database_url: str
) -> AsyncIterator[Members]:
    async with (
        start_gateway(clock=clock, mqtt=False, database_url=database_url) as gw,
        aiohttp.ClientSession() as http,
    ):
        p = Members(gw, http)
        await p.home()
        yield p


async def test_an_order_is_effective_at_once_with_the_first_month_by_day(
    members: Members,
) -> None:
    """R18 with R3: gold (20.00) ordered 20 November: 11 of 30 days = 7.33; valid one year;
    the completion report is owed; the same order_id again answers the first result."""
    status, body = await members.member("m-1")
    assert status == 201, body
    assert body["status"] == "active"
    assert (body["tier"], body["monthly_fee"], body["channel"]) == ("gold", "20.00", "physical")
    assert body["valid_until"] == "2027-11-19"
    assert body["charge"] == {"month": "2026-11", "days": 11, "amount": "7.33"}
    assert body["membership_id"].startswith("fcm_")
    assert await members.member("m-1") == (201, body), "idempotent"
    status, reused = await members.member("m-1", tier="ordinary")
    assert (status, reused["error"]["code"]) == (409, "order_id_reused")
    assert await members.read(body["membership_id"]) == {
        k: v for k, v in body.items() if k != "charge"
    }
    async with members.gw.services.db.session() as session:
        reports = (await session.exec(select(CallbackReport))).all()
    assert [(r.order_id, r.payload["action"]) for r in reports] == [("m-1", "membership.order")]
    assert reports[0].payload["result"]["membership_id"] == body["membership_id"]


async def test_one_membership_per_account_of_any_tier_r18(members: Members) -> None:
    assert (await members.member("m-1", tier="ordinary"))[0] == 201
    for order_id, tier in (("m-2", "platinum"), ("m-3", "ordinary")):
        status, body = await members.member(order_id, tier=tier)
        assert status == 409
        assert (body["error"]["code"], body["error"]["rule"]) == ("membership_held", "R18")
        assert "no stacking" in body["error"]["message"]
    status, listed = await members.call(
        "GET", "/platform/v1/accounts/acc-1/family-cloud/memberships"
    )
    assert status == 200
    assert [m["order_id"] for m in listed["memberships"]] == ["m-1"]


@pytest.mark.parametrize(
    ("changes", "status", "code", "rule"),
    [
        ({"tier": "diamond"}, 400, "unknown_tier", "R18"),
        ({"orderer_id": "someone-else"}, 403, "not_account_owner", "R7"),
        ({"account_id": "acc-nope"}, 404, "not_found", None),
        ({"channel": "pigeon"}, 400, "invalid_body", None),
    ],
)
async def test_bad_orders_are_refused_with_the_rule(
    members: Members, changes: dict[str, str], status: int, code: str, rule: str | None
) -> None:
    got, body = await members.member("m-1", **changes)
    assert (got, body["error"]["code"], body["error"].get("rule")) == (status, code, rule)


async def test_no_membership_while_broadband_is_stopped_r8(members: Members) -> None:
    status, _ = await members.call(
        "POST",
        "/platform/v1/broadband/acc-1/stop",
        {"order_id": "b-1", "stop_type": "arrears"},
    )
    assert status == 200
    status, body = await members.member("m-1")
    assert (status, body["error"]["code"], body["error"]["rule"]) == (
        409,
        "broadband_inactive",
        "R8",
    )


async def test_unsubscription_takes_effect_next_month_the_month_charged_in_full(
    members: Members,
) -> None:
    """R18: unsubscribed on 5 December, in force through 31 December, ended on 1 January
    00:00 Shanghai; December is charged in full; then a new order is taken."""
    _, ordered = await members.member("m-1")
    mid = ordered["membership_id"]
    await members.advance_to("2026-12-05T04:00:00+00:00")
    status, body = await members.unsubscribe(mid, "u-1")
    assert status == 200, body
    assert (body["status"], body["valid_until"]) == ("unsubscribed", "2026-12-31")
    assert datetime.fromisoformat(body["ends_at"]) == datetime(2026, 12, 31, 16, tzinfo=UTC)
    assert body["charge"] == {"month": "2026-12", "days": 31, "amount": "20.00"}
    assert await members.unsubscribe(mid, "u-1") == (200, body), "idempotent"
    status, again = await members.unsubscribe(mid, "u-2")
    assert (status, again["error"]["code"], again["error"]["rule"]) == (
        409,
        "membership_not_active",
        "R18",
    )
    status, held = await members.member("m-2", tier="ordinary")
    assert (status, held["error"]["code"]) == (409, "membership_held"), "in force until then"

    await members.advance_to("2026-12-31T15:59:59+00:00")
    assert (await members.read(mid))["status"] == "unsubscribed"
    await members.advance_to("2026-12-31T16:00:00+00:00")
    read = await members.read(mid)
    assert (read["status"], read["overflow"]) == ("ended", "none"), "nothing saved: no overflow"
    assert (await members.stored(mid)).status == "ended", "the job ended it"

    lines = {m: (await members.charges(m))["items"] for m in ("2026-11", "2026-12", "2027-01")}
    assert lines["2026-11"] == [
        {
            "kind": "family_cloud_membership",
            "membership_id": mid,
            "tier": "gold",
            "days": 11,
            "amount": "7.33",
        }
    ]
    assert [(i["days"], i["amount"]) for i in lines["2026-12"]] == [(31, "20.00")]
    assert lines["2027-01"] == []
    status, orders = await members.call("GET", "/platform/v1/orders?action=membership")
    assert status == 200
    assert sorted((o["order_id"], o["action"]) for o in orders["orders"]) == [
        ("m-1", "membership.order"),
        ("m-2", "membership.order"),
        ("u-1", "membership.unsubscribe"),
        ("u-2", "membership.unsubscribe"),
    ]
    status, refused = await members.member("m-2", tier="ordinary")
    assert (status, refused["error"]["code"]) == (409, "membership_held"), "its first answer"
    status, renewed = await members.member("m-3", tier="ordinary")
    assert (status, renewed["charge"]) == (
        201,
        {"month": "2027-01", "days": 31, "amount": "10.00"},
    )
    async with members.gw.services.db.session() as session:  # what the ledger closes
        for month, expected in (
            (Month(year=2026, month=12), [(mid, "20.00")]),
            (Month(year=2027, month=1), [(renewed["membership_id"], "10.00")]),
        ):
            found = await membership_store.charges_of_month(session, month)
            assert [(c.membership.membership_id, str(c.charge.amount)) for c in found] == expected


async def test_a_membership_renews_after_a_year_and_the_job_catches_up(
    members: Members,
) -> None:
    """R18: valid through 19 November 2027, then renewed for another year without
    objection; the job run twice changes nothing more, and after two years of downtime one
    run renews it through the current year. Every month is charged at the full fee."""
    _, ordered = await members.member("m-1", tier="platinum")
    mid = ordered["membership_id"]
    await members.advance_to("2027-11-19T15:00:00+00:00")  # 19 Nov 23:00 Shanghai
    assert (await members.read(mid))["valid_until"] == "2027-11-19"
    await members.advance_to("2027-11-19T16:00:00+00:00")  # 20 Nov 00:00 Shanghai
    assert (await members.read(mid))["valid_until"] == "2028-11-19"
    stored = await members.stored(mid)
    assert (stored.period, stored.valid_until.isoformat()) == (2, "2028-11-19")

    assert await memberships.renew(members.gw.services) == 0, "idempotent"
    assert (await members.stored(mid)).period == 2

    members.gw.services.clock.advance(2 * 366 * 86400)  # down: no job ran meanwhile
    assert await memberships.renew(members.gw.services) == 1
    stored = await members.stored(mid)
    assert (stored.period, stored.valid_until.isoformat()) == (4, "2030-11-19")
    assert await memberships.renew(members.gw.services) == 0
    assert (await members.charges("2029-02"))["items"][0]["amount"] == "30.00"


async def test_the_ending_job_is_idempotent_and_catches_up(members: Members) -> None:
    """Down from before the effective instant until months later: one run ends the
    membership (read-only months, had there been an overflow, counted from 1 December)."""
    _, ordered = await members.member("m-1")
    mid = ordered["membership_id"]
    await members.unsubscribe(mid, "u-1")
    members.gw.services.clock.advance(90 * 86400)
    assert (await members.stored(mid)).status == "unsubscribed", "no job ran yet"
    assert (await members.read(mid))["status"] == "ended", "exact whatever the job"
    assert await memberships.end_unsubscribed(members.gw.services) == 1
    assert await memberships.end_unsubscribed(members.gw.services) == 0
    async with members.gw.services.db.session() as session:
        rows = (
            await session.exec(
                select(FamilyCloudMembership).order_by(col(FamilyCloudMembership.started_at))
            )
        ).all()
    assert [(r.status, r.overflow) for r in rows] == [("ended", "none")]


async def test_an_order_after_the_effective_instant_ends_the_old_one_first(
    members: Members,
) -> None:
    """The unsubscription took effect but no job ran: a new order is taken (R18 counts
    the membership held by time), the old one is ended in the same transaction (the index
    of one held membership per account holds)."""
    _, ordered = await members.member("m-1")
    await members.unsubscribe(ordered["membership_id"], "u-1")
    members.gw.services.clock.advance(30 * 86400)  # 20 December: no job ran
    status, body = await members.member("m-2", tier="platinum")
    assert status == 201, body
    old = await members.stored(ordered["membership_id"])
    assert (old.status, old.overflow) == ("ended", "none")
    assert (await members.read(body["membership_id"]))["status"] == "active"
