"""Benchmark: the app's replay queries over a month of continuous video (issue 7, #4).

One camera holds 30 days of 10-s continuous segments (259,200 rows) among ``--cameras``
cameras (the others hold ``--other-segments`` rows each), and a detection every ten
minutes. Through the real HTTP API it measures the timeline of one day (recorded ranges
and 144 events, each with its segment) and the HLS playlist of one hour, p50/p99 over
``--runs`` requests each, on SQLite and on PostgreSQL (``KANJIA_TEST_POSTGRES_URL``: a
throwaway database is created and dropped). The baseline, measured in the same run, is
a bare SQL read of the asked range's segment rows (no HTTP, no auth, no merging, no URL
signing): what the playlist reads, and what the timeline read before it kept recorded
ranges; the ratio says what the service costs against it.

Run: ``.venv/bin/python -m bench.replay_queries [--db sqlite|postgresql|both]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import Table, insert, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

from devices.clock import ManualClock
from devices.models import Account, AppToken, Device
from gateway.config import load_settings
from gateway.lifecycle import freeze_heap
from gateway.service import Gateway
from replay import event_index, index_store
from replay.index_store import LONGEST
from replay.models import Subscription
from storage.db import async_url

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
DAYS = 30
SEGMENT = timedelta(seconds=10)
TARGET = "cam-0000"
EVENT_EVERY = timedelta(minutes=10)
TOKEN = "kja_" + secrets.token_urlsafe(12)  # an app token, fresh per run


def table(model: type[SQLModel]) -> Table:
    return SQLModel.metadata.tables[str(model.__tablename__)]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@asynccontextmanager
async def throwaway_postgres(admin_url: str) -> AsyncIterator[str]:
    from sqlalchemy.engine import make_url

    name = f"kanjia_bench_{secrets.token_hex(4)}"
    admin = create_async_engine(async_url(admin_url), isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.dispose()


async def seed(gw: Gateway, *, cameras: int, other_segments: int) -> int:
    """Bulk-insert the fleet and its index; returns the number of segment rows."""
    import hashlib

    started = NOW - timedelta(days=DAYS + 1)
    sha = "0" * 64
    db = gw.services.db
    async with db.session() as session:
        conn = await session.connection()
        await conn.execute(
            insert(table(Account)),
            [
                {
                    "account_id": "acc",
                    "owner_id": "o",
                    "star_level": 3,
                    "name": None,
                    "broadband_state": "active",
                    "created_at": started,
                    "updated_at": started,
                }
            ],
        )
        await conn.execute(
            insert(table(AppToken)),
            [
                {
                    "token_hash": hashlib.sha256(TOKEN.encode()).hexdigest(),
                    "account_id": "acc",
                    "user_id": "u",
                    "created_at": started,
                }
            ],
        )
        devices = [f"cam-{i:04d}" for i in range(cameras)]
        await conn.execute(
            insert(table(Device)),
            [
                {
                    "device_id": d,
                    "account_id": "acc",
                    "kind": "camera",
                    "name": None,
                    "online": True,
                    "bound_at": started,
                }
                for d in devices
            ],
        )
        await conn.execute(
            insert(table(Subscription)),
            [
                {
                    "subscription_id": f"sub-{d}",
                    "order_id": f"o-{d}",
                    "account_id": "acc",
                    "device_id": d,
                    "plan_id": "continuous-30d",
                    "family": "continuous",
                    "retention_days": 30,
                    "monthly_fee": "30.00",
                    "orderer_id": "o",
                    "channel": "electronic",
                    "status": "active",
                    "started_at": started,
                    "start_date": started.date(),
                    "term_number": 1,
                    "term_end": (started + timedelta(days=730)).date(),
                }
                for d in devices
            ],
        )
        rows = 0
        for device, count in [(TARGET, DAYS * 8640)] + [(d, other_segments) for d in devices[1:]]:
            first = NOW - count * SEGMENT
            batch = []
            for i in range(count):
                start = first + i * SEGMENT
                sid = f"{device}-{i}"
                batch.append(
                    {
                        "segment_id": sid,
                        "device_id": device,
                        "account_id": "acc",
                        "subscription_id": f"sub-{device}",
                        "kind": "continuous",
                        "start": start,
                        "end": start + SEGMENT,
                        "bytes": 66_000,
                        "sha256": sha,
                        "event_id": None,
                        "object_key": f"rec/30d/{device}/{sid}.ts",
                        "retention_class": "30d",
                        "expires_at": start + SEGMENT + timedelta(days=30),
                        "indexed_at": start,
                    }
                )
                if len(batch) == 20_000:
                    await index_store.add_segments(session, batch)  # as indexing does
                    rows += len(batch)
                    batch = []
            if batch:
                await index_store.add_segments(session, batch)
                rows += len(batch)
        # A busy camera: a detection every EVENT_EVERY, each shown on the timeline.
        events = int(DAYS * timedelta(days=1) / EVENT_EVERY)
        await event_index.add_events(
            session,
            [
                {
                    "event_id": f"ev-{i}",
                    "device_id": TARGET,
                    "type": "person",
                    "at": NOW - (i + 0.5) * EVENT_EVERY,
                    "score": 0.9,
                }
                for i in range(events)
            ],
        )
        await session.commit()
    if db.dialect == "postgresql":
        # Committed: statistics gathered in a transaction that rolls back are lost too.
        async with db.engine.begin() as conn:
            await conn.execute(text("ANALYZE"))
    return rows


async def timed_get(http: aiohttp.ClientSession, url: str, params: dict[str, str]) -> float:
    started = time.perf_counter()
    async with http.get(
        url, params=params, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status}")
    return (time.perf_counter() - started) * 1000


async def timed_sql(gw: Gateway, start: datetime, end: datetime) -> float:
    started = time.perf_counter()
    async with gw.services.db.engine.connect() as conn:
        rows = await conn.execute(
            text(
                'SELECT segment_id, start, "end", event_id, object_key FROM segments '
                'WHERE device_id = :d AND start > :lo AND start < :e AND "end" > :b '
                "AND subscription_id = :s AND expires_at > :now ORDER BY start"
            ),
            {
                "d": TARGET,
                "s": f"sub-{TARGET}",
                "b": start.replace(tzinfo=None),
                "lo": (start - LONGEST).replace(tzinfo=None),
                "e": end.replace(tzinfo=None),
                "now": NOW.replace(tzinfo=None),
            },
        )
        rows.all()
    return (time.perf_counter() - started) * 1000


async def run_one(database_url: str, *, cameras: int, other: int, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            environ={},
            overrides={
                "database_url": database_url,
                "object_store_url": Path(tmp).as_uri(),
                "http_port": 0,
                "platform_token": "bench",
            },
        )
        async with Gateway(settings=settings, clock=ManualClock(NOW), mqtt=False) as gw:
            t0 = time.perf_counter()
            rows = await seed(gw, cameras=cameras, other_segments=other)
            freeze_heap()  # as kanjia serve does
            seeded = time.perf_counter() - t0
            day = (NOW - timedelta(days=1), NOW)
            hour = (NOW - timedelta(hours=2), NOW - timedelta(hours=1))
            result: dict[str, Any] = {
                "dialect": gw.services.db.dialect,
                "rows": rows,
                "seed_s": round(seeded, 1),
            }
            async with aiohttp.ClientSession() as http:
                for name, path, (start, end) in (
                    ("timeline_day", f"/app/v1/devices/{TARGET}/timeline", day),
                    ("playlist_hour", f"/app/v1/devices/{TARGET}/playlist.m3u8", hour),
                ):
                    params = {"start": start.isoformat(), "end": end.isoformat()}
                    url = gw.url + path
                    for _ in range(3):  # warm up
                        await timed_get(http, url, params)
                    api = [await timed_get(http, url, params) for _ in range(runs)]
                    sql = [await timed_sql(gw, start, end) for _ in range(runs)]
                    result[name] = {
                        "p50_ms": round(statistics.median(api), 2),
                        "p99_ms": round(_percentile(api, 0.99), 2),
                        "baseline_sql_p50_ms": round(statistics.median(sql), 2),
                        "ratio_to_sql": round(statistics.median(api) / statistics.median(sql), 1),
                    }
            return result


async def amain(args: argparse.Namespace) -> None:
    targets = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    for target in targets:
        if target == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                url = f"sqlite:///{Path(tmp) / 'bench.db'}"
                print(
                    await run_one(
                        url, cameras=args.cameras, other=args.other_segments, runs=args.runs
                    ),
                    flush=True,
                )
        else:
            admin = os.environ.get(
                "KANJIA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
            )
            async with throwaway_postgres(admin) as url:
                print(
                    await run_one(
                        url, cameras=args.cameras, other=args.other_segments, runs=args.runs
                    ),
                    flush=True,
                )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--cameras", type=int, default=1000)
    parser.add_argument("--other-segments", type=int, default=100)
    parser.add_argument("--runs", type=int, default=200)
    asyncio.run(amain(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
