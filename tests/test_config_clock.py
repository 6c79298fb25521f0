"""Settings from the environment and TOML; the injected clocks (issue 2)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devices.clock import ManualClock, SimClock, WallClock, parse_clock
from gateway.config import ConfigError, load_settings


def test_defaults_are_the_embedded_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings.database_url == f"sqlite:///{tmp_path / 'var' / 'kanjia.db'}"
    assert settings.object_store_url == (tmp_path / "var" / "objects").as_uri()
    assert settings.clock == "wall"
    assert (settings.url_ttl_seconds, settings.upload_url_ttl_seconds) == (300, 60)


def test_upload_urls_have_their_own_lifetime() -> None:
    settings = load_settings(environ={"KANJIA_UPLOAD_URL_TTL_SECONDS": "30"})
    assert (settings.url_ttl_seconds, settings.upload_url_ttl_seconds) == (300, 30)
    with pytest.raises(ConfigError, match="KANJIA_UPLOAD_URL_TTL_SECONDS"):
        load_settings(environ={"KANJIA_UPLOAD_URL_TTL_SECONDS": "0"})


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "kanjia.toml"
    conf.write_text('http_port = 9001\nmqtt_url = "mqtt://broker:1884"\n')
    settings = load_settings(config_file=conf, environ={"KANJIA_HTTP_PORT": "9002"})
    assert settings.http_port == 9002
    assert settings.mqtt_url == "mqtt://broker:1884"


def test_the_config_file_can_be_named_in_the_environment(tmp_path: Path) -> None:
    conf = tmp_path / "k.toml"
    conf.write_text('platform_token = "from-file"\n')
    settings = load_settings(environ={"KANJIA_CONFIG_FILE": str(conf)})
    assert settings.platform_token == "from-file"


@pytest.mark.parametrize(
    ("environ", "toml", "message"),
    [
        ({"KANJIA_MQTT_ULR": "mqtt://x"}, None, "KANJIA_MQTT_ULR (did you mean KANJIA_MQTT_URL?)"),
        ({}, "mqtt_ulr = 'x'\n", "mqtt_ulr (did you mean mqtt_url?)"),
        ({"KANJIA_HTTP_PORT": "eighty"}, None, "KANJIA_HTTP_PORT"),
        ({"KANJIA_MQTT_URL": "http://x"}, None, "KANJIA_MQTT_URL"),
        ({"KANJIA_DATABASE_URL": "mysql://x"}, None, "KANJIA_DATABASE_URL"),
        ({"KANJIA_OBJECT_STORE_URL": "ftp://x"}, None, "KANJIA_OBJECT_STORE_URL"),
        ({"KANJIA_CLOCK": "sim:2026-01-01T00:00:00+00:00"}, None, "KANJIA_CLOCK"),
        ({}, "http_port = [", "cannot read config file"),
    ],
)
def test_bad_settings_are_refused_with_a_message_naming_them(
    tmp_path: Path, environ: dict[str, str], toml: str | None, message: str
) -> None:
    conf = None
    if toml is not None:
        conf = tmp_path / "bad.toml"
        conf.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=conf, environ=environ)
    assert message in str(caught.value)


def test_test_suite_variables_are_not_settings() -> None:
    load_settings(environ={"KANJIA_TEST_POSTGRES_URL": "postgresql://x"})


T = datetime(2026, 3, 1, 16, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("wall", WallClock),
        ("manual:2026-03-01T16:30:00+00:00", ManualClock),
        ("sim:2026-03-01T16:30:00+08:00@3600", SimClock),
    ],
)
def test_parse_clock(spec: str, kind: type) -> None:
    assert isinstance(parse_clock(spec), kind)


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "wall:x",
        "manual:",
        "manual:yesterday",
        "sim:2026-01-01T00:00:00Z@0",
        "manual:2026-03-01T16:30:00",
    ],
)
def test_parse_clock_refuses(spec: str) -> None:
    with pytest.raises(ValueError, match=r"KANJIA_CLOCK|timezone|not one of"):
        parse_clock(spec)


async def test_manual_clock_wakes_sleepers_only_when_advanced() -> None:
    clock = ManualClock(T)
    sleeper = asyncio.create_task(clock.sleep(3600))
    await asyncio.sleep(0.05)
    clock.advance(1800)
    await asyncio.sleep(0.05)
    assert not sleeper.done()
    clock.advance(1800)
    await asyncio.wait_for(sleeper, 1)
    assert clock.now() == T + timedelta(hours=1)
    with pytest.raises(ValueError, match="negative"):
        clock.advance(-1)


async def test_sim_clock_runs_at_its_speed_and_can_jump() -> None:
    clock = SimClock(T, speed=3600)
    await asyncio.wait_for(clock.sleep(360), 1)  # 0.1 real seconds
    assert clock.now() - T >= timedelta(seconds=360)
    before = clock.now()
    after = clock.advance(86400)
    assert after - before >= timedelta(days=1)


def test_wall_clock_cannot_be_moved() -> None:
    with pytest.raises(RuntimeError, match="cannot be moved"):
        WallClock().advance(1)
