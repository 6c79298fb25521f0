"""MQTT over TLS (issue 13, item 4): the gateway and the simulators on ``mqtts://``,
verifying a Mosquitto whose certificate a test CA (``trustme``) signed."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
from collections.abc import Callable
from pathlib import Path

import aiohttp
import aiomqtt
import pytest

from devices.clock import ManualClock
from gateway.config import ConfigError, load_settings
from gateway.metrics import Metrics
from gateway.mqtt.session import MqttSession, broker_address, broker_tls
from simulators.credentials import Credentials
from simulators.device import BrokerLogin, SimulatedDevice, device_from_args
from simulators.fleet import (
    DeviceSpec,
    FleetOptions,
    WorkerSpec,
    parse_plan_mix,
    plan_fleet,
    run_fleet,
)
from simulators.fleet import main as fleet_main
from simulators.fleet.workers import DeviceWorker
from tests.conftest import StartGateway, eventually
from tests.services import TlsBroker, mosquitto_tls
from tests.test_presence import online_map, running, setup_account


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

    async def nothing(_topic: str, _payload: bytes, _ack: Callable[[], None]) -> None:
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


async def test_a_camera_over_tls_reaches_the_gateway(
    tls_broker: TlsBroker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    ca_file = str(tls_broker.ca_file)
    async with (
        start_gateway(clock=clock, mqtt_url=tls_broker.tls_url, mqtt_ca_file=ca_file) as gw,
        aiohttp.ClientSession() as http,
    ):
        token = await setup_account(gw, http, "tls-cam-2")
        camera = SimulatedDevice(
            device_id="tls-cam-2",
            kind="camera",
            mqtt_url=tls_broker.tls_url,
            telemetry_interval=1.0,
            login=BrokerLogin(ca_file=ca_file),
        )
        async with running(camera):

            async def online() -> bool:
                return (await online_map(gw, http, token))["tls-cam-2"]

            await eventually(online)


@PAHO_LEAKS_FAILED_HANDSHAKE
async def test_a_device_that_does_not_trust_the_broker_cannot_connect(
    tls_broker: TlsBroker,
) -> None:
    device = SimulatedDevice(device_id="tls-cam-3", kind="camera", mqtt_url=tls_broker.tls_url)
    with pytest.raises(aiomqtt.MqttError, match="CERTIFICATE_VERIFY_FAILED"):
        await device.run()
    assert not device.connected.is_set()
    gc.collect()


async def test_the_device_command_takes_a_ca_file_and_a_login(tls_broker: TlsBroker) -> None:
    ca_file = str(tls_broker.ca_file)
    device = device_from_args(
        [
            *("--kind", "camera", "--device-id", "cam-1"),
            *("--mqtt-url", "mqtts://broker.example", "--ca-file", ca_file),
            *("--username", "cam-1-user", "--password", "s3cret"),
        ]
    )
    assert device.login == BrokerLogin(username="cam-1-user", password="s3cret", ca_file=ca_file)
    assert "s3cret" not in repr(device.login)
    # The broker binds credentials to the device's own client id.
    assert device.connection().identifier == "cam-1"


def test_the_device_command_reads_the_credentials_routes_answer(tmp_path: Path) -> None:
    answer = {
        "device_id": "cam-2",
        "username": "cam-2",
        "password": "p" * 32,
        "issued_at": "2026-11-20T02:00:00Z",
    }
    path = tmp_path / "cam-2.json"
    path.write_text(json.dumps(answer))
    device = device_from_args(["--kind", "camera", "--credentials-file", str(path)])
    assert (device.device_id, device.login.username, device.login.password) == (
        "cam-2",
        "cam-2",
        "p" * 32,
    )
    assert device.login.ca_file is None


@pytest.mark.parametrize(
    "flags",
    [
        ["--device-id", "cam-1", "--credentials-file", "{file}", "--username", "u"],
        ["--device-id", "cam-9", "--credentials-file", "{file}"],
        ["--device-id", "cam-1", "--username", "u"],
        ["--device-id", "cam-1", "--ca-file", "{file}"],
        ["--device-id", "cam-1", "--mqtt-url", "mqtts://h", "--ca-file", "{missing}"],
        ["--credentials-file", "{missing}"],
        [],
    ],
)
def test_the_device_command_refuses_logins_that_cannot_work(
    tmp_path: Path, flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cam-1.json"
    path.write_text(json.dumps({"device_id": "cam-1", "username": "cam-1", "password": "x"}))
    given = [f.format(file=path, missing=tmp_path / "missing.json") for f in flags]
    with pytest.raises(SystemExit) as caught:
        device_from_args(["--kind", "camera", *given])
    assert caught.value.code == 2
    assert "error:" in capsys.readouterr().err


async def test_a_fleet_runs_over_tls_with_its_devices_credentials(tmp_path: Path) -> None:
    """The embedded gateway and a worker process's devices on the TLS listener; every
    device signs in with the identity the run was given (the broker here takes any). A
    broker of its own: the suite's shared one holds other tests' retained states and
    late wills, which this fleet's gateway would count as unknown devices."""
    (tmp_path / "broker").mkdir()
    with mosquitto_tls(tmp_path / "broker") as tls_broker:
        await _run_tls_fleet(tmp_path, tls_broker)


async def _run_tls_fleet(tmp_path: Path, tls_broker: TlsBroker) -> None:
    homes = plan_fleet(households=2, plans=parse_plan_mix("continuous-7d"), seed=5, prefix="t-tls")
    credentials = {
        d.device_id: Credentials(device_id=d.device_id, username=d.device_id, password="pw")
        for home in homes
        for d in home.devices
    }
    options = FleetOptions(
        households=len(homes),
        clock_speed=3600,
        duration=4.0,
        stop_rate=0.0,
        app_rate=0.0,
        min_real_interval=1.0,
        seed=5,
        prefix="t-tls",
        mqtt_url=tls_broker.tls_url,
        ca_file=str(tls_broker.ca_file),
    )
    report = await run_fleet(options, workdir=tmp_path, households=homes, credentials=credentials)
    assert report["errors"] == {"total": 0}, json.dumps(report["errors"])
    devices = report["devices"]
    assert devices["connected_peak"] == devices["total"] == len(credentials)
    assert devices["converged_at_end"] == devices["total"]


async def test_a_fleet_worker_signs_each_device_in_with_its_own_identity() -> None:
    router = DeviceSpec(device_id="h1-rt", role="router")
    signed = router.signed_in(Credentials(device_id="h1-rt", username="u-rt", password="p-rt"))
    assert router.signed_in(None) is router
    assert "p-rt" not in repr(signed)
    spec = WorkerSpec(
        mqtt_url="mqtts://broker.example",
        ca_file="/etc/kanjia/ca.pem",
        clock_start="2026-11-20T02:00:00+00:00",
        clock_speed=1.0,
        clock_mono=0.0,
        devices=(signed,),
        media="synthetic",
        synthetic_bytes=1,
        pacing=FleetOptions().pacing,
        horizon_s=60.0,
        connect_concurrency=1,
        report_every=1.0,
    )
    # What a worker process reads from its stdin.
    spec = WorkerSpec.from_json(spec.to_json())
    async with aiohttp.ClientSession() as http:
        device = DeviceWorker(spec=spec, clock=spec.clock())._build(spec.devices[0], http)
    assert device.login == BrokerLogin(
        username="u-rt", password="p-rt", ca_file="/etc/kanjia/ca.pem"
    )


@pytest.mark.parametrize(
    "argv", [["--ca-file", "ca.pem"], ["--mqtt-url", "mqtt://h:1883", "--ca-file", "ca.pem"]]
)
def test_the_fleet_takes_a_ca_file_only_for_mqtts(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        fleet_main(argv)
    assert caught.value.code == 2
    assert "--ca-file needs an mqtts:// --mqtt-url" in capsys.readouterr().err
