"""Real services for the suite, started on free loopback ports and stopped afterwards."""

from __future__ import annotations

import getpass
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trustme

from gateway.lifecycle import free_port


def wait_for_port(port: int, *, timeout: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on port {port} within {timeout}s")


def stop_process(process: subprocess.Popen[bytes], *, grace: float = 5.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True, slots=True)
class Broker:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        raise RuntimeError("Debian's mosquitto is not installed (apt-get install mosquitto)")
    return found


@contextmanager
def mosquitto(
    tmp_dir: Path, *, port: int | None = None, persistent: bool = False
) -> Iterator[Broker]:
    """A private Mosquitto on a free loopback port, or on ``port`` to restart one there
    (anonymous). ``persistent``: it saves its retained messages and sessions in ``tmp_dir``
    when stopped and loads them when started again there."""
    port = port or free_port()
    settings = f"listener {port} 127.0.0.1\nallow_anonymous true\n{_QUEUES}"
    if persistent:
        # As root Mosquitto would drop to the user "mosquitto", who cannot write here.
        settings += f"user {getpass.getuser()}\n"
    persistence = tmp_dir if persistent else None
    with _started(tmp_dir / "mosquitto", settings, [port], persistence=persistence) as process:
        yield Broker(port=port, process=process)


#: Room for a benchmark's pre-loaded messages in a persistent session, and for a batch the
#: gateway has not acknowledged yet (it acknowledges after commit).
_QUEUES = "max_queued_messages 100000\nmax_inflight_messages 1000\n"

#: How every test Mosquitto's configuration ends: notices and worse logged.
_LOG_CONF = "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n"


@contextmanager
def _started(
    base: Path, settings: str, ports: Iterable[int], *, persistence: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Mosquitto on ``settings`` (written to ``base``.conf, its log appended to ``base``.log)
    until the block ends, once every one of ``ports`` listens; stopped by its PID. Without
    ``persistence`` (a directory) it keeps nothing across a restart."""
    conf, log = base.with_suffix(".conf"), base.with_suffix(".log")
    keep = (
        "persistence false\n"
        if persistence is None
        else f"persistence true\npersistence_location {persistence}/\n"
    )
    conf.write_text(settings + keep + _LOG_CONF)
    with log.open("ab") as log_file:
        process = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stderr=log_file)
    try:
        for port in ports:
            wait_for_port(port, timeout=10, process=process)
        yield process
    finally:
        stop_process(process)


@dataclass(frozen=True, slots=True)
class TlsBroker(Broker):
    """A Mosquitto with its plain listener (``url``) and a TLS one (``tls_url``)."""

    tls_port: int
    #: The CA (PEM) that signed the broker's certificate; clients must trust it.
    ca_file: Path

    @property
    def tls_url(self) -> str:
        return f"mqtts://127.0.0.1:{self.tls_port}"


def make_certificates(tmp_dir: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost (``trustme``):
    the CA's, the server's chain and its key files."""
    ca = trustme.CA(organization_name="Kanjia test CA")
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = (tmp_dir / n for n in ("ca.pem", "server.pem", "server.key"))
    ca.cert_pem.write_to_path(str(ca_file))
    for pem in server.cert_chain_pems:
        pem.write_to_path(str(cert_file), append=True)
    server.private_key_pem.write_to_path(str(key_file))
    return ca_file, cert_file, key_file


def _tls_listener(tmp_dir: Path, port: int) -> tuple[str, Path]:
    """The configuration of a TLS listener on ``port`` with new certificates
    (:func:`make_certificates`), and the CA file that clients must trust."""
    ca_file, cert_file, key_file = make_certificates(tmp_dir)
    listener = (
        f"listener {port} 127.0.0.1\ncafile {ca_file}\ncertfile {cert_file}\nkeyfile {key_file}\n"
    )
    return listener, ca_file


@contextmanager
def mosquitto_tls(tmp_dir: Path) -> Iterator[TlsBroker]:
    """A private Mosquitto (anonymous, no persistence) listening on two free loopback
    ports: plain MQTT, and MQTT over TLS with a certificate that ``ca_file`` signed."""
    port, tls_port = free_port(), free_port()
    tls_listener, ca_file = _tls_listener(tmp_dir, tls_port)
    settings = (
        # Run as root, Mosquitto would drop to user mosquitto, who cannot read the key files.
        f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\n{tls_listener}allow_anonymous true\n"
    )
    with _started(tmp_dir / "mosquitto", settings, [port, tls_port]) as process:
        yield TlsBroker(port=port, process=process, tls_port=tls_port, ca_file=ca_file)


DYNSEC_PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
DYNSEC_ADMIN = "kanjia-admin"


@dataclass(frozen=True, slots=True)
class DynsecBroker:
    """A Mosquitto whose clients, roles and ACLs are the dynamic security plugin's, on every
    listener: a plain one (``port``) and, when started with ``tls=True``, a TLS one."""

    port: int
    process: subprocess.Popen[bytes]
    admin_password: str
    state_file: Path
    tls_port: int | None = None
    #: The CA (PEM) that signed the TLS listener's certificate.
    ca_file: Path | None = None

    @property
    def url(self) -> str:
        """The URL with the plugin's admin identity (what ``KANJIA_MQTT_URL`` carries)."""
        return self.address(DYNSEC_ADMIN, self.admin_password)

    def address(
        self, user: str | None = None, password: str | None = None, *, tls: bool = False
    ) -> str:
        """``mqtt://`` (or, with ``tls``, ``mqtts://``) URL of a listener, with a login."""
        login = f"{user}:{password}@" if user is not None else ""
        if not tls:
            return f"mqtt://{login}127.0.0.1:{self.port}"
        if self.tls_port is None:
            raise ValueError("this broker was started without a TLS listener")
        return f"mqtts://{login}127.0.0.1:{self.tls_port}"


@contextmanager
def dynsec_mosquitto(
    tmp_dir: Path, *, port: int | None = None, tls: bool = False
) -> Iterator[DynsecBroker]:
    """Mosquitto with dynamic security on a free loopback port, anonymous clients refused;
    with ``tls``, also on a TLS listener whose certificate a test CA signed (``trustme``).

    The plugin's file is made as Mosquitto's documentation says (``mosquitto_ctrl dynsec
    init FILE USER PASSWORD``) the first time; started again on the same ``tmp_dir`` (and
    ``port``), the broker reloads what the plugin saved.
    """
    port = port or free_port()
    tls_port = free_port() if tls else None
    tls_listener, ca_file = _tls_listener(tmp_dir, tls_port) if tls_port else ("", None)
    state = tmp_dir / "dynamic-security.json"
    password_file = tmp_dir / "admin-password"
    if not state.exists():
        password_file.write_text(secrets.token_hex(16))
        subprocess.run(
            [
                "mosquitto_ctrl",
                "dynsec",
                "init",
                str(state),
                DYNSEC_ADMIN,
                password_file.read_text(),
            ],
            check=True,
            capture_output=True,
        )
    settings = (
        # As root Mosquitto drops to the user "mosquitto", who cannot read a private
        # temporary directory: it runs as whoever runs the suite.
        f"user {getpass.getuser()}\n"
        "per_listener_settings false\n"
        "allow_anonymous false\n"
        f"plugin {DYNSEC_PLUGIN}\n"
        f"plugin_opt_config_file {state}\n"
        f"listener {port} 127.0.0.1\n"
        f"{tls_listener}"
        f"{_QUEUES}"
    )
    ports = [port] if tls_port is None else [port, tls_port]
    with _started(tmp_dir / "mosquitto-dynsec", settings, ports) as process:
        yield DynsecBroker(
            port, process, password_file.read_text(), state, tls_port=tls_port, ca_file=ca_file
        )
