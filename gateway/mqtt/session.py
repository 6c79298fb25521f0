"""The gateway's MQTT session: persistent, reconnecting, one receive loop.

aiomqtt wraps paho-mqtt's socket callbacks into the event loop (no thread hop). The
session is persistent (``clean_session=False``) so QoS-1 messages published while the
gateway was away are delivered when it returns. Connection loss is retried with capped
exponential backoff and jitter; each message goes to ``on_message`` in arrival order, and
a handler failure is counted and logged without stopping the loop. An ``mqtts://`` URL
connects over TLS (port 8883 unless given), verifying the broker's certificate and host
name against ``ca_file`` (``KANJIA_MQTT_CA_FILE``), or the system's CAs without one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt

from gateway.lifecycle import running
from gateway.metrics import Metrics
from gateway.mqtt.messages import Outbound, subscriptions
from gateway.mqtt.reads import buffer_reads

log = logging.getLogger(__name__)

#: Acknowledges one received message to the broker (QoS 1: its PUBACK).
Ack = Callable[[], None]
#: Takes a message's topic, payload and acknowledgement: it calls ``ack`` once the
#: message's effect is committed (or given up), never before.
OnMessage = Callable[[str, bytes, Ack], Awaitable[None]]
#: Called once connected when the broker kept nothing of the session (a new broker, or one
#: restarted without persistence): what the gateway keeps retained must be sent again.
OnFreshSession = Callable[[], Awaitable[None]]

#: QoS-1 publishes in flight (sent, PUBACK not yet received) at once.
MAX_INFLIGHT = 1_000


class NotConnected(RuntimeError):
    """Publishing while the MQTT session is down."""


#: The IANA ports of MQTT and of MQTT over TLS.
DEFAULT_PORTS = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883}


def broker_address(url: str) -> tuple[str, int, str | None, str | None]:
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"no host in MQTT URL {url!r}")
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return parts.hostname, parts.port or DEFAULT_PORTS.get(parts.scheme, 1883), user, password


def broker_tls(url: str, ca_file: str | None) -> ssl.SSLContext | None:
    """The TLS context of an ``mqtts://`` URL (``None`` for plain MQTT)."""
    if urlsplit(url).scheme != "mqtts":
        return None
    return ssl.create_default_context(cafile=ca_file or None)


def _untrusted(exc: aiomqtt.MqttError) -> bool:
    # aiomqtt turns the ssl error into its own, keeping only the text.
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def _session_flag(client: aiomqtt.Client) -> Callable[[], bool]:
    """Whether the broker said, in its CONNACK, that it kept the session.

    aiomqtt does not pass the flag on, so the paho client's connect callback is wrapped
    (a private attribute of aiomqtt's; ``tests/test_desired.py`` restarts a broker without
    persistence to prove it still works).
    """
    paho_client: Any = client._client
    inner: Callable[..., None] = paho_client.on_connect
    present = False

    def on_connect(*args: Any, **kwargs: Any) -> None:
        nonlocal present
        flags = args[2] if len(args) > 2 else kwargs.get("flags")
        present = bool(getattr(flags, "session_present", False))
        inner(*args, **kwargs)

    paho_client.on_connect = on_connect
    return lambda: present


def _take_raw(client: aiomqtt.Client) -> None:
    """Queue paho's message itself (see :meth:`MqttSession._receive`), from the first one:
    set before connecting, as a persistent session's backlog comes before the SUBACK."""
    queue: asyncio.Queue[Any] = client._queue
    client._client.on_message = lambda _client, _userdata, message: queue.put_nowait(message)


def _as_bytes(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    return b""


class MqttSession:
    def __init__(
        self,
        *,
        url: str,
        client_id: str,
        shared_group: str,
        metrics: Metrics,
        ca_file: str | None = None,
        backoff_max: float = 30.0,
    ) -> None:
        self._host, self._port, self._user, self._password = broker_address(url)
        self._tls = broker_tls(url, ca_file)
        self._client_id = client_id
        self._topics = subscriptions(shared_group)
        self._metrics = metrics
        self._backoff_max = backoff_max
        self._client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        #: Set when the current connection is gone: publishes waiting for their
        #: acknowledgement on it give up (NotConnected) instead of waiting forever.
        self._gone = asyncio.Event()

    def receiving(
        self, on_message: OnMessage, on_fresh_session: OnFreshSession | None = None
    ) -> AbstractAsyncContextManager[None]:
        """The component: the session runs, handing each message to ``on_message``, for
        the block's lifetime."""
        return running(("gateway[mqtt].rx", lambda: self.run(on_message, on_fresh_session)))

    async def run(
        self, on_message: OnMessage, on_fresh_session: OnFreshSession | None = None
    ) -> None:
        """Connect, subscribe and receive until cancelled; reconnect on loss."""
        delay = 0.5
        while True:
            try:
                client = self._new_client()
                session_present = _session_flag(client)
                # Acknowledge only what is committed: a message taken but not yet written
                # when the process dies is sent again by the broker (persistent session).
                client._client.manual_ack_set(True)
                _take_raw(client)
                buffer_reads(client, asyncio.get_running_loop())
                async with client:
                    for topic in self._topics:
                        await client.subscribe(topic, qos=1)
                    self._client = client
                    self._gone = asyncio.Event()
                    self.connected.set()
                    self._metrics.mqtt_connected.set(1)
                    self._metrics.mqtt_reconnects.inc()
                    log.info(
                        "MQTT connected to %s:%d as %s", self._host, self._port, self._client_id
                    )
                    delay = 0.5
                    if not session_present() and on_fresh_session is not None:
                        log.info("the broker kept no session: retained state is sent again")
                        await on_fresh_session()
                    await self._receive(client, on_message)
            except aiomqtt.MqttError as exc:
                hint = " (is KANJIA_MQTT_CA_FILE the broker's CA?)" if _untrusted(exc) else ""
                log.warning("MQTT session lost (%s)%s; retrying in %.1fs", exc, hint, delay)
            finally:
                self._client = None
                self._gone.set()
                self.connected.clear()
                self._metrics.mqtt_connected.set(0)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self._backoff_max)

    async def _receive(self, client: aiomqtt.Client, on_message: OnMessage) -> None:
        """Hand each message to ``on_message`` in arrival order, until the connection ends.

        paho's messages are taken as they come (:func:`_take_raw`), and while
        some are queued the next is taken at once: aiomqtt's iterator spends a task and an
        ``asyncio.wait`` on every message, ~5 % of the gateway's ingest CPU (py-spy,
        BENCHMARKS.md). Its iterator still waits when the queue is empty, so a lost
        connection ends the loop as before (aiomqtt's private ``_queue`` and ``_client``:
        ``tests/test_ingest.py`` and ``tests/test_durability.py`` run through here)."""
        queue: asyncio.Queue[Any] = client._queue
        waiting: AsyncIterator[Any] = aiter(client.messages)
        while True:
            message = queue.get_nowait() if queue.qsize() else await anext(waiting)
            await on_message(
                message.topic,
                _as_bytes(message.payload),
                self._acknowledger(client, message.mid, message.qos),
            )

    def _new_client(self) -> aiomqtt.Client:
        return aiomqtt.Client(
            self._host,
            self._port,
            username=self._user,
            password=self._password,
            tls_context=self._tls,
            identifier=self._client_id,
            clean_session=False,
            keepalive=30,
            max_queued_outgoing_messages=100_000,
            # paho's default is 20 QoS-1 publishes awaiting PUBACK: a batch of
            # upload answers or a stop fan-out would go out 20 round trips at a time.
            max_inflight_messages=MAX_INFLIGHT,
        )

    def _acknowledger(self, client: aiomqtt.Client, mid: int, qos: int) -> Ack:
        """The message's acknowledgement; a no-op once its connection is gone (the broker
        then sends it again on the next one)."""

        def ack() -> None:
            if qos > 0 and self._client is client:
                client._client.ack(mid, qos)

        return ack

    async def send(self, message: Outbound) -> None:
        """Publish one typed message (QoS 1; retained where the contract says so)."""
        await self.publish(message.topic(), message.payload(), retain=message.retain)

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        client, gone = self._client, self._gone
        if client is None:
            raise NotConnected("the MQTT session is down")
        sending = asyncio.ensure_future(client.publish(topic, payload, qos=qos, retain=retain))
        lost = asyncio.ensure_future(gone.wait())
        try:
            await asyncio.wait({sending, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not sending.done():
                sending.cancel()  # the connection went first (or we were cancelled)
        if sending.cancelled():
            raise NotConnected("the MQTT session closed before the broker acknowledged")
        try:
            sending.result()
        except aiomqtt.MqttError as exc:
            raise NotConnected(str(exc)) from exc
