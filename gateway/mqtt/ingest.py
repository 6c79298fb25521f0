"""Device → service messages: parse at the edge, count, dispatch to the domain.

A malformed payload is counted (``kanjia_mqtt_malformed``) and logged, and the loop
goes on to the next message; a handler that fails is counted the same way.

Presence and reported versions are coalesced in memory; upload requests and the
recording data (segment notices, events) go to two group commits
(:class:`gateway.batching.GroupCommit`), so the receive loop never waits for a
transaction. :meth:`Ingest.running` runs both writers in one TaskGroup and, at shutdown, writes the
recording data already received. Upload requests left
unanswered at shutdown are not drained: the camera asks again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gateway import commands, recording, router_ops
from gateway.batching import GroupCommit
from gateway.lifecycle import running
from gateway.mqtt.messages import DeviceMessage, Malformed, StatePayload, parse
from gateway.services import Services

log = logging.getLogger(__name__)

#: Segment notices and events received but not yet written, at most.
RECORDING_BACKLOG = 4_000


class Ingest:
    def __init__(self, services: Services) -> None:
        self._s = services
        self.uploads: GroupCommit[recording.UploadAsk] = GroupCommit(
            "upload/req",
            lambda batch: recording.answer_uploads(services, batch),
            metrics=services.metrics,
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

    async def handle(self, topic: str, payload: bytes) -> None:
        metrics = self._s.metrics
        try:
            msg = parse(topic, payload)
            metrics.mqtt_messages.labels(msg.kind).inc()
            await self._dispatch(msg)
        except Malformed as exc:
            metrics.mqtt_malformed.labels(exc.kind, exc.reason).inc()
            log.warning("malformed device message on %s: %s", topic, exc.reason)
        except Exception:
            metrics.mqtt_handler_errors.labels(topic.rpartition("/")[2]).inc()
            log.exception("handling %s failed", topic)

    async def _dispatch(self, msg: DeviceMessage) -> None:
        now = self._s.clock.now()
        presence = self._s.presence
        if msg.kind == "state":
            state = StatePayload.of(msg)
            presence.state(msg.device_id, online=state.online, at=now, firmware=state.firmware)
        elif msg.kind == "telemetry":
            presence.telemetry(msg.device_id, now, msg.payload)
            await router_ops.on_telemetry(self._s, msg)
        elif msg.kind == "reported":
            version = msg.payload.get("version")
            if not isinstance(version, int) or isinstance(version, bool) or version < 0:
                raise Malformed(msg.kind, "'version' must be a non-negative integer")
            presence.seen(msg.device_id, now)
            self._s.reported.note(msg.device_id, version, now)
        elif msg.kind == "upload/req":
            presence.seen(msg.device_id, now)
            ask = await recording.parse_upload(self._s, msg)
            if ask is not None:
                await self.uploads.submit(ask)
        elif msg.kind == "segment":
            presence.seen(msg.device_id, now)
            await self.recordings.submit(recording.parse_segment(msg))
        elif msg.kind == "event":
            presence.seen(msg.device_id, now)
            await self.recordings.submit(recording.parse_event(msg))
        elif msg.kind == "rpc/res":
            presence.seen(msg.device_id, now)
            await commands.on_rpc_result(self._s, msg)
        else:
            presence.seen(msg.device_id, now)
