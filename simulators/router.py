"""A simulated OpenWrt home router: an SSH server (asyncssh) over a :mod:`radio model
<simulators.radio>` (R12, R13).

It emulates what router management needs, with OpenWrt-like output and exit codes:

- ``uci show [wireless[.section[.option]]]``, ``uci get``, ``uci set
  wireless.section.option=value`` (or ``wireless.section=type``), ``uci changes``,
  ``uci commit [wireless]``, ``uci revert wireless``; ``uci show`` includes staged
  changes, as on a router;
- ``wifi``, ``wifi up``, ``wifi reload``: apply the *committed* configuration to the radios
  (staged ``uci set`` changes are not applied); ``wifi status`` (JSON);
- ``ubus call system board`` (JSON); ``iwinfo <radio> info|scan|assoclist``; ``reboot``;
- anything else: ``ash: xyz: not found``, exit status 127.

``suspended`` (set from the desired state while the broadband account is stopped, R12)
makes every management command fail with exit status 1; status reads (``uci show``,
``uci get``, ``uci changes``, ``ubus call system board``, ``iwinfo``, ``wifi status``) still
work. For tests: ``command_delay`` holds every command that long (client timeouts), and
:meth:`RouterSimulator.rotate_host_key` changes the host key for new connections.

Use::

    async with RouterSimulator(password="pw", home=Home.generate(7)) as sim:
        ...  # sim.host, sim.port, sim.host_public_key, sim.telemetry()
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

import asyncssh

from devices.tuning import Neighbour, RadioTelemetry, choose_channel
from simulators.radio import RADIO_BANDS, Home, RadioModel

__all__ = ["SUSPENDED_MESSAGE", "ConnectionGauge", "Execution", "RouterSimulator"]

SUSPENDED_MESSAGE: Final = (
    "kanjia: managed networking is suspended while the broadband account is stopped (R12); "
    "command refused"
)
_CONFIG: Final = "wireless"
_UCI_USAGE: Final = (
    "Usage: uci [<options>] <command> [<arguments>]\n\n"
    "Commands:\n\tchanges\t[<config>]\n\tcommit\t[<config>]\n\tget\t<config>.<section>[.<option>]\n"
    "\trevert\t<config>[.<section>[.<option>]]\n\tset\t<config>.<section>[.<option>]=<value>\n"
    "\tshow\t[<config>[.<section>[.<option>]]]\n"
)
_WIFI_USAGE: Final = "Usage: /sbin/wifi [config|up|down|reconf|reload|status|isup]\n"
_IWINFO_USAGE: Final = (
    "Usage:\n\tiwinfo <device> info\n\tiwinfo <device> scan\n\tiwinfo <device> assoclist\n"
)


@dataclass(frozen=True, slots=True)
class Execution:
    """What one command printed and its exit status."""

    status: int
    stdout: str = ""
    stderr: str = ""


class ConnectionGauge:
    """Counts SSH connections open across simulators (benchmarks check the pool bound)."""

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0
        self.total = 0

    def opened(self) -> None:
        self.current += 1
        self.total += 1
        self.peak = max(self.peak, self.current)

    def closed(self) -> None:
        self.current -= 1


# --- uci ----------------------------------------------------------------------------------


class _Section:
    __slots__ = ("kind", "options")

    def __init__(self, kind: str, options: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self.options: dict[str, str] = dict(options or {})

    def copy(self) -> _Section:
        return _Section(self.kind, self.options)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


class _Uci:
    """The ``wireless`` config: committed sections and staged changes (``/tmp/.uci``)."""

    def __init__(self, sections: Mapping[str, _Section]) -> None:
        self.committed: dict[str, _Section] = {k: v.copy() for k, v in sections.items()}
        self.staged: list[tuple[str, str | None, str]] = []

    def merged(self) -> dict[str, _Section]:
        view = {k: v.copy() for k, v in self.committed.items()}
        for section, option, value in self.staged:
            if option is None:
                view.setdefault(section, _Section(value)).kind = value
            else:
                view[section].options[option] = value
        return view

    def lines(self, path: str) -> list[str] | None:
        parts = path.split(".")
        if parts[0] != _CONFIG or len(parts) > 3:
            return None
        view = self.merged()
        out: list[str] = []
        for name, section in view.items():
            if len(parts) >= 2 and parts[1] != name:
                continue
            if len(parts) == 3:
                if parts[2] not in section.options:
                    return None
                return [f"{path}={_quote(section.options[parts[2]])}"]
            out.append(f"{_CONFIG}.{name}={section.kind}")
            out += [f"{_CONFIG}.{name}.{k}={_quote(v)}" for k, v in section.options.items()]
        return out or None

    def get(self, path: str) -> str | None:
        parts = path.split(".")
        if parts[0] != _CONFIG or len(parts) not in (2, 3):
            return None
        section = self.merged().get(parts[1])
        if section is None:
            return None
        return section.kind if len(parts) == 2 else section.options.get(parts[2])

    def set(self, assignment: str) -> str | None:
        """Stage ``config.section[.option]=value``; an error message, or None."""
        path, sep, value = assignment.partition("=")
        parts = path.split(".")
        if not sep or len(parts) not in (2, 3) or not all(parts):
            return "uci: Invalid argument"
        if parts[0] != _CONFIG:
            return "uci: Entry not found"
        if len(parts) == 2:
            self.staged.append((parts[1], None, value))
            return None
        if parts[1] not in self.merged():
            return "uci: Invalid argument"
        self.staged.append((parts[1], parts[2], value))
        return None

    def changes(self) -> list[str]:
        return [
            f"{_CONFIG}.{s}={v}" if o is None else f"{_CONFIG}.{s}.{o}={_quote(v)}"
            for s, o, v in self.staged
        ]

    def commit(self) -> None:
        self.committed = self.merged()
        self.staged.clear()

    def revert(self) -> None:
        self.staged.clear()


def _default_wireless(home: Home, ssid: str, passphrase: str) -> dict[str, _Section]:
    sections: dict[str, _Section] = {}
    for index, (radio, band) in enumerate(RADIO_BANDS.items()):
        channel = home.channel_2g if band == "2g" else home.channel_5g
        sections[radio] = _Section(
            "wifi-device",
            {
                "type": "mac80211",
                "path": "platform/soc/18000000.wifi" + ("+1" if index else ""),
                "band": band,
                "channel": str(channel),
                "htmode": "HE20",
                "country": "CN",
                "cell_density": "0",
            },
        )
        sections[f"default_{radio}"] = _Section(
            "wifi-iface",
            {
                "device": radio,
                "network": "lan",
                "mode": "ap",
                "ssid": ssid,
                "encryption": "sae-mixed",
                "key": passphrase,
            },
        )
    return sections


def _frequency_ghz(channel: int) -> str:
    mhz = 2407 + 5 * channel if channel <= 14 else 5000 + 5 * channel
    return f"{mhz / 1000:.3f}"


# --- the simulator ------------------------------------------------------------------------


class _SSHServer(asyncssh.SSHServer):
    def __init__(self, sim: RouterSimulator) -> None:
        self._sim = sim

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        if self._sim.gauge is not None:
            self._sim.gauge.opened()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._sim.gauge is not None:
            self._sim.gauge.closed()

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return self._sim.check_login(username, password)


class RouterSimulator:
    """One simulated main router (with its home's mesh) behind a real SSH server."""

    def __init__(
        self,
        *,
        password: str,
        username: str = "root",
        home: Home | None = None,
        hostname: str = "OpenWrt",
        model: str = "Kanjia Mesh AX3000",
        ssid: str = "Kanjia",
        passphrase: str | None = None,
        command_delay: float = 0.0,
        suspended: bool = False,
        gauge: ConnectionGauge | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        if not username or not password:
            raise ValueError("username and password must not be empty")
        if command_delay < 0:
            raise ValueError("command_delay must not be negative")
        self.username = username
        self._password = password
        self.hostname = hostname
        self.model = model
        self.host = host
        self.command_delay = command_delay
        self.suspended = suspended
        self.gauge = gauge
        self.radio = RadioModel(home if home is not None else Home())
        if passphrase is None:
            passphrase = secrets.token_urlsafe(12)
        self.uci = _Uci(_default_wireless(self.radio.home, ssid, passphrase))
        self.running: dict[str, _Section] = {k: v.copy() for k, v in self.uci.committed.items()}
        self.reboots = 0
        self.reloads = 0
        #: Every command received, in order (the simulator's own log; tests read it).
        self.commands: list[str] = []
        self._host_key = asyncssh.generate_private_key("ssh-ed25519")
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._handlers: set[asyncio.Task[object]] = set()
        self.port = 0

    # -- lifecycle --

    async def __aenter__(self) -> Self:
        self._acceptor = await asyncssh.create_server(
            lambda: _SSHServer(self),
            self.host,
            0,
            server_host_keys=[self._host_key],
            process_factory=self._handle,
            encoding="utf-8",
            login_timeout=30.0,
        )
        self.port = self._acceptor.get_port()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in list(self._handlers):
            task.cancel()
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
            self._acceptor = None

    # -- keys and login --

    @property
    def host_public_key(self) -> str:
        """The current host key, as an OpenSSH public key line (no comment)."""
        line: str = self._host_key.export_public_key("openssh").decode().strip()
        return " ".join(line.split()[:2])

    @property
    def host_key_fingerprint(self) -> str:
        fingerprint: str = self._host_key.get_fingerprint()
        return fingerprint

    def rotate_host_key(self) -> None:
        """Present a new host key to every later connection (a reflashed or swapped box)."""
        self._host_key = asyncssh.generate_private_key("ssh-ed25519")
        if self._acceptor is not None:
            self._acceptor.update(server_host_keys=[self._host_key])

    def check_login(self, username: str, password: str) -> bool:
        user_ok = hmac.compare_digest(username.encode(), self.username.encode())
        password_ok = hmac.compare_digest(password.encode(), self._password.encode())
        return user_ok and password_ok

    # -- telemetry (what the router's MQTT client publishes) --

    def telemetry(self) -> tuple[RadioTelemetry, ...]:
        return self.radio.telemetry()

    async def read_telemetry(self) -> tuple[RadioTelemetry, ...]:
        """The next telemetry, as :func:`devices.tuning.tune` asks for it."""
        return self.radio.telemetry()

    def telemetry_payload(self) -> dict[str, object]:
        """The ``telemetry`` message of the MQTT contract (router: per-radio metrics)."""
        return {"radios": [t.to_dict() for t in self.radio.telemetry()]}

    # -- SSH --

    async def _handle(self, process: asyncssh.SSHServerProcess[str]) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            command = process.command
            if command is None:
                result = Execution(1, stderr="interactive shells are not simulated\n")
            else:
                if self.command_delay:
                    await asyncio.sleep(self.command_delay)
                result = self.execute(command)
            with contextlib.suppress(OSError, asyncssh.Error):
                if result.stdout:
                    process.stdout.write(result.stdout)
                if result.stderr:
                    process.stderr.write(result.stderr)
                process.exit(result.status)
        finally:
            if task is not None:
                self._handlers.discard(task)

    # -- the shell --

    def execute(self, command: str) -> Execution:
        """Run one command line as the router's shell would."""
        self.commands.append(command)
        try:
            argv = shlex.split(command)
        except ValueError:
            return Execution(2, stderr="ash: syntax error: unterminated quoted string\n")
        if not argv:
            return Execution(0)
        name, args = argv[0], argv[1:]
        if name == "uci":
            return self._uci(args)
        if name == "wifi":
            return self._wifi(args)
        if name == "ubus":
            return self._ubus(args)
        if name == "iwinfo":
            return self._iwinfo(args)
        if name == "reboot":
            if self.suspended:
                return _refused()
            self.reboots += 1
            self.uci.revert()  # staged changes live in /tmp and do not survive a reboot
            return self._apply_committed()
        return Execution(127, stderr=f"ash: {name}: not found\n")

    def _uci(self, args: list[str]) -> Execution:
        while args and args[0].startswith("-"):
            args = args[1:]
        if not args:
            return Execution(255, stderr=_UCI_USAGE)
        verb, rest = args[0], args[1:]
        if verb == "show":
            path = rest[0] if rest else _CONFIG
            lines = self.uci.lines(path)
            if lines is None:
                return Execution(1, stderr="uci: Entry not found\n")
            return Execution(0, stdout="".join(f"{line}\n" for line in lines))
        if verb == "get" and len(rest) == 1:
            value = self.uci.get(rest[0])
            if value is None:
                return Execution(1, stderr="uci: Entry not found\n")
            return Execution(0, stdout=f"{value}\n")
        if verb == "changes":
            return Execution(0, stdout="".join(f"{line}\n" for line in self.uci.changes()))
        if verb not in ("set", "commit", "revert"):
            return Execution(255, stderr=_UCI_USAGE)
        if self.suspended:
            return _refused()
        if verb == "set":
            if len(rest) != 1:
                return Execution(255, stderr=_UCI_USAGE)
            error = self.uci.set(rest[0])
            return Execution(1, stderr=f"{error}\n") if error else Execution(0)
        if rest and rest[0].split(".")[0] != _CONFIG:
            return Execution(0)  # another config: nothing staged there
        if verb == "commit":
            self.uci.commit()
        else:
            self.uci.revert()
        return Execution(0)

    def _wifi(self, args: list[str]) -> Execution:
        verb = args[0] if args else "up"
        if verb == "status":
            return Execution(0, stdout=json.dumps(self._wifi_status(), indent="\t") + "\n")
        if verb not in ("up", "reload"):
            return Execution(1, stderr=_WIFI_USAGE)
        if self.suspended:
            return _refused()
        return self._apply_committed()

    def _apply_committed(self) -> Execution:
        """Bring the radios up on the committed configuration (``wifi reload``)."""
        self.reloads += 1
        errors: list[str] = []
        for radio in RADIO_BANDS:
            raw = self.uci.committed[radio].options.get("channel", "auto")
            band = RADIO_BANDS[radio]
            if raw == "auto":  # automatic channel selection: the least-interfered channel
                heard = [
                    Neighbour(channel=n.channel, signal_dbm=n.signal_dbm)
                    for n in self.radio.scan(radio)
                ]
                self.radio.set_channel(radio, choose_channel(band, heard, None))
                continue
            try:
                channel = int(raw)
                self.radio.set_channel(radio, channel)
            except ValueError:
                errors.append(f"{radio}: channel {raw!r} is not supported; radio not restarted")
        self.running = {k: v.copy() for k, v in self.uci.committed.items()}
        for radio in RADIO_BANDS:  # the radios kept their channels where config was refused
            self.running[radio].options["channel"] = str(self.radio.channels[radio])
        if errors:
            return Execution(1, stderr="".join(f"{e}\n" for e in errors))
        return Execution(0)

    def _wifi_status(self) -> dict[str, object]:
        status: dict[str, object] = {}
        for radio in RADIO_BANDS:
            ifaces = [
                {
                    "section": name,
                    "ifname": f"phy{radio[-1]}-ap0",
                    "config": {"ssid": s.options.get("ssid", ""), "mode": "ap"},
                }
                for name, s in self.running.items()
                if s.kind == "wifi-iface" and s.options.get("device") == radio
            ]
            status[radio] = {
                "up": True,
                "pending": False,
                "config": {"channel": str(self.radio.channels[radio]), "band": RADIO_BANDS[radio]},
                "interfaces": ifaces,
            }
        return status

    def _ubus(self, args: list[str]) -> Execution:
        if len(args) >= 3 and args[0] == "call":
            if args[1:3] == ["system", "board"]:
                board = {
                    "kernel": "5.15.150",
                    "hostname": self.hostname,
                    "system": "ARMv8 Processor rev 4",
                    "model": self.model,
                    "board_name": "kanjia,ax3000",
                    "rootfs_type": "squashfs",
                    "release": {
                        "distribution": "OpenWrt",
                        "version": "23.05.3",
                        "revision": "r23809-234f1a2efa",
                        "target": "mediatek/filogic",
                        "description": "OpenWrt 23.05.3 r23809-234f1a2efa",
                    },
                }
                return Execution(0, stdout=json.dumps(board, indent="\t") + "\n")
            return Execution(4, stderr="Command failed: Not found\n")
        return Execution(1, stderr="Usage: ubus [<options>] <command> [arguments...]\n")

    def _iwinfo(self, args: list[str]) -> Execution:
        if len(args) != 2 or args[1] not in ("info", "scan", "assoclist"):
            return Execution(1, stderr=_IWINFO_USAGE)
        radio, verb = args
        if radio not in RADIO_BANDS:
            return Execution(1, stderr=f"No such wireless device: {radio}\n")
        if verb == "info":
            return Execution(0, stdout=self._iwinfo_info(radio))
        if verb == "scan":
            cells = self.radio.scan(radio)
            if not cells:
                return Execution(0, stdout="No scan results\n")
            out = []
            for index, n in enumerate(cells, start=1):
                band = "2.4" if n.band == "2g" else "5"
                quality = max(0, min(70, int(n.signal_dbm) + 110))
                out.append(
                    f"Cell {index:02d} - Address: {n.bssid.upper()}\n"
                    f'          ESSID: "{n.ssid}"\n'
                    f"          Mode: Master  Frequency: {_frequency_ghz(n.channel)} GHz  "
                    f"Band: {band} GHz  Channel: {n.channel}\n"
                    f"          Signal: {int(n.signal_dbm)} dBm  Quality: {quality}/70\n"
                    f"          Encryption: WPA2 PSK (CCMP)\n\n"
                )
            return Execution(0, stdout="".join(out))
        telemetry = self.radio.radio_telemetry(radio)
        lines = [
            f"{c.mac.upper()}  {int(c.signal_dbm)} dBm / {int(telemetry.noise_dbm)} dBm "
            f"(SNR {int(c.signal_dbm - telemetry.noise_dbm)})  0 ms ago\n\n"
            for c in self.radio.clients(radio)
        ]
        return Execution(0, stdout="".join(lines) or "No station connected\n")

    def _iwinfo_info(self, radio: str) -> str:
        telemetry = self.radio.radio_telemetry(radio)
        iface = next(
            (
                s.options
                for s in self.running.values()
                if s.kind == "wifi-iface" and s.options.get("device") == radio
            ),
            {},
        )
        channel = self.radio.channels[radio]
        modes = "802.11ax/b/g/n" if RADIO_BANDS[radio] == "2g" else "802.11ac/ax/n"
        encryption = "none" if iface.get("encryption", "none") == "none" else "WPA3 SAE (CCMP)"
        return (
            f'{radio}    ESSID: "{iface.get("ssid", "")}"\n'
            f"          Access Point: 02:4B:4A:00:00:0{radio[-1]}\n"
            f"          Mode: Master  Channel: {channel} ({_frequency_ghz(channel)} GHz)  "
            f"HT Mode: {self.running[radio].options.get('htmode', 'HE20')}\n"
            f"          Center Channel 1: {channel} 2: unknown\n"
            f"          Tx-Power: 20 dBm  Link Quality: unknown/70\n"
            f"          Signal: unknown  Noise: {int(telemetry.noise_dbm)} dBm\n"
            f"          Bit Rate: unknown\n"
            f"          Encryption: {encryption}\n"
            f"          Type: nl80211  HW Mode(s): {modes}\n"
            f"          Hardware: embedded [MediaTek MT7981]\n"
            f"          Supports VAPs: yes  PHY name: phy{radio[-1]}\n"
        )


def _refused() -> Execution:
    return Execution(1, stderr=f"{SUSPENDED_MESSAGE}\n")
