"""Recording over MQTT: upload requests, finished segments and camera events (R1, R5, R8).

``upload/req`` → the service decides (pure :func:`replay.recording.decide_upload`) →
``upload/res`` with a short-lived presigned PUT URL or a refusal naming the rule → the
camera PUTs → ``segment`` → the service checks the object exists with the announced size
(and checksum, for small objects) before indexing it. Indexing is idempotent by
``segment_id`` (events by ``event_id``); an indexed segment is acknowledged data and
survives a restart.

Messages are checked one by one at the edge (:func:`parse_upload`, :func:`parse_segment`,
:func:`parse_event`: a malformed one is counted there) and written in batches by the
gateway's group commits (:mod:`gateway.batching`): :func:`answer_uploads` decides a batch
of requests with a handful of queries and one commit, then answers each;
:func:`index_batch` checks a batch of uploaded objects with one batch read and indexes them,
with the batch's events, in one transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from devices.broadband import account_state
from devices.models import Account, Device, DeviceKind
from gateway.mqtt.messages import DeviceMessage, Malformed, topic
from gateway.services import Services
from replay import index_store, recording
from replay.models import UploadGrant
from replay.subscriptions import active_subscriptions

log = logging.getLogger(__name__)

#: Objects up to this size have their SHA-256 checked before indexing.
CHECKSUM_LIMIT = 2 * 1024 * 1024
EVENT_TYPES = ("person", "pet", "door", "motion")


@dataclass(frozen=True, slots=True)
class UploadAsk:
    """One ``upload/req``, checked; ``req_id`` is echoed in the answer."""

    req_id: object
    request: recording.UploadRequest


@dataclass(frozen=True, slots=True)
class EventNotice:
    """One camera ``event``, checked."""

    event_id: str
    device_id: str
    type: str
    at: datetime
    score: float


#: What the recording group commit indexes: segment notices and camera events.
RecordingItem = recording.UploadRequest | EventNotice


def _reply(req_id: object, segment_id: str | None, **fields: Any) -> bytes:
    return json.dumps({"req_id": req_id, "segment_id": segment_id, **fields}).encode()


async def _publish(services: Services, name: str, body: bytes) -> None:
    if services.mqtt is not None:
        await services.mqtt.publish(name, body)


def _segment_id(msg: DeviceMessage) -> str | None:
    value = msg.payload.get("segment_id")
    return value if isinstance(value, str) else None


async def parse_upload(services: Services, msg: DeviceMessage) -> UploadAsk | None:
    """Check an ``upload/req``; an invalid one is answered here and gives ``None``."""
    req_id = msg.payload.get("req_id")
    try:
        request = recording.UploadRequest.parse(msg.payload, device_id=msg.device_id)
    except recording.InvalidUpload as exc:
        services.metrics.mqtt_malformed.labels(msg.kind, "invalid_upload").inc()
        await _publish(
            services,
            topic(msg.device_id, "upload/res"),
            _reply(req_id, _segment_id(msg), ok=False, code="invalid_upload", message=str(exc)),
        )
        return None
    return UploadAsk(req_id=req_id, request=request)


async def _cameras(
    session: AsyncSession, device_ids: set[str]
) -> dict[str, tuple[Device, Account]]:
    """The bound cameras among ``device_ids``, each with its account."""
    devices = (
        await session.exec(
            select(Device).where(
                col(Device.device_id).in_(list(device_ids)), Device.kind == DeviceKind.CAMERA
            )
        )
    ).all()
    account_ids = list({device.account_id for device in devices})
    accounts = {
        account.account_id: account
        for account in (
            await session.exec(select(Account).where(col(Account.account_id).in_(account_ids)))
        ).all()
    }
    return {
        device.device_id: (device, accounts[device.account_id])
        for device in devices
        if device.account_id in accounts
    }


async def answer_uploads(services: Services, asks: Sequence[UploadAsk]) -> None:
    """Decide a batch of upload requests, record the grants in one commit, answer each."""
    # Counted once the batch went through: a failed batch is handled again item by item.
    decisions: Counter[str] = Counter()
    async with services.db.session() as session:
        answers, granted = await _decide(session, asks, services.clock.now(), decisions)
        await session.commit()
    ttl = services.settings.url_ttl_seconds
    for ask, grant in granted:
        url = await services.store.presign_put(grant.object_key, expires_in=ttl)
        decisions["accepted"] += 1
        body = _reply(
            ask.req_id, grant.segment_id, ok=True, url=url, key=grant.object_key, expires_in=ttl
        )
        answers.append((topic(grant.device_id, "upload/res"), body))
    # Answers go out only now that the grants are committed; QoS-1 round trips overlap.
    await asyncio.gather(*(_publish(services, name, body) for name, body in answers))
    services.metrics.mqtt_unknown_device.inc(decisions.pop("unknown_device", 0))
    for decision_code, count in decisions.items():
        services.metrics.upload_decisions.labels(decision_code).inc(count)


async def _decide(
    session: AsyncSession, asks: Sequence[UploadAsk], now: datetime, decisions: Counter[str]
) -> tuple[list[tuple[str, bytes]], list[tuple[UploadAsk, UploadGrant]]]:
    """The refusals to send, and the grants (new ones added to ``session``) to answer with
    an upload URL once committed; refusals and unknown devices counted in ``decisions``."""
    cameras = await _cameras(session, {ask.request.device_id for ask in asks})
    subscriptions = await active_subscriptions(session, cameras)
    grants = await index_store.grants_by_id(session, {ask.request.segment_id for ask in asks})
    answers: list[tuple[str, bytes]] = []
    granted: list[tuple[UploadAsk, UploadGrant]] = []
    for ask in asks:
        request = ask.request
        answer = topic(request.device_id, "upload/res")
        found = cameras.get(request.device_id)
        if found is None:
            decisions["unknown_device"] += 1
            continue
        device, account = found
        decision = recording.decide_upload(
            request,
            entitlement=recording.entitlement_of(subscriptions.get(device.device_id)),
            broadband_state=account_state(account.broadband_state),
            now=now,
        )
        if isinstance(decision, recording.Refuse):
            decisions[decision.code] += 1
            refusal = _reply(
                ask.req_id,
                request.segment_id,
                ok=False,
                code=decision.code,
                rule=decision.rule,
                message=decision.message,
            )
            answers.append((answer, refusal))
            continue
        grant = grants.get(request.segment_id)
        if grant is None:
            grant = index_store.add_grant(session, request, decision, account.account_id, now)
            grants[grant.segment_id] = grant
        elif grant.device_id != device.device_id:
            in_use = _reply(
                ask.req_id,
                request.segment_id,
                ok=False,
                code="invalid_upload",
                message="segment_id already in use",
            )
            answers.append((answer, in_use))
            continue
        granted.append((ask, grant))
    return answers, granted


def parse_segment(msg: DeviceMessage) -> recording.UploadRequest:
    try:
        return recording.UploadRequest.parse(msg.payload, device_id=msg.device_id)
    except recording.InvalidUpload as exc:
        raise Malformed(msg.kind, exc.reason) from exc


def parse_event(msg: DeviceMessage) -> EventNotice:
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
    return EventNotice(
        event_id=event_id, device_id=msg.device_id, type=str(kind), at=at, score=float(score)
    )


async def index_batch(services: Services, items: Sequence[RecordingItem]) -> None:
    """Index a batch of segment notices and events in one transaction (idempotent)."""
    notices = [item for item in items if isinstance(item, recording.UploadRequest)]
    events = [item for item in items if isinstance(item, EventNotice)]
    # Counted once the batch is committed: a failed batch is handled again item by item.
    rejected: Counter[str] = Counter()
    async with services.db.session() as session:
        indexed = await _index_segments(services, session, notices, rejected)
        added = await _add_events(session, events, rejected)
        await session.commit()
    metrics = services.metrics
    metrics.segments_indexed.inc(indexed)
    metrics.events_indexed.inc(added)
    metrics.mqtt_unknown_device.inc(rejected.pop("unknown_device", 0))
    for reason, count in rejected.items():
        metrics.segments_rejected.labels(reason).inc(count)


async def _index_segments(
    services: Services,
    session: AsyncSession,
    notices: list[recording.UploadRequest],
    rejected: Counter[str],
) -> int:
    if not notices:
        return 0
    ids = {notice.segment_id for notice in notices}
    done = await index_store.indexed_ids(session, ids)
    grants = await index_store.grants_by_id(session, ids)
    todo: dict[str, UploadGrant] = {}
    for notice in notices:
        if notice.segment_id in done or notice.segment_id in todo:
            continue  # already indexed: a repeated notice changes nothing
        grant = grants.get(notice.segment_id)
        if grant is None or grant.device_id != notice.device_id:
            rejected["no_grant"] += 1
            log.warning(
                "segment %s from %s has no upload grant", notice.segment_id, notice.device_id
            )
            continue
        todo[grant.segment_id] = grant
    problems = await _verify(services, list(todo.values()))
    checked: list[UploadGrant] = []
    for grant, problem in zip(todo.values(), problems, strict=True):
        if problem is not None:
            rejected[problem] += 1
            log.warning("segment %s refused: %s", grant.segment_id, problem)
            continue
        checked.append(grant)
    return await index_store.index_granted(session, checked, services.clock.now())


async def _verify(services: Services, grants: list[UploadGrant]) -> list[str | None]:
    """For each grant, why its object may not be indexed, or ``None``. Small objects are
    read (one batch read) and their size and SHA-256 checked; large ones only looked at."""
    small = [grant for grant in grants if grant.bytes <= CHECKSUM_LIMIT]
    found = await services.store.get_many([grant.object_key for grant in small])
    # One worker-thread trip hashes the batch (hashlib lets go of the GIL).
    digests = await asyncio.to_thread(
        lambda: [None if data is None else hashlib.sha256(data).hexdigest() for data in found]
    )
    problems = {
        grant.segment_id: _problem(grant, None if data is None else len(data), digest)
        for grant, data, digest in zip(small, found, digests, strict=True)
    }
    for grant in grants:
        if grant.bytes > CHECKSUM_LIMIT:
            info = await services.store.head(grant.object_key)
            problems[grant.segment_id] = _problem(grant, None if info is None else info.size)
    return [problems[grant.segment_id] for grant in grants]


def _problem(grant: UploadGrant, size: int | None, digest: str | None = None) -> str | None:
    if size is None:
        return "missing_object"
    if size != grant.bytes:
        return "size_mismatch"
    if digest is not None and digest != grant.sha256:
        return "checksum_mismatch"
    return None


async def _add_events(
    session: AsyncSession, events: list[EventNotice], rejected: Counter[str]
) -> int:
    """Add the batch's new events; events of unknown devices are counted in ``rejected``."""
    if not events:
        return 0
    cameras = await _cameras(session, {event.device_id for event in events})
    rows: list[dict[str, Any]] = []
    for event in events:
        if event.device_id not in cameras:
            rejected["unknown_device"] += 1
            continue
        rows.append(
            {
                "event_id": event.event_id,
                "device_id": event.device_id,
                "type": event.type,
                "at": event.at,
                "score": event.score,
            }
        )
    return await index_store.add_events(session, rows)
