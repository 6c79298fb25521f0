"""Shared pieces of the benchmarks: settings, throwaway databases, figures and ratios."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from devices.credentials import DeviceCredential, hash_password, new_password
from devices.models import Account, Device, DeviceKind
from gateway.config import Settings, load_settings
from gateway.credentials import credential_key
from gateway.desired import publish_pending, refresh_desired
from gateway.mqtt.dynsec import DEVICE_ROLE, DynsecAdmin, device_acls, device_role, new_client
from gateway.service import Gateway
from replay import subscriptions
from simulators.fleet import HouseholdSpec
from storage.db import async_url
from tests.services import DYNSEC_ADMIN, Broker, DynsecBroker, dynsec_mosquitto, mosquitto

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


#: ``--auth`` of the benchmarks that start a broker: anonymous, or per-device credentials on
#: Mosquitto's dynamic security (``KANJIA_MQTT_AUTH=mosquitto-dynsec``).
AUTH_CHOICES = ("none", "mosquitto-dynsec")


def private_broker(auth: str, tmp: Path) -> AbstractContextManager[Broker | DynsecBroker]:
    """A private Mosquitto for ``--auth``: anonymous, or with dynamic security (its ``url``
    then carries the plugin's admin, as ``KANJIA_MQTT_URL`` does)."""
    if auth not in AUTH_CHOICES:
        raise ValueError(f"auth must be one of {', '.join(AUTH_CHOICES)}, not {auth!r}")
    return dynsec_mosquitto(tmp) if auth == "mosquitto-dynsec" else mosquitto(tmp)


def admin_login(broker: Broker | DynsecBroker) -> tuple[str, str] | None:
    """Who may read every device's messages on ``broker`` (a baseline subscriber): the
    dynamic security plugin's admin, or anyone on an anonymous broker (``None``)."""
    return (DYNSEC_ADMIN, broker.admin_password) if isinstance(broker, DynsecBroker) else None


async def credential_devices(gateway: Gateway, device_ids: Sequence[str]) -> dict[str, str]:
    """Credentials for bound devices as ``POST /platform/v1/devices/{id}/credentials`` makes
    them (a keyed hash in the database; with dynamic security a broker client and a role per
    device), in bulk: the rows in one commit, the broker's clients in control messages of
    100 commands (``bench/dynsec_issue.py``: one by one costs a file rewrite each). Before
    the gateway restarts, as its re-sync would remove broker clients the database lacks.
    The passwords, by device id."""
    services = gateway.services
    key, now = credential_key(services.settings), services.clock.now()
    passwords = {device_id: new_password() for device_id in device_ids}
    async with services.db.session() as session:
        session.add_all(
            DeviceCredential(device_id=d, password_hash=hash_password(key, p), issued_at=now)
            for d, p in passwords.items()
        )
        await session.commit()
    if isinstance(services.broker_admin, DynsecAdmin):
        commands = []
        for device_id, password in passwords.items():
            role = device_role(device_id)
            commands += [
                {"command": "createRole", "rolename": role, "acls": device_acls(device_id)},
                new_client(device_id, password, [DEVICE_ROLE, role]),
            ]
        await services.broker_admin.run(commands)
    return passwords


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
