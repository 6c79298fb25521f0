"""Fixtures: a private Mosquitto, a throwaway PostgreSQL database, gateways on free ports."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from devices.clock import Clock, ManualClock
from gateway.config import Settings, load_settings
from gateway.service import Gateway
from storage.db import async_url
from tests.seaweed import SeaweedServer, seaweed_server
from tests.services import (
    Broker,
    DynsecBroker,
    TlsBroker,
    dynsec_mosquitto,
    mosquitto,
    mosquitto_tls,
)

PLATFORM_TOKEN = "test-platform-token"
T0 = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)

PG_ENV = "KANJIA_TEST_POSTGRES_URL"

#: Lines of the fault suite's counts table (``tests/test_faults.py``), printed after the run.
FAULT_TABLE = pytest.StashKey[list[str]]()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """The fault suite's counts, in every run's output (CI runs without ``-s``)."""
    lines = config.stash.get(FAULT_TABLE, [])
    if lines:
        terminalreporter.write_sep("=", "fault suite: acknowledged, indexed, stored (issue 14)")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with mosquitto(tmp_path_factory.mktemp("mosquitto")) as running:
        yield running


@pytest.fixture(scope="session")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    """A private Mosquitto with a TLS listener whose certificate a test CA signed."""
    with mosquitto_tls(tmp_path_factory.mktemp("mosquitto-tls")) as running:
        yield running


@pytest.fixture(scope="session")
def dynsec_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DynsecBroker]:
    """Mosquitto with the dynamic security plugin; ``url`` carries its admin identity."""
    with dynsec_mosquitto(tmp_path_factory.mktemp("dynsec")) as running:
        yield running


@pytest.fixture(scope="session")
async def pg_server_url() -> AsyncIterator[str]:
    """A throwaway database on the PostgreSQL server named by KANJIA_TEST_POSTGRES_URL."""
    admin_url = os.environ.get(PG_ENV)
    if not admin_url:
        pytest.fail(f"{PG_ENV} is not set; the test command sets it (see README)")
    name = f"kanjia_test_{secrets.token_hex(4)}"
    admin = create_async_engine(async_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.dispose()


@pytest.fixture
async def pg_url(pg_server_url: str) -> AsyncIterator[str]:
    """An empty schema per test: the tables are dropped afterwards."""
    yield pg_server_url
    engine = create_async_engine(async_url(pg_server_url))
    async with engine.begin() as conn:
        await conn.exec_driver_sql("DROP SCHEMA public CASCADE")
        await conn.exec_driver_sql("CREATE SCHEMA public")
    await engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each storage test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kanjia.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


def test_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'kanjia.db'}",
        "object_store_url": (tmp_path / "objects").as_uri(),
        "http_port": 0,
        "platform_token": PLATFORM_TOKEN,
        "mqtt_client_id": f"kanjia-test-{secrets.token_hex(4)}",
    }
    values.update(overrides)
    return load_settings(environ={}, overrides=values)


StartGateway = Callable[..., AbstractAsyncContextManager[Gateway]]


@pytest.fixture
def start_gateway(tmp_path: Path) -> StartGateway:
    """``async with start_gateway(clock=..., **settings) as gw``: a gateway on a free port."""

    @asynccontextmanager
    async def start(
        *, clock: Clock | None = None, mqtt: bool = True, **overrides: Any
    ) -> AsyncIterator[Gateway]:
        settings = test_settings(tmp_path, **overrides)
        async with Gateway(settings=settings, clock=clock, mqtt=mqtt) as gateway:
            if mqtt:
                assert gateway.services.mqtt is not None
                await asyncio.wait_for(gateway.services.mqtt.connected.wait(), 10)
            yield gateway

    return start


def platform_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {PLATFORM_TOKEN}"}


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 5.0, interval: float = 0.05
) -> None:
    """Wait until ``check`` holds; fail with a clear message if it never does."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await check():
            return
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """One SeaweedFS S3 server for the session, on free loopback ports."""
    with seaweed_server(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture(
    params=[
        "sqlite+file",
        pytest.param("postgresql+s3", marks=pytest.mark.postgres),
        "sqlite+s3",
    ]
)
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """Database and object-store settings: the embedded default and the production pair."""
    database, store = str(request.param).split("+")
    settings = {}
    if database == "postgresql":
        settings["database_url"] = request.getfixturevalue("pg_url")
    if store == "s3":
        server: SeaweedServer = request.getfixturevalue("seaweed")
        bucket = f"kanjia-{secrets.token_hex(4)}"
        settings["object_store_url"] = server.url_for_bucket(bucket)
    return settings
