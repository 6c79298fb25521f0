"""Nothing acknowledged is lost (issue 14, item 1): the gateway acknowledges a message to
the broker only once its effect is committed, so a gateway killed mid-burst gets what it
had taken but not written again from the broker when it comes back."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import aiomqtt
from sqlalchemy import func
from sqlmodel import select

from gateway.lifecycle import free_port
from replay.migrations import open_database
from replay.models import CameraEvent
from tests.conftest import PLATFORM_TOKEN, T0, eventually, platform_headers
from tests.services import Broker
from tests.test_cli import KANJIA, clean_env, read_until

BURST = 2_000


@asynccontextmanager
async def serve(
    tmp_path: Path, broker: Broker, port: int
) -> AsyncIterator[asyncio.subprocess.Process]:
    env = clean_env(
        KANJIA_MQTT_URL=broker.url,
        KANJIA_MQTT_AUTH="none",
        KANJIA_MQTT_CLIENT_ID="kanjia-durability",
        KANJIA_DATABASE_URL=f"sqlite:///{tmp_path / 'k.db'}",
        KANJIA_OBJECT_STORE_URL=(tmp_path / "obj").as_uri(),
        KANJIA_HTTP_PORT=str(port),
        KANJIA_PLATFORM_TOKEN=PLATFORM_TOKEN,
        KANJIA_CLOCK=f"manual:{T0.isoformat()}",
    )
    with (tmp_path / "serve.log").open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            *KANJIA, "serve", cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=log
        )
    try:
        assert proc.stdout is not None
        await read_until(proc.stdout, "serving on", timeout=15)
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def _indexed(database_url: str) -> int:
    async with open_database(database_url) as db, db.session() as session:
        return int((await session.exec(select(func.count()).select_from(CameraEvent))).one())


async def test_a_gateway_killed_mid_burst_loses_no_acknowledged_event(
    tmp_path: Path, broker: Broker
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with serve(tmp_path, broker, port) as first, aiohttp.ClientSession() as http:
        r = await http.put(
            f"{url}/platform/v1/accounts/acc-k",
            json={"owner_id": "o", "star_level": 3},
            headers=platform_headers(),
        )
        assert r.status == 201
        r = await http.post(
            f"{url}/platform/v1/accounts/acc-k/devices",
            json={"device_id": "cam-k", "kind": "camera"},
            headers=platform_headers(),
        )
        assert r.status == 201

        async def healthy() -> bool:
            return (await http.get(f"{url}/healthz")).status == 200

        await eventually(healthy, timeout=10)
        at = T0.isoformat()
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="cam-k-burst") as cam:
            # Each publish returns once the broker acknowledged it: all are "acknowledged".
            await asyncio.gather(
                *(
                    cam.publish(
                        "kj/v1/dev/cam-k/event",
                        json.dumps({"event_id": f"ev-{n}", "type": "person", "at": at}),
                        qos=1,
                    )
                    for n in range(BURST)
                )
            )
        first.send_signal(signal.SIGKILL)
        await first.wait()
    database_url = f"sqlite:///{tmp_path / 'k.db'}"
    before = await _indexed(database_url)
    async with serve(tmp_path, broker, port):

        async def all_indexed() -> bool:
            return await _indexed(database_url) == BURST

        await eventually(all_indexed, timeout=30)
    print(
        f"SIGKILL mid-burst: {BURST} acknowledged, {before} indexed before the restart, "
        f"{BURST} after it"
    )
