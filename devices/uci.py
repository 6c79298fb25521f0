"""A home router's configuration as OpenWrt shows it, and the changes Kanjia makes to it.

Pure: no I/O. :mod:`devices.router` runs the commands over SSH; this module reads what
they print and decides what to type (R13):

- **Reading.** :func:`parse_uci_show` (``uci show``), :func:`parse_wireless` (``uci show
  wireless``: radios and interfaces) and :func:`parse_board` (``ubus call system board``).
  Output that does not parse raises :class:`RouterOutputError`.
- **Changing.** A :class:`WirelessChange` (:class:`SsidChange`, :class:`PassphraseChange`,
  :class:`ChannelsChange`, :class:`BandSteeringChange`) checks the request on its own
  (:meth:`~WirelessChange.check`, before any session opens) and then against the
  router's configuration (:meth:`~WirelessChange.settings`); either raises
  :class:`InvalidSetting` (a 2.4 GHz channel outside 1/6/11, say). :func:`change_commands`
  renders the settings as ``uci set``, ``uci commit wireless`` and ``wifi reload``.
- **Secrets.** :func:`redact` masks a passphrase (raw or shell-quoted) and every ``key``
  option that ``uci show`` prints in clear.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, Literal, Protocol, TypeAlias

from devices.errors import DomainError, Invalid

__all__ = [
    "ALLOWED_CHANNELS",
    "MASK",
    "Band",
    "BandSteeringChange",
    "BoardInfo",
    "ChannelsChange",
    "InterfaceConfig",
    "InvalidSetting",
    "PassphraseChange",
    "RadioConfig",
    "RouterOutputError",
    "Setting",
    "SsidChange",
    "WirelessChange",
    "WirelessConfig",
    "band_of_channel",
    "change_commands",
    "parse_board",
    "parse_uci_show",
    "parse_wireless",
    "redact",
]

Band: TypeAlias = Literal["2g", "5g"]
#: One option of the wireless configuration and its value: ``("radio0.channel", "6")``.
Setting: TypeAlias = tuple[str, str]

#: Channels the service may set, per band (R13): on 2.4 GHz only the three that do not
#: overlap; on 5 GHz the 20 MHz channels without DFS radar detection.
ALLOWED_CHANNELS: Final[Mapping[Band, tuple[int, ...]]] = {
    "2g": (1, 6, 11),
    "5g": (36, 40, 44, 48, 149, 153, 157, 161),
}

#: What a secret is replaced with wherever it would be shown.
MASK: Final = "***"

_KEY_LINE = re.compile(r"^(\S+\.key=).*$", re.MULTILINE)
_SECTION = re.compile(r"[A-Za-z0-9_]+")


def band_of_channel(channel: int) -> Band:
    """The band a WiFi channel number belongs to (1–14: 2.4 GHz, 32–177: 5 GHz)."""
    if 1 <= channel <= 14:
        return "2g"
    if 32 <= channel <= 177:
        return "5g"
    raise ValueError(f"channel {channel} is neither a 2.4 GHz nor a 5 GHz channel")


def _band_or_none(channel: int) -> Band | None:
    try:
        return band_of_channel(channel)
    except ValueError:
        return None


# --- errors -------------------------------------------------------------------------------


class RouterOutputError(DomainError):
    """The router answered with output that does not parse (a fault, not a refusal)."""

    code = "router_output"

    def __init__(self, what: str, line: str) -> None:
        super().__init__(f"unexpected {what} output from the router: {line!r}")
        self.what = what
        self.line = line


class InvalidSetting(Invalid):
    """A change that the request itself or the router's configuration shows to be invalid."""

    code = "invalid_setting"


# --- values -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RadioConfig:
    """A ``wifi-device`` section; ``channel`` is None for ``auto``."""

    name: str
    band: Band
    channel: int | None
    htmode: str = ""
    disabled: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class InterfaceConfig:
    """A ``wifi-iface`` section; the key itself is never kept, only whether one is set."""

    name: str
    device: str
    ssid: str
    encryption: str
    mode: str = "ap"
    has_key: bool = False
    bss_transition: bool = False
    ieee80211k: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class WirelessConfig:
    radios: tuple[RadioConfig, ...]
    interfaces: tuple[InterfaceConfig, ...]

    def radio(self, name: str) -> RadioConfig | None:
        return next((r for r in self.radios if r.name == name), None)

    def interfaces_of(self, radio: str | None) -> tuple[InterfaceConfig, ...]:
        """The AP interfaces of ``radio`` (None: of every radio)."""
        return tuple(i for i in self.interfaces if i.mode == "ap" and radio in (None, i.device))

    @property
    def band_steering(self) -> bool:
        """Steering needs one SSID on every AP and 802.11k/v on each of them."""
        aps = self.interfaces_of(None)
        return (
            bool(aps)
            and len({i.ssid for i in aps}) == 1
            and all(i.bss_transition and i.ieee80211k for i in aps)
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BoardInfo:
    """``ubus call system board``, the fields the service shows."""

    hostname: str
    model: str
    board_name: str
    release: str
    kernel: str


# --- reading OpenWrt output ---------------------------------------------------------------


def _unquote_uci(raw: str) -> str:
    """A ``uci show`` value: single-quoted words, ``'\\''`` for a quote inside."""
    try:
        words = shlex.split(raw, posix=True)
    except ValueError as exc:
        raise RouterOutputError("uci show", raw) from exc
    return " ".join(words)


def parse_uci_show(text: str) -> dict[str, str]:
    """``uci show`` lines into ``{"wireless.radio0.channel": "6", "wireless.radio0": ...}``."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, raw = line.partition("=")
        if not sep or not key or " " in key:
            raise RouterOutputError("uci show", line)
        values[key] = _unquote_uci(raw)
    return values


def _option(values: Mapping[str, str], section: str, name: str, default: str = "") -> str:
    return values.get(f"wireless.{section}.{name}", default)


def _radio(values: Mapping[str, str], section: str) -> RadioConfig:
    opt = partial(_option, values, section)
    band = opt("band")
    if band not in ("2g", "5g"):
        raise RouterOutputError("uci show", f"wireless.{section}.band='{band}'")
    channel_raw = opt("channel", "auto")
    try:
        channel = None if channel_raw == "auto" else int(channel_raw)
    except ValueError as exc:
        raise RouterOutputError("uci show", f"wireless.{section}.channel='{channel_raw}'") from exc
    return RadioConfig(
        name=section,
        band="2g" if band == "2g" else "5g",
        channel=channel,
        htmode=opt("htmode"),
        disabled=opt("disabled", "0") == "1",
    )


def _interface(values: Mapping[str, str], section: str) -> InterfaceConfig:
    opt = partial(_option, values, section)
    return InterfaceConfig(
        name=section,
        device=opt("device"),
        ssid=opt("ssid"),
        encryption=opt("encryption", "none"),
        mode=opt("mode", "ap"),
        has_key=bool(opt("key")),
        bss_transition=opt("bss_transition", "0") == "1",
        ieee80211k=opt("ieee80211k", "0") == "1",
    )


def parse_wireless(text: str) -> WirelessConfig:
    """The output of ``uci show wireless`` as radios and interfaces."""
    values = parse_uci_show(text)
    radios: list[RadioConfig] = []
    interfaces: list[InterfaceConfig] = []
    for key, kind in values.items():
        if key.count(".") != 1 or not key.startswith("wireless."):
            continue
        section = key.split(".")[1]
        if kind == "wifi-device":
            radios.append(_radio(values, section))
        elif kind == "wifi-iface":
            interfaces.append(_interface(values, section))
    return WirelessConfig(radios=tuple(radios), interfaces=tuple(interfaces))


def parse_board(text: str) -> BoardInfo:
    """The JSON printed by ``ubus call system board``."""
    try:
        data: Any = json.loads(text)
        release = data.get("release") or {}
        return BoardInfo(
            hostname=str(data["hostname"]),
            model=str(data["model"]),
            board_name=str(data.get("board_name", "")),
            release=str(release.get("description", "")),
            kernel=str(data.get("kernel", "")),
        )
    except (ValueError, KeyError, AttributeError, TypeError) as exc:
        raise RouterOutputError("ubus call system board", text[:200]) from exc


def redact(text: str, secrets: Sequence[str]) -> str:
    """Mask each secret (raw or shell-quoted) and every ``key`` option of ``uci show``."""
    for secret in secrets:
        if secret:
            text = text.replace(shlex.quote(secret), MASK).replace(secret, MASK)
    return _KEY_LINE.sub(lambda m: f"{m.group(1)}'{MASK}'", text)


# --- changes ------------------------------------------------------------------------------


class WirelessChange(Protocol):
    """A change of the wireless configuration, decided without I/O."""

    def check(self) -> None:
        """Raise :class:`InvalidSetting` if the request is invalid in itself."""
        ...

    def settings(self, config: WirelessConfig) -> list[Setting]:
        """The options to set on ``config``, or :class:`InvalidSetting`."""
        ...


def _access_points(config: WirelessConfig, radio: str | None) -> tuple[InterfaceConfig, ...]:
    aps = config.interfaces_of(radio)
    if not aps:
        raise InvalidSetting(f"no access point interface on {radio}")
    return aps


@dataclass(frozen=True, slots=True, kw_only=True)
class SsidChange:
    """The SSID of the AP interfaces of ``radio`` (None: of every radio)."""

    ssid: str
    radio: str | None = None

    def check(self) -> None:
        if not 1 <= len(self.ssid.encode()) <= 32:
            raise InvalidSetting("an SSID must be 1 to 32 bytes long")
        if any(ord(c) < 32 or ord(c) == 127 for c in self.ssid):
            raise InvalidSetting("an SSID must not contain control characters")

    def settings(self, config: WirelessConfig) -> list[Setting]:
        return [(f"{i.name}.ssid", self.ssid) for i in _access_points(config, self.radio)]


@dataclass(frozen=True, slots=True, kw_only=True)
class PassphraseChange:
    """The WPA passphrase of the AP interfaces of ``radio``; WPA2 where there was none.

    The passphrase is never shown: not in ``repr``, not in an error.
    """

    passphrase: str = field(repr=False)
    radio: str | None = None

    def check(self) -> None:
        """WPA: 8–63 printable ASCII characters, or 64 hexadecimal digits."""
        phrase = self.passphrase
        if len(phrase) == 64 and all(c in "0123456789abcdefABCDEF" for c in phrase):
            return
        if not 8 <= len(phrase) <= 63:
            raise InvalidSetting(
                "a WiFi passphrase must be 8 to 63 characters long (or 64 hex digits)"
            )
        if any(not 32 <= ord(c) <= 126 for c in phrase):
            raise InvalidSetting("a WiFi passphrase must be printable ASCII")

    def settings(self, config: WirelessConfig) -> list[Setting]:
        settings: list[Setting] = []
        for i in _access_points(config, self.radio):
            if i.encryption == "none":
                settings.append((f"{i.name}.encryption", "psk2"))
            settings.append((f"{i.name}.key", self.passphrase))
        return settings


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelsChange:
    """Channels of several radios, set together.

    Each channel must be one of its band's :data:`ALLOWED_CHANNELS` (or ``auto``);
    ``restore`` (a tuning rollback) accepts any channel of the band, since it puts back
    what the router ran before.
    """

    channels: Mapping[str, int | Literal["auto"]]
    restore: bool = False

    def check(self) -> None:
        if not self.channels:
            raise InvalidSetting("no channel to set")
        for name in self.channels:
            if not _SECTION.fullmatch(name):
                raise InvalidSetting(f"{name!r} is not a radio name")

    def settings(self, config: WirelessConfig) -> list[Setting]:
        settings: list[Setting] = []
        for name, channel in self.channels.items():
            radio = config.radio(name)
            if radio is None:
                raise InvalidSetting(f"the router has no radio {name}")
            allowed = ALLOWED_CHANNELS[radio.band]
            acceptable = (
                channel == "auto"
                or channel in allowed
                or (self.restore and _band_or_none(channel) == radio.band)
            )
            if not acceptable:
                listed = ", ".join(map(str, allowed))
                raise InvalidSetting(
                    f"channel {channel} is not allowed on {name} ({radio.band}); allowed: {listed}"
                )
            settings.append((f"{name}.channel", str(channel)))
        return settings


@dataclass(frozen=True, slots=True, kw_only=True)
class BandSteeringChange:
    """Band steering: 802.11k/v on every AP interface (clients are steered by BSS
    transition). Steering only works with one SSID on both bands; it is refused while
    the SSIDs differ."""

    enabled: bool

    def check(self) -> None:
        return None

    def settings(self, config: WirelessConfig) -> list[Setting]:
        aps = config.interfaces_of(None)
        if not aps:
            raise InvalidSetting("no access point interface")
        if self.enabled and len({i.ssid for i in aps}) > 1:
            raise InvalidSetting("band steering needs the same SSID on every band; set it first")
        flag = "1" if self.enabled else "0"
        return [(f"{i.name}.{opt}", flag) for i in aps for opt in ("bss_transition", "ieee80211k")]


def change_commands(settings: Sequence[Setting]) -> list[str]:
    """``uci set`` each setting (values shell-quoted), then one commit and one reload."""
    commands = [f"uci set wireless.{key}={shlex.quote(value)}" for key, value in settings]
    return [*commands, "uci commit wireless", "wifi reload"]
