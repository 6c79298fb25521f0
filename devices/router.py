"""Home router management over SSH: the operator's OpenWrt routers (R12, R13).

The operator's whole-home WiFi routers (a main router and mesh satellites) run OpenWrt;
Kanjia manages the main router with the commands an engineer would type: ``uci show
wireless``, ``uci set``, ``uci commit``, ``wifi reload``, ``ubus call system board``,
``iwinfo <radio> info|scan``, ``reboot``.

Choices made here:

- **Pinned host keys.** The first key a router presents is recorded at provisioning
  (:meth:`RouterManager.provision_host_key`, trust on first use); every later session
  trusts that key alone, so a changed key is refused (``host_key_changed``), never
  silently accepted.
- **Results, not exceptions.** Every operation returns a :class:`CommandResult`; a refused
  login, a timeout, a changed key, a refusing router or a request the router's own
  configuration shows to be invalid (a 2.4 GHz channel outside 1/6/11) are results with a
  code. Only provisioning raises (:class:`ProvisioningError`), because it returns the key.
- **Bounded pool.** A semaphore bounds the concurrent SSH sessions of one manager; a
  session holds one connection for several commands (tuning reads the configuration and
  two scans over one login). Queueing for a slot is not counted against the timeouts.
- **Secrets.** The WiFi passphrase never appears in a log record, an error or a result:
  it is replaced by ``***`` in every command shown, and ``key`` options are masked in
  every output read from the router (``uci show`` prints them in clear).
- **R12.** While an account's broadband is stopped the service refuses changes before it
  gets here; the router itself also refuses management commands while suspended, which
  comes back as a ``failed`` result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shlex
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

import asyncssh

from devices.errors import DomainError

__all__ = [
    "ALLOWED_CHANNELS",
    "MASK",
    "Band",
    "BoardInfo",
    "CommandResult",
    "InterfaceConfig",
    "ProvisioningError",
    "RadioConfig",
    "ResultCode",
    "RouterCredentials",
    "RouterError",
    "RouterManager",
    "RouterOutputError",
    "RouterSession",
    "WirelessConfig",
    "band_of_channel",
    "parse_board",
    "parse_uci_show",
    "parse_wireless",
]

log = logging.getLogger(__name__)

Band: TypeAlias = Literal["2g", "5g"]
ResultCode: TypeAlias = Literal[
    "ok", "failed", "timed_out", "auth_failed", "host_key_changed", "invalid"
]

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


# --- errors -------------------------------------------------------------------------------


class RouterError(DomainError):
    """Root of the errors raised by router management: faults, never refusals."""

    code = "router_error"


class RouterOutputError(RouterError):
    """The router answered with output that does not parse."""

    code = "router_output"

    def __init__(self, what: str, line: str) -> None:
        super().__init__(f"unexpected {what} output from the router: {line!r}")
        self.what = what
        self.line = line


class ProvisioningError(RouterError):
    """Recording a router's host key failed; ``code`` says why (as in :class:`CommandResult`)."""

    def __init__(self, code: ResultCode, message: str) -> None:
        super().__init__(message, code=code)


# --- values -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RouterCredentials:
    """How to reach one router; ``pinned_host_key`` is an OpenSSH public key line."""

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    pinned_host_key: str | None = None

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("host must not be empty")
        if not 0 < self.port < 65536:
            raise ValueError("port must be between 1 and 65535")
        if not self.username:
            raise ValueError("username must not be empty")
        if self.pinned_host_key is not None:
            try:
                asyncssh.import_public_key(self.pinned_host_key)
            except (asyncssh.KeyImportError, ValueError) as exc:
                raise ValueError("pinned_host_key must be an OpenSSH public key") from exc

    @property
    def target(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandResult:
    """The outcome of one management operation; ``ok`` exactly when ``code == "ok"``."""

    ok: bool
    output: str
    error: str | None
    code: ResultCode
    exit_status: int | None = None

    def __post_init__(self) -> None:
        if self.ok != (self.code == "ok"):
            raise ValueError("ok must be true exactly when code is 'ok'")
        if self.ok and self.error is not None:
            raise ValueError("a successful result carries no error")
        if not self.ok and not self.error:
            raise ValueError("a failed result must say what failed")

    @classmethod
    def success(cls, output: str = "", exit_status: int | None = 0) -> CommandResult:
        return cls(ok=True, output=output, error=None, code="ok", exit_status=exit_status)

    @classmethod
    def failure(
        cls, code: ResultCode, error: str, *, output: str = "", exit_status: int | None = None
    ) -> CommandResult:
        return cls(ok=False, output=output, error=error, code=code, exit_status=exit_status)


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


# --- parsing OpenWrt output ---------------------------------------------------------------


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


def parse_wireless(text: str) -> WirelessConfig:
    """The output of ``uci show wireless`` as radios and interfaces."""
    values = parse_uci_show(text)
    sections = [
        (key.split(".")[1], kind)
        for key, kind in values.items()
        if key.count(".") == 1 and key.startswith("wireless.")
    ]

    def opt(section: str, name: str, default: str = "") -> str:
        return values.get(f"wireless.{section}.{name}", default)

    radios: list[RadioConfig] = []
    interfaces: list[InterfaceConfig] = []
    for section, kind in sections:
        if kind == "wifi-device":
            band = opt(section, "band")
            if band not in ("2g", "5g"):
                raise RouterOutputError("uci show", f"wireless.{section}.band='{band}'")
            channel_raw = opt(section, "channel", "auto")
            try:
                channel = None if channel_raw == "auto" else int(channel_raw)
            except ValueError as exc:
                raise RouterOutputError(
                    "uci show", f"wireless.{section}.channel='{channel_raw}'"
                ) from exc
            radios.append(
                RadioConfig(
                    name=section,
                    band="2g" if band == "2g" else "5g",
                    channel=channel,
                    htmode=opt(section, "htmode"),
                    disabled=opt(section, "disabled", "0") == "1",
                )
            )
        elif kind == "wifi-iface":
            interfaces.append(
                InterfaceConfig(
                    name=section,
                    device=opt(section, "device"),
                    ssid=opt(section, "ssid"),
                    encryption=opt(section, "encryption", "none"),
                    mode=opt(section, "mode", "ap"),
                    has_key=bool(opt(section, "key")),
                    bss_transition=opt(section, "bss_transition", "0") == "1",
                    ieee80211k=opt(section, "ieee80211k", "0") == "1",
                )
            )
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


# --- redaction ----------------------------------------------------------------------------


def _redact(text: str, secrets: Sequence[str]) -> str:
    """Mask each secret (raw or shell-quoted) and every ``key`` option of ``uci show``."""
    for secret in secrets:
        if secret:
            text = text.replace(shlex.quote(secret), MASK).replace(secret, MASK)
    return _KEY_LINE.sub(lambda m: f"{m.group(1)}'{MASK}'", text)


def _validate_ssid(ssid: str) -> str | None:
    if not 1 <= len(ssid.encode()) <= 32:
        return "an SSID must be 1 to 32 bytes long"
    if any(ord(c) < 32 or ord(c) == 127 for c in ssid):
        return "an SSID must not contain control characters"
    return None


def _validate_passphrase(passphrase: str) -> str | None:
    """WPA: 8–63 printable ASCII characters, or 64 hexadecimal digits (never echoed)."""
    if len(passphrase) == 64 and all(c in "0123456789abcdefABCDEF" for c in passphrase):
        return None
    if not 8 <= len(passphrase) <= 63:
        return "a WiFi passphrase must be 8 to 63 characters long (or 64 hex digits)"
    if any(not 32 <= ord(c) <= 126 for c in passphrase):
        return "a WiFi passphrase must be printable ASCII"
    return None


# --- sessions -----------------------------------------------------------------------------


class RouterSession:
    """One SSH login to one router, holding a slot of its manager's pool.

    The connection opens with the first command. After a failure that leaves the
    connection unusable (refused login, changed key, timeout) every later command of the
    session returns that same failure without touching the router.
    """

    def __init__(self, manager: RouterManager, creds: RouterCredentials) -> None:
        self._manager = manager
        self._creds = creds
        self._conn: asyncssh.SSHClientConnection | None = None
        self._broken: CommandResult | None = None

    # -- transport --

    async def _connection(self) -> asyncssh.SSHClientConnection | CommandResult:
        if self._broken is not None:
            return self._broken
        if self._conn is not None:
            return self._conn
        creds = self._creds
        if creds.pinned_host_key is None:
            self._broken = CommandResult.failure(
                "failed", f"{creds.target}: no host key pinned; provision the router first"
            )
            return self._broken
        trusted = asyncssh.import_public_key(creds.pinned_host_key)
        try:
            self._conn = await self._manager._connect(creds, known_hosts=([trusted], [], []))
        except _ConnectFailure as exc:
            self._broken = exc.result
            return exc.result
        return self._conn

    async def run(self, command: str, *, secrets: Sequence[str] = ()) -> CommandResult:
        """Run one shell command; a non-zero exit status is a ``failed`` result."""
        shown = _redact(command, secrets)
        conn = await self._connection()
        if isinstance(conn, CommandResult):
            return conn
        timeout = self._manager.command_timeout
        try:
            async with asyncio.timeout(timeout):
                completed = await conn.run(command, check=False)
        except TimeoutError:
            self._broken = CommandResult.failure(
                "timed_out", f"{self._creds.target}: `{shown}` timed out after {timeout:g} s"
            )
            conn.abort()
            log.warning("router %s", self._broken.error)
            return self._broken
        except (OSError, asyncssh.Error) as exc:
            self._broken = CommandResult.failure(
                "failed", f"{self._creds.target}: `{shown}` failed: {_redact(str(exc), secrets)}"
            )
            log.warning("router %s", self._broken.error)
            return self._broken
        stdout = _redact(_text(completed.stdout), secrets)
        stderr = _redact(_text(completed.stderr), secrets)
        status = completed.exit_status
        if status == 0:
            log.debug("router %s: `%s` ok", self._creds.target, shown)
            return CommandResult.success(stdout, exit_status=0)
        reason = stderr.strip() or stdout.strip() or "no output"
        error = f"`{shown}` exited with status {status}: {reason}"
        log.info("router %s: %s", self._creds.target, error)
        return CommandResult.failure("failed", error, output=stdout, exit_status=status)

    async def run_all(
        self, commands: Sequence[str], *, secrets: Sequence[str] = ()
    ) -> CommandResult:
        """Run commands in order, stopping at the first failure; outputs are joined."""
        outputs: list[str] = []
        for command in commands:
            result = await self.run(command, secrets=secrets)
            if not result.ok:
                return result
            outputs.append(result.output)
        return CommandResult.success("".join(outputs))

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._manager.connect_timeout):
                    await self._conn.wait_closed()
            self._conn = None

    # -- reads --

    async def read_status(self) -> CommandResult:
        """``ubus call system board`` (JSON; see :func:`parse_board`)."""
        return await self.run("ubus call system board")

    async def read_wireless(self) -> CommandResult:
        """``uci show wireless``, keys masked (see :func:`parse_wireless`)."""
        return await self.run("uci show wireless")

    async def radio_info(self, radio: str) -> CommandResult:
        return await self.run(f"iwinfo {shlex.quote(radio)} info")

    async def scan(self, radio: str) -> CommandResult:
        """``iwinfo <radio> scan``: the neighbouring networks that radio hears."""
        return await self.run(f"iwinfo {shlex.quote(radio)} scan")

    async def _config(self) -> WirelessConfig | CommandResult:
        result = await self.read_wireless()
        if not result.ok:
            return result
        try:
            return parse_wireless(result.output)
        except RouterOutputError as exc:
            return CommandResult.failure("failed", str(exc))

    # -- changes: uci set ..., uci commit wireless, wifi reload --

    async def _apply(
        self, settings: Sequence[tuple[str, str]], *, secrets: Sequence[str] = ()
    ) -> CommandResult:
        commands = [f"uci set wireless.{key}={shlex.quote(value)}" for key, value in settings]
        commands += ["uci commit wireless", "wifi reload"]
        return await self.run_all(commands, secrets=secrets)

    async def set_ssid(self, ssid: str, *, radio: str | None = None) -> CommandResult:
        """Set the SSID of the AP interfaces of ``radio`` (None: of every radio)."""
        problem = _validate_ssid(ssid)
        if problem is not None:
            return CommandResult.failure("invalid", problem)
        config = await self._config()
        if isinstance(config, CommandResult):
            return config
        aps = config.interfaces_of(radio)
        if not aps:
            return CommandResult.failure("invalid", f"no access point interface on {radio}")
        return await self._apply([(f"{i.name}.ssid", ssid) for i in aps])

    async def set_passphrase(self, passphrase: str, *, radio: str | None = None) -> CommandResult:
        """Set the WPA passphrase; it is masked in every log record, error and output."""
        problem = _validate_passphrase(passphrase)
        if problem is not None:
            return CommandResult.failure("invalid", problem)
        config = await self._config()
        if isinstance(config, CommandResult):
            return config
        aps = config.interfaces_of(radio)
        if not aps:
            return CommandResult.failure("invalid", f"no access point interface on {radio}")
        settings: list[tuple[str, str]] = []
        for i in aps:
            if i.encryption == "none":
                settings.append((f"{i.name}.encryption", "psk2"))
            settings.append((f"{i.name}.key", passphrase))
        return await self._apply(settings, secrets=[passphrase])

    async def set_channel(self, radio: str, channel: int | Literal["auto"]) -> CommandResult:
        return await self.set_channels({radio: channel})

    async def set_channels(
        self, channels: Mapping[str, int | Literal["auto"]], *, restore: bool = False
    ) -> CommandResult:
        """Set channels of several radios with one commit and one reload.

        Each channel must be one of its band's :data:`ALLOWED_CHANNELS` (or ``auto``);
        ``restore`` (a tuning rollback) accepts any channel of the band, since it puts
        back what the router ran before.
        """
        if not channels:
            return CommandResult.failure("invalid", "no channel to set")
        for name in channels:
            if not _SECTION.fullmatch(name):
                return CommandResult.failure("invalid", f"{name!r} is not a radio name")
        config = await self._config()
        if isinstance(config, CommandResult):
            return config
        settings: list[tuple[str, str]] = []
        for name, channel in channels.items():
            radio = config.radio(name)
            if radio is None:
                return CommandResult.failure("invalid", f"the router has no radio {name}")
            allowed = ALLOWED_CHANNELS[radio.band]
            acceptable = (
                channel == "auto"
                or channel in allowed
                or (restore and _band_or_none(channel) == radio.band)
            )
            if not acceptable:
                listed = ", ".join(map(str, allowed))
                return CommandResult.failure(
                    "invalid",
                    f"channel {channel} is not allowed on {name} ({radio.band}); allowed: {listed}",
                )
            settings.append((f"{name}.channel", str(channel)))
        return await self._apply(settings)

    async def set_band_steering(self, enabled: bool) -> CommandResult:
        """Band steering: 802.11k/v on every AP interface (clients are steered by BSS
        transition). Steering only works with one SSID on both bands; it is refused
        (``invalid``) while the SSIDs differ."""
        config = await self._config()
        if isinstance(config, CommandResult):
            return config
        aps = config.interfaces_of(None)
        if not aps:
            return CommandResult.failure("invalid", "no access point interface")
        if enabled and len({i.ssid for i in aps}) > 1:
            return CommandResult.failure(
                "invalid", "band steering needs the same SSID on every band; set it first"
            )
        flag = "1" if enabled else "0"
        settings = [
            (f"{i.name}.{opt}", flag) for i in aps for opt in ("bss_transition", "ieee80211k")
        ]
        return await self._apply(settings)

    async def reboot(self) -> CommandResult:
        return await self.run("reboot")


class _ConnectFailure(Exception):
    def __init__(self, result: CommandResult) -> None:
        super().__init__(result.error)
        self.result = result


def _band_or_none(channel: int) -> Band | None:
    try:
        return band_of_channel(channel)
    except ValueError:
        return None


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


# --- the manager --------------------------------------------------------------------------


class RouterManager:
    """SSH sessions to many routers, at most ``max_sessions`` at once.

    ``connect_timeout`` bounds TCP connect, key exchange and login; ``command_timeout``
    bounds each command. ``active_sessions`` and ``peak_sessions`` show the pool at work.
    """

    def __init__(
        self, *, max_sessions: int, connect_timeout: float, command_timeout: float
    ) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        if connect_timeout <= 0 or command_timeout <= 0:
            raise ValueError("connect_timeout and command_timeout must be positive")
        self.max_sessions = max_sessions
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._slots = asyncio.Semaphore(max_sessions)
        self.active_sessions = 0
        self.peak_sessions = 0

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        async with self._slots:
            self.active_sessions += 1
            self.peak_sessions = max(self.peak_sessions, self.active_sessions)
            try:
                yield
            finally:
                self.active_sessions -= 1

    @contextlib.asynccontextmanager
    async def session(self, creds: RouterCredentials) -> AsyncIterator[RouterSession]:
        """A session holding one pool slot until the block ends."""
        async with self._slot():
            session = RouterSession(self, creds)
            try:
                yield session
            finally:
                await session.close()

    async def _connect(
        self, creds: RouterCredentials, *, known_hosts: Any
    ) -> asyncssh.SSHClientConnection:
        """Connect and log in, or raise :class:`_ConnectFailure` carrying the result."""
        target = creds.target
        try:
            return await asyncssh.connect(
                creds.host,
                creds.port,
                username=creds.username,
                password=creds.password,
                known_hosts=known_hosts,
                client_keys=None,
                agent_path=None,
                preferred_auth="password",
                config=None,
                connect_timeout=self.connect_timeout,
                login_timeout=self.connect_timeout,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            error = f"{target}: host key changed since provisioning; refused ({exc.reason})"
            code: ResultCode = "host_key_changed"
        except asyncssh.PermissionDenied:
            error = f"{target}: login refused for user {creds.username}"
            code = "auth_failed"
        except TimeoutError:
            error = f"{target}: no SSH session within {self.connect_timeout:g} s"
            code = "timed_out"
        except (OSError, asyncssh.Error) as exc:
            error = f"{target}: cannot connect: {exc}"
            code = "failed"
        log.warning("router %s", error)
        raise _ConnectFailure(CommandResult.failure(code, error))

    async def provision_host_key(self, creds: RouterCredentials) -> str:
        """Trust on first use: log in, and return the key the router presented.

        With a key already pinned in ``creds``, the router must still present it
        (``ProvisioningError`` with code ``host_key_changed`` otherwise). The key is
        returned as an OpenSSH public key line (``ssh-ed25519 AAAA...``).
        """
        if creds.pinned_host_key is None:
            known_hosts: Any = None
        else:
            known_hosts = ([asyncssh.import_public_key(creds.pinned_host_key)], [], [])
        async with self._slot():
            try:
                conn = await self._connect(creds, known_hosts=known_hosts)
            except _ConnectFailure as exc:
                message = exc.result.error or f"{creds.target}: cannot connect"
                raise ProvisioningError(exc.result.code, message) from exc
            try:
                key = conn.get_server_host_key()
                if key is None:
                    raise ProvisioningError("failed", f"{creds.target}: no host key presented")
                line: str = key.export_public_key("openssh").decode().strip()
                return " ".join(line.split()[:2])
            finally:
                conn.close()
                await conn.wait_closed()

    # -- one operation, one session --

    async def read_status(self, creds: RouterCredentials) -> CommandResult:
        async with self.session(creds) as s:
            return await s.read_status()

    async def read_wireless(self, creds: RouterCredentials) -> CommandResult:
        async with self.session(creds) as s:
            return await s.read_wireless()

    async def scan(self, creds: RouterCredentials, radio: str) -> CommandResult:
        async with self.session(creds) as s:
            return await s.scan(radio)

    async def set_ssid(
        self, creds: RouterCredentials, ssid: str, *, radio: str | None = None
    ) -> CommandResult:
        async with self.session(creds) as s:
            return await s.set_ssid(ssid, radio=radio)

    async def set_passphrase(
        self, creds: RouterCredentials, passphrase: str, *, radio: str | None = None
    ) -> CommandResult:
        async with self.session(creds) as s:
            return await s.set_passphrase(passphrase, radio=radio)

    async def set_channel(
        self, creds: RouterCredentials, radio: str, channel: int | Literal["auto"]
    ) -> CommandResult:
        async with self.session(creds) as s:
            return await s.set_channel(radio, channel)

    async def set_channels(
        self,
        creds: RouterCredentials,
        channels: Mapping[str, int | Literal["auto"]],
        *,
        restore: bool = False,
    ) -> CommandResult:
        async with self.session(creds) as s:
            return await s.set_channels(channels, restore=restore)

    async def set_band_steering(self, creds: RouterCredentials, enabled: bool) -> CommandResult:
        async with self.session(creds) as s:
            return await s.set_band_steering(enabled)

    async def reboot(self, creds: RouterCredentials) -> CommandResult:
        async with self.session(creds) as s:
            return await s.reboot()
