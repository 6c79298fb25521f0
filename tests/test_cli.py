"""The two ways to start: ``kanjia demo`` and ``kanjia serve`` (issue 2, #2 and SIGTERM), and
what they log (issue 15 item 8)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.cli import OWN_LOGGERS, configure_logging
from gateway.config import ConfigError, load_settings, require_for_serve
from gateway.lifecycle import free_port
from tests.conftest import PLATFORM_TOKEN, eventually
from tests.services import Broker

KANJIA = [sys.executable, "-m", "gateway.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KANJIA_")}
    env.update(extra)
    return env


async def read_until(stream: asyncio.StreamReader, pattern: str, timeout: float) -> str:
    seen = ""
    async with asyncio.timeout(timeout):
        while not re.search(pattern, seen):
            line = await stream.readline()
            if not line:
                raise AssertionError(f"output ended before {pattern!r}:\n{seen}")
            seen += line.decode()
    return seen


async def start_demo(tmp_path: Path, *flags: str, stderr: int) -> asyncio.subprocess.Process:
    """``kanjia demo`` on a free HTTP port in ``tmp_path``, its stdout piped."""
    return await asyncio.create_subprocess_exec(
        *KANJIA,
        "demo",
        "--http-port",
        "0",
        *flags,
        cwd=tmp_path,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
    )


async def test_demo_lists_three_devices_online_within_10_seconds(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = await start_demo(tmp_path, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        out = await read_until(proc.stdout, r"app token:\s+\S+", timeout=10)
        token = re.search(r"app token:\s+(\S+)", out)
        api = re.search(r"API:\s+(http://\S+)/openapi.json", out)
        assert token
        assert api
        assert re.search(r"MQTT auth:\s+none", out), "the demo says its broker is open"
        async with aiohttp.ClientSession() as http:
            while True:
                r = await http.get(
                    f"{api[1]}/app/v1/devices", headers={"Authorization": f"Bearer {token[1]}"}
                )
                devices = (await r.json())["devices"]
                if len(devices) == 3 and all(d["online"] for d in devices):
                    break
                assert time.monotonic() - started < 10, f"not all online in 10 s: {devices}"
                await asyncio.sleep(0.1)
        assert {d["kind"] for d in devices} == {"camera", "router"}
        assert (tmp_path / "var" / "kanjia.db").exists(), "the demo keeps its data under ./var"
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert await asyncio.wait_for(proc.wait(), 10) == 0


async def test_serve_stops_within_5_seconds_of_sigterm(tmp_path: Path, broker: Broker) -> None:
    port = free_port()
    env = clean_env(
        KANJIA_MQTT_URL=broker.url,
        KANJIA_DATABASE_URL=f"sqlite:///{tmp_path / 'k.db'}",
        KANJIA_OBJECT_STORE_URL=(tmp_path / "obj").as_uri(),
        KANJIA_HTTP_PORT=str(port),
        KANJIA_PLATFORM_TOKEN=PLATFORM_TOKEN,
        KANJIA_MQTT_CLIENT_ID="serve-test",
        KANJIA_MQTT_AUTH="none",
    )
    with (tmp_path / "serve.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *KANJIA, "serve", cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=log
        )
    assert proc.stdout is not None
    await read_until(proc.stdout, "serving on", timeout=15)
    async with aiohttp.ClientSession() as http:

        async def healthy() -> bool:
            # 503 until the MQTT session is up: health reports every dependency.
            r = await http.get(f"http://127.0.0.1:{port}/healthz")
            return r.status == 200

        await eventually(healthy, timeout=10)
    proc.send_signal(signal.SIGTERM)
    stopping = time.monotonic()
    code = await asyncio.wait_for(proc.wait(), 10)
    assert time.monotonic() - stopping < 5, (tmp_path / "serve.log").read_text()[-3000:]
    assert code == 0


def serve_refusal(tmp_path: Path, **env: str) -> str:
    """What ``kanjia serve`` says when it refuses to start (exit status 2) with ``env``."""
    result = subprocess.run(
        [*KANJIA, "serve"],
        cwd=tmp_path,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    return result.stderr


def test_serve_refuses_an_unknown_setting(tmp_path: Path) -> None:
    stderr = serve_refusal(tmp_path, KANJIA_DATABSE_URL="sqlite:///x")
    assert "KANJIA_DATABSE_URL" in stderr
    assert "KANJIA_DATABASE_URL" in stderr


def test_serve_refuses_to_start_without_mqtt_auth_naming_the_choices(tmp_path: Path) -> None:
    stderr = serve_refusal(tmp_path, KANJIA_PLATFORM_TOKEN=PLATFORM_TOKEN)
    assert "KANJIA_MQTT_AUTH" in stderr
    for choice in ("mosquitto-dynsec", "http-hooks", "none"):
        assert choice in stderr


def test_http_hooks_need_their_token() -> None:
    settings = load_settings(
        environ={}, overrides={"platform_token": PLATFORM_TOKEN, "mqtt_auth": "http-hooks"}
    )
    with pytest.raises(ConfigError, match="KANJIA_BROKER_HOOK_TOKEN"):
        require_for_serve(settings)
    require_for_serve(settings.model_copy(update={"broker_hook_token": "hook-token"}))
    with pytest.raises(ConfigError, match="mosquitto-dynsec"):
        load_settings(environ={"KANJIA_MQTT_AUTH": "open"})


@pytest.mark.parametrize(
    ("flags", "third_party_heard"),
    [
        pytest.param([], False, id="quiet-by-default"),
        pytest.param(["--log-level", "info"], True, id="log-level-info"),
    ],
)
async def test_demo_keeps_third_party_chatter_out_unless_asked(
    tmp_path: Path, flags: list[str], third_party_heard: bool
) -> None:
    """asyncssh says INFO for each SSH connection (the demo's router is reached over SSH
    before the banner): by default only the service's own INFO lines are written, and the
    banner is not buried; ``--log-level`` lets every logger speak at that level."""
    proc = await start_demo(tmp_path, *flags, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        banner = await read_until(proc.stdout, r"try:\s+curl", timeout=20)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.stderr is not None
        stderr = (await asyncio.wait_for(proc.stderr.read(), 10)).decode()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    assert banner.startswith("Kanjia demo is running")
    assert "INFO gateway.service: gateway listening on" in stderr, "the service's own INFO"
    assert ("INFO asyncssh:" in stderr) is third_party_heard, stderr[-2000:]


@pytest.fixture
def root_logging() -> Iterator[None]:
    """The logging configuration as it was, back after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    own = {name: logging.getLogger(name).level for name in OWN_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, was in own.items():
        logging.getLogger(name).setLevel(was)


@pytest.mark.usefixtures("root_logging")
@pytest.mark.parametrize(
    ("everyone", "service_info", "third_party_info"),
    [
        pytest.param(None, True, False, id="default"),
        pytest.param("DEBUG", True, True, id="debug-for-all"),
        pytest.param("WARNING", False, False, id="warning-for-all"),
    ],
)
def test_log_levels_of_the_service_and_of_third_parties(
    everyone: str | None, service_info: bool, third_party_info: bool
) -> None:
    configure_logging("INFO", everyone=everyone, fmt="%(message)s")
    assert logging.getLogger("gateway.service").isEnabledFor(logging.INFO) is service_info
    assert logging.getLogger("replay.plans").isEnabledFor(logging.INFO) is service_info
    for name in ("asyncssh", "amqtt.broker", "botocore.credentials", "transitions.core"):
        assert logging.getLogger(name).isEnabledFor(logging.INFO) is third_party_info, name
    assert logging.getLogger("asyncssh").isEnabledFor(logging.WARNING)
