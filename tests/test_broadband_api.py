"""Broadband stop, resume, teardown and emergency resume through the platform API (issue 5).

Acceptance 2 (devices converge through Mosquitto, an offline camera when it returns),
3 (duplicate and stale orders; teardown and R9), 4 (a batch of 1,000 orders across
1,000 accounts; figures in BENCHMARKS.md) and 5 (R15 with a manual clock). The rules
themselves are table-tested in ``test_broadband_rules.py``; here the wiring is: the
stored state, ``Account.broadband_state``, desired documents, idempotency, reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import aiomqtt
import pytest
from sqlmodel import col, func, select

from devices import broadband_store as store
from devices.broadband import (
    BroadbandState,
    EmergencyResume,
    FamilyCloudStatus,
    Order,
    Resume,
    Stop,
    StopType,
    Teardown,
    apply,
)
from devices.clock import ManualClock
from devices.models import Account, CallbackReport, DesiredState, Device
from gateway.mqtt.session import broker_address
from gateway.service import Gateway
from replay.models import FamilyCloudItem
from simulators.device import SimulatedDevice
from tests.conftest import T0, StartGateway, eventually, platform_headers
from tests.services import Broker
from tests.test_presence import running

H = platform_headers()
ARR, REQ, VIOL = StopType.ARREARS, StopType.REQUESTED, StopType.VIOLATION


def t(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


# --- the stored state (pure) --------------------------------------------------------------


def states(orders: list[Order]) -> BroadbandState:
    state = BroadbandState()
    for order in orders:
        state = apply(
            state, order, now=order.issued_at, star_level=3, has_active_subscription=False
        ).state
    return state


@pytest.mark.parametrize(
    "orders",
    [
        pytest.param([], id="initial"),
        pytest.param([Stop(stop_type=ARR, issued_at=t("2026-03-01T16:30:00Z"))], id="stopped"),
        pytest.param(
            [
                Stop(stop_type=ARR, issued_at=t("2026-03-01T16:30:00Z")),
                EmergencyResume(issued_at=t("2026-03-02T02:00:00Z")),
            ],
            id="emergency-running",
        ),
        pytest.param(
            [
                Stop(stop_type=VIOL, issued_at=t("2026-03-01T00:00:00Z")),
                Stop(stop_type=REQ, issued_at=t("2026-03-02T00:00:00Z")),
                Resume(stop_type=VIOL, issued_at=t("2026-03-03T00:00:00Z")),
                Teardown(issued_at=t("2026-03-04T00:00:00Z")),
            ],
            id="torn-down-with-history",
        ),
    ],
)
def test_a_state_survives_encoding(orders: list[Order]) -> None:
    state = states(orders)
    data = store.encode(state)
    assert store.decode(json.loads(json.dumps(data))) == state


def test_an_encoded_state_reads_as_written() -> None:
    """The stored shape, written out by hand (a format other versions must read)."""
    state = states(
        [
            Stop(stop_type=ARR, issued_at=t("2026-03-01T16:30:00+00:00")),
            EmergencyResume(issued_at=t("2026-03-02T02:00:00+00:00")),
        ]
    )
    assert store.encode(state) == {
        "stopped_since": {"arrears": "2026-03-01T16:30:00+00:00"},
        "torn_down": False,
        "emergency_until": "2026-03-09T02:00:00+00:00",
        "emergency_suspended": ["arrears"],
        "last_emergency_month": "2026-03",
        "last_issued": {
            "arrears": "2026-03-01T16:30:00+00:00",
            "emergency": "2026-03-02T02:00:00+00:00",
        },
        "inactive_since": None,
    }


@pytest.mark.parametrize(
    ("recorded", "status", "action"),
    [
        pytest.param("open", "open", None, id="R15-open-nothing"),
        pytest.param("open", "closed", "close", id="R15-3-months-close"),
        pytest.param("closed", "closed", None, id="R15-closed-already"),
        pytest.param("closed", "deleted", "delete", id="R15-6-months-delete"),
        pytest.param("open", "deleted", "delete", id="R15-job-late-deletes-at-once"),
        pytest.param("deleted", "deleted", None, id="R15-deleted-already"),
    ],
)
def test_family_cloud_action(recorded: str, status: FamilyCloudStatus, action: str | None) -> None:
    assert store.family_cloud_action(recorded, status) == action


# --- the API on SQLite and PostgreSQL ------------------------------------------------------


@dataclass
class Platform:
    gw: Gateway
    http: aiohttp.ClientSession

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        r = await self.http.request(method, f"{self.gw.url}{path}", json=body, headers=H)
        return r.status, await r.json()

    async def account(self, account_id: str, star: int = 3, devices: tuple[str, ...] = ()) -> None:
        status, _ = await self.call(
            "PUT",
            f"/platform/v1/accounts/{account_id}",
            {"owner_id": "owner-1", "star_level": star},
        )
        assert status == 201
        for device_id in devices:
            kind = "router" if device_id.startswith("rt") else "camera"
            status, _ = await self.call(
                "POST",
                f"/platform/v1/accounts/{account_id}/devices",
                {"device_id": device_id, "kind": kind},
            )
            assert status == 201

    async def order(
        self, action: str, order_id: str, account_id: str = "acc-1", **body: Any
    ) -> tuple[int, Any]:
        return await self.call(
            "POST",
            f"/platform/v1/broadband/{account_id}/{action}",
            {"order_id": order_id, **body},
        )

    async def view(self, account_id: str = "acc-1") -> Any:
        status, body = await self.call("GET", f"/platform/v1/broadband/{account_id}")
        assert status == 200
        return body

    async def advance(self, seconds: float) -> None:
        status, _ = await self.call("POST", "/ops/v1/clock", {"advance_seconds": seconds})
        assert status == 200

    async def reports(self) -> list[str]:
        async with self.gw.services.db.session() as session:
            rows = await session.exec(select(CallbackReport).order_by(col(CallbackReport.id)))
            return [r.order_id for r in rows.all()]


@pytest.fixture
async def platform(
    start_gateway: StartGateway, clock: ManualClock, database_url: str
) -> AsyncIterator[Platform]:
    """A gateway without MQTT, on SQLite and PostgreSQL, with acc-1: a camera and a router."""
    async with (
        start_gateway(clock=clock, mqtt=False, database_url=database_url) as gw,
        aiohttp.ClientSession() as http,
    ):
        p = Platform(gw, http)
        await p.account("acc-1", devices=("cam-1", "rt-1"))
        yield p


def versions(view: Any) -> dict[str, int]:
    return {d["device_id"]: d["desired_version"] for d in view["devices"]}


async def test_stop_and_resume_follow_the_stop_set_and_the_desired_state(
    platform: Platform,
) -> None:
    """R10: two stop types at once; active only when both are lifted. R8/R12 on devices."""
    status, view = await platform.order("stop", "o-1", stop_type="arrears")
    assert status == 200
    assert (view["state"], view["stops"], view["applied"]) == ("stopped", ["arrears"], True)
    assert "reason" not in view
    assert versions(view) == {"cam-1": 2, "rt-1": 2}, "bound at 1, suspended at 2"
    _, view = await platform.order("stop", "o-2", stop_type="violation")
    assert (view["stops"], view["applied"]) == (["arrears", "violation"], True)
    assert versions(view) == {"cam-1": 2, "rt-1": 2}, "still stopped: nothing to converge"
    _, view = await platform.order("resume", "o-3", stop_type="arrears")
    assert (view["state"], view["stops"]) == ("stopped", ["violation"])
    _, view = await platform.order("resume", "o-4", stop_type="violation")
    assert (view["state"], view["stops"], view["applied"]) == ("active", [], True)
    assert versions(view) == {"cam-1": 3, "rt-1": 3}
    async with platform.gw.services.db.session() as session:
        docs = {s.device_id: s.document for s in (await session.exec(select(DesiredState))).all()}
    assert docs == {
        "cam-1": {"service": {"suspended": False}, "recording": {"mode": "off"}},
        "rt-1": {"service": {"suspended": False}},
    }
    assert await platform.reports() == ["o-1", "o-2", "o-3", "o-4"]
    assert await platform.view() == view


async def test_account_broadband_state_gates_replay_orders_r8(platform: Platform) -> None:
    """Account.broadband_state, which R8 checks elsewhere, follows every order."""
    await platform.order("stop", "o-1", stop_type="requested")
    subscribe = {
        "account_id": "acc-1",
        "device_id": "cam-1",
        "plan": "event-7d",
        "orderer_id": "owner-1",
        "channel": "physical",
    }
    status, body = await platform.call(
        "POST", "/platform/v1/subscriptions", {"order_id": "s-1", **subscribe}
    )
    assert (status, body["error"]["code"]) == (409, "broadband_inactive")
    await platform.order("resume", "o-2", stop_type="requested")
    status, _ = await platform.call(
        "POST", "/platform/v1/subscriptions", {"order_id": "s-2", **subscribe}
    )
    assert status == 201


async def test_duplicate_and_stale_orders_change_nothing_and_say_so(platform: Platform) -> None:
    first = await platform.order(
        "stop", "o-1", stop_type="arrears", issued_at="2026-11-20T01:00:00Z"
    )
    assert first[0] == 200
    # The same order_id: the first answer, byte for byte; no second report.
    assert (
        await platform.order("stop", "o-1", stop_type="arrears", issued_at="2026-11-20T01:00:00Z")
        == first
    )
    # Another stop of a type in force: not applied, and why.
    status, view = await platform.order(
        "stop", "o-2", stop_type="arrears", issued_at="2026-11-20T01:30:00Z"
    )
    assert (status, view["applied"], view["reason"]) == (200, False, "already_stopped")
    # A resume issued before the last arrears order (01:30) arrives late: stale.
    status, view = await platform.order(
        "resume", "o-3", stop_type="arrears", issued_at="2026-11-20T01:15:00Z"
    )
    assert (status, view["applied"], view["reason"]) == (200, False, "stale")
    assert (view["state"], view["stops"]) == ("stopped", ["arrears"])
    # A resume of a type that is not stopped.
    _, view = await platform.order("resume", "o-4", stop_type="lost")
    assert (view["applied"], view["reason"]) == (False, "not_stopped")
    assert versions(view) == {"cam-1": 2, "rt-1": 2}, "no document moved"
    assert await platform.reports() == ["o-1"], "only applied orders are reported"
    # The same order_id for a different request is refused.
    status, body = await platform.order("stop", "o-1", stop_type="violation")
    assert (status, body["error"]["code"]) == (409, "order_id_reused")
    view = await platform.view()
    assert (view["order_id"], view["applied"], view["reason"]) == ("o-4", False, "not_stopped")


async def test_teardown_waits_for_unsubscription_then_refuses_everything_r9(
    platform: Platform,
) -> None:
    status, sub = await platform.call(
        "POST",
        "/platform/v1/subscriptions",
        {
            "order_id": "s-1",
            "account_id": "acc-1",
            "device_id": "cam-1",
            "plan": "continuous-7d",
            "orderer_id": "owner-1",
            "channel": "electronic",
        },
    )
    assert status == 201
    status, body = await platform.order("teardown", "o-1")
    assert status == 409
    assert (body["error"]["code"], body["error"]["rule"]) == ("active_subscriptions", "R9")
    assert (await platform.view())["state"] == "active"
    status, _ = await platform.call(
        "POST",
        f"/platform/v1/subscriptions/{sub['subscription_id']}/unsubscribe",
        {"order_id": "u-1"},
    )
    assert status == 200
    status, view = await platform.order("teardown", "o-2")
    assert (status, view["state"], view["applied"]) == (200, "torn_down", True)
    for action, order_id, extra in [
        ("stop", "o-3", {"stop_type": "requested"}),
        ("resume", "o-4", {"stop_type": "requested"}),
        ("emergency-resume", "o-5", {}),
        ("teardown", "o-6", {}),
    ]:
        status, body = await platform.order(action, order_id, **extra)
        assert (status, body["error"]["code"], body["error"]["rule"]) == (409, "torn_down", "R9")
    assert await platform.order("teardown", "o-2") == (200, view), "a repeat gets its answer"
    status, body = await platform.order("teardown", "o-1")
    assert (status, body["error"]["code"]) == (409, "active_subscriptions"), "its first answer"


async def test_emergency_resume_r11_refusals_grant_and_expiry(platform: Platform) -> None:
    await platform.account("acc-2", star=2)
    await platform.order("stop", "o-1", account_id="acc-2", stop_type="arrears")
    status, body = await platform.order("emergency-resume", "o-2", account_id="acc-2")
    assert (status, body["error"]["code"], body["error"]["rule"]) == (
        409,
        "emergency_not_allowed",
        "R11",
    )
    assert "star level 2" in body["error"]["message"]
    # acc-1 (star 3): arrears and violation in force: the stop types condition fails.
    await platform.order("stop", "o-3", stop_type="arrears")
    await platform.order("stop", "o-4", stop_type="violation")
    status, body = await platform.order("emergency-resume", "o-5")
    assert status == 409
    assert "only arrears stops" in body["error"]["message"]
    assert "violation" in body["error"]["message"]
    _, view = await platform.order("resume", "o-6", stop_type="violation")
    assert versions(view) == {"cam-1": 2, "rt-1": 2}
    status, view = await platform.order("emergency-resume", "o-7")
    assert (status, view["state"], view["stops"]) == (200, "active", [])
    until = t(view["emergency_until"])
    assert until == T0 + timedelta(days=7)
    assert versions(view) == {"cam-1": 3, "rt-1": 3}, "service restored on the devices"
    # 7 days later the Clock-driven job puts the arrears stop back in force.
    await platform.advance(7 * 86400 - 1)
    assert (await platform.view())["state"] == "active"
    await platform.advance(1)
    view = await platform.view()
    assert (view["state"], view["stops"]) == ("stopped", ["arrears"])
    assert "emergency_until" not in view
    assert versions(view) == {"cam-1": 4, "rt-1": 4}
    async with platform.gw.services.db.session() as session:
        account = await session.get(Account, "acc-1")
        assert account is not None
        assert account.broadband_state == "stopped"


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        pytest.param("acc-9/stop", {"stop_type": "arrears"}, 404, "not_found", id="unknown"),
        pytest.param("acc-1/stop", {"stop_type": "holiday"}, 400, "invalid_body", id="bad-type"),
        pytest.param("acc-1/resume", {}, 400, "invalid_body", id="resume-without-type"),
        pytest.param("acc-1/teardown", {"stop_type": "lost"}, 400, "invalid_body", id="extra"),
        pytest.param(
            "acc-1/stop",
            {"stop_type": "lost", "issued_at": "2026-11-20T10:00:00"},
            400,
            "invalid_body",
            id="naive-issued-at",
        ),
    ],
)
async def test_bad_orders(
    platform: Platform, path: str, body: dict[str, Any], status: int, code: str
) -> None:
    got, answer = await platform.call(
        "POST", f"/platform/v1/broadband/{path}", {"order_id": "o-x", **body}
    )
    assert (got, answer["error"]["code"]) == (status, code)


async def test_a_batch_answers_each_order_in_order(platform: Platform) -> None:
    await platform.account("acc-2")
    orders: list[Any] = [
        {"action": "stop", "account_id": "acc-1", "order_id": "b-1", "stop_type": "arrears"},
        {"action": "stop", "account_id": "acc-2", "order_id": "b-2", "stop_type": "holiday"},
        {"action": "stop", "account_id": "acc-9", "order_id": "b-3", "stop_type": "lost"},
        {"action": "resume", "account_id": "acc-1", "order_id": "b-4", "stop_type": "arrears"},
        "not an order",
        {"action": "stop", "account_id": "acc-2", "order_id": "b-1", "stop_type": "lost"},
        {"action": "stop", "account_id": "acc-1", "order_id": "b-1", "stop_type": "arrears"},
        {"action": "teardown", "account_id": "acc-2", "order_id": "b-5"},
    ]
    status, body = await platform.call("POST", "/platform/v1/broadband/batch", {"orders": orders})
    assert status == 200
    results = body["results"]
    assert [(r["index"], r["status"]) for r in results] == [
        (0, 200),
        (1, 400),
        (2, 404),
        (3, 200),
        (4, 400),
        (5, 409),
        (6, 200),
        (7, 200),
    ]
    assert results[0]["body"]["state"] == "stopped"
    assert results[3]["body"]["state"] == "active", "acc-1's orders in batch order"
    assert results[5]["body"]["error"]["code"] == "order_id_reused"
    assert results[6]["body"] == results[0]["body"], "b-1 repeated: its first answer"
    assert results[7]["body"]["state"] == "torn_down"
    assert (await platform.view("acc-1"))["state"] == "active"
    # An order sent alone after the batch is the same order: its first answer.
    status, view = await platform.order("stop", "b-1", stop_type="arrears")
    assert (status, view) == (200, results[0]["body"])
    status, body = await platform.call("POST", "/platform/v1/broadband/batch", {"orders": []})
    assert (status, body["error"]["code"]) == (400, "invalid_body")


# --- R15 with a manual clock ---------------------------------------------------------------


async def test_long_stops_close_then_delete_the_family_cloud_r15(platform: Platform) -> None:
    """Stopped at 2026-11-20 10:00 Shanghai: closed 2027-02-20 10:00, deleted 2027-05-20 10:00."""
    services = platform.gw.services
    await platform.account("acc-2")
    objects = ["family/acc-1/2026/11/01/a.ts", "family/acc-1/2026/11/02/b.ts"]
    kept = "family/acc-2/2026/11/01/c.ts"
    for key in [*objects, kept]:
        await services.store.put(key, b"clip")
    async with services.db.session() as session:
        for n, key in enumerate([*objects, kept]):
            account_id = key.split("/")[1]
            session.add(
                FamilyCloudItem(
                    account_id=account_id,
                    segment_id=f"seg-{n}",
                    device_id="cam-1",
                    object_key=key,
                    bytes=4,
                    saved_at=T0,
                )
            )
        await session.commit()

    async def status() -> tuple[str, bool]:
        async with services.db.session() as session:
            open_now = await store.family_cloud_open(session, "acc-1", services.clock.now())
        return (await platform.view())["family_cloud"], open_now

    async def keys(prefix: str) -> list[str]:
        return [info.key async for info in services.store.list(prefix)]

    async def items() -> list[str]:
        async with services.db.session() as session:
            rows = await session.exec(select(FamilyCloudItem.object_key))
            return sorted(rows.all())

    await platform.order("stop", "o-1", stop_type="requested")
    closes = datetime(2027, 2, 20, 2, 0, tzinfo=UTC)
    deleted = datetime(2027, 5, 20, 2, 0, tzinfo=UTC)
    await platform.advance((closes - T0).total_seconds() - 1)
    assert await status() == ("open", True)
    await platform.advance(1)
    assert await status() == ("closed", False)
    assert await keys("family/acc-1/") == objects, "closed, not yet deleted"
    await platform.advance((deleted - closes).total_seconds() - 1)
    assert await keys("family/acc-1/") == objects
    await platform.advance(1)
    assert await status() == ("deleted", False)
    assert await keys("family/acc-1/") == []
    assert await keys("family/acc-2/") == [kept]
    assert await items() == [kept]
    async with services.db.session() as session:
        record = await store.load_record(session, "acc-1")
        assert record is not None
        assert (record.family_cloud, record.family_cloud_changed_at) == ("deleted", deleted)
    # Resumed: the family cloud opens again (empty).
    await platform.order("resume", "o-2", stop_type="requested")
    assert await status() == ("open", True)


# --- through Mosquitto ---------------------------------------------------------------------


async def test_devices_converge_on_stop_and_resume_an_offline_camera_when_it_returns(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    """Acceptance 2: two cameras (one offline) and a router; stop, then resume."""
    async with (
        start_gateway(clock=clock, mqtt_url=broker.url) as gw,
        aiohttp.ClientSession() as http,
    ):
        p = Platform(gw, http)
        await p.account("acc-1", devices=("cam-a", "cam-b", "rt-a"))

        def device(device_id: str) -> SimulatedDevice:
            kind = "router" if device_id.startswith("rt") else "camera"
            return SimulatedDevice(
                device_id=device_id, kind=kind, mqtt_url=broker.url, telemetry_interval=None
            )

        cam_a, cam_b, router = device("cam-a"), device("cam-b"), device("rt-a")

        async def applied(devices: list[SimulatedDevice], version: int) -> bool:
            return all(d.applied_version == version for d in devices)

        async def converged(expected: dict[str, tuple[int, int]]) -> bool:
            view = await p.view()
            got = {
                d["device_id"]: (d["desired_version"], d["reported_version"])
                for d in view["devices"]
            }
            return got == expected

        async with running(cam_a), running(router):
            async with running(cam_b):
                await eventually(lambda: applied([cam_a, cam_b, router], 1))
            await cam_b.say_offline()  # cam-b leaves before the stop
            started = time.perf_counter()
            status, view = await p.order("stop", "o-1", stop_type="arrears")
            assert (status, view["state"]) == (200, "stopped")
            await eventually(lambda: applied([cam_a, router], 2), timeout=1.0)
            stop_applied = time.perf_counter() - started
            assert cam_a.desired["service"] == {"suspended": True}
            assert cam_a.desired["recording"] == {"mode": "off"}
            assert router.desired == {"version": 2, "service": {"suspended": True}}
            await eventually(lambda: converged({"cam-a": (2, 2), "cam-b": (2, 1), "rt-a": (2, 2)}))
            stop_reported = time.perf_counter() - started
            (cam_b_view,) = [d for d in (await p.view())["devices"] if d["device_id"] == "cam-b"]
            assert cam_b_view["converged"] is False
            async with running(cam_b):  # it returns: the retained version 2 awaits it
                await eventually(lambda: applied([cam_b], 2))
                await eventually(
                    lambda: converged({"cam-a": (2, 2), "cam-b": (2, 2), "rt-a": (2, 2)})
                )
                started = time.perf_counter()
                await p.order("resume", "o-2", stop_type="arrears")
                await eventually(lambda: applied([cam_a, cam_b, router], 3), timeout=1.0)
                resume_applied = time.perf_counter() - started
                assert cam_b.desired["service"] == {"suspended": False}
                await eventually(
                    lambda: converged({"cam-a": (3, 3), "cam-b": (3, 3), "rt-a": (3, 3)})
                )
        print(
            f"\nconvergence: stop applied by online devices {stop_applied * 1000:.0f} ms, "
            f"reported in the view {stop_reported * 1000:.0f} ms; "
            f"resume applied by all three {resume_applied * 1000:.0f} ms"
        )


@contextlib.asynccontextmanager
async def fleet(broker: Broker, prefix: str) -> AsyncIterator[dict[str, int]]:
    """One MQTT client playing every device whose id starts with ``prefix``: it applies each
    ``desired`` document and reports its version back (QoS 1), as a device does."""
    host, port, _, _ = broker_address(broker.url)
    applied: dict[str, int] = {}
    async with aiomqtt.Client(host, port, identifier=f"fleet-{prefix}") as client:
        await client.subscribe("kj/v1/dev/+/desired", qos=1)

        async def follow() -> None:
            async for message in client.messages:
                device_id = message.topic.value.split("/")[3]
                if not device_id.startswith(prefix):
                    continue  # retained documents of other tests' devices
                version = json.loads(bytes(message.payload))["version"]
                applied[device_id] = version
                await client.publish(
                    f"kj/v1/dev/{device_id}/reported", json.dumps({"version": version}), qos=1
                )

        task = asyncio.create_task(follow(), name=f"test[fleet-{prefix}]")
        try:
            yield applied
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


#: The batch runs on SQLite in the suite (the embedded default; the test is the costliest
#: here); KANJIA_BENCH_BATCH_POSTGRES=1 adds PostgreSQL, for BENCHMARKS.md.
BATCH_DATABASES = ["sqlite"] + (
    ["postgresql"] if os.environ.get("KANJIA_BENCH_BATCH_POSTGRES") else []
)


@pytest.mark.parametrize("database_url", BATCH_DATABASES, indirect=True)
async def test_a_batch_of_1000_orders_across_1000_accounts(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock, database_url: str
) -> None:
    """Acceptance 4: applied correctly, and every device converges (times printed, not
    asserted: ``pytest tests/test_broadband_api.py -k batch_of_1000 -s``)."""
    prefix = f"b{secrets.token_hex(3)}-"
    n = 1000
    async with (
        start_gateway(clock=clock, mqtt_url=broker.url, database_url=database_url) as gw,
        aiohttp.ClientSession() as http,
        fleet(broker, prefix) as applied,
    ):
        now = clock.now()
        async with gw.services.db.session() as session:
            for i in range(n):
                account_id = f"{prefix}acc-{i:04d}"
                session.add(
                    Account(
                        account_id=account_id,
                        owner_id="owner",
                        star_level=3,
                        created_at=now,
                        updated_at=now,
                    )
                )
                session.add(
                    Device(
                        device_id=f"{prefix}cam-{i:04d}",
                        account_id=account_id,
                        kind="camera",
                        bound_at=now,
                    )
                )
            await session.commit()
        orders = [
            {
                "action": "stop",
                "account_id": f"{prefix}acc-{i:04d}",
                "order_id": f"{prefix}o-{i:04d}",
                "stop_type": "arrears" if i % 2 else "requested",
            }
            for i in range(n)
        ]
        started = time.perf_counter()
        r = await http.post(
            f"{gw.url}/platform/v1/broadband/batch", json={"orders": orders}, headers=H
        )
        answered = time.perf_counter() - started
        assert r.status == 200
        results = (await r.json())["results"]
        assert [r["index"] for r in results] == list(range(n))
        assert all(r["status"] == 200 and r["body"]["applied"] for r in results)
        assert [r["body"]["stops"] for r in results] == [
            ["arrears" if i % 2 else "requested"] for i in range(n)
        ]

        async def all_reported() -> bool:
            async with gw.services.db.session() as session:
                behind = await session.exec(
                    select(func.count())
                    .select_from(DesiredState)
                    .where(col(DesiredState.reported_version) < col(DesiredState.version))
                )
                return behind.one() == 0

        await eventually(all_reported, timeout=60, interval=0.1)
        converged = time.perf_counter() - started
        assert len(applied) == n
        assert set(applied.values()) == {1}
        async with gw.services.db.session() as session:
            stopped = await session.exec(
                select(func.count())
                .select_from(Account)
                .where(col(Account.account_id).startswith(prefix))
                .where(col(Account.broadband_state) == "stopped")
            )
            assert stopped.one() == n
            docs = (await session.exec(select(DesiredState.document))).all()
            assert all(d["service"] == {"suspended": True} for d in docs)
        print(
            f"\nbatch of {n} ({gw.services.db.dialect}): answered in {answered:.2f} s, "
            f"every device reported the new version {converged:.2f} s after the request"
        )
