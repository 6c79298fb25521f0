"""Malformed device messages are counted and never stop the loop (issue 2, #5)."""

from __future__ import annotations

import json

import aiohttp
import aiomqtt
import pytest

from devices.clock import ManualClock
from gateway.wire import Malformed, parse
from tests.conftest import StartGateway, eventually
from tests.services import Broker
from tests.test_presence import online_map, setup_account


@pytest.mark.parametrize(
    ("topic", "payload", "kind", "reason"),
    [
        ("kj/v1/dev/cam/state", b"\xff\xfe", "state", "not JSON"),
        ("kj/v1/dev/cam/state", b"[1, 2]", "state", "not a JSON object"),
        ("kj/v1/dev/cam/telemetry", b"{oops", "telemetry", "not JSON"),
        ("kj/v1/dev/cam/whatever", b"{}", "unknown", "unexpected topic 'kj/v1/dev/cam/whatever'"),
        ("kj/v1/dev//state", b"{}", "unknown", "unexpected topic 'kj/v1/dev//state'"),
    ],
)
def test_parse_refuses_what_the_contract_does_not_allow(
    topic: str, payload: bytes, kind: str, reason: str
) -> None:
    with pytest.raises(Malformed) as caught:
        parse(topic, payload)
    assert (caught.value.kind, caught.value.reason) == (kind, reason)


def malformed_count(metrics: str, kind: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("kanjia_mqtt_malformed_total{") and f'kind="{kind}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_garbage_is_counted_and_the_next_good_message_is_processed(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    async with (
        start_gateway(clock=clock, mqtt_url=broker.url) as gw,
        aiohttp.ClientSession() as http,
    ):
        token = await setup_account(gw, http, "cam-g")
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="garbage") as dev:
            await dev.publish("kj/v1/dev/cam-g/state", b"\x00garbage", qos=1)
            await dev.publish("kj/v1/dev/cam-g/state", json.dumps({"online": "yes"}), qos=1)
            await dev.publish(
                "kj/v1/dev/cam-g/state", json.dumps({"online": True, "kind": "camera"}), qos=1
            )

        async def online() -> bool:
            return (await online_map(gw, http, token))["cam-g"]

        await eventually(online)
        r = await http.get(f"{gw.url}/metrics")
        assert malformed_count(await r.text(), "state") == 2
