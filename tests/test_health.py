"""Health that tells the truth (issue 14, item 4): ``/healthz`` reports each dependency and
answers 503, with the same report, while any is down; ``/metrics`` has a gauge for each."""

from __future__ import annotations

import contextlib
from pathlib import Path

import aiohttp

from devices.clock import ManualClock
from tests.conftest import StartGateway, eventually
from tests.seaweed import seaweed_server
from tests.services import mosquitto


def gauge(metrics: str, dependency: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(f'kanjia_dependency_up{{dependency="{dependency}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no gauge for {dependency}")


async def test_health_reports_each_dependency_and_503_while_one_is_down(
    tmp_path: Path, start_gateway: StartGateway, clock: ManualClock
) -> None:
    for name in ("mosquitto", "seaweed"):
        (tmp_path / name).mkdir()
    with contextlib.ExitStack() as services:
        broker = services.enter_context(mosquitto(tmp_path / "mosquitto"))
        # Its own stack, so the test can stop the store while the gateway runs.
        store_stack = contextlib.ExitStack()
        seaweed = store_stack.enter_context(seaweed_server(tmp_path / "seaweed"))
        services.callback(store_stack.close)
        settings = {
            "mqtt_url": broker.url,
            "object_store_url": seaweed.url_for_bucket("kanjia-health"),
        }
        async with (
            start_gateway(clock=clock, **settings) as gw,
            aiohttp.ClientSession() as http,
        ):
            r = await http.get(f"{gw.url}/healthz")
            assert (r.status, await r.json()) == (
                200,
                {"status": "ok", "mqtt": True, "database": True, "object_store": True},
            )
            text = await (await http.get(f"{gw.url}/metrics")).text()
            assert [gauge(text, d) for d in ("database", "object_store", "mqtt")] == [1, 1, 1]

            store_stack.close()  # the object store goes away
            r = await http.get(f"{gw.url}/healthz")
            assert r.status == 503
            assert await r.json() == {
                "status": "degraded",
                "mqtt": True,
                "database": True,
                "object_store": False,
            }
            text = await (await http.get(f"{gw.url}/metrics")).text()
            assert gauge(text, "object_store") == 0

            services.close()  # and the broker too

            async def mqtt_down() -> bool:
                body = await (await http.get(f"{gw.url}/healthz")).json()
                return body["mqtt"] is False

            await eventually(mqtt_down, timeout=10)
            text = await (await http.get(f"{gw.url}/metrics")).text()
            assert gauge(text, "mqtt") == 0
