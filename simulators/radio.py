"""A radio model of one home: main router, mesh satellites, neighbours, clients (R13).

The simulated router's radios live here: ``radio0`` on 2.4 GHz (channels 1–13) and
``radio1`` on 5 GHz (36–48, 149–161), on the main router and on 0–2 mesh satellites that
follow the main router's channels (their backhaul shares them). Neighbouring networks sit
on given channels and are heard by one node at a given signal; clients are associated
with one node and band at a given signal.

Telemetry is derived deterministically from the running channels, so moving a radio to a
less crowded channel shows up as better numbers (see :func:`devices.tuning.score`):

- **utilisation** = own airtime (2 % beacons + 3 % per client) + contention: for each
  neighbour, ``overlap × airtime × audibility``, audibility rising linearly from 0 at
  −95 dBm to 1 at −65 dBm (a neighbour heard that well defers us for all its airtime);
- **noise** = the band's floor (−95 dBm on 2.4 GHz, −100 dBm on 5 GHz) plus the energy
  of partially overlapping neighbours, ``overlap × signal`` attenuated by 25 dB;
- **retry rate** = 2 % + 0.4 % per point of contention + 1 % per dB of noise above the
  floor, at most 90 %.

Randomness (:meth:`Home.generate`) is seeded; the model itself has none.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import fmean
from typing import Final

from devices.tuning import RadioTelemetry, overlap
from devices.uci import Band, band_of_channel

__all__ = [
    "MAIN",
    "RADIO_BANDS",
    "VALID_CHANNELS",
    "Client",
    "Home",
    "NeighbourNetwork",
    "RadioModel",
]

#: The main router's node name; satellites have their own.
MAIN: Final = "main"
#: OpenWrt radio sections of the simulated router and their bands.
RADIO_BANDS: Final[Mapping[str, Band]] = {"radio0": "2g", "radio1": "5g"}
#: Channels the simulated radios can run on (wider than what tuning may choose).
VALID_CHANNELS: Final[Mapping[Band, tuple[int, ...]]] = {
    "2g": tuple(range(1, 14)),
    "5g": (36, 40, 44, 48, 149, 153, 157, 161),
}
NOISE_FLOOR_DBM: Final[Mapping[Band, float]] = {"2g": -95.0, "5g": -100.0}
MAX_SATELLITES: Final = 2


def _check_signal(signal_dbm: float) -> None:
    if not -110 <= signal_dbm <= -10:
        raise ValueError("a signal must be between -110 and -10 dBm")


@dataclass(frozen=True, slots=True, kw_only=True)
class NeighbourNetwork:
    """Somebody else's network; ``airtime`` is the share of time it transmits."""

    channel: int
    signal_dbm: float
    ssid: str = ""
    bssid: str = "02:00:00:00:00:00"
    airtime: float = 0.2
    heard_by: str = MAIN

    def __post_init__(self) -> None:
        band = band_of_channel(self.channel)
        if self.channel not in VALID_CHANNELS[band]:
            raise ValueError(f"channel {self.channel} is not simulated")
        _check_signal(self.signal_dbm)
        if not 0 <= self.airtime <= 1:
            raise ValueError("airtime is a fraction between 0 and 1")

    @property
    def band(self) -> Band:
        return band_of_channel(self.channel)


@dataclass(frozen=True, slots=True, kw_only=True)
class Client:
    mac: str
    band: Band
    signal_dbm: float
    node: str = MAIN

    def __post_init__(self) -> None:
        _check_signal(self.signal_dbm)


@dataclass(frozen=True, slots=True, kw_only=True)
class Home:
    """The radio environment of one home and its routers' initial channels."""

    satellites: tuple[str, ...] = ()
    neighbours: tuple[NeighbourNetwork, ...] = ()
    clients: tuple[Client, ...] = ()
    channel_2g: int = 6
    channel_5g: int = 36

    def __post_init__(self) -> None:
        if len(self.satellites) > MAX_SATELLITES:
            raise ValueError(f"a home has at most {MAX_SATELLITES} mesh satellites")
        if len(set(self.nodes)) != len(self.nodes):
            raise ValueError("node names must be distinct and not 'main'")
        places = [n.heard_by for n in self.neighbours] + [c.node for c in self.clients]
        for where in places:
            if where not in self.nodes:
                raise ValueError(f"unknown node {where!r}")
        if self.channel_2g not in VALID_CHANNELS["2g"]:
            raise ValueError("channel_2g must be a 2.4 GHz channel from 1 to 13")
        if self.channel_5g not in VALID_CHANNELS["5g"]:
            raise ValueError("channel_5g must be a simulated 5 GHz channel")

    @property
    def nodes(self) -> tuple[str, ...]:
        return (MAIN, *self.satellites)

    @classmethod
    def generate(cls, seed: int | str, *, satellites: int | None = None) -> Home:
        """A plausible random home, the same for the same seed."""
        rng = random.Random(seed)
        count = rng.randint(0, MAX_SATELLITES) if satellites is None else satellites
        sats = tuple(f"sat{i + 1}" for i in range(count))
        nodes = (MAIN, *sats)

        def mac() -> str:
            return "02:" + ":".join(f"{rng.randrange(256):02x}" for _ in range(5))

        neighbours = [
            NeighbourNetwork(
                ssid=f"Neighbour-{i}",
                bssid=mac(),
                channel=rng.choice((1, 1, 6, 6, 6, 11, 11, 3, 4, 9)),
                signal_dbm=rng.randint(-88, -45),
                airtime=round(rng.uniform(0.05, 0.35), 2),
                heard_by=MAIN if rng.random() < 0.7 else rng.choice(nodes),
            )
            for i in range(rng.randint(3, 10))
        ]
        neighbours += [
            NeighbourNetwork(
                ssid=f"Neighbour-5G-{i}",
                bssid=mac(),
                channel=rng.choice(VALID_CHANNELS["5g"]),
                signal_dbm=rng.randint(-90, -60),
                airtime=round(rng.uniform(0.05, 0.3), 2),
                heard_by=MAIN if rng.random() < 0.7 else rng.choice(nodes),
            )
            for i in range(rng.randint(0, 4))
        ]
        clients = tuple(
            Client(
                mac=mac(),
                band=rng.choice(("2g", "5g")),
                signal_dbm=rng.randint(-80, -40),
                node=rng.choice(nodes),
            )
            for _ in range(rng.randint(2, 12))
        )
        return cls(
            satellites=sats,
            neighbours=tuple(neighbours),
            clients=clients,
            channel_2g=rng.choice((1, 6, 11)),
            channel_5g=rng.choice((36, 149)),
        )


def _audibility(signal_dbm: float) -> float:
    return min(1.0, max(0.0, (signal_dbm + 95.0) / 30.0))


class RadioModel:
    """The running radios of one home; :meth:`set_channel` is what ``wifi reload`` does."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self.channels: dict[str, int] = {"radio0": home.channel_2g, "radio1": home.channel_5g}

    def band(self, radio: str) -> Band:
        try:
            return RADIO_BANDS[radio]
        except KeyError:
            raise ValueError(f"no radio {radio!r}") from None

    def set_channel(self, radio: str, channel: int) -> None:
        band = self.band(radio)
        if channel not in VALID_CHANNELS[band]:
            raise ValueError(f"channel {channel} is not a valid {band} channel")
        self.channels[radio] = channel

    def scan(self, radio: str, node: str = MAIN) -> tuple[NeighbourNetwork, ...]:
        """Neighbours ``node`` hears on ``radio``'s band, strongest first."""
        band = self.band(radio)
        heard = [n for n in self.home.neighbours if n.heard_by == node and n.band == band]
        return tuple(sorted(heard, key=lambda n: (-n.signal_dbm, n.bssid)))

    def clients(self, radio: str, node: str = MAIN) -> tuple[Client, ...]:
        band = self.band(radio)
        return tuple(c for c in self.home.clients if c.node == node and c.band == band)

    def radio_telemetry(self, radio: str, node: str = MAIN) -> RadioTelemetry:
        band = self.band(radio)
        channel = self.channels[radio]
        floor = NOISE_FLOOR_DBM[band]
        contention = 0.0
        leak_mw = 0.0
        for n in self.scan(radio, node):
            o = overlap(band, channel, n.channel)
            contention += 100.0 * o * n.airtime * _audibility(n.signal_dbm)
            if 0.0 < o < 1.0:
                leak_mw += o * 10 ** ((n.signal_dbm - 25.0) / 10.0)
        clients = self.clients(radio, node)
        own = 2.0 + 3.0 * len(clients)
        noise = 10.0 * math.log10(10 ** (floor / 10.0) + leak_mw)
        retry = 0.02 + 0.004 * contention + 0.01 * max(0.0, noise - floor)
        return RadioTelemetry(
            node=node,
            radio=radio,
            band=band,
            channel=channel,
            utilisation=round(min(100.0, own + contention), 1),
            noise_dbm=round(noise, 1),
            clients=len(clients),
            retry_rate=round(min(0.9, retry), 3),
            client_signal_dbm=round(fmean(c.signal_dbm for c in clients), 1) if clients else None,
        )

    def telemetry(self) -> tuple[RadioTelemetry, ...]:
        """Every radio of every node, main router first."""
        return tuple(
            self.radio_telemetry(radio, node) for node in self.home.nodes for radio in RADIO_BANDS
        )
