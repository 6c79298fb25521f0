"""Real services for the suite, started on free loopback ports and stopped afterwards."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
def mosquitto(tmp_dir: Path, *, port: int | None = None) -> Iterator[Broker]:
    """A private Mosquitto on a free loopback port, or on ``port`` to restart one there
    (anonymous, no persistence)."""
    port = port or free_port()
    conf = tmp_dir / "mosquitto.conf"
    log = tmp_dir / "mosquitto.log"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "persistence false\n"
        "max_queued_messages 100000\n"
        "log_dest stderr\n"
        "log_type error\nlog_type warning\nlog_type notice\n"
    )
    with log.open("wb") as log_file:
        process = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stderr=log_file)
    try:
        wait_for_port(port, timeout=10, process=process)
        yield Broker(port=port, process=process)
    finally:
        stop_process(process)
