"""MQTT over TLS (issue 13, item 4): the gateway and the simulators on ``mqtts://``,
verifying a Mosquitto whose certificate a test CA (``trustme``) signed."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
from pathlib import Path

import aiohttp
import aiomqtt
import pytest

from devices.clock import ManualClock
from gateway.config import ConfigError, load_settings
from gateway.metrics import Metrics
from gateway.mqtt.session import MqttSession, broker_address, broker_tls
from tests.conftest import StartGateway, eventually
from tests.services import TlsBroker
from tests.test_presence import online_map, setup_account


def test_mqtts_urls_are_accepted_with_their_own_default_port(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not parsed here")
    settings = load_settings(
        environ={"KANJIA_MQTT_URL": "mqtts://broker.example", "KANJIA_MQTT_CA_FILE": str(ca)}
    )
    assert settings.mqtt_ca_file == str(ca)
    assert broker_address(settings.mqtt_url)[:2] == ("broker.example", 8883)
    assert broker_address("mqtt://broker.example")[:2] == ("broker.example", 1883)
    assert broker_tls("mqtt://broker.example", None) is None


@pytest.mark.parametrize(
    ("url", "ca_file", "says"),
    [
        ("mqtt://127.0.0.1:1883", "ca.pem", "KANJIA_MQTT_URL is not mqtts://"),
        ("mqtts://127.0.0.1:8883", "missing.pem", "no such file"),
        ("https://127.0.0.1:8883", "", "mqtts://host:port"),
    ],
)
def test_tls_settings_that_cannot_work_are_refused(
    tmp_path: Path, url: str, ca_file: str, says: str
) -> None:
    (tmp_path / "ca.pem").write_text("")
    environ = {"KANJIA_MQTT_URL": url}
    if ca_file:
        environ["KANJIA_MQTT_CA_FILE"] = str(tmp_path / ca_file)
    with pytest.raises(ConfigError, match=says):
        load_settings(environ=environ)


async def test_the_gateway_connects_over_tls_with_the_ca_file(
    tls_broker: TlsBroker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    async with (
        start_gateway(
            clock=clock, mqtt_url=tls_broker.tls_url, mqtt_ca_file=str(tls_broker.ca_file)
        ) as gw,
        aiohttp.ClientSession() as http,
    ):
        token = await setup_account(gw, http, "tls-cam")
        # A device on the plain listener: the gateway hears it through its TLS session.
        async with aiomqtt.Client("127.0.0.1", tls_broker.port, identifier="tls-cam") as dev:
            state = {"online": True, "kind": "camera", "fw": "1.0.0"}
            await dev.publish("kj/v1/dev/tls-cam/state", json.dumps(state), qos=1)

            async def online() -> bool:
                return (await online_map(gw, http, token))["tls-cam"]

            await eventually(online)


#: paho-mqtt 2.2 leaves the socket of a failed TLS handshake open (``_ssl_wrap_socket``
#: raises from ``do_handshake`` without closing it); the tests that fail a handshake
#: collect it themselves, so that its ResourceWarning is theirs, and ignore only that.
PAHO_LEAKS_FAILED_HANDSHAKE = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <ssl.SSLSocket:pytest.PytestUnraisableExceptionWarning"
)


@PAHO_LEAKS_FAILED_HANDSHAKE
async def test_a_gateway_that_does_not_trust_the_broker_says_why(
    tls_broker: TlsBroker, caplog: pytest.LogCaptureFixture
) -> None:
    session = MqttSession(
        url=tls_broker.tls_url, client_id="kanjia-untrusting", shared_group="", metrics=Metrics()
    )

    async def nothing(_topic: str, _payload: bytes) -> None:
        return None

    with caplog.at_level(logging.WARNING, logger="gateway.mqtt.session"):
        task = asyncio.create_task(session.run(nothing), name="test[untrusting]")
        await eventually(lambda: _logged(caplog, "CERTIFICATE_VERIFY_FAILED"))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert not session.connected.is_set()
    assert "KANJIA_MQTT_CA_FILE" in caplog.text
    caplog.clear()  # its records hold the error, and through it paho's socket
    gc.collect()


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return text in caplog.text
