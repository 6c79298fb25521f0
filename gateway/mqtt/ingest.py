"""Device → service messages: parse at the edge, count, dispatch to the domain.

A malformed message is counted (``kanjia_mqtt_malformed``, labelled by its topic kind and
a fixed code, never by anything the device sent) and logged within a budget, and the loop
goes on to the next message; a handler that fails is counted the same way.

Presence and reported versions are coalesced in memory; upload requests and the
recording data (segment notices, events) go to two group commits
(:class:`gateway.batching.GroupCommit`), so the receive loop never waits for a
transaction. :meth:`Ingest.running` runs both writers in one TaskGroup and, at shutdown,
writes the recording data already received. Upload requests left unanswered at shutdown
are not drained: the camera asks again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from gateway import commands, recording, router_ops
from gateway.batching import GroupCommit
from gateway.lifecycle import running
from gateway.mqtt.messages import (
    PARSERS,
    EventNotice,
    Inbound,
    InvalidUploadAsk,
    Malformed,
    Reported,
    RpcResult,
    SegmentNotice,
    State,
    Telemetry,
    UploadAsk,
    kind_of,
    parse,
)
from gateway.mqtt.session import Ack
from gateway.services import Services
from storage.transient import is_transient, retrying

log = logging.getLogger(__name__)

#: Malformed messages logged per minute at most (each is counted all the same).
MALFORMED_LOGS_PER_MINUTE = 20


class LogBudget:
    """At most ``per_window`` log lines per ``window`` real seconds; when a new window opens,
    one line says how many were left out."""

    def __init__(self, *, per_window: int, window: float) -> None:
        self._per_window, self._window = per_window, window
        self._opened = time.monotonic()
        self._used = self._skipped = 0

    def take(self) -> bool:
        now = time.monotonic()
        if now - self._opened >= self._window:
            if self._skipped:
                log.warning("%d more malformed device messages were not logged", self._skipped)
            self._opened, self._used, self._skipped = now, 0, 0
        if self._used < self._per_window:
            self._used += 1
            return True
        self._skipped += 1
        return False


class RateLimits:
    """A token bucket per device, refilled in real time (it protects this process, whatever
    the service clock says); buckets that are full again are forgotten."""

    def __init__(self, *, per_minute: int, forget_after: int = 100_000) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._forget_after = forget_after

    def take(self, device_id: str) -> bool:
        now = time.monotonic()
        tokens, at = self._buckets.get(device_id, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        if len(self._buckets) >= self._forget_after:
            self._forget(now)
        if tokens < 1.0:
            self._buckets[device_id] = (tokens, now)
            return False
        self._buckets[device_id] = (tokens - 1.0, now)
        return True

    def _forget(self, now: float) -> None:
        self._buckets = {
            device: (tokens, at)
            for device, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self._rate < self._burst
        }


#: Segment notices and events received but not yet written, at most.
RECORDING_BACKLOG = 4_000
#: How long a small batch of upload requests waits for more (issue 16, item 3): a camera's
#: upload round trip gains at most this, and a batch's queries and commit are shared by more
#: items (BENCHMARKS.md, fleet size). Segment notices and events do not linger: the broker
#: has acknowledged them to the camera already, and a broker without persistence that
#: restarts loses what the gateway holds uncommitted (tests/test_faults.py, broker-fresh,
#: lost two notices and two events with a 25-ms linger here).
BATCH_LINGER = 0.025


class Ingest:
    def __init__(self, services: Services) -> None:
        self._s = services
        self._malformed_log = LogBudget(per_window=MALFORMED_LOGS_PER_MINUTE, window=60.0)
        self._upload_rate = RateLimits(per_minute=services.settings.upload_requests_per_minute)
        #: The message counter of each topic kind, looked up once (not a ``labels()`` call
        #: per message).
        self._counted = {
            kind: services.metrics.mqtt_messages.labels(kind) for kind in (*PARSERS, "unknown")
        }
        #: One handler per message type (:data:`gateway.mqtt.messages.Inbound`); each
        #: calls ``ack`` once the message's effect is committed.
        self._handlers: dict[type[Any], Callable[[Any, Ack], Awaitable[None]]] = {
            State: self._state,
            Telemetry: self._telemetry,
            Reported: self._reported,
            UploadAsk: self._upload_ask,
            InvalidUploadAsk: self._invalid_upload_ask,
            SegmentNotice: self._recording,
            EventNotice: self._recording,
            RpcResult: self._rpc_result,
        }
        self.uploads: GroupCommit[UploadAsk] = GroupCommit(
            "upload/req",
            lambda batch: recording.answer_uploads(services, batch),
            metrics=services.metrics,
            linger=BATCH_LINGER,
        )
        self.recordings: GroupCommit[recording.RecordingItem] = GroupCommit(
            "recording",
            lambda batch: recording.index_batch(services, batch),
            metrics=services.metrics,
            # Bounded so that the shutdown drain fits the 5-s SIGTERM grace at the
            # ~2,000 items/s this path sustains (BENCHMARKS.md, ingest).
            max_pending=RECORDING_BACKLOG,
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The component: the queued batches are written while the block runs; when it
        ends, the batches being written finish and the segment notices and events already
        received are indexed (shutdown)."""
        try:
            async with running(
                ("gateway[ingest].uploads", self.uploads.run),
                ("gateway[ingest].recordings", self.recordings.run),
            ):
                yield
        finally:
            with contextlib.suppress(Exception):
                await self.uploads.settle()
                await self.recordings.drain()

    async def handle(self, topic: str, payload: bytes, ack: Ack = lambda: None) -> None:
        """One message from the session; ``ack`` is called once its effect is committed
        (segment notices, events, upload requests: by their group commit), at once for
        what is kept in memory or refused (presence, malformed: sending it again would
        change nothing)."""
        metrics = self._s.metrics
        # Every message that arrives is counted by its topic's kind, well-formed or not.
        self._counted[kind_of(topic)].inc()
        try:
            msg = parse(topic, payload, max_bytes=self._s.settings.max_payload_bytes)
            await self._handlers[type(msg)](msg, ack)
        except Malformed as exc:
            ack()
            metrics.mqtt_malformed.labels(exc.kind, exc.code).inc()
            if self._malformed_log.take():
                log.warning("malformed device message on %.200s: %s", topic, exc.reason)
        except Exception as exc:
            metrics.mqtt_handler_errors.labels(kind_of(topic)).inc()
            if is_transient(exc):
                # Not acknowledged: the broker sends it again to the next session.
                log.warning("handling %.200s failed for now: %s", topic, exc)
                return
            ack()
            log.exception("handling %.200s failed", topic)

    def _seen(self, msg: Inbound) -> None:
        self._s.presence.seen(msg.device_id, self._s.clock.now())

    async def _state(self, msg: State, ack: Ack) -> None:
        at = self._s.clock.now()
        self._s.presence.state(msg.device_id, online=msg.online, at=at, firmware=msg.firmware)
        self._s.presence_acks.hold(ack)

    async def _telemetry(self, msg: Telemetry, ack: Ack) -> None:
        self._s.presence.telemetry(msg.device_id, self._s.clock.now(), msg.payload)
        self._s.presence_acks.hold(ack)
        await router_ops.on_telemetry(self._s, msg)

    async def _reported(self, msg: Reported, ack: Ack) -> None:
        self._seen(msg)
        self._s.reported.note(msg.device_id, msg.version, self._s.clock.now())
        self._s.presence_acks.hold(ack)

    async def _upload_ask(self, msg: UploadAsk, ack: Ack) -> None:
        self._seen(msg)
        if not self._upload_rate.take(msg.device_id):
            await recording.refuse(
                self._s,
                msg,
                code="rate_limited",
                message="too many upload requests from this device: ask again shortly",
            )
            ack()
            return
        await self.uploads.submit(msg, ack)

    async def _invalid_upload_ask(self, msg: InvalidUploadAsk, ack: Ack) -> None:
        self._seen(msg)
        await recording.refuse_invalid(self._s, msg)
        ack()

    async def _recording(self, msg: SegmentNotice | EventNotice, ack: Ack) -> None:
        self._seen(msg)
        await self.recordings.submit(msg, ack)

    async def _rpc_result(self, msg: RpcResult, ack: Ack) -> None:
        self._seen(msg)
        await retrying(lambda: commands.on_rpc_result(self._s, msg), name="rpc/res")
        ack()
