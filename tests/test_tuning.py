"""WiFi tuning (R13): score, overlap, channel choice, the radio model, and tune() over SSH."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from devices.router import RouterCredentials, RouterManager
from devices.tuning import (
    Neighbour,
    RadioTelemetry,
    choose_channel,
    overlap,
    parse_scan,
    radio_score,
    score,
    tune,
)
from devices.uci import Band, RouterOutputError
from simulators.radio import Client, Home, NeighbourNetwork, RadioModel
from simulators.router import RouterSimulator

PASSWORD = "router-admin-pw"


def t24(*, utilisation: float, retry: float, noise: float, channel: int = 6) -> RadioTelemetry:
    return RadioTelemetry(
        radio="radio0",
        band="2g",
        channel=channel,
        utilisation=utilisation,
        noise_dbm=noise,
        clients=0,
        retry_rate=retry,
    )


# --- score --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("utilisation", "retry", "noise", "expected"),
    [
        pytest.param(0, 0, -95, 100.0, id="R13-clean-radio"),
        # 100 - 0.5*50 - 40*0.1 - 2*(−85+95) = 100 - 25 - 4 - 20
        pytest.param(50, 0.1, -85, 51.0, id="R13-busy-noisy"),
        # noise under the −95 dBm reference costs nothing: 100 - 10 - 2
        pytest.param(20, 0.05, -100, 88.0, id="R13-quiet-5g-floor"),
        # 100 - 50 - 36 - 70: a hopeless channel goes below zero
        pytest.param(100, 0.9, -60, -56.0, id="R13-hopeless"),
    ],
)
def test_score(utilisation: float, retry: float, noise: float, expected: float) -> None:
    assert score(t24(utilisation=utilisation, retry=retry, noise=noise)) == pytest.approx(expected)


def test_radio_score_is_the_mean_over_nodes() -> None:
    main = t24(utilisation=0, retry=0, noise=-95)  # 100
    sat = RadioTelemetry(
        node="sat1",
        radio="radio0",
        band="2g",
        channel=6,
        utilisation=50,
        retry_rate=0.1,
        noise_dbm=-85,
        clients=1,
    )  # 51
    assert radio_score([main, sat], "radio0") == pytest.approx(75.5)
    assert radio_score([main, sat], "radio1") is None


def test_telemetry_round_trips_through_its_message_form() -> None:
    t = t24(utilisation=12.5, retry=0.03, noise=-93)
    assert RadioTelemetry.from_dict(t.to_dict()) == t
    assert RadioTelemetry.from_dict({**t.to_dict(), "band": "2.4"}) == t
    with pytest.raises(ValueError, match="not a 5g channel"):
        RadioTelemetry(
            radio="radio1",
            band="5g",
            channel=6,
            utilisation=0,
            noise_dbm=-95,
            clients=0,
            retry_rate=0,
        )


# --- overlap and channel choice -----------------------------------------------------------


@pytest.mark.parametrize(
    ("band", "a", "b", "expected"),
    [
        pytest.param("2g", 6, 6, 1.0, id="R13-2g-same"),
        pytest.param("2g", 6, 7, 0.8, id="R13-2g-one-apart"),
        pytest.param("2g", 6, 8, 0.6, id="R13-2g-two-apart"),
        pytest.param("2g", 1, 4, 0.4, id="R13-2g-three-apart"),
        pytest.param("2g", 1, 5, 0.2, id="R13-2g-four-apart"),
        pytest.param("2g", 1, 6, 0.0, id="R13-2g-1-6-disjoint"),
        pytest.param("2g", 13, 1, 0.0, id="R13-2g-far"),
        pytest.param("5g", 36, 36, 1.0, id="R13-5g-same"),
        pytest.param("5g", 36, 40, 0.0, id="R13-5g-neighbouring"),
    ],
)
def test_overlap(band: Band, a: int, b: int, expected: float) -> None:
    assert overlap(band, a, b) == pytest.approx(expected)


def n(channel: int, signal: float) -> Neighbour:
    return Neighbour(channel=channel, signal_dbm=signal)


@pytest.mark.parametrize(
    ("band", "scan", "current", "expected"),
    [
        pytest.param("2g", [], 6, 6, id="R13-2g-empty-air-stays"),
        pytest.param("2g", [], None, 1, id="R13-2g-auto-takes-lowest"),
        # cost(6) = 50 + 40 = 90; 1 and 11 cost 0: tie goes to the lowest
        pytest.param("2g", [n(6, -50), n(6, -60)], 6, 1, id="R13-2g-leaves-busy-channel"),
        # costs 1: 30, 6: 50, 11: 20
        pytest.param("2g", [n(1, -70), n(6, -50), n(11, -80)], 6, 11, id="R13-2g-signal-weighted"),
        # ch 3 at −50: cost(1) = 0.6*50 = 30, cost(6) = 0.4*50 = 20, cost(11) = 0
        pytest.param("2g", [n(3, -50)], 1, 11, id="R13-2g-adjacent-overlap"),
        # cost(1) = 0.4*40 = 16; cost(6) = 0.6*40 + 0.4*40 = 40; cost(11) = 0.6*40 = 24
        pytest.param("2g", [n(4, -60), n(9, -60)], 1, 1, id="R13-2g-adjacent-both-sides"),
        # cost(6) = 3, within the hysteresis of 5 over cost(1) = 0
        pytest.param("2g", [n(6, -97)], 6, 6, id="R13-2g-hysteresis-keeps"),
        # cost(6) = 6 > 0 + 5
        pytest.param("2g", [n(6, -94)], 6, 1, id="R13-2g-hysteresis-exceeded"),
        pytest.param("2g", [], 3, 1, id="R13-2g-current-not-allowed"),
        # cost(11) = 0 (6 is five channels away)
        pytest.param("2g", [n(1, -60), n(6, -65)], 11, 11, id="R13-2g-already-best"),
        # signal under −100 dBm weighs nothing
        pytest.param("2g", [n(6, -105)], 6, 6, id="R13-2g-inaudible"),
        # costs 36: 40, 40: 30, 44: 0
        pytest.param("5g", [n(36, -60), n(40, -70)], 36, 44, id="R13-5g-co-channel-only"),
        pytest.param("5g", [n(1, -40)], 149, 149, id="R13-5g-ignores-2g-neighbours"),
    ],
)
def test_choose_channel(
    band: Band, scan: list[Neighbour], current: int | None, expected: int
) -> None:
    assert choose_channel(band, scan, current) == expected


SCAN_TEXT = """Cell 01 - Address: 9C:53:22:10:20:30
          ESSID: "ChinaNet-5xQ2"
          Mode: Master  Frequency: 2.437 GHz  Band: 2.4 GHz  Channel: 6
          Signal: -57 dBm  Quality: 53/70
          Encryption: WPA2 PSK (CCMP)

Cell 02 - Address: 02:11:22:33:44:55
          ESSID: unknown
          Mode: Master  Frequency: 2.412 GHz  Band: 2.4 GHz  Channel: 1
          Signal: -81 dBm  Quality: 29/70
          Encryption: none
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("No scan results\n", (), id="empty"),
        pytest.param("", (), id="nothing"),
        pytest.param(
            SCAN_TEXT,
            (
                Neighbour(
                    bssid="9C:53:22:10:20:30", ssid="ChinaNet-5xQ2", channel=6, signal_dbm=-57
                ),
                Neighbour(bssid="02:11:22:33:44:55", ssid="", channel=1, signal_dbm=-81),
            ),
            id="two-cells-one-hidden",
        ),
    ],
)
def test_parse_scan(text: str, expected: tuple[Neighbour, ...]) -> None:
    assert parse_scan(text) == expected


def test_parse_scan_rejects_garbage() -> None:
    with pytest.raises(RouterOutputError):
        parse_scan("Scanning not possible\n")


# --- the radio model ----------------------------------------------------------------------

# One neighbour on channel 6 at −65 dBm (fully audible) using 30 % airtime; two 2.4 GHz
# clients on the main router at −50 and −60 dBm.
MODEL_HOME = Home(
    neighbours=(NeighbourNetwork(channel=6, signal_dbm=-65, airtime=0.3),),
    clients=(
        Client(mac="02:00:00:00:01:01", band="2g", signal_dbm=-50),
        Client(mac="02:00:00:00:01:02", band="2g", signal_dbm=-60),
    ),
)


@pytest.mark.parametrize(
    ("channel", "utilisation", "noise", "retry"),
    [
        # own 2 + 3*2 = 8; contention 100*1*0.3*1 = 30; retry 0.02 + 0.004*30
        pytest.param(6, 38.0, -95.0, 0.14, id="R13-co-channel"),
        # overlap 0.6: contention 18; noise 10·log10(10^-9.5 + 0.6·10^-9) = −90.38 dBm;
        # retry 0.02 + 0.072 + 0.01*4.62 = 0.1382
        pytest.param(8, 26.0, -90.4, 0.138, id="R13-adjacent-channel"),
        # five channels away: no overlap
        pytest.param(11, 8.0, -95.0, 0.02, id="R13-clear-channel"),
    ],
)
def test_model_telemetry_follows_interference(
    channel: int, utilisation: float, noise: float, retry: float
) -> None:
    model = RadioModel(MODEL_HOME)
    model.set_channel("radio0", channel)
    t = model.radio_telemetry("radio0")
    assert (t.channel, t.clients, t.client_signal_dbm) == (channel, 2, -55.0)
    assert t.utilisation == pytest.approx(utilisation)
    assert t.noise_dbm == pytest.approx(noise)
    assert t.retry_rate == pytest.approx(retry)


def test_model_quiet_channel_scores_better() -> None:
    model = RadioModel(MODEL_HOME)
    busy = radio_score(model.telemetry(), "radio0")
    model.set_channel("radio0", 11)
    quiet = radio_score(model.telemetry(), "radio0")
    assert busy is not None
    assert quiet is not None
    # 100 - 19 - 5.6 = 75.4 on channel 6; 100 - 4 - 0.8 = 95.2 on channel 11
    assert busy == pytest.approx(75.4)
    assert quiet == pytest.approx(95.2)


def test_model_audibility_and_satellites() -> None:
    home = Home(
        satellites=("sat1",),
        # heard by the satellite only, at −80 dBm: audibility (−80+95)/30 = 0.5
        neighbours=(NeighbourNetwork(channel=1, signal_dbm=-80, airtime=0.2, heard_by="sat1"),),
        channel_2g=1,
    )
    by_node = {(t.node, t.radio): t for t in RadioModel(home).telemetry()}
    assert set(by_node) == {
        ("main", "radio0"),
        ("main", "radio1"),
        ("sat1", "radio0"),
        ("sat1", "radio1"),
    }
    assert by_node["main", "radio0"].utilisation == pytest.approx(2.0)
    assert by_node["sat1", "radio0"].utilisation == pytest.approx(12.0)  # 2 + 100*0.2*0.5
    assert by_node["sat1", "radio0"].channel == 1  # satellites follow the main router


@pytest.mark.parametrize(
    ("build", "message"),
    [
        pytest.param(lambda: Home(satellites=("a", "b", "c")), "at most 2", id="three-satellites"),
        pytest.param(
            lambda: Home(neighbours=(NeighbourNetwork(channel=1, signal_dbm=-70, heard_by="x"),)),
            "unknown node",
            id="unknown-node",
        ),
        pytest.param(lambda: Home(channel_2g=14), "channel_2g", id="channel-14"),
    ],
)
def test_home_validation(build: Callable[[], Home], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_generated_homes_are_seeded() -> None:
    assert Home.generate(42) == Home.generate(42)
    assert Home.generate(42) != Home.generate(43)


# --- tune() against the simulator's SSH server --------------------------------------------


@asynccontextmanager
async def router(
    home: Home, manager: RouterManager
) -> AsyncIterator[tuple[RouterSimulator, RouterCredentials]]:
    async with RouterSimulator(password=PASSWORD, home=home) as sim:
        creds = RouterCredentials(host=sim.host, port=sim.port, username="root", password=PASSWORD)
        key = await manager.provision_host_key(creds)
        yield (
            sim,
            RouterCredentials(
                host=sim.host,
                port=sim.port,
                username="root",
                password=PASSWORD,
                pinned_host_key=key,
            ),
        )


@pytest.fixture
def manager() -> RouterManager:
    return RouterManager(max_sessions=4, connect_timeout=5.0, command_timeout=5.0)


# Three strong networks on channel 6, one weak on 1, none on 11; 5 GHz is clear.
CROWDED_SIX = (
    NeighbourNetwork(channel=6, signal_dbm=-50, airtime=0.3, bssid="02:00:00:00:06:01"),
    NeighbourNetwork(channel=6, signal_dbm=-55, airtime=0.2, bssid="02:00:00:00:06:02"),
    NeighbourNetwork(channel=6, signal_dbm=-60, airtime=0.2, bssid="02:00:00:00:06:03"),
    NeighbourNetwork(channel=1, signal_dbm=-75, airtime=0.1, bssid="02:00:00:00:01:01"),
)


async def test_tune_moves_radio_off_the_busiest_channel(manager: RouterManager) -> None:
    home = Home(neighbours=CROWDED_SIX, channel_2g=6, channel_5g=36)
    async with router(home, manager) as (sim, creds):
        report = await tune(manager, creds, sim.read_telemetry)
        assert report.ok
        # costs: 6: 50+45+40 = 135, 1: 25, 11: 0
        assert [(c.radio, c.from_channel, c.to_channel) for c in report.changes] == [
            ("radio0", 6, 11)
        ]
        assert report.rolled_back == ()
        before, after = report.scores("before"), report.scores("after")
        assert after["radio0"] > before["radio0"]
        assert after["radio1"] == before["radio1"]
        shown = await manager.read_wireless(creds)
        assert "wireless.radio0.channel='11'" in shown.output.splitlines()
        assert "wireless.radio1.channel='36'" in shown.output.splitlines()
        assert sim.radio.channels == {"radio0": 11, "radio1": 36}


async def test_tune_on_the_best_channel_changes_nothing(manager: RouterManager) -> None:
    home = Home(neighbours=CROWDED_SIX, channel_2g=11, channel_5g=36)
    async with router(home, manager) as (sim, creds):
        report = await tune(manager, creds, sim.read_telemetry)
        assert report.ok
        assert (report.changes, report.rolled_back) == ((), ())
        assert report.after == report.before
        assert not [c for c in sim.commands if c.startswith(("uci set", "uci commit", "wifi"))]
        assert sim.reloads == 0


async def test_tune_rolls_back_a_move_that_made_the_home_worse(manager: RouterManager) -> None:
    """The main router hears only a network on 1, so 6 looks free; the satellite hears a
    loud network on 6. Scores (2.4 GHz, mean over main and sat1):
    on 1: main 100 - 0.5*18.7 - 40*0.087 = 87.2, sat1 98.2 -> 92.7;
    on 6: main 98.2, sat1 100 - 0.5*52 - 40*0.22 = 65.2 -> 81.7: worse, put back."""
    home = Home(
        satellites=("sat1",),
        neighbours=(
            NeighbourNetwork(channel=1, signal_dbm=-70, airtime=0.2),
            NeighbourNetwork(channel=6, signal_dbm=-45, airtime=0.5, heard_by="sat1"),
            NeighbourNetwork(channel=11, signal_dbm=-45, airtime=0.5, heard_by="sat1"),
        ),
        channel_2g=1,
    )
    async with router(home, manager) as (sim, creds):
        report = await tune(manager, creds, sim.read_telemetry)
        assert report.ok
        assert [(c.radio, c.from_channel, c.to_channel) for c in report.changes] == [
            ("radio0", 1, 6)
        ]
        change = report.changes[0]
        assert change.score_before == pytest.approx((87.17 + 98.2) / 2, abs=0.05)
        assert change.score_after == pytest.approx((98.2 + 65.2) / 2, abs=0.05)
        assert report.rolled_back == ("radio0",)
        assert report.kept == ()
        assert report.scores("after") == report.scores("before")
        assert sim.radio.channels["radio0"] == 1
        shown = await manager.read_wireless(creds)
        assert "wireless.radio0.channel='1'" in shown.output.splitlines()


async def test_tune_on_a_suspended_router_reports_the_failure(manager: RouterManager) -> None:
    """R12: while suspended the router refuses the change; tune() reports, never raises."""
    home = Home(neighbours=CROWDED_SIX, channel_2g=6)
    async with router(home, manager) as (sim, creds):
        sim.suspended = True
        report = await tune(manager, creds, sim.read_telemetry)
        assert not report.ok
        assert report.failure is not None
        assert report.failure.code == "failed"
        assert report.changes == ()
        assert sim.radio.channels["radio0"] == 6
