"""Cloud-replay orders through the platform API: refusals, idempotency, charges, purge.

Issue 3, acceptance 3 and 4; rules R1-R5, R7 and R8 as cited per test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from devices.clock import ManualClock
from gateway.service import Gateway
from tests.conftest import StartGateway, platform_headers

H = platform_headers()


@dataclass
class Platform:
    gw: Gateway
    http: aiohttp.ClientSession

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        r = await self.http.request(method, f"{self.gw.url}{path}", json=body, headers=H)
        return r.status, await r.json()

    async def home(
        self,
        account_id: str = "acc-1",
        owner: str = "owner-1",
        cameras: tuple[str, ...] = ("cam-1",),
    ) -> None:
        status, _ = await self.call(
            "PUT", f"/platform/v1/accounts/{account_id}", {"owner_id": owner, "star_level": 3}
        )
        assert status in (200, 201)
        for cam in cameras:
            status, _ = await self.call(
                "POST",
                f"/platform/v1/accounts/{account_id}/devices",
                {"device_id": cam, "kind": "camera"},
            )
            assert status in (200, 201)

    async def order(
        self, order_id: str, plan: str = "continuous-7d", device: str = "cam-1", **extra: Any
    ) -> tuple[int, Any]:
        body = {
            "order_id": order_id,
            "account_id": "acc-1",
            "device_id": device,
            "plan": plan,
            "orderer_id": "owner-1",
            "channel": "electronic",
            **extra,
        }
        return await self.call("POST", "/platform/v1/subscriptions", body)


@pytest.fixture
async def platform(
    start_gateway: StartGateway, clock: ManualClock, database_url: str
) -> AsyncIterator[Platform]:
    """The gateway on SQLite and on PostgreSQL, with one account and one camera."""
    async with (
        start_gateway(clock=clock, mqtt=False, database_url=database_url) as gw,
        aiohttp.ClientSession() as http,
    ):
        p = Platform(gw, http)
        await p.home()
        yield p


async def test_order_is_effective_at_once_with_a_prorated_first_charge(
    platform: Platform,
) -> None:
    """R3: ordered 2026-11-20 (Shanghai): 11 of 30 days of 10.00 = 3.666.. -> 3.67."""
    status, body = await platform.order("o-1", ordered_at="2026-11-20T02:00:00+00:00")
    assert status == 201
    assert body["status"] == "active"
    assert body["plan"] == "continuous-7d"
    assert body["first_charge"] == {"month": "2026-11", "days": 11, "amount": "3.67"}


async def test_r2_a_second_product_and_the_same_product_again_are_refused(
    platform: Platform,
) -> None:
    assert (await platform.order("o-1"))[0] == 201
    for order_id, plan in (("o-2", "event-30d"), ("o-3", "continuous-7d")):
        status, body = await platform.order(order_id, plan=plan)
        assert status == 409
        assert body["error"]["code"] == "already_subscribed"
        assert body["error"]["rule"] == "R2"


async def test_r7_only_the_owner_may_order(platform: Platform) -> None:
    status, body = await platform.order("o-1", orderer_id="someone-else")
    assert status == 403
    assert body["error"] == {
        "code": "not_account_owner",
        "message": "only the broadband account's owner may order cloud replay",
        "rule": "R7",
    }


@pytest.mark.parametrize(
    ("changes", "status", "code"),
    [
        ({"plan": "continuous-90d"}, 400, "unknown_plan"),
        ({"channel": "carrier-pigeon"}, 400, "invalid_body"),
        ({"device_id": "cam-nope"}, 404, "not_found"),
        ({"ordered_at": "2026-11-20T10:00:00"}, 400, "invalid_body"),  # no offset
    ],
)
async def test_bad_orders_are_refused(
    platform: Platform, changes: dict[str, Any], status: int, code: str
) -> None:
    got, body = await platform.order("o-x", **changes)
    assert got == status
    assert body["error"]["code"] == code


async def test_a_router_is_not_a_camera(platform: Platform) -> None:
    await platform.call(
        "POST", "/platform/v1/accounts/acc-1/devices", {"device_id": "rt-1", "kind": "router"}
    )
    status, _ = await platform.order("o-1", device="rt-1")
    assert status == 404


async def test_a_camera_of_another_account_is_404(platform: Platform) -> None:
    await platform.home("acc-2", "owner-2", ("cam-2",))
    status, _ = await platform.order("o-1", device="cam-2")
    assert status == 404


async def test_r8_no_order_while_broadband_is_stopped(platform: Platform) -> None:
    async with platform.gw.services.db.session() as session:
        from devices.accounts import get_account

        account = await get_account(session, "acc-1")
        account.broadband_state = "stopped"
        session.add(account)
        await session.commit()
    status, body = await platform.order("o-1")
    assert status == 409
    assert body["error"]["code"] == "broadband_inactive"
    assert body["error"]["rule"] == "R8"


async def test_a_repeated_order_id_returns_the_first_answer_and_changes_nothing(
    platform: Platform,
) -> None:
    first = await platform.order("o-1")
    again = await platform.order("o-1")
    assert again == first
    _, listed = await platform.call("GET", "/platform/v1/accounts/acc-1/subscriptions")
    assert len(listed["subscriptions"]) == 1
    # The same order_id with another body is refused.
    status, body = await platform.order("o-1", plan="event-1d")
    assert status == 409
    assert body["error"]["code"] == "order_id_reused"


async def test_a_refused_order_id_replays_its_refusal(platform: Platform) -> None:
    first = await platform.order("o-1", orderer_id="intruder")
    assert first[0] == 403
    assert await platform.order("o-1", orderer_id="intruder") == first


async def test_unsubscribe_charges_by_day_and_twice_is_not_active(platform: Platform) -> None:
    """R5: ordered 11-20, unsubscribed 11-25 (Shanghai): 6 of 30 days of 10.00 = 2.00."""
    _, sub = await platform.order("o-1", ordered_at="2026-11-20T02:00:00+00:00")
    path = f"/platform/v1/subscriptions/{sub['subscription_id']}/unsubscribe"
    status, body = await platform.call(
        "POST", path, {"order_id": "u-1", "at": "2026-11-25T03:00:00+00:00"}
    )
    assert status == 200
    assert body["status"] == "unsubscribed"
    assert body["final_charge"] == {"month": "2026-11", "days": 6, "amount": "2.00"}
    status, body = await platform.call("POST", path, {"order_id": "u-2"})
    assert status == 409
    assert body["error"]["code"] == "not_active"
    # R6: after the unsubscription a new order for the camera is accepted.
    status, _ = await platform.order("o-2", plan="event-7d")
    assert status == 201


async def test_charges_of_a_month_follow_the_one_formula(platform: Platform) -> None:
    """R3-R5 and R7: per account and month; renewed months in full."""
    await platform.home(cameras=("cam-1", "cam-2"))
    _, a = await platform.order("o-1", ordered_at="2026-11-20T02:00:00+00:00")
    status, b = await platform.order(
        "o-2", plan="event-30d", device="cam-2", ordered_at="2026-11-30T16:30:00+00:00"
    )
    assert status == 201
    assert b["first_charge"]["month"] == "2026-12", "16:30Z on Nov 30 is Dec 1 in Shanghai"
    await platform.call(
        "POST",
        f"/platform/v1/subscriptions/{a['subscription_id']}/unsubscribe",
        {"order_id": "u-1", "at": "2027-01-10T01:00:00+00:00"},
    )
    status, nov = await platform.call("GET", "/platform/v1/accounts/acc-1/charges?month=2026-11")
    assert status == 200
    assert nov["currency"] == "CNY"
    assert [(i["device_id"], i["days"], i["amount"]) for i in nov["items"]] == [
        ("cam-1", 11, "3.67")
    ]
    assert nov["total"] == "3.67"
    _, dec = await platform.call("GET", "/platform/v1/accounts/acc-1/charges?month=2026-12")
    assert sorted((i["device_id"], i["days"], i["amount"]) for i in dec["items"]) == [
        ("cam-1", 31, "10.00"),
        ("cam-2", 31, "15.00"),
    ]
    assert dec["total"] == "25.00"
    _, jan = await platform.call("GET", "/platform/v1/accounts/acc-1/charges?month=2027-01")
    # cam-1: 10 of 31 days of 10.00 = 3.2258 -> 3.23; cam-2 renewed in full.
    assert sorted((i["device_id"], i["amount"]) for i in jan["items"]) == [
        ("cam-1", "3.23"),
        ("cam-2", "15.00"),
    ]
    assert jan["total"] == "18.23"
    status, body = await platform.call("GET", "/platform/v1/accounts/acc-1/charges?month=2026-13")
    assert status == 400
    assert body["error"]["code"] == "invalid_query"


async def test_unsubscribed_records_are_purged_after_six_months(
    platform: Platform, clock: ManualClock
) -> None:
    """R5: the record is kept six months after unsubscription, then purged by a job."""
    _, sub = await platform.order("o-1")
    sid = sub["subscription_id"]
    await platform.call(
        "POST", f"/platform/v1/subscriptions/{sid}/unsubscribe", {"order_id": "u-1"}
    )
    await platform.call("POST", "/ops/v1/clock", {"advance_seconds": 180 * 86400})
    status, _ = await platform.call("GET", f"/platform/v1/subscriptions/{sid}")
    assert status == 200, "180 days after 2026-11-20 is before 2027-05-20"
    await platform.call("POST", "/ops/v1/clock", {"advance_seconds": 2 * 86400})
    status, body = await platform.call("GET", f"/platform/v1/subscriptions/{sid}")
    assert status == 404
    assert body["error"]["code"] == "not_found"


async def test_the_tariff_term_rolls_over_after_24_months(
    platform: Platform, clock: ManualClock
) -> None:
    """R4: the 24-month term is recorded and renewed; charges do not change."""
    _, sub = await platform.order("o-1")
    sid = sub["subscription_id"]
    _, body = await platform.call("GET", f"/platform/v1/subscriptions/{sid}")
    assert body["term"]["number"] == 1
    first_end = body["term"]["ends_on"]
    await platform.call("POST", "/ops/v1/clock", {"advance_seconds": 740 * 86400})
    _, body = await platform.call("GET", f"/platform/v1/subscriptions/{sid}")
    assert body["term"]["number"] == 2
    assert body["term"]["ends_on"] > first_end
    _, charges = await platform.call("GET", "/platform/v1/accounts/acc-1/charges?month=2028-11")
    assert charges["total"] == "10.00"


# -- completion reports (报竣) ---------------------------------------------------------


@dataclass
class FlakyPlatform:
    """A callback receiver that fails the first ``failures`` attempts of each order."""

    failures: int
    received: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append(body)
        attempts = sum(1 for r in self.received if r["order_id"] == body["order_id"])
        return web.Response(status=503 if attempts <= self.failures else 204)


async def test_callbacks_are_retried_until_acknowledged_across_a_restart(
    start_gateway: StartGateway, clock: ManualClock
) -> None:
    receiver = FlakyPlatform(failures=2)
    app = web.Application()
    app.router.add_post("/callback", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/callback"
    try:
        async with (
            start_gateway(clock=clock, mqtt=False, platform_callback_url=url) as gw,
            aiohttp.ClientSession() as http,
        ):
            p = Platform(gw, http)
            await p.home()
            status, _ = await p.order("o-1")
            assert status == 201
            await p.call("POST", "/ops/v1/clock", {"advance_seconds": 0})
            assert [r["order_id"] for r in receiver.received] == ["o-1"]
            await p.call("POST", "/ops/v1/clock", {"advance_seconds": 1})
            assert len(receiver.received) == 2, "second attempt after the first backoff"
        # Restarted: the owed report is still owed.
        async with (
            start_gateway(clock=clock, mqtt=False, platform_callback_url=url) as gw,
            aiohttp.ClientSession() as http,
        ):
            p = Platform(gw, http)
            await p.call("POST", "/ops/v1/clock", {"advance_seconds": 2})
            assert len(receiver.received) == 3
            assert receiver.received[-1]["status"] == "completed"
            assert receiver.received[-1]["action"] == "subscribe"
            for _ in range(3):
                await p.call("POST", "/ops/v1/clock", {"advance_seconds": 3600})
            assert len(receiver.received) == 3, "never sent again once acknowledged"
    finally:
        await runner.cleanup()
