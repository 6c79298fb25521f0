"""Recording over MQTT: upload requests, finished segments and camera events (R1, R5, R8).

``upload/req`` → the service decides (pure :func:`replay.recording.decide_upload`) →
``upload/res`` with a short-lived presigned PUT URL or a refusal naming the rule → the
camera PUTs → ``segment`` → the service checks the object exists with the announced size
(and checksum, for small objects) before indexing it. Indexing is idempotent by
``segment_id``; an indexed segment is acknowledged data and survives a restart.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from devices.broadband import account_state
from devices.models import Account, Device, DeviceKind
from gateway.services import Services
from gateway.wire import DeviceMessage, Malformed, topic
from replay import recording
from replay.models import CameraEvent, Segment, UploadGrant
from replay.subscriptions import active_subscription

log = logging.getLogger(__name__)

#: Objects up to this size have their SHA-256 checked before indexing.
CHECKSUM_LIMIT = 2 * 1024 * 1024
EVENT_TYPES = ("person", "pet", "door", "motion")


def _reply(req_id: object, segment_id: str | None, **fields: Any) -> bytes:
    return json.dumps({"req_id": req_id, "segment_id": segment_id, **fields}).encode()


async def _camera(session: AsyncSession, device_id: str) -> tuple[Device, Account] | None:
    device = await session.get(Device, device_id)
    if device is None or device.kind != DeviceKind.CAMERA:
        return None
    account = await session.get(Account, device.account_id)
    return None if account is None else (device, account)


async def on_upload_request(services: Services, msg: DeviceMessage) -> None:
    req_id = msg.payload.get("req_id")
    answer = topic(msg.device_id, "upload/res")
    try:
        request = recording.UploadRequest.parse(msg.payload, device_id=msg.device_id)
    except recording.InvalidUpload as exc:
        services.metrics.mqtt_malformed.labels(msg.kind, "invalid_upload").inc()
        await _publish(
            services,
            answer,
            _reply(req_id, _segment_id(msg), ok=False, code="invalid_upload", message=str(exc)),
        )
        return
    now = services.clock.now()
    async with services.db.session() as session:
        found = await _camera(session, msg.device_id)
        if found is None:
            services.metrics.mqtt_unknown_device.inc()
            return
        device, account = found
        subscription = await active_subscription(session, device.device_id)
        decision = recording.decide_upload(
            request,
            entitlement=recording.entitlement_of(subscription),
            broadband_state=account_state(account.broadband_state),
            now=now,
        )
        if isinstance(decision, recording.Refuse):
            services.metrics.upload_decisions.labels(decision.code).inc()
            await _publish(
                services,
                answer,
                _reply(
                    req_id,
                    request.segment_id,
                    ok=False,
                    code=decision.code,
                    rule=decision.rule,
                    message=decision.message,
                ),
            )
            return
        key = recording.object_key(
            decision.retention_class,
            device.device_id,
            request.start,
            request.segment_id,
            request.kind,
        )
        grant = await session.get(UploadGrant, request.segment_id)
        if grant is None:
            grant = UploadGrant(
                segment_id=request.segment_id,
                device_id=device.device_id,
                account_id=account.account_id,
                subscription_id=decision.subscription_id,
                kind=request.kind.value,
                start=request.start,
                end=request.end,
                bytes=request.bytes,
                sha256=request.sha256,
                event_id=request.event_id,
                object_key=key,
                retention_class=decision.retention_class,
                expires_at=decision.expires_at,
                granted_at=now,
            )
            session.add(grant)
            await session.commit()
        elif grant.device_id != device.device_id:
            await _publish(
                services,
                answer,
                _reply(
                    req_id,
                    request.segment_id,
                    ok=False,
                    code="invalid_upload",
                    message="segment_id already in use",
                ),
            )
            return
    ttl = services.settings.url_ttl_seconds
    url = await services.store.presign_put(grant.object_key, expires_in=ttl)
    services.metrics.upload_decisions.labels("accepted").inc()
    await _publish(
        services,
        answer,
        _reply(req_id, request.segment_id, ok=True, url=url, key=grant.object_key, expires_in=ttl),
    )


def _segment_id(msg: DeviceMessage) -> str | None:
    value = msg.payload.get("segment_id")
    return value if isinstance(value, str) else None


async def _publish(services: Services, name: str, body: bytes) -> None:
    if services.mqtt is not None:
        await services.mqtt.publish(name, body)


async def on_segment(services: Services, msg: DeviceMessage) -> None:
    """Index a finished upload after checking the object (idempotent by segment_id)."""
    try:
        notice = recording.UploadRequest.parse(msg.payload, device_id=msg.device_id)
    except recording.InvalidUpload as exc:
        raise Malformed(msg.kind, exc.reason) from exc
    async with services.db.session() as session:
        if await session.get(Segment, notice.segment_id) is not None:
            return  # already indexed: a repeated notice changes nothing
        grant = await session.get(UploadGrant, notice.segment_id)
        if grant is None or grant.device_id != msg.device_id:
            services.metrics.segments_rejected.labels("no_grant").inc()
            log.warning("segment %s from %s has no upload grant", notice.segment_id, msg.device_id)
            return
        problem = await _verify(services, grant)
        if problem is not None:
            services.metrics.segments_rejected.labels(problem).inc()
            log.warning("segment %s refused: %s", grant.segment_id, problem)
            return
        session.add(
            Segment(
                segment_id=grant.segment_id,
                device_id=grant.device_id,
                account_id=grant.account_id,
                subscription_id=grant.subscription_id,
                kind=grant.kind,
                start=grant.start,
                end=grant.end,
                bytes=grant.bytes,
                sha256=grant.sha256,
                event_id=grant.event_id,
                object_key=grant.object_key,
                retention_class=grant.retention_class,
                expires_at=grant.expires_at,
                indexed_at=services.clock.now(),
            )
        )
        await session.delete(grant)
        await session.commit()
    services.metrics.segments_indexed.inc()


async def _verify(services: Services, grant: UploadGrant) -> str | None:
    info = await services.store.head(grant.object_key)
    if info is None:
        return "missing_object"
    if info.size != grant.bytes:
        return "size_mismatch"
    if grant.bytes <= CHECKSUM_LIMIT:
        data = await services.store.get(grant.object_key)
        if hashlib.sha256(data).hexdigest() != grant.sha256:
            return "checksum_mismatch"
    return None


async def on_event(services: Services, msg: DeviceMessage) -> None:
    payload = msg.payload
    event_id, kind, at_raw = payload.get("event_id"), payload.get("type"), payload.get("at")
    score = payload.get("score", 0.0)
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 80:
        raise Malformed(msg.kind, "'event_id' must be a short string")
    if kind not in EVENT_TYPES:
        raise Malformed(msg.kind, "'type' must be person, pet, door or motion")
    if not isinstance(score, int | float) or isinstance(score, bool):
        raise Malformed(msg.kind, "'score' must be a number")
    try:
        at = datetime.fromisoformat(str(at_raw))
    except ValueError as exc:
        raise Malformed(msg.kind, "'at' must be an ISO time") from exc
    if at.tzinfo is None:
        raise Malformed(msg.kind, "'at' must carry an offset")
    async with services.db.session() as session:
        if await _camera(session, msg.device_id) is None:
            services.metrics.mqtt_unknown_device.inc()
            return
        if await session.get(CameraEvent, event_id) is None:
            session.add(
                CameraEvent(
                    event_id=event_id,
                    device_id=msg.device_id,
                    type=str(kind),
                    at=at,
                    score=float(score),
                )
            )
            await session.commit()
