"""Broadband batches in bulk (issue 16 item 1): chunks of orders in one transaction each,
every order still answered as if sent alone after those before it (R8–R12).

One batch mixes new, duplicate (same ``order_id``, inside a chunk and across chunks, and
one answered before the batch), reused (same ``order_id``, another request), stale (older
``issued_at``), no-op, unknown-account and refused orders (R9, R11), several of them for
one account, across chunk boundaries (chunks of 5 here). The same orders are then sent one
by one to a second, fresh service; each order's answer, the stored state, the desired
documents and the completion reports must be the same on both.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from sqlmodel import col, select

from devices.broadband_periods import PeriodRow
from devices.clock import ManualClock
from devices.desired import ReportedVersions
from devices.models import CallbackReport, DesiredState, PlatformOrder
from gateway import broadband_batch
from gateway.coalesce import Coalescer
from gateway.service import Gateway
from tests.conftest import T0, StartGateway, platform_headers

H = platform_headers()
ACCOUNTS = ("acc-1", "acc-2", "acc-3", "acc-4", "acc-9")


def at(minutes: int) -> str:
    """``issued_at`` ``minutes`` after three hours before the service clock's start."""
    return (T0 - timedelta(hours=3) + timedelta(minutes=minutes)).isoformat()


def o(action: str, order_id: str, account: str, stop: str | None = None, **extra: Any) -> Any:
    order: dict[str, Any] = {"action": action, "account_id": account, "order_id": order_id}
    if stop is not None:
        order["stop_type"] = stop
    return {**order, **extra}


#: The batch, in chunks of 5 (the boundaries are the blank lines).
ORDERS: list[Any] = [
    o("stop", "b-0", "acc-1", "arrears", issued_at=at(60)),  # new: applied
    o("stop", "b-1", "acc-2", "requested"),  # new: applied
    o("stop", "b-2", "acc-9", "lost"),  # unknown account: 404, recorded
    o("stop", "b-3", "acc-1", "violation", issued_at=at(70)),  # R10: two stops in force
    o("resume", "b-4", "acc-1", "arrears", issued_at=at(30)),  # stale (arrears at 60)
    #
    o("stop", "b-0", "acc-1", "arrears", issued_at=at(60)),  # duplicate across a chunk
    o("stop", "b-0", "acc-2", "lost"),  # the same order_id, another request: reused
    o("emergency-resume", "b-7", "acc-2"),  # R11 refused: star level 2, requested stop
    o("teardown", "b-8", "acc-3"),  # R9 refused: an active product
    o("resume", "b-9", "acc-1", "violation", issued_at=at(80)),  # applied, still stopped
    #
    o("emergency-resume", "b-10", "acc-1", issued_at=at(90)),  # R11 granted: active
    o("stop", "b-11", "acc-1", "arrears", issued_at=at(100)),  # suspended: already_stopped
    o("resume", "b-12", "acc-2", "requested"),  # applied: active again
    o("teardown", "b-13", "acc-2"),  # R9: torn down
    o("stop", "b-14", "acc-2", "requested"),  # R9 refused: torn down
    #
    o("stop", "b-2", "acc-9", "lost"),  # the 404 replayed
    o("resume", "b-16", "acc-1", "lost"),  # not_stopped
    o("teardown", "b-13", "acc-2"),  # the teardown replayed
    o("stop", "b-18", "acc-4", "keep_number"),  # new, an account without devices
    o("stop", "b-18", "acc-4", "keep_number"),  # duplicate inside a chunk
    #
    o("stop", "pre-1", "acc-3", "lost"),  # answered before the batch: replayed
    o("stop", "pre-1", "acc-3", "arrears"),  # and reused
    o("resume", "b-22", "acc-3", "lost", issued_at=at(-120)),  # stale after pre-1 (now)
    o("stop", "b-23", "acc-1", "violation", issued_at=at(75)),  # stale (violation at 80)
    o("resume", "b-24", "acc-1", "arrears", issued_at=at(110)),  # lifts the suspended stop
]


#: Single orders sent together: one per account (whose answers cannot depend on which
#: arrives first), orders for unknown accounts, and the first order twice.
TOGETHER: list[Any] = [
    o("stop", "c-1", "acc-1", "arrears"),
    o("stop", "c-2", "acc-2", "lost"),
    o("stop", "c-3", "acc-3", "requested"),
    o("stop", "c-4", "acc-4", "violation"),
    *[o("stop", f"c-{n}", f"acc-x{n}", "lost") for n in range(5, 17)],
    o("stop", "c-1", "acc-1", "arrears"),
]


def database_url_alone(database_url: str) -> str:
    """A second, fresh database beside ``database_url``'s: a SQLite file next to it (the
    reference runs on SQLite whatever the batch ran on)."""
    if database_url.startswith("sqlite:///"):
        return database_url.replace("kanjia.db", "alone.db")
    return f"sqlite:///{tempfile.mkdtemp(prefix='kanjia-alone-')}/kanjia.db"


@asynccontextmanager
async def service(
    start_gateway: StartGateway, clock: ManualClock, database_url: str
) -> AsyncIterator[tuple[Gateway, aiohttp.ClientSession]]:
    """A fresh service with acc-1 (camera, router), acc-2 (star 2, camera), acc-3 (a camera
    with an active product) and acc-4 (no devices); ``pre-1`` answered before the batch."""
    async with (
        start_gateway(clock=clock, mqtt=False, database_url=database_url) as gw,
        aiohttp.ClientSession(base_url=gw.url, headers=H) as http,
    ):
        for account, star, devices in [
            ("acc-1", 3, [("cam-1", "camera"), ("rt-1", "router")]),
            ("acc-2", 2, [("cam-2", "camera")]),
            ("acc-3", 5, [("cam-3", "camera")]),
            ("acc-4", 3, []),
        ]:
            r = await http.put(
                f"/platform/v1/accounts/{account}", json={"owner_id": "o", "star_level": star}
            )
            assert r.status == 201
            for device_id, kind in devices:
                r = await http.post(
                    f"/platform/v1/accounts/{account}/devices",
                    json={"device_id": device_id, "kind": kind},
                )
                assert r.status == 201
        r = await http.post(
            "/platform/v1/subscriptions",
            json={
                "order_id": "s-1",
                "account_id": "acc-3",
                "device_id": "cam-3",
                "plan": "event-7d",
                "orderer_id": "o",
                "channel": "electronic",
            },
        )
        assert r.status == 201
        r = await http.post(
            "/platform/v1/broadband/acc-3/stop", json={"order_id": "pre-1", "stop_type": "lost"}
        )
        assert r.status == 200
        yield gw, http


async def alone(http: aiohttp.ClientSession, order: dict[str, Any]) -> tuple[int, Any]:
    body = {k: v for k, v in order.items() if k not in ("action", "account_id")}
    r = await http.post(
        f"/platform/v1/broadband/{order['account_id']}/{order['action']}", json=body
    )
    return r.status, await r.json()


async def outcome(gw: Gateway, http: aiohttp.ClientSession) -> dict[str, Any]:
    """What the service ends with: views, documents, reports and idempotency records."""
    views = {}
    for account in ACCOUNTS:
        r = await http.get(f"/platform/v1/broadband/{account}")
        views[account] = (r.status, await r.json())
    async with gw.services.db.session() as session:
        docs = (await session.exec(select(DesiredState))).all()
        reports = (
            await session.exec(select(CallbackReport).order_by(col(CallbackReport.id)))
        ).all()
        orders = (await session.exec(select(PlatformOrder))).all()
        stops = (await session.exec(select(PeriodRow).order_by(col(PeriodRow.period_id)))).all()
    # The subscription's (s-1) id is random: its records differ by it alone.
    return {
        "views": views,
        "documents": {d.device_id: (d.version, d.document) for d in docs},
        "reports": [(r.order_id, r.payload) for r in reports if r.order_id != "s-1"],
        "orders": {
            p.order_id: (p.status_code, p.response, p.account_id, p.target)
            for p in orders
            if p.order_id != "s-1"
        },
        # The history of stops (the boundary rule's, issue 17, and the timeline's gaps,
        # issue 15) is kept by a batch as by single orders.
        "inactive": [(p.account_id, p.state, p.since, p.until) for p in stops],
    }


async def test_a_batch_answers_each_order_as_sent_alone_in_order(
    start_gateway: StartGateway,
    database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(broadband_batch, "CHUNK_SIZE", 5)
    async with service(start_gateway, ManualClock(T0), database_url) as (gw, http):
        r = await http.post("/platform/v1/broadband/batch", json={"orders": ORDERS})
        assert r.status == 200
        results = (await r.json())["results"]
        batched = [(x["status"], x["body"]) for x in results]
        assert [(x["index"], x["order_id"]) for x in results] == [
            (i, order["order_id"]) for i, order in enumerate(ORDERS)
        ]
        after_batch = await outcome(gw, http)
    # The reference: the same orders one by one, on a fresh service (SQLite).
    reference_db = f"sqlite:///{tmp_path_factory.mktemp('alone') / 'kanjia.db'}"
    async with service(start_gateway, ManualClock(T0), reference_db) as (gw, http):
        one_by_one = [await alone(http, order) for order in ORDERS]
        after_alone = await outcome(gw, http)
    for index, (got, expected) in enumerate(zip(batched, one_by_one, strict=True)):
        assert got == expected, f"order {index} ({ORDERS[index]['order_id']})"
    assert after_batch == after_alone
    # And what those answers are (R8–R11), so that both cannot be wrong alike.
    statuses = [status for status, _ in batched]
    assert statuses == [
        *[200, 200, 404, 200, 200],
        *[200, 409, 409, 409, 200],
        *[200, 200, 200, 200, 409],
        *[404, 200, 200, 200, 200],
        *[200, 409, 200, 200, 200],
    ]
    reasons = [body.get("reason") or body.get("error", {}).get("code") for _, body in batched]
    assert reasons == [
        *[None, None, "not_found", None, "stale"],
        *[None, "order_id_reused", "emergency_not_allowed", "active_subscriptions", None],
        *[None, "already_stopped", None, None, "torn_down"],
        *["not_found", "not_stopped", None, None, None],
        *[None, "order_id_reused", "stale", "stale", None],
    ]
    assert batched[5] == batched[0], "b-0 repeated in the next chunk"
    assert batched[17] == batched[13], "b-13 repeated in the next chunk"
    assert batched[19] == batched[18], "b-18 repeated in its own chunk"
    views = after_batch["views"]
    assert (views["acc-1"][1]["state"], views["acc-1"][1]["stops"]) == ("active", [])
    assert views["acc-2"][1]["state"] == "torn_down"
    assert views["acc-9"][0] == 404
    documents = after_batch["documents"]
    # acc-1: bound 1, stopped 2, emergency 3; the last resume changed nothing on the devices.
    assert documents["cam-1"] == (
        3,
        {"service": {"suspended": False}, "recording": {"mode": "off"}},
    )
    assert documents["rt-1"] == (3, {"service": {"suspended": False}})
    assert documents["cam-2"][1]["service"] == {"suspended": True}
    assert [order_id for order_id, _ in after_batch["reports"]] == [
        "pre-1",
        "b-0",
        "b-1",
        "b-3",
        "b-9",
        "b-10",
        "b-12",
        "b-13",
        "b-18",
        "b-24",
    ]


async def test_reported_versions_move_forward_to_versions_the_service_made(
    start_gateway: StartGateway, database_url: str
) -> None:
    """The reports that close a stop's loop (one executemany): a device's reported version
    moves only forward, and never past the version the service made."""
    async with service(start_gateway, ManualClock(T0), database_url) as (gw, _):
        services = gw.services
        later = T0 + timedelta(seconds=5)
        reported = ReportedVersions()
        reported.note("cam-1", 1, later)  # bound at version 1: applied
        reported.note("rt-1", 7, later)  # a version never made: ignored
        reported.note("cam-3", 1, later)  # behind (3: its product, then pre-1): kept
        async with services.db.writing() as session:
            await reported.flush(session)
        reported.note("cam-3", 2, later)
        reported.note("cam-1", 0, later)  # older than what it reported: ignored
        async with services.db.writing() as session:
            await reported.flush(session)
        async with services.db.session() as session:
            rows = (await session.exec(select(DesiredState))).all()
        got = {r.device_id: (r.version, r.reported_version, r.reported_at) for r in rows}
        assert got == {
            "cam-1": (1, 1, later),
            "rt-1": (1, 0, None),
            "cam-2": (1, 0, None),
            "cam-3": (3, 2, later),
        }


async def test_single_orders_sent_together_share_chunks_and_keep_their_answers(
    start_gateway: StartGateway, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Single orders under load go through the batch path, coalesced: each gets the answer
    it gets sent alone, one after the other."""
    sizes: list[int] = []
    run_batch = broadband_batch.run_batch

    async def spy(services: Any, orders: Any) -> Any:
        sizes.append(len(orders))
        return await run_batch(services, orders)

    monkeypatch.setattr(broadband_batch, "run_batch", spy)
    orders = TOGETHER
    async with service(start_gateway, ManualClock(T0), database_url) as (gw, http):
        sizes.clear()  # pre-1, sent alone while the service was made
        together = await asyncio.gather(*(alone(http, order) for order in orders))
        after = await outcome(gw, http)
    assert max(sizes) > 1, f"never coalesced: {sizes}"
    assert sum(sizes) == len(orders)
    monkeypatch.setattr(broadband_batch, "run_batch", run_batch)
    async with service(start_gateway, ManualClock(T0), database_url_alone(database_url)) as (
        gw,
        http,
    ):
        one_by_one = [await alone(http, order) for order in orders]
        assert await outcome(gw, http) == after
    assert list(together) == one_by_one


async def test_a_coalescer_hands_each_caller_its_own_result() -> None:
    seen: list[list[int]] = []

    async def double(items: Sequence[int]) -> list[int]:
        seen.append(list(items))
        await asyncio.sleep(0)
        if 13 in items:
            raise ValueError("unlucky")
        return [2 * item for item in items]

    coalescer: Coalescer[int, int] = Coalescer(limit=4)
    results = await asyncio.gather(
        *(coalescer.submit(n, double) for n in range(10)), return_exceptions=True
    )
    assert results == [2 * n for n in range(10)]
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]], "arrival order, at most 4 a batch"
    failed = await asyncio.gather(
        *(coalescer.submit(n, double) for n in (12, 13, 14)), return_exceptions=True
    )
    assert [type(r) for r in failed] == [ValueError] * 3, "a failed batch fails its callers"
    assert await coalescer.submit(1, double) == 2, "and the next batch runs"
