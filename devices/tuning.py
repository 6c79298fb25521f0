"""Remote WiFi tuning (R13, 调优): score radios, pick channels, apply, verify, roll back.

The measurable part of an engineer's visit, done remotely. Decisions are pure and
table-tested (:func:`score`, :func:`choose_channel`, :func:`overlap`); :func:`tune` drives
them through a :class:`~devices.router.RouterManager`.

Choices made here:

- **Score.** ``100 − 0.5·utilisation% − 40·retry_rate − 2·(dB of noise above −95 dBm)``:
  airtime, retries and a raised noise floor are what clients feel. Higher is better; it
  may go below zero on a hopeless channel. A radio's score is the mean over the home's
  nodes (main router and satellites) that report it: satellites follow the main router's
  channel, so a move must be good for the whole home.
- **Interference.** A neighbour costs ``overlap × (signal + 100)`` (dB above −100 dBm, at
  least 0) on a channel. On 2.4 GHz channels are 5 MHz apart and 20 MHz wide, so overlap
  falls linearly from 1 on the same channel to 0 five channels away (1, 6, 11 do not
  overlap); on 5 GHz (20 MHz channels) only the same channel overlaps.
- **Choice.** The least-interfered of the band's allowed channels; ties go to the current
  channel, then the lowest number. The current channel is kept unless another is better by
  more than :data:`HYSTERESIS`, so tuning twice does not flap between near-equal channels.
  A current channel outside the allowed set (2.4 GHz channel 3, ``auto``) is always left.
- **Verify and roll back.** After applying, the next telemetry is compared radio by radio;
  a radio whose score got strictly worse is put back on its previous channel, and the
  report's ``after`` is the telemetry read after that rollback.
- Router-side failures never raise: the report carries the failed
  :class:`~devices.router.CommandResult` in ``failure``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from statistics import fmean
from typing import Any, Final, Literal

from devices.router import CommandResult, RouterCredentials, RouterManager, RouterSession
from devices.uci import (
    ALLOWED_CHANNELS,
    Band,
    RouterOutputError,
    band_of_channel,
)

__all__ = [
    "HYSTERESIS",
    "NOISE_REFERENCE_DBM",
    "ChannelChange",
    "Neighbour",
    "RadioTelemetry",
    "ReadTelemetry",
    "TuneReport",
    "choose_channel",
    "interference",
    "overlap",
    "parse_scan",
    "radio_score",
    "score",
    "tune",
]

#: Noise at or below this level costs nothing in :func:`score`.
NOISE_REFERENCE_DBM: Final = -95.0
#: Interference units (dB above −100 dBm, overlap-weighted) a new channel must save.
HYSTERESIS: Final = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RadioTelemetry:
    """One radio of one node: what the router reports in its ``telemetry`` message."""

    radio: str
    band: Band
    channel: int
    utilisation: float
    noise_dbm: float
    clients: int
    retry_rate: float
    node: str = "main"
    client_signal_dbm: float | None = None

    def __post_init__(self) -> None:
        if band_of_channel(self.channel) != self.band:
            raise ValueError(f"channel {self.channel} is not a {self.band} channel")
        if not 0 <= self.utilisation <= 100:
            raise ValueError("utilisation is a percentage between 0 and 100")
        if not 0 <= self.retry_rate <= 1:
            raise ValueError("retry_rate is a fraction between 0 and 1")
        if self.clients < 0:
            raise ValueError("clients must not be negative")

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "radio": self.radio,
            "band": self.band,
            "channel": self.channel,
            "utilisation": self.utilisation,
            "noise": self.noise_dbm,
            "clients": self.clients,
            "retry_rate": self.retry_rate,
            "signal": self.client_signal_dbm,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RadioTelemetry:
        """The inverse of :meth:`to_dict`; ``band`` may also be written ``2.4`` or ``5``."""
        band_raw = str(data["band"])
        band: Band = "2g" if band_raw in ("2g", "2.4") else "5g"
        if band_raw not in ("2g", "2.4", "5g", "5"):
            raise ValueError(f"unknown band {band_raw!r}")
        signal = data.get("signal")
        return cls(
            node=str(data.get("node", "main")),
            radio=str(data["radio"]),
            band=band,
            channel=int(data["channel"]),
            utilisation=float(data["utilisation"]),
            noise_dbm=float(data["noise"]),
            clients=int(data["clients"]),
            retry_rate=float(data["retry_rate"]),
            client_signal_dbm=None if signal is None else float(signal),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Neighbour:
    """A neighbouring network heard in a scan."""

    channel: int
    signal_dbm: float
    ssid: str = ""
    bssid: str = ""

    @property
    def band(self) -> Band:
        return band_of_channel(self.channel)


ReadTelemetry = Callable[[], Awaitable[Sequence[RadioTelemetry]]]


# --- pure decisions -----------------------------------------------------------------------


def score(telemetry: RadioTelemetry) -> float:
    """How good a radio is for its clients (higher is better; R13)."""
    noise_excess = max(0.0, telemetry.noise_dbm - NOISE_REFERENCE_DBM)
    return 100.0 - 0.5 * telemetry.utilisation - 40.0 * telemetry.retry_rate - 2.0 * noise_excess


def radio_score(telemetry: Iterable[RadioTelemetry], radio: str) -> float | None:
    """Mean score of ``radio`` over the nodes reporting it (None when none does)."""
    scores = [score(t) for t in telemetry if t.radio == radio]
    return fmean(scores) if scores else None


def overlap(band: Band, a: int, b: int) -> float:
    """Spectral overlap of two 20 MHz channels of ``band``: 1 same, 0 disjoint."""
    if band == "5g":
        return 1.0 if a == b else 0.0
    return max(0.0, 1.0 - abs(a - b) / 5.0)


def interference(band: Band, channel: int, neighbours: Iterable[Neighbour]) -> float:
    """What the ``band`` neighbours would cost on ``channel`` (see the module docstring)."""
    return sum(
        overlap(band, channel, n.channel) * max(0.0, n.signal_dbm + 100.0)
        for n in neighbours
        if n.band == band
    )


def choose_channel(band: Band, scan: Iterable[Neighbour], current: int | None) -> int:
    """The least-interfered allowed channel of ``band`` (R13); see the module docstring."""
    neighbours = tuple(scan)
    allowed = ALLOWED_CHANNELS[band]
    costs = {c: interference(band, c, neighbours) for c in allowed}
    best = min(allowed, key=lambda c: (costs[c], c))
    if current in costs and costs[current] <= costs[best] + HYSTERESIS:
        return current
    return best


_CELL = re.compile(r"^Cell \d+ - Address: (\S+)", re.MULTILINE)
_ESSID = re.compile(r'ESSID: (?:"(.*)"|unknown)')
_CHANNEL = re.compile(r"Channel: (\d+)")
_SIGNAL = re.compile(r"Signal: (-?\d+(?:\.\d+)?) dBm")


def parse_scan(text: str) -> tuple[Neighbour, ...]:
    """The cells of ``iwinfo <radio> scan``; ``No scan results`` is an empty scan."""
    starts = [m.start() for m in _CELL.finditer(text)]
    if not starts:
        if text.strip() and text.strip() != "No scan results":
            raise RouterOutputError("iwinfo scan", text.strip().splitlines()[0])
        return ()
    neighbours: list[Neighbour] = []
    for start, end in zip(starts, [*starts[1:], len(text)], strict=True):
        block = text[start:end]
        address = _CELL.match(block)
        channel = _CHANNEL.search(block)
        signal = _SIGNAL.search(block)
        if address is None or channel is None or signal is None:
            raise RouterOutputError("iwinfo scan", block.splitlines()[0])
        essid = _ESSID.search(block)
        neighbours.append(
            Neighbour(
                bssid=address.group(1),
                ssid=(essid.group(1) or "") if essid else "",
                channel=int(channel.group(1)),
                signal_dbm=float(signal.group(1)),
            )
        )
    return tuple(neighbours)


# --- orchestration ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelChange:
    """One radio moved by tuning; ``score_after`` from the telemetry right after the move."""

    radio: str
    band: Band
    from_channel: int | None
    to_channel: int
    score_before: float | None
    score_after: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TuneReport:
    """What :func:`tune` saw and did. ``changes`` lists every move applied, including
    those then undone; ``rolled_back`` names the radios put back."""

    before: tuple[RadioTelemetry, ...]
    after: tuple[RadioTelemetry, ...]
    changes: tuple[ChannelChange, ...]
    rolled_back: tuple[str, ...]
    failure: CommandResult | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def kept(self) -> tuple[ChannelChange, ...]:
        return tuple(c for c in self.changes if c.radio not in self.rolled_back)

    def scores(self, which: Literal["before", "after"]) -> dict[str, float]:
        telemetry = self.before if which == "before" else self.after
        radios = dict.fromkeys(t.radio for t in telemetry)
        return {r: s for r in radios if (s := radio_score(telemetry, r)) is not None}


async def _plan(
    session: RouterSession, before: Sequence[RadioTelemetry]
) -> dict[str, ChannelChange] | CommandResult:
    """The radios to move, each to its best channel (one scan per enabled radio), or the
    failed result."""
    config = await session.wireless_config()
    if isinstance(config, CommandResult):
        return config
    plan: dict[str, ChannelChange] = {}
    for radio in config.radios:
        if radio.disabled:
            continue
        scanned = await session.scan(radio.name)
        if not scanned.ok:
            return scanned
        try:
            neighbours = parse_scan(scanned.output)
        except RouterOutputError as exc:
            return CommandResult.failure("failed", str(exc))
        best = choose_channel(radio.band, neighbours, radio.channel)
        if best != radio.channel:
            plan[radio.name] = ChannelChange(
                radio=radio.name,
                band=radio.band,
                from_channel=radio.channel,
                to_channel=best,
                score_before=radio_score(before, radio.name),
            )
    return plan


async def tune(
    manager: RouterManager, creds: RouterCredentials, read_telemetry: ReadTelemetry
) -> TuneReport:
    """Tune every enabled radio of one home's main router (R13).

    Reads telemetry, the wireless configuration and one scan per radio (one session);
    moves the radios whose best channel differs (one commit, one ``wifi reload``); reads
    telemetry again and puts back any radio whose score got worse.
    """
    before = tuple(await read_telemetry())
    async with manager.session(creds) as session:
        plan = await _plan(session, before)
    if isinstance(plan, CommandResult):
        return TuneReport(before=before, after=before, changes=(), rolled_back=(), failure=plan)
    if not plan:
        return TuneReport(before=before, after=before, changes=(), rolled_back=())
    applied = await manager.set_channels(creds, {r: c.to_channel for r, c in plan.items()})
    if not applied.ok:
        return TuneReport(before=before, after=before, changes=(), rolled_back=(), failure=applied)
    measured = tuple(await read_telemetry())
    changes = tuple(replace(c, score_after=radio_score(measured, c.radio)) for c in plan.values())
    worse = tuple(
        c.radio
        for c in changes
        if c.score_before is not None
        and c.score_after is not None
        and c.score_after < c.score_before
    )
    if not worse:
        return TuneReport(before=before, after=measured, changes=changes, rolled_back=())
    restore: dict[str, int | Literal["auto"]] = {
        c.radio: "auto" if c.from_channel is None else c.from_channel
        for c in changes
        if c.radio in worse
    }
    undone = await manager.set_channels(creds, restore, restore=True)
    if not undone.ok:
        return TuneReport(
            before=before, after=measured, changes=changes, rolled_back=(), failure=undone
        )
    after = tuple(await read_telemetry())
    return TuneReport(before=before, after=after, changes=changes, rolled_back=worse)
