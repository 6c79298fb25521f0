"""Mosquitto's dynamic security as the gateway keeps it (issue 13), with real clients.

The broker drops a publish a client may not make without telling an MQTT 3.1.1 client
(a QoS-1 publish is still acknowledged), so each refused publish is shown by an observer
with every right (the plugin's admin) that receives a marker the same client sent after
it, and never the forged message before it [MQTT-4.6.0-6: one client's messages keep
their order].
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest

from gateway.mqtt.dynsec import (
    DEVICE_ROLE,
    OUTBOUND,
    SERVICE_ROLE,
    DynsecAdmin,
    DynsecError,
    acl,
    device_acls,
    device_role,
    new_client,
    service_acls,
)
from gateway.mqtt.messages import INBOUND, topic
from gateway.mqtt.session import broker_address, broker_tls
from tests.conftest import StartGateway, eventually, platform_headers
from tests.services import DynsecBroker, dynsec_mosquitto

H = platform_headers()

#: What a client granted nothing sees in a 3.1.1 SUBACK [MQTT-3.9.3-2].
REFUSED = 0x80


async def granted(client: aiomqtt.Client, topic_filter: str) -> int:
    """The SUBACK's code for one filter asked at QoS 1: 1, or :data:`REFUSED`."""
    [code] = await client.subscribe(topic_filter, qos=1)
    return code if isinstance(code, int) else code.value


def new_id(kind: str = "cam") -> str:
    return f"{kind}-{secrets.token_hex(4)}"


def connect(url: str, *, client_id: str, ca_file: Path | None = None) -> aiomqtt.Client:
    """A client of ``url`` (``mqtts://``: verified against ``ca_file``)."""
    host, port, user, password = broker_address(url)
    return aiomqtt.Client(
        host,
        port,
        username=user,
        password=password,
        identifier=client_id,
        tls_context=broker_tls(url, str(ca_file) if ca_file else None),
    )


def device_url(broker: DynsecBroker, device_id: str, password: str) -> str:
    return f"mqtt://{device_id}:{password}@127.0.0.1:{broker.port}"


async def refused(url: str, *, client_id: str, ca_file: Path | None = None) -> bool:
    try:
        async with connect(url, client_id=client_id, ca_file=ca_file):
            return False
    except aiomqtt.MqttError:
        return True


@pytest.fixture
async def admin(dynsec_broker: DynsecBroker) -> AsyncIterator[DynsecAdmin]:
    async with DynsecAdmin(url=dynsec_broker.url, client_id=new_id("gw")) as running:
        yield running


class Observer:
    """Everything under ``kj/``, as the plugin's admin sees it."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client

    async def until(self, wanted_topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        """The messages seen up to and including ``payload`` on ``wanted_topic``."""
        seen: list[tuple[str, bytes]] = []
        async with asyncio.timeout(5):
            async for message in self.client.messages:
                assert isinstance(message.payload, bytes)
                seen.append((message.topic.value, message.payload))
                if seen[-1] == (wanted_topic, payload):
                    return seen
        raise AssertionError("the observer's connection ended")


@asynccontextmanager
async def observing(broker: DynsecBroker) -> AsyncIterator[Observer]:
    async with connect(broker.url, client_id=new_id("observer")) as client:
        await client.subscribe("kj/#", qos=1)
        yield Observer(client)


async def issued(admin: DynsecAdmin, device_id: str) -> str:
    password = secrets.token_urlsafe(16)
    await admin.issue(device_id, device_id, password)
    return password


def test_a_devices_rules_name_only_its_own_topics() -> None:
    rules = device_acls("cam-1")
    assert all(r["topic"].startswith("kj/v1/dev/cam-1/") and r["allow"] for r in rules)
    by_kind = {
        kind: {r["topic"][len("kj/v1/dev/cam-1/") :] for r in rules if r["acltype"] == kind}
        for kind in {r["acltype"] for r in rules}
    }
    assert by_kind == {
        "publishClientSend": set(INBOUND),
        "publishClientReceive": set(OUTBOUND),
        "subscribeLiteral": set(OUTBOUND),
        "unsubscribeLiteral": set(OUTBOUND),
    }


def test_the_service_never_sends_what_a_device_sends() -> None:
    sent = {r["topic"] for r in service_acls() if r["acltype"] == "publishClientSend"}
    assert sent == {f"kj/v1/dev/+/{suffix}" for suffix in OUTBOUND}


async def test_issued_device_sends_its_state_and_receives_its_desired(
    dynsec_broker: DynsecBroker, admin: DynsecAdmin
) -> None:
    device_id = new_id()
    password = await issued(admin, device_id)
    gateway_id = broker_address(admin.service_url)[2]
    assert gateway_id is not None
    async with (
        connect(admin.service_url, client_id=gateway_id) as gateway,
        connect(device_url(dynsec_broker, device_id, password), client_id=device_id) as device,
    ):
        assert await granted(gateway, "$share/kanjia/kj/v1/dev/+/state") != REFUSED
        assert await granted(device, topic(device_id, "desired")) == 1
        await device.publish(topic(device_id, "state"), b'{"online": true}', qos=1)
        async with asyncio.timeout(5):
            message = await anext(gateway.messages)
        assert message.topic.value == topic(device_id, "state")
        await gateway.publish(topic(device_id, "desired"), b'{"version": 1}', qos=1)
        async with asyncio.timeout(5):
            message = await anext(device.messages)
        assert (message.topic.value, message.payload) == (
            topic(device_id, "desired"),
            b'{"version": 1}',
        )


@pytest.mark.parametrize("device_id", ["+", "cam/#", "kanjia-admin", ""])
async def test_ids_that_would_widen_rules_are_refused(admin: DynsecAdmin, device_id: str) -> None:
    with pytest.raises(ValueError, match="broker identity"):
        await admin.issue(device_id, device_id, "pw-1234")


async def test_anonymous_and_wrong_passwords_are_refused(
    dynsec_broker: DynsecBroker, admin: DynsecAdmin
) -> None:
    device_id = new_id()
    await issued(admin, device_id)
    anonymous = f"mqtt://127.0.0.1:{dynsec_broker.port}"
    assert await refused(anonymous, client_id=device_id)
    assert await refused(device_url(dynsec_broker, device_id, "guess"), client_id=device_id)
    assert await refused(device_url(dynsec_broker, new_id(), "guess"), client_id=new_id())


async def test_a_device_reaches_no_other_device(
    dynsec_broker: DynsecBroker, admin: DynsecAdmin
) -> None:
    a, b = new_id(), new_id()
    password = await issued(admin, a)
    await issued(admin, b)
    async with (
        observing(dynsec_broker) as observer,
        connect(device_url(dynsec_broker, a, password), client_id=a) as device,
    ):
        for suffix in ("state", "upload/req", "segment", "rpc/res"):
            await device.publish(topic(b, suffix), b"forged", qos=1)
        for suffix in OUTBOUND:  # a forged desired or rpc request, even to itself
            await device.publish(topic(a, suffix), b"forged", qos=1)
        await device.publish(topic(a, "state"), b"marker", qos=1)
        seen = await observer.until(topic(a, "state"), b"marker")
        assert seen == [(topic(a, "state"), b"marker")]

        assert await granted(device, "#") == REFUSED
        assert await granted(device, "kj/v1/dev/+/desired") == REFUSED
        for suffix in OUTBOUND:
            assert await granted(device, topic(b, suffix)) == REFUSED


async def test_client_ids_are_bound_to_their_identities(
    dynsec_broker: DynsecBroker, admin: DynsecAdmin
) -> None:
    a, b = new_id(), new_id()
    password = await issued(admin, a)
    await issued(admin, b)
    gateway_id = broker_address(admin.service_url)[2]
    assert gateway_id is not None
    device = device_url(dynsec_broker, a, password)
    assert await refused(device, client_id=b)
    assert await refused(device, client_id=gateway_id)
    assert await refused(device, client_id=new_id())
    assert await refused(admin.service_url, client_id=a)
    assert not await refused(admin.service_url, client_id=gateway_id)
    assert not await refused(device, client_id=a)


async def test_the_gateway_sends_nothing_on_a_devices_behalf(
    dynsec_broker: DynsecBroker, admin: DynsecAdmin
) -> None:
    device_id = new_id()
    await issued(admin, device_id)
    gateway_id = broker_address(admin.service_url)[2]
    assert gateway_id is not None
    async with (
        observing(dynsec_broker) as observer,
        connect(admin.service_url, client_id=gateway_id) as gateway,
    ):
        for suffix in INBOUND:
            await gateway.publish(topic(device_id, suffix), b"forged", qos=1)
        await gateway.publish(topic(device_id, "desired"), b"marker", qos=1)
        seen = await observer.until(topic(device_id, "desired"), b"marker")
        assert seen == [(topic(device_id, "desired"), b"marker")]


async def drain(device: aiomqtt.Client) -> None:
    async for _ in device.messages:
        pass


async def disconnected_after(device: aiomqtt.Client) -> float:
    """Wait until the broker drops ``device``; the monotonic time it was seen."""
    with pytest.raises(aiomqtt.MqttError):
        await asyncio.wait_for(drain(device), 5)
    return time.monotonic()


async def test_revoking_drops_the_live_connection_within_a_second(
    dynsec_broker: DynsecBroker, admin: DynsecAdmin
) -> None:
    device_id = new_id()
    password = await issued(admin, device_id)
    url = device_url(dynsec_broker, device_id, password)
    async with connect(url, client_id=device_id) as device:
        await device.subscribe(topic(device_id, "desired"), qos=1)
        watch = asyncio.create_task(disconnected_after(device))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await admin.revoke(device_id)
        latency = await watch - started
    print(f"revoke → disconnect seen by the device: {latency * 1000:.1f} ms")
    assert latency < 1.0
    assert await refused(url, client_id=device_id)
    assert device_id not in await admin.device_clients()
    await admin.revoke(device_id)  # again: nothing left to do


async def test_rotation_drops_the_old_password(
    dynsec_broker: DynsecBroker, admin: DynsecAdmin
) -> None:
    device_id = new_id()
    old = await issued(admin, device_id)
    async with connect(device_url(dynsec_broker, device_id, old), client_id=device_id) as device:
        watch = asyncio.create_task(disconnected_after(device))
        await asyncio.sleep(0.1)
        new = await issued(admin, device_id)
        await watch
    assert await refused(device_url(dynsec_broker, device_id, old), client_id=device_id)
    assert not await refused(device_url(dynsec_broker, device_id, new), client_id=device_id)


async def test_sync_removes_unknown_devices_and_reports_missing_ones(
    dynsec_broker: DynsecBroker, admin: DynsecAdmin
) -> None:
    kept, stale, missing = new_id(), new_id(), new_id()
    await issued(admin, kept)
    stale_password = await issued(admin, stale)
    orphan = device_role(new_id())
    await admin.run([{"command": "createRole", "rolename": orphan}])
    other_gateway = new_id("gw")
    async with DynsecAdmin(url=dynsec_broker.url, client_id=other_gateway) as other:
        assert await admin.sync([kept, missing]) == {missing}
        assert await admin.device_clients() == {kept}
        [listed] = await admin.call([{"command": "listRoles"}])
        roles = set(listed["data"]["roles"])
        assert device_role(kept) in roles
        assert not {orphan, device_role(stale)} & roles
        assert not await refused(other.service_url, client_id=other_gateway)
    assert not await refused(dynsec_broker.url, client_id=new_id("admin"))
    url = device_url(dynsec_broker, stale, stale_password)
    assert await refused(url, client_id=stale)


async def test_rules_hold_after_mosquitto_restarts(tmp_path: Path) -> None:
    kept, revoked = new_id(), new_id()
    with dynsec_mosquitto(tmp_path) as broker:
        async with DynsecAdmin(url=broker.url, client_id="kanjia-gw") as admin:
            password = await issued(admin, kept)
            revoked_password = await issued(admin, revoked)
            await admin.revoke(revoked)
    with dynsec_mosquitto(tmp_path, port=broker.port) as broker:
        saved = json.loads(broker.state_file.read_text())
        assert not any(saved["defaultACLAccess"].values())
        assert await refused(f"mqtt://127.0.0.1:{broker.port}", client_id=kept)
        assert await refused(device_url(broker, revoked, revoked_password), client_id=revoked)
        url = device_url(broker, kept, password)
        async with connect(url, client_id=kept) as device:
            assert await granted(device, topic(kept, "desired")) == 1
            assert await granted(device, "#") == REFUSED
        async with DynsecAdmin(url=broker.url, client_id="kanjia-gw") as admin:
            assert await admin.device_clients() == {kept}
            [listed] = await admin.call([{"command": "listRoles"}])
            roles = set(listed["data"]["roles"])
            assert {DEVICE_ROLE, SERVICE_ROLE, device_role(kept)} <= roles
            assert device_role(revoked) not in roles


async def test_this_mosquitto_substitutes_no_client_id_in_acls(
    dynsec_broker: DynsecBroker, admin: DynsecAdmin
) -> None:
    """Why each device has a role of its own: with ``%c`` a device's own state is dropped."""
    device_id, role = new_id(), new_id("role")
    await admin.run(
        [
            {
                "command": "createRole",
                "rolename": role,
                "acls": [acl("publishClientSend", "kj/v1/dev/%c/state")],
            },
            new_client(device_id, "pw-1234", [role]),
        ]
    )
    async with (
        observing(dynsec_broker) as observer,
        connect(device_url(dynsec_broker, device_id, "pw-1234"), client_id=device_id) as device,
    ):
        await device.publish(topic(device_id, "state"), b"own", qos=1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(observer.until(topic(device_id, "state"), b"own"), 0.5)
    await admin.run(
        [
            {"command": "deleteClient", "username": device_id},
            {"command": "deleteRole", "rolename": role},
        ]
    )


async def test_a_gateway_with_dynsec_receives_from_an_issued_device(
    dynsec_broker: DynsecBroker, start_gateway: StartGateway
) -> None:
    """``KANJIA_MQTT_AUTH=mosquitto-dynsec``: the session connects as the service identity
    (its shared subscriptions granted) and hears a device it issued credentials to."""
    device_id = new_id()
    async with start_gateway(
        mqtt_url=dynsec_broker.url, mqtt_auth="mosquitto-dynsec", mqtt_shared_group="kanjia"
    ) as gateway:
        admin = gateway.services.broker_admin
        assert isinstance(admin, DynsecAdmin)
        password = await issued(admin, device_id)
        url = device_url(dynsec_broker, device_id, password)
        async with connect(url, client_id=device_id) as device:
            await device.publish(topic(device_id, "telemetry"), b"{}", qos=1)

        async def heard() -> bool:
            registry = gateway.services.metrics.registry
            value = registry.get_sample_value("kanjia_mqtt_messages_total", {"kind": "telemetry"})
            return value == 1

        await eventually(heard)


async def test_the_admin_reconnects_when_mosquitto_restarts(tmp_path: Path) -> None:
    device_id = new_id()
    async with AsyncExitStack() as stack:
        with dynsec_mosquitto(tmp_path) as broker:
            admin = DynsecAdmin(url=broker.url, client_id="kanjia-gw", timeout=2)
            await stack.enter_async_context(admin)
        with pytest.raises(DynsecError):
            await admin.issue(device_id, device_id, "pw-1234")
        with dynsec_mosquitto(tmp_path, port=broker.port) as broker:

            async def issues() -> bool:
                try:
                    await admin.issue(device_id, device_id, "pw-1234")
                except DynsecError:
                    return False
                return True

            await eventually(issues, timeout=10)
            url = device_url(broker, device_id, "pw-1234")
            assert not await refused(url, client_id=device_id)


async def listed_device(http: aiohttp.ClientSession, url: str, device_id: str) -> Any:
    """The device as the platform's device list of its account shows it."""
    listed = (await (await http.get(url, headers=H)).json())["devices"]
    return next(d for d in listed if d["device_id"] == device_id)


async def test_a_restarted_gateway_resyncs_the_broker_from_the_database(
    dynsec_broker: DynsecBroker, start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """The start-up re-sync: broker clients the database does not know, or whose credentials
    it revoked (a broker restored from an old file), are removed; a credentialed device the
    broker lost is reported (log, metric, device list)."""
    account, lost, revoked, stranger = new_id("acc"), new_id(), new_id(), new_id()
    settings = {"mqtt_url": dynsec_broker.url, "mqtt_auth": "mosquitto-dynsec"}
    async with start_gateway(**settings) as gateway, aiohttp.ClientSession() as http:
        base = f"{gateway.url}/platform/v1"
        owner = {"owner_id": "o", "star_level": 3}
        assert (await http.put(f"{base}/accounts/{account}", json=owner, headers=H)).ok
        for device_id in (lost, revoked):
            device = {"device_id": device_id, "kind": "camera"}
            path = f"{base}/accounts/{account}/devices"
            assert (await http.post(path, json=device, headers=H)).ok
            path = f"{base}/devices/{device_id}/credentials"
            assert (await http.post(path, headers=H)).status == 201
        assert (await http.delete(path, headers=H)).status == 204
        admin = gateway.services.broker_admin
        assert isinstance(admin, DynsecAdmin)
        await issued(admin, stranger)
        await issued(admin, revoked)  # as if the broker's file were restored from before
        await admin.run([{"command": "deleteClient", "username": lost}])
    caplog.clear()
    async with start_gateway(**settings) as gateway, aiohttp.ClientSession() as http:
        admin = gateway.services.broker_admin
        assert isinstance(admin, DynsecAdmin)
        assert not {stranger, revoked} & await admin.device_clients()
        assert [r.levelname for r in caplog.records if lost in r.getMessage()] == ["WARNING"]
        registry = gateway.services.metrics.registry
        assert registry.get_sample_value("kanjia_credentials_need_rotation") == 1
        listed = f"{gateway.url}/platform/v1/accounts/{account}/devices"
        shown = await listed_device(http, listed, lost)
        assert shown["has_credentials"]
        assert shown["credentials_need_rotation"]
        rotate = f"{gateway.url}/platform/v1/devices/{lost}/credentials"
        assert (await http.post(rotate, headers=H)).status == 201
        assert registry.get_sample_value("kanjia_credentials_need_rotation") == 0
        shown = await listed_device(http, listed, lost)
        assert not shown["credentials_need_rotation"]
        assert lost in await admin.device_clients()
