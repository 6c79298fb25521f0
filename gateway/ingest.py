"""Device → service messages: parse at the edge, count, dispatch to the domain.

A malformed payload is counted (``kanjia_mqtt_malformed``) and logged, and the loop
goes on to the next message; a handler that fails is counted the same way.
"""

from __future__ import annotations

import logging

from gateway import broadband, recording, routes_router
from gateway.services import Services
from gateway.wire import DeviceMessage, Malformed, StatePayload, parse

log = logging.getLogger(__name__)


class Ingest:
    def __init__(self, services: Services) -> None:
        self._s = services

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
            await routes_router.on_telemetry(self._s, msg)
        elif msg.kind == "reported":
            version = msg.payload.get("version")
            if not isinstance(version, int) or isinstance(version, bool) or version < 0:
                raise Malformed(msg.kind, "'version' must be a non-negative integer")
            presence.seen(msg.device_id, now)
            self._s.reported.note(msg.device_id, version, now)
        elif msg.kind == "upload/req":
            presence.seen(msg.device_id, now)
            await recording.on_upload_request(self._s, msg)
        elif msg.kind == "segment":
            presence.seen(msg.device_id, now)
            await recording.on_segment(self._s, msg)
        elif msg.kind == "event":
            presence.seen(msg.device_id, now)
            await recording.on_event(self._s, msg)
        elif msg.kind == "rpc/res":
            presence.seen(msg.device_id, now)
            await broadband.on_rpc_result(self._s, msg)
        else:
            presence.seen(msg.device_id, now)
