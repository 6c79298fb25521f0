"""Router management over SSH against the simulator's real asyncssh server (R12, R13)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from devices.router import CommandResult, ProvisioningError, RouterCredentials, RouterManager
from devices.tuning import parse_scan
from devices.uci import parse_board, parse_wireless
from simulators.radio import Home, NeighbourNetwork
from simulators.router import SUSPENDED_MESSAGE, ConnectionGauge, RouterSimulator

PASSWORD = "router-admin-pw"
PASSPHRASE = "family wifi 2026"
HOME = Home(
    neighbours=(
        NeighbourNetwork(channel=6, signal_dbm=-55, ssid="ChinaNet-A", bssid="02:00:00:00:00:01"),
        NeighbourNetwork(channel=1, signal_dbm=-72, ssid="CMCC-B", bssid="02:00:00:00:00:02"),
    ),
    channel_2g=6,
    channel_5g=36,
)


@pytest.fixture
async def sim() -> AsyncIterator[RouterSimulator]:
    async with RouterSimulator(password=PASSWORD, passphrase=PASSPHRASE, home=HOME) as running:
        yield running


@pytest.fixture
def manager() -> RouterManager:
    return RouterManager(max_sessions=4, connect_timeout=5.0, command_timeout=5.0)


def creds_for(
    sim: RouterSimulator, *, password: str = PASSWORD, key: str | None = None
) -> RouterCredentials:
    return RouterCredentials(
        host=sim.host, port=sim.port, username="root", password=password, pinned_host_key=key
    )


async def provisioned(manager: RouterManager, sim: RouterSimulator) -> RouterCredentials:
    key = await manager.provision_host_key(creds_for(sim))
    return creds_for(sim, key=key)


async def test_provisioning_records_the_first_host_key(
    sim: RouterSimulator, manager: RouterManager
) -> None:
    key = await manager.provision_host_key(creds_for(sim))
    assert key == sim.host_public_key
    assert key.startswith("ssh-ed25519 ")
    # provisioning again with that key pinned succeeds and returns the same key
    assert await manager.provision_host_key(creds_for(sim, key=key)) == key


async def test_read_wireless_config(sim: RouterSimulator, manager: RouterManager) -> None:
    creds = await provisioned(manager, sim)
    result = await manager.read_wireless(creds)
    assert result.ok, result.error
    assert result.code == "ok"
    config = parse_wireless(result.output)
    assert [(r.name, r.band, r.channel) for r in config.radios] == [
        ("radio0", "2g", 6),
        ("radio1", "5g", 36),
    ]
    assert {(i.name, i.device, i.ssid) for i in config.interfaces} == {
        ("default_radio0", "radio0", "Kanjia"),
        ("default_radio1", "radio1", "Kanjia"),
    }
    assert all(i.has_key for i in config.interfaces)
    # uci show prints the key in clear on the router; the result masks it
    assert PASSPHRASE not in result.output
    assert "wireless.default_radio0.key='***'" in result.output.splitlines()


async def test_read_status_and_scan(sim: RouterSimulator, manager: RouterManager) -> None:
    creds = await provisioned(manager, sim)
    board = parse_board((await manager.read_status(creds)).output)
    assert (board.hostname, board.model) == ("OpenWrt", "Kanjia Mesh AX3000")
    assert board.release.startswith("OpenWrt 23.05")
    scan = await manager.scan(creds, "radio0")
    assert scan.ok
    assert [(n.ssid, n.channel, n.signal_dbm) for n in parse_scan(scan.output)] == [
        ("ChinaNet-A", 6, -55.0),
        ("CMCC-B", 1, -72.0),
    ]


async def test_set_ssid_and_channel_show_in_uci_show(
    sim: RouterSimulator, manager: RouterManager
) -> None:
    creds = await provisioned(manager, sim)
    assert (await manager.set_ssid(creds, "Zhang's Home")).ok
    assert (await manager.set_channel(creds, "radio0", 11)).ok
    assert (await manager.set_channel(creds, "radio1", 149)).ok
    shown = await manager.read_wireless(creds)
    lines = shown.output.splitlines()
    assert "wireless.radio0.channel='11'" in lines
    assert "wireless.radio1.channel='149'" in lines
    assert "wireless.default_radio0.ssid='Zhang'\\''s Home'" in lines
    config = parse_wireless(shown.output)
    assert {i.ssid for i in config.interfaces} == {"Zhang's Home"}
    # committed and reloaded: the radios run on the new channels
    assert sim.radio.channels == {"radio0": 11, "radio1": 149}
    info = await manager.read_status(creds)
    assert info.ok


@pytest.mark.parametrize(
    ("radio", "channel"),
    [
        pytest.param("radio0", 3, id="R13-2g-overlapping-channel"),
        pytest.param("radio0", 36, id="R13-5g-channel-on-2g-radio"),
        pytest.param("radio1", 6, id="R13-2g-channel-on-5g-radio"),
        pytest.param("radio1", 52, id="R13-5g-dfs-channel"),
        pytest.param("radio7", 6, id="unknown-radio"),
    ],
)
async def test_channel_outside_the_band_plan_is_refused(
    sim: RouterSimulator, manager: RouterManager, radio: str, channel: int
) -> None:
    creds = await provisioned(manager, sim)
    result = await manager.set_channel(creds, radio, channel)
    assert (result.ok, result.code) == (False, "invalid")
    assert not [c for c in sim.commands if c.startswith("uci set")]


async def test_command_timeout_is_a_failed_result(sim: RouterSimulator) -> None:
    manager = RouterManager(max_sessions=2, connect_timeout=5.0, command_timeout=0.2)
    creds = await provisioned(manager, sim)
    sim.command_delay = 1.0
    result = await manager.read_wireless(creds)
    assert (result.ok, result.code) == (False, "timed_out")
    assert result.error is not None
    assert "timed out" in result.error


async def test_refused_login_is_a_failed_result(
    sim: RouterSimulator, manager: RouterManager
) -> None:
    key = await manager.provision_host_key(creds_for(sim))
    result = await manager.read_status(creds_for(sim, password="wrong", key=key))
    assert (result.ok, result.code) == (False, "auth_failed")
    assert not sim.commands
    with pytest.raises(ProvisioningError) as raised:
        await manager.provision_host_key(creds_for(sim, password="wrong"))
    assert raised.value.code == "auth_failed"


async def test_host_key_changed_after_provisioning_is_refused(
    sim: RouterSimulator, manager: RouterManager
) -> None:
    creds = await provisioned(manager, sim)
    assert (await manager.read_status(creds)).ok
    sim.rotate_host_key()
    sim.commands.clear()
    result = await manager.set_ssid(creds, "hijacked")
    assert (result.ok, result.code) == (False, "host_key_changed")
    assert not sim.commands  # refused before login: the router never saw a command
    with pytest.raises(ProvisioningError) as raised:
        await manager.provision_host_key(creds)
    assert raised.value.code == "host_key_changed"


async def test_unpinned_credentials_are_not_used(
    sim: RouterSimulator, manager: RouterManager
) -> None:
    result = await manager.read_status(creds_for(sim))
    assert (result.ok, result.code) == (False, "failed")
    assert not sim.commands


async def test_suspended_router_refuses_changes_but_reports_status(
    sim: RouterSimulator, manager: RouterManager
) -> None:
    """R12: managed networking is suspended while the broadband account is stopped."""
    creds = await provisioned(manager, sim)
    sim.suspended = True
    assert (await manager.read_status(creds)).ok
    assert (await manager.read_wireless(creds)).ok
    assert (await manager.scan(creds, "radio1")).ok
    for result in (
        await manager.set_ssid(creds, "while stopped"),
        await manager.set_channel(creds, "radio0", 11),
        await manager.reboot(creds),
    ):
        assert (result.ok, result.code, result.exit_status) == (False, "failed", 1)
        assert result.error is not None
        assert SUSPENDED_MESSAGE in result.error
    assert sim.radio.channels["radio0"] == 6
    assert sim.reboots == 0
    sim.suspended = False
    assert (await manager.set_channel(creds, "radio0", 11)).ok


async def test_passphrase_never_in_logs_errors_or_results(
    sim: RouterSimulator, manager: RouterManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="devices.router")
    secret = "n3w-Secret-Phrase"
    creds = await provisioned(manager, sim)
    results: list[CommandResult] = [await manager.set_passphrase(creds, secret)]
    assert results[0].ok
    assert sim.uci.committed["default_radio0"].options["key"] == secret
    results.append(await manager.read_wireless(creds))
    sim.suspended = True
    results.append(await manager.set_passphrase(creds, secret))
    sim.suspended = False
    slow = RouterManager(max_sessions=1, connect_timeout=5.0, command_timeout=0.2)
    sim.command_delay = 0.5
    results.append(await slow.set_passphrase(creds, secret))
    assert [r.code for r in results] == ["ok", "ok", "failed", "timed_out"]
    # the refused `uci set ...key=...` is named in the error, with the key masked
    assert "wireless.default_radio0.key=***" in (results[2].error or "")
    for result in results:
        assert secret not in result.output
        assert secret not in (result.error or "")
    assert caplog.records  # the failures were logged, masked
    for record in caplog.records:
        assert secret not in record.getMessage()


@pytest.mark.parametrize(
    "passphrase",
    [
        pytest.param("short", id="too-short"),
        pytest.param("x" * 64, id="64-not-hex"),
        pytest.param("tab\tinside", id="not-printable"),
    ],
)
async def test_invalid_passphrase_is_refused_without_echo(
    sim: RouterSimulator, manager: RouterManager, passphrase: str
) -> None:
    creds = await provisioned(manager, sim)
    result = await manager.set_passphrase(creds, passphrase)
    assert (result.ok, result.code) == (False, "invalid")
    assert passphrase not in (result.error or "")
    assert not [c for c in sim.commands if c.startswith("uci set")]


async def test_band_steering(sim: RouterSimulator, manager: RouterManager) -> None:
    creds = await provisioned(manager, sim)
    assert (await manager.set_band_steering(creds, True)).ok
    assert parse_wireless((await manager.read_wireless(creds)).output).band_steering
    assert (await manager.set_band_steering(creds, False)).ok
    assert not parse_wireless((await manager.read_wireless(creds)).output).band_steering
    # steering needs one SSID on both bands
    assert (await manager.set_ssid(creds, "Only-5G", radio="radio1")).ok
    refused = await manager.set_band_steering(creds, True)
    assert (refused.ok, refused.code) == (False, "invalid")


async def test_reboot(sim: RouterSimulator, manager: RouterManager) -> None:
    creds = await provisioned(manager, sim)
    assert (await manager.reboot(creds)).ok
    assert sim.reboots == 1


async def test_shell_exit_codes_and_uncommitted_changes(
    sim: RouterSimulator, manager: RouterManager
) -> None:
    creds = await provisioned(manager, sim)
    async with manager.session(creds) as session:
        unknown = await session.run("opkg-magic --now")
        assert (unknown.code, unknown.exit_status) == ("failed", 127)
        assert "ash: opkg-magic: not found" in (unknown.error or "")
        missing = await session.run("iwinfo radio9 info")
        assert missing.exit_status == 1
        # staged but not committed: shown by uci, not applied by wifi reload
        assert (await session.run("uci set wireless.radio0.channel=1")).ok
        assert (await session.run("wifi reload")).ok
        assert sim.radio.channels["radio0"] == 6
        staged = await session.run("uci show wireless.radio0.channel")
        assert staged.output == "wireless.radio0.channel='1'\n"
        assert (await session.run("uci changes")).output == "wireless.radio0.channel='1'\n"
        info = await session.radio_info("radio0")
        assert "Channel: 6 (2.437 GHz)" in info.output
        assert (await session.run("uci commit wireless")).ok
        assert sim.radio.channels["radio0"] == 6
        assert (await session.run("wifi reload")).ok
        assert sim.radio.channels["radio0"] == 1
        assert "Channel: 1 (2.412 GHz)" in (await session.radio_info("radio0")).output


async def test_session_pool_bound_holds() -> None:
    gauge = ConnectionGauge()
    manager = RouterManager(max_sessions=2, connect_timeout=5.0, command_timeout=5.0)
    async with (
        RouterSimulator(password=PASSWORD, gauge=gauge) as one,
        RouterSimulator(password=PASSWORD, gauge=gauge) as two,
    ):
        creds = [await provisioned(manager, one), await provisioned(manager, two)]
        one.command_delay = two.command_delay = 0.1
        results = await asyncio.gather(*(manager.read_status(creds[i % 2]) for i in range(6)))
    assert all(r.ok for r in results)
    assert manager.peak_sessions == 2
    assert gauge.peak <= 2
    assert manager.active_sessions == 0
