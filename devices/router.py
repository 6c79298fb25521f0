"""Home router management over SSH: the operator's OpenWrt routers (R12, R13).

The operator's whole-home WiFi routers (a main router and mesh satellites) run OpenWrt;
Kanjia manages the main router with the commands an engineer would type: ``uci show
wireless``, ``uci set``, ``uci commit``, ``wifi reload``, ``ubus call system board``,
``iwinfo <radio> info|scan``, ``reboot``. What those commands print, and which settings a
change types, is decided in :mod:`devices.uci` (pure); this module runs them over SSH.

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
import logging
import shlex
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import asyncssh

from devices.errors import DomainError
from devices.uci import (
    BandSteeringChange,
    ChannelsChange,
    InvalidSetting,
    PassphraseChange,
    RouterOutputError,
    SsidChange,
    WirelessChange,
    WirelessConfig,
    change_commands,
    parse_wireless,
    redact,
)

__all__ = [
    "CommandResult",
    "ProvisioningError",
    "ResultCode",
    "RouterCredentials",
    "RouterManager",
    "RouterSession",
]

log = logging.getLogger(__name__)

ResultCode: TypeAlias = Literal[
    "ok", "failed", "timed_out", "auth_failed", "host_key_changed", "invalid"
]

# --- errors -------------------------------------------------------------------------------


class ProvisioningError(DomainError):
    """Recording a router's host key failed; ``code`` says why (as in :class:`CommandResult`).

    A fault of the router or the way to it, not a refusal by the rules.
    """

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
        shown = redact(command, secrets)
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
                "failed", f"{self._creds.target}: `{shown}` failed: {redact(str(exc), secrets)}"
            )
            log.warning("router %s", self._broken.error)
            return self._broken
        stdout = redact(_text(completed.stdout), secrets)
        stderr = redact(_text(completed.stderr), secrets)
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

    async def wireless_config(self) -> WirelessConfig | CommandResult:
        """The parsed ``uci show wireless``, or the failed result (output that does not
        parse is a ``failed`` result)."""
        result = await self.read_wireless()
        if not result.ok:
            return result
        try:
            return parse_wireless(result.output)
        except RouterOutputError as exc:
            return CommandResult.failure("failed", str(exc))

    # -- changes: uci set ..., uci commit wireless, wifi reload --

    async def change(self, change: WirelessChange, *, secrets: Sequence[str] = ()) -> CommandResult:
        """Apply one change with one commit and one reload; ``invalid`` when the request
        or the router's configuration refuses it (a request invalid in itself opens no
        connection)."""
        try:
            change.check()
            config = await self.wireless_config()
            if isinstance(config, CommandResult):
                return config
            settings = change.settings(config)
        except InvalidSetting as exc:
            return CommandResult.failure("invalid", exc.message)
        return await self.run_all(change_commands(settings), secrets=secrets)

    async def set_ssid(self, ssid: str, *, radio: str | None = None) -> CommandResult:
        """Set the SSID of the AP interfaces of ``radio`` (None: of every radio)."""
        return await self.change(SsidChange(ssid=ssid, radio=radio))

    async def set_passphrase(self, passphrase: str, *, radio: str | None = None) -> CommandResult:
        """Set the WPA passphrase; it is masked in every log record, error and output."""
        change = PassphraseChange(passphrase=passphrase, radio=radio)
        return await self.change(change, secrets=[passphrase])

    async def set_channel(self, radio: str, channel: int | Literal["auto"]) -> CommandResult:
        return await self.set_channels({radio: channel})

    async def set_channels(
        self, channels: Mapping[str, int | Literal["auto"]], *, restore: bool = False
    ) -> CommandResult:
        """Set channels of several radios with one commit and one reload (see
        :class:`~devices.uci.ChannelsChange`)."""
        return await self.change(ChannelsChange(channels=channels, restore=restore))

    async def set_band_steering(self, enabled: bool) -> CommandResult:
        """Band steering on every AP interface (see :class:`~devices.uci.BandSteeringChange`)."""
        return await self.change(BandSteeringChange(enabled=enabled))

    async def reboot(self) -> CommandResult:
        return await self.run("reboot")


class _ConnectFailure(Exception):
    def __init__(self, result: CommandResult) -> None:
        super().__init__(result.error)
        self.result = result


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
