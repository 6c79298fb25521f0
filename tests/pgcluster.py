"""A private PostgreSQL cluster for the fault suite: ``initdb`` in a temporary directory,
``pg_ctl`` on a free loopback port, so a test may crash and restart it.

The machine's own server (5432, ``KANJIA_TEST_POSTGRES_URL``) is never stopped: the
cluster here has its own data directory, port and socket directory. PostgreSQL refuses to
run as root, so as root (CI) ``initdb`` and ``pg_ctl`` run as the ``postgres`` user through
``runuser``, in a directory that user owns; otherwise they run as whoever runs the suite.
``fsync`` is off: a test crashes the server process (``pg_ctl stop -m immediate``), never
the machine, and what a crashed server committed is still in the kernel's page cache.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gateway.lifecycle import free_port

PG_USER = "postgres"
_BIN_DIRS = ("/usr/local/bin", "/usr/lib/postgresql/15/bin")


def _pg_binary(name: str) -> str:
    found = shutil.which(name)
    if found is not None:
        return found
    for directory in _BIN_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file():
            return str(candidate)
    raise RuntimeError(f"no {name} binary (PostgreSQL's server tools are not installed)")


def _as_pg_user(argv: list[str]) -> list[str]:
    """``argv`` run as the ``postgres`` user when the suite runs as root."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", PG_USER, "--", *argv]


@dataclass(frozen=True, slots=True)
class PgCluster:
    """A running private cluster; ``stop``/``start`` crash and restart its server."""

    base: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def log_path(self) -> Path:
        return self.base / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def _pg_ctl(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            _as_pg_user([_pg_binary("pg_ctl"), "-D", str(self.data_dir), *args]),
            cwd=self.base,
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"
        )
        self._pg_ctl("-l", str(self.log_path), "-o", options, "-w", "-t", "60", "start")

    def crash(self) -> None:
        """Stop the server at once, without a checkpoint, as a crash would."""
        self._pg_ctl("-m", "immediate", "-w", "stop")


@contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    """A new cluster (trust authentication, loopback only) until the block ends."""
    # Not under pytest's base temp: its directories are private to the suite's user,
    # and the server runs as ``postgres``.
    base = Path(tempfile.mkdtemp(prefix="kanjia-pg-"))
    try:
        if os.geteuid() == 0:
            user = pwd.getpwnam(PG_USER)
            os.chown(base, user.pw_uid, user.pw_gid)
        subprocess.run(
            _as_pg_user(
                [
                    _pg_binary("initdb"),
                    "-D",
                    str(base / "data"),
                    "-U",
                    PG_USER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ]
            ),
            cwd=base,
            check=True,
            capture_output=True,
            timeout=120,
        )
        cluster = PgCluster(base=base, port=free_port())
        cluster.start()
        try:
            yield cluster
        finally:
            subprocess.run(
                _as_pg_user(
                    [_pg_binary("pg_ctl"), "-D", str(cluster.data_dir), "-m", "immediate", "stop"]
                ),
                cwd=base,
                capture_output=True,
                timeout=60,
                check=False,
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)
