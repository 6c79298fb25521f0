"""Malformed device messages are counted and never stop the loop (issue 2, #5); recording
data is written by group commit and survives shutdown (issue 7)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import aiomqtt
import pytest
from sqlmodel import select

from devices.clock import ManualClock
from gateway.mqtt.messages import Malformed, parse
from gateway.mqtt.reads import CHUNK
from replay.models import CameraEvent
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


async def test_a_burst_of_events_is_written_in_batches_and_none_is_lost_at_shutdown(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    """Group commit (issue 7): a burst takes far fewer transactions than messages, a bad
    message in it costs only itself, and what was received before shutdown is indexed."""
    burst = 300
    async with (
        start_gateway(clock=clock, mqtt_url=broker.url) as gw,
        aiohttp.ClientSession() as http,
    ):
        await setup_account(gw, http, "cam-b")
        metrics = gw.services.metrics
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="burst") as dev:
            bodies = [
                {"event_id": f"ev-{n}", "type": "person", "at": clock.now().isoformat()}
                for n in range(burst)
            ]
            bodies.insert(burst // 2, {"event_id": "ev-bad", "type": "dragon", "at": "x"})
            await asyncio.gather(
                *(dev.publish("kj/v1/dev/cam-b/event", json.dumps(b), qos=1) for b in bodies)
            )

        async def received() -> bool:
            value = metrics.registry.get_sample_value(
                "kanjia_mqtt_messages_total", {"kind": "event"}
            )
            return value == burst + 1

        await eventually(received)
    # The gateway has stopped: its last act was to write what it had received.
    batches = metrics.registry.get_sample_value("kanjia_batch_size_count", {"queue": "recording"})
    assert batches is not None
    assert batches < burst / 2
    assert (
        metrics.registry.get_sample_value(
            "kanjia_mqtt_malformed_total",
            {"kind": "event", "reason": "invalid"},
        )
        == 1
    )
    async with (
        start_gateway(clock=clock, mqtt_url=broker.url) as gw,
        gw.services.db.session() as session,
    ):
        rows = (await session.exec(select(CameraEvent.event_id))).all()
    assert sorted(rows) == sorted(f"ev-{n}" for n in range(burst))


async def test_a_message_over_several_socket_reads_is_read_whole_between_small_ones(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    """The session's buffered reads (gateway/mqtt/reads.py): a message longer than one read
    of the socket, among small ones at QoS 1 and 0, arrives whole (it is counted as too
    large, not as broken JSON) and every small one on either side is indexed."""
    async with (
        start_gateway(clock=clock, mqtt_url=broker.url) as gw,
        aiohttp.ClientSession() as http,
    ):
        await setup_account(gw, http, "cam-r")
        metrics = gw.services.metrics
        huge = json.dumps({"event_id": "ev-huge", "pad": "x" * (CHUNK * 2)}).encode()
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="reads") as dev:
            for n in range(60):
                body = {"event_id": f"ev-{n}", "type": "pet", "at": clock.now().isoformat()}
                await dev.publish("kj/v1/dev/cam-r/event", json.dumps(body), qos=n % 2)
                if n == 30:
                    await dev.publish("kj/v1/dev/cam-r/event", huge, qos=1)

        async def indexed() -> bool:
            return metrics.registry.get_sample_value("kanjia_events_indexed_total") == 60

        await eventually(indexed)
        too_large = {"kind": "event", "reason": "too_large"}
        assert metrics.registry.get_sample_value("kanjia_mqtt_malformed_total", too_large) == 1
        assert (
            metrics.registry.get_sample_value(
                "kanjia_mqtt_malformed_total", {"kind": "event", "reason": "not_json"}
            )
            is None
        )
