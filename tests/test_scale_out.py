"""Scale-out: gateways on one broker share device traffic through a shared subscription."""

from __future__ import annotations

import json

import aiohttp
import aiomqtt

from devices.clock import ManualClock
from gateway.service import Gateway
from tests.conftest import StartGateway, eventually
from tests.services import Broker
from tests.test_presence import setup_account


async def handled(http: aiohttp.ClientSession, gw: Gateway) -> int:
    r = await http.get(f"{gw.url}/metrics")
    for line in (await r.text()).splitlines():
        if line.startswith('kanjia_mqtt_messages_total{kind="telemetry"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


async def test_two_gateways_split_the_messages_and_handle_each_once(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    shared = {"mqtt_url": broker.url, "mqtt_shared_group": "kanjia-test"}
    async with (
        start_gateway(clock=clock, mqtt_client_id="gw-a", **shared) as a,
        start_gateway(clock=clock, mqtt_client_id="gw-b", **shared) as b,
        aiohttp.ClientSession() as http,
    ):
        await setup_account(a, http, "cam-s")
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="cam-s") as cam:
            for i in range(40):
                await cam.publish("kj/v1/dev/cam-s/telemetry", json.dumps({"fps": i}), qos=1)

        async def all_handled() -> bool:
            return await handled(http, a) + await handled(http, b) == 40

        await eventually(all_handled)
        assert await handled(http, a) > 0
        assert await handled(http, b) > 0
