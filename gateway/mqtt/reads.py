"""Buffered socket reads for the paho client under aiomqtt.

paho reads a packet a byte at a time: one ``recv`` for its command byte, one per byte of its
remaining length, one for the rest; and aiomqtt's reader callback reads one packet per
readiness of the socket, so every message also costs a turn of the event loop and an
``epoll``. Under the ingest benchmark that receive path was the gateway's largest cost
(py-spy: ~20 % of its CPU for segment notices, BENCHMARKS.md "Ingest"). :func:`buffer_reads`
gives the paho client of an aiomqtt client a read buffer: a readiness reads the socket once
(up to :data:`CHUNK` bytes) and hands paho every packet in it, the last one partial if it
must be (paho keeps a partial packet's state until the next readiness).

It works on private parts of both libraries (paho's ``_sock_recv`` and ``_sock``, aiomqtt's
``_disconnected`` and its reader callback, replaced on the same file descriptor), which the
pinned versions in ``pyproject.toml`` have; ``tests/test_ingest.py``,
``tests/test_durability.py``, ``tests/test_faults.py`` and ``tests/test_tls.py`` run every
message through it.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

#: Bytes read from the socket at most per readiness.
CHUNK = 256 * 1024


class BufferedReads:
    """The read buffer of one connection (a new aiomqtt client per connection)."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self._client = client
        self._paho: Any = client._client
        self._buffer = b""
        self._pos = 0
        #: Whether this readiness may still read the socket (once per readiness).
        self._fresh = False

    def recv(self, size: int) -> bytes:
        """paho's ``_sock_recv``: from the buffer, refilled once per readiness; when the
        buffer is empty and the socket was read already, "would block" (paho then stops and
        keeps the packet read so far)."""
        available = len(self._buffer) - self._pos
        if available == 0:
            sock = self._paho._sock
            if sock is None:
                raise ConnectionError("the MQTT socket is closed")
            if not self._fresh:
                raise BlockingIOError
            self._fresh = False
            try:
                data = sock.recv(CHUNK)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError) as exc:
                raise BlockingIOError from exc
            if not data:
                return b""  # the broker closed the connection
            self._buffer, self._pos, available = data, 0, len(data)
        end = self._pos + min(size, available)
        chunk = self._buffer[self._pos : end]
        self._pos = end
        return chunk

    def on_readable(self) -> None:
        """The socket's reader callback: every whole packet in one read of it."""
        client = self._paho
        self._fresh = True
        try:
            while True:
                if client.loop_read() != paho.MQTT_ERR_SUCCESS or client._sock is None:
                    return
                if self._pos < len(self._buffer):
                    continue  # packets left in the buffer
                if self._fresh:
                    continue  # nothing read yet (a packet was handled from what was left)
                pending = getattr(client._sock, "pending", None)
                if pending is not None and pending() > 0:
                    self._fresh = True  # TLS: bytes already decrypted, no readiness comes
                    continue
                return
        except Exception as exc:
            # As aiomqtt's own callback: a broken connection ends the session.
            disconnected: asyncio.Future[None] = self._client._disconnected
            if not disconnected.done():
                disconnected.set_exception(exc)


def buffer_reads(client: aiomqtt.Client, loop: asyncio.AbstractEventLoop) -> None:
    """Before connecting: ``client``'s paho reads through a :class:`BufferedReads`, whose
    callback replaces aiomqtt's on the socket once it is open."""
    reads = BufferedReads(client)
    inner: Any = client._client
    inner._sock_recv = reads.recv
    opened = inner.on_socket_open

    def on_socket_open(paho_client: Any, userdata: Any, sock: Any) -> None:
        opened(paho_client, userdata, sock)  # aiomqtt's: its reader, then ours replaces it
        loop.call_soon_threadsafe(loop.add_reader, sock.fileno(), reads.on_readable)

    inner.on_socket_open = on_socket_open
