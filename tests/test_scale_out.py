"""Scale-out: gateways on one broker share device traffic through a shared subscription."""

from __future__ import annotations

import dataclasses
import json

import aiohttp
import aiomqtt

from devices.clock import ManualClock
from gateway.service import Gateway
from simulators.fleet.metrics import metric_total
from simulators.fleet.platform import Platform
from simulators.fleet.target import Target
from tests.conftest import StartGateway, eventually
from tests.services import Broker
from tests.test_presence import setup_account

TELEMETRY = "kanjia_mqtt_messages_total"


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


async def test_the_fleet_runner_counts_what_every_gateway_took_in(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    """The fleet's backlog (issue 16 item 4): with ``--metrics-url`` the runner adds each
    gateway's counters to the first one's, so two gateways on one shared subscription
    together account for every message the devices sent."""
    # Its own group and client ids: the sessions of another test's gateways may outlive it.
    shared = {"mqtt_url": broker.url, "mqtt_shared_group": "kanjia-fleet-test"}
    async with (
        start_gateway(clock=clock, mqtt_client_id="gw-fleet-a", **shared) as a,
        start_gateway(clock=clock, mqtt_client_id="gw-fleet-b", **shared) as b,
        aiohttp.ClientSession() as http,
    ):
        await setup_account(a, http, "cam-m")
        target = Target(
            http_url=a.url,
            platform_token="unused",
            mqtt_url=broker.url,
            clock=clock,
            clock_speed=1.0,
            embedded=False,
            broker=broker.url,
            metrics_urls=(b.url,),
        )
        platform = Platform(http=http, target=target)
        async with aiohttp.ClientSession() as other:
            alone = Platform(http=other, target=dataclasses.replace(target, metrics_urls=()))
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="cam-m") as cam:
                for i in range(40):
                    await cam.publish("kj/v1/dev/cam-m/telemetry", json.dumps({"fps": i}), qos=1)

            async def summed() -> bool:
                return await handled(http, a) + await handled(http, b) == 40

            await eventually(summed)
            both = metric_total(await platform.metrics(), TELEMETRY, 'kind="telemetry"')
            first = metric_total(await alone.metrics(), TELEMETRY, 'kind="telemetry"')
        assert both == 40
        assert 0 < first < 40
