"""Shared pieces of the benchmarks: settings, throwaway databases, figures and ratios."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from devices.models import Account, Device, DeviceKind
from gateway.config import Settings, load_settings
from gateway.desired import publish_pending, refresh_desired
from gateway.service import Gateway
from replay import subscriptions
from simulators.fleet import HouseholdSpec
from storage.db import async_url

PG_ENV = "KANJIA_TEST_POSTGRES_URL"
PLATFORM_TOKEN = "bench-platform-token"  # noqa: S105 - of a throwaway local service


def bench_settings(tmp: Path, **overrides: Any) -> Settings:
    """Embedded-style settings in ``tmp`` (SQLite, files); the environment is not read."""
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp / 'kanjia.db'}",
        "object_store_url": (tmp / "objects").as_uri(),
        "http_port": 0,
        "platform_token": PLATFORM_TOKEN,
        "mqtt_client_id": f"kanjia-bench-{secrets.token_hex(4)}",
        "log_level": "WARNING",
    }
    values.update(overrides)
    return load_settings(environ={}, overrides=values)


@asynccontextmanager
async def throwaway_postgres() -> AsyncIterator[str]:
    """A new database on the server named by ``KANJIA_TEST_POSTGRES_URL``, dropped after."""
    admin_url = os.environ.get(PG_ENV)
    if not admin_url:
        raise SystemExit(
            f"{PG_ENV} is not set (e.g. postgresql://postgres@127.0.0.1:5432/postgres)"
        )
    name = f"kanjia_bench_{secrets.token_hex(4)}"
    admin = create_async_engine(async_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as conn:
                await conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.dispose()


@asynccontextmanager
async def database(kind: str, tmp: Path) -> AsyncIterator[str]:
    """The URL of an empty database: ``sqlite`` (a file in ``tmp``) or ``postgresql``."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / f'bench-{secrets.token_hex(3)}.db'}"
    elif kind == "postgresql":
        async with throwaway_postgres() as url:
            yield url
    else:
        raise ValueError(f"database must be sqlite or postgresql, not {kind!r}")


async def provision_fleet(gateway: Gateway, homes: Sequence[HouseholdSpec]) -> None:
    """Accounts, devices, plans and first desired documents straight into the database,
    then published once. (Through the platform API, orders interleave with the publish
    job; a benchmark of the steady state does not need that, and it is slow.)"""
    services = gateway.services
    now = services.clock.now()
    async with services.db.session() as session:
        session.add_all(
            Account(
                account_id=h.account_id,
                owner_id=h.owner_id,
                star_level=h.star_level,
                created_at=now,
                updated_at=now,
            )
            for h in homes
        )
        await session.commit()
        session.add_all(
            Device(
                device_id=d.device_id,
                account_id=h.account_id,
                kind=DeviceKind(d.kind),
                name=d.role,
                bound_at=now,
            )
            for h in homes
            for d in h.devices
        )
        await session.commit()
        for home in homes:
            for camera in home.cameras:
                if camera.plan is not None:
                    await subscriptions.subscribe(
                        session,
                        catalog=services.catalog,
                        order_id=f"bench-{camera.device_id}",
                        account_id=home.account_id,
                        device_id=camera.device_id,
                        plan_id=camera.plan,
                        orderer_id=home.owner_id,
                        channel="electronic",
                        ordered_at=now,
                    )
        await session.commit()
        ids = [d.device_id for h in homes for d in h.devices]
        for start in range(0, len(ids), 500):
            await refresh_desired(services, session, ids[start : start + 500])
        await session.commit()
    await publish_pending(services)


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """``with stopwatch() as took: ...``; then ``took[0]`` holds the seconds."""
    took: list[float] = []
    began = time.perf_counter()
    try:
        yield took
    finally:
        took.append(time.perf_counter() - began)


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}" if baseline > 0 else "n/a"


def heading(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def row(label: str, value: str) -> None:
    print(f"  {label:<44} {value}", flush=True)
