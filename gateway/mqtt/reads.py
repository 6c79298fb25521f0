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
from collections.abc import Callable
from typing import Any, NamedTuple

import aiomqtt
import paho.mqtt.client as paho

#: Bytes read from the socket at most per readiness.
CHUNK = 256 * 1024
#: The MQTT control packet type of PUBLISH (the high nibble of its first byte).
_PUBLISH = 3


class Received(NamedTuple):
    """A PUBLISH taken from the buffer (the fields of paho's message the session reads)."""

    topic: str
    payload: bytes
    mid: int
    qos: int


class BufferedReads:
    """The read buffer of one connection (a new aiomqtt client per connection).

    A whole QoS 0 or 1 PUBLISH at the head of the buffer is decoded here and queued as a
    :class:`Received` (MQTT 3.1.1: topic, packet id, payload; nothing else to do with manual
    acknowledgements): paho's own handling of one (a message object with its
    ``threading.Condition``, a debug log line, its callback lookup) was another ~17 % of the
    gateway's ingest CPU. Every other packet, and a PUBLISH split over two reads, goes to
    paho, which reads it from the same buffer."""

    def __init__(self, client: aiomqtt.Client, deliver: Callable[[Received], None]) -> None:
        self._client = client
        self._paho: Any = client._client
        self._deliver = deliver
        self._buffer = b""
        self._pos = 0
        #: Whether this readiness may still read the socket (once per readiness).
        self._fresh = False
        self._closed = False

    def _fill(self) -> bool:
        """Read the socket once into the (empty) buffer; whether bytes came."""
        self._fresh = False
        sock = self._paho._sock
        if sock is None:
            return False
        try:
            data = sock.recv(CHUNK)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        if not data:
            self._closed = True  # the broker closed the connection: paho is told next
            return False
        self._buffer, self._pos = data, 0
        self._paho._last_bytes_received = paho.time_func()
        return True

    def recv(self, size: int) -> bytes:
        """paho's ``_sock_recv``: from the buffer, refilled once per readiness; when the
        buffer is empty and the socket was read already, "would block" (paho then stops and
        keeps the packet read so far)."""
        available = len(self._buffer) - self._pos
        if available == 0:
            if self._paho._sock is None:
                raise ConnectionError("the MQTT socket is closed")
            if self._closed or not (self._fresh and self._fill()):
                if self._closed:
                    return b""
                raise BlockingIOError
            available = len(self._buffer)
        end = self._pos + min(size, available)
        chunk = self._buffer[self._pos : end]
        self._pos = end
        return chunk

    def _publish(self) -> bool:
        """Decode and queue a whole QoS 0/1 PUBLISH at the buffer's head; ``False`` (nothing
        taken) for anything else."""
        buf, pos, end = self._buffer, self._pos, len(self._buffer)
        if pos >= end or buf[pos] >> 4 != _PUBLISH:
            return False
        qos = (buf[pos] >> 1) & 3
        length, shift, at = 0, 0, pos + 1
        while True:  # the remaining length: 1 to 4 bytes, 7 bits each
            if at >= end or shift > 21:
                return False
            byte = buf[at]
            at += 1
            length |= (byte & 127) << shift
            shift += 7
            if byte < 128:
                break
        stop = at + length
        if qos > 1 or stop > end or length < 2:
            return False
        topic_end = at + 2 + ((buf[at] << 8) | buf[at + 1])
        body = topic_end + 2 if qos else topic_end
        if body > stop:
            return False
        try:
            topic = buf[at + 2 : topic_end].decode()
        except UnicodeDecodeError:
            return False
        mid = (buf[topic_end] << 8) | buf[topic_end + 1] if qos else 0
        self._pos = stop
        self._deliver(Received(topic, buf[body:stop], mid, qos))
        return True

    def on_readable(self) -> None:
        """The socket's reader callback: every whole packet in one read of it."""
        client = self._paho
        fast = client._protocol != paho.MQTTv5  # v5 has properties: paho decodes those
        self._fresh = True
        try:
            while client._sock is not None:
                if fast and client._in_packet["command"] == 0 and self._publish():
                    continue
                if self._pos == len(self._buffer):
                    if self._fresh and self._fill():
                        continue
                    pending = getattr(client._sock, "pending", None)
                    if not self._closed and pending is not None and pending() > 0:
                        self._fresh = True  # TLS: bytes already decrypted, no readiness comes
                        continue
                    if not self._closed:
                        return
                # A partial packet, another kind of packet, or the end of the connection.
                if client.loop_read() != paho.MQTT_ERR_SUCCESS or self._closed:
                    return
        except Exception as exc:
            # As aiomqtt's own callback: a broken connection ends the session.
            disconnected: asyncio.Future[None] = self._client._disconnected
            if not disconnected.done():
                disconnected.set_exception(exc)


def buffer_reads(client: aiomqtt.Client, loop: asyncio.AbstractEventLoop) -> None:
    """Before connecting: ``client``'s paho reads through a :class:`BufferedReads`, whose
    callback replaces aiomqtt's on the socket once it is open."""
    queue: asyncio.Queue[Any] = client._queue
    reads = BufferedReads(client, queue.put_nowait)
    inner: Any = client._client
    inner._sock_recv = reads.recv
    opened = inner.on_socket_open

    def on_socket_open(paho_client: Any, userdata: Any, sock: Any) -> None:
        opened(paho_client, userdata, sock)  # aiomqtt's: its reader, then ours replaces it
        loop.call_soon_threadsafe(loop.add_reader, sock.fileno(), reads.on_readable)

    inner.on_socket_open = on_socket_open
