"""Recording over MQTT: upload requests, finished segments and camera events (R1, R5, R8).

``upload/req`` → the service decides (pure :func:`replay.recording.decide_upload`) →
``upload/res`` with a short-lived presigned PUT URL (and the headers the PUT must carry)
or a refusal naming the rule → the camera PUTs a new object (never a replacement) →
``segment`` → the service checks the object exists with the granted size before indexing
it (the store refused any other bytes on the way in: the URL binds the grant's size and
SHA-256, :meth:`storage.objects.ObjectStore.presign_put`). A camera's ``segment_id`` is its
own: grants and segments are keyed by (device id, ``segment_id``), indexed under the
service's id of it (:func:`replay.object_keys.service_segment_id`), which the app sees.
Indexing is idempotent by camera segment (events by the camera's ``event_id``); an
indexed segment is acknowledged data and survives a restart, and a new request for it is
refused ``segment_exists``. An event clip overlapping one of the camera's indexed clips is
refused ``clip_overlaps`` (R1), on request and again on its notice (then its grant goes).

Messages arrive checked and typed (:mod:`gateway.mqtt.messages`: a malformed one is
counted at the edge; an invalid upload request is answered by :func:`refuse_invalid`) and
are written in batches by the gateway's group commits (:mod:`gateway.batching`):
:func:`answer_uploads` decides a batch of requests with a handful of queries and one
commit, then answers each;
:func:`index_batch` confirms a batch of uploaded objects with one batch existence check
(:meth:`~storage.objects.ObjectStore.stat_many`: no object is read back) and indexes them,
with the batch's events, in one transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from devices import broadband_periods
from devices.broadband import account_state
from devices.models import Account, Device, DeviceKind
from gateway.mqtt.messages import (
    EventNotice,
    InvalidUploadAsk,
    SegmentNotice,
    UploadAnswer,
    UploadAsk,
)
from gateway.services import Services
from replay import event_index, index_store, recording
from replay.events import Clip, overlapping_clip
from replay.models import UploadGrant
from replay.subscriptions import covering as subscriptions_covering
from replay.subscriptions import upload_subscriptions

log = logging.getLogger(__name__)

#: What the recording group commit indexes: segment notices and camera events.
RecordingItem = SegmentNotice | EventNotice


async def _send(services: Services, answer: UploadAnswer) -> None:
    if services.mqtt is not None:
        await services.mqtt.send(answer)


async def refuse_invalid(services: Services, ask: InvalidUploadAsk) -> None:
    """An ``upload/req`` that is no valid request is answered ``invalid_upload``."""
    services.metrics.mqtt_malformed.labels("upload/req", "invalid_upload").inc()
    await _send(
        services,
        UploadAnswer.refused(
            ask.device_id, ask.req_id, ask.segment_id, code="invalid_upload", message=ask.message
        ),
    )


async def refuse(services: Services, ask: UploadAsk, *, code: str, message: str) -> None:
    """Answer a valid ``upload/req`` with a refusal decided at the edge (a rate limit)."""
    services.metrics.upload_decisions.labels(code).inc()
    request = ask.request
    await _send(
        services,
        UploadAnswer.refused(
            ask.device_id, ask.req_id, request.segment_id, code=code, message=message
        ),
    )


class _Camera(NamedTuple):
    """A bound camera's account and its broadband state (what a batch's decisions read)."""

    account_id: str
    broadband_state: str


async def _cameras(session: AsyncSession, device_ids: set[str]) -> dict[str, _Camera]:
    """The bound cameras among ``device_ids``: one joined statement of plain rows (no ORM
    objects: a batch's reads are most of its cost at a few hundred messages a second,
    issue 16)."""
    rows = await session.exec(
        select(col(Device.device_id), col(Account.account_id), col(Account.broadband_state))
        .join(Account, col(Account.account_id) == col(Device.account_id))
        .where(col(Device.device_id).in_(list(device_ids)), col(Device.kind) == DeviceKind.CAMERA)
    )
    return {device_id: _Camera(account, state) for device_id, account, state in rows.all()}


async def answer_uploads(services: Services, asks: Sequence[UploadAsk]) -> None:
    """Decide a batch of upload requests, record the grants in one commit, answer each."""
    # Counted once the batch went through: a failed batch is handled again item by item.
    decisions: Counter[str] = Counter()
    async with services.db.writing() as session:
        answers, granted = await _decide(session, asks, services.clock.now(), decisions)
        await session.commit()
    ttl = services.settings.upload_url_ttl_seconds
    for ask, grant in granted:
        # The URL binds the grant's size and SHA-256 (the grant's: a repeated request with
        # other values gets the first grant's URL), so the store refuses other bytes.
        put = await services.store.presign_put(
            grant.object_key, expires_in=ttl, size=grant.bytes, sha256=grant.sha256
        )
        decisions["accepted"] += 1
        # ``headers``: what the PUT must carry (S3: the signed ``If-None-Match: *`` and
        # ``x-amz-checksum-sha256``; the filesystem store's URL carries all it needs).
        fields = {
            "url": put.url,
            "key": grant.object_key,
            "expires_in": ttl,
            "headers": dict(put.headers),
        }
        request = ask.request
        answers.append(
            UploadAnswer(request.device_id, ask.req_id, request.segment_id, True, fields)
        )
    # Answers go out only now that the grants are committed; QoS-1 round trips overlap.
    await asyncio.gather(*(_send(services, answer) for answer in answers))
    services.metrics.mqtt_unknown_device.inc(decisions.pop("unknown_device", 0))
    for decision_code, count in decisions.items():
        services.metrics.upload_decisions.labels(decision_code).inc(count)


async def _decide(
    session: AsyncSession, asks: Sequence[UploadAsk], now: datetime, decisions: Counter[str]
) -> tuple[list[UploadAnswer], list[tuple[UploadAsk, UploadGrant]]]:
    """The refusals to send, and the grants (new ones added to ``session``) to answer with
    an upload URL once committed; refusals and unknown devices counted in ``decisions``.

    A camera's ``segment_id`` is its own (issue 14): grants and segments are found by
    (device id, segment id), so no camera can take or refuse another's ids. A segment the
    camera has indexed is refused ``segment_exists``, never granted again (its object would
    be the key handed out); a segment granted and not yet indexed gets its grant again."""
    cameras = await _cameras(session, {ask.request.device_id for ask in asks})
    # The boundary rule: a segment is judged by the subscription and the broadband state
    # of the moment it started recording (replay.recording's docstring).
    since = min((ask.request.start for ask in asks), default=now)
    subscriptions = await upload_subscriptions(
        session, {device_id: camera.account_id for device_id, camera in cameras.items()}, since
    )
    inactive = await broadband_periods.periods_since(
        session, {camera.account_id for camera in cameras.values()}, since
    )
    segments = {(ask.request.device_id, ask.request.segment_id) for ask in asks}
    indexed, grants = await index_store.known(session, segments)
    clips = await _clips_near(session, [ask.request for ask in asks])
    answers: list[UploadAnswer] = []
    granted: list[tuple[UploadAsk, UploadGrant]] = []
    for ask in asks:
        request = ask.request
        camera = cameras.get(request.device_id)
        if camera is None:
            decisions["unknown_device"] += 1
            continue
        covering = subscriptions_covering(subscriptions.get(request.device_id, []), request.start)
        state = broadband_periods.state_at(
            account_state(camera.broadband_state),
            inactive.get(camera.account_id, []),
            request.start,
        )
        decision = recording.decide_upload(
            request,
            entitlement=recording.entitlement_of(covering),
            broadband_state=state,
            now=now,
            clips=clips.get(request.device_id, ()),
        )
        segment = (request.device_id, request.segment_id)
        if isinstance(decision, recording.Refuse) or segment in indexed:
            code, refusal = _refusal(ask, decision)
            decisions[code] += 1
            answers.append(refusal)
            continue
        grant = grants.get(segment)
        if grant is None:
            grant = index_store.add_grant(session, request, decision, camera.account_id, now)
            grants[segment] = grant
        granted.append((ask, grant))
    return answers, granted


async def _clips_near(
    session: AsyncSession, requests: Sequence[recording.UploadRequest | UploadGrant]
) -> dict[str, list[Clip]]:
    """The indexed event clips the batch's event clips may overlap, per device (R1)."""
    spans: dict[str, list[tuple[datetime, datetime]]] = {}
    for request in requests:
        if request.kind == recording.SegmentKind.EVENT:
            spans.setdefault(request.device_id, []).append((request.start, request.end))
    return await event_index.event_clips_near(session, spans)


def _refusal(ask: UploadAsk, decision: recording.Decision) -> tuple[str, UploadAnswer]:
    """The code and answer refusing ``ask``: the rule's refusal first, else the segment the
    camera has indexed already."""
    request = ask.request
    code: str
    rule: str | None
    if isinstance(decision, recording.Refuse):
        code, rule, message = decision.code, decision.rule, decision.message
    else:
        code, rule = "segment_exists", None
        message = f"segment {request.segment_id} of {request.device_id} is indexed already"
    answer = UploadAnswer.refused(
        request.device_id, ask.req_id, request.segment_id, code=code, rule=rule, message=message
    )
    return code, answer


async def index_batch(services: Services, items: Sequence[RecordingItem]) -> None:
    """Index a batch of segment notices and events in one transaction (idempotent)."""
    notices = [item.segment for item in items if isinstance(item, SegmentNotice)]
    events = [item for item in items if isinstance(item, EventNotice)]
    # Counted once the batch is committed: a failed batch is handled again item by item.
    rejected: Counter[str] = Counter()
    async with services.db.writing() as session:
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
    segments = {(notice.device_id, notice.segment_id) for notice in notices}
    done, grants = await index_store.known(session, segments)
    todo: dict[index_store.CameraSegment, UploadGrant] = {}
    for notice in notices:
        segment = (notice.device_id, notice.segment_id)
        if segment in done or segment in todo:
            continue  # already indexed: a repeated notice changes nothing
        grant = grants.get(segment)
        if grant is None:
            rejected["no_grant"] += 1
            log.warning(
                "segment %s from %s has no upload grant", notice.segment_id, notice.device_id
            )
            continue
        todo[segment] = grant
    problems = await _verify(services, list(todo.values()))
    clips = await _clips_near(session, list(todo.values()))
    checked: list[UploadGrant] = []
    overlapping: list[str] = []
    for grant, problem in zip(todo.values(), problems, strict=True):
        if problem is None and grant.kind == recording.SegmentKind.EVENT:
            mine = clips.setdefault(grant.device_id, [])
            if overlapping_clip(grant.segment_id, grant.start, grant.end, mine) is not None:
                problem = "clip_overlaps"  # R1: the clip indexed first (or earlier) wins
                overlapping.append(grant.object_key)
            else:
                mine.append(Clip(grant.segment_id, grant.start, grant.end))
        if problem is not None:
            rejected[problem] += 1
            log.warning("segment %s refused: %s", grant.segment_id, problem)
            continue
        checked.append(grant)
    # The refused clip's grant goes: its object is no one's, for reconcile to delete.
    await index_store.delete_grants(session, overlapping)
    return await index_store.index_granted(session, checked, services.clock.now())


async def _verify(services: Services, grants: list[UploadGrant]) -> list[str | None]:
    """For each grant, why its object may not be indexed, or ``None``.

    One batch existence check (:meth:`~storage.objects.ObjectStore.stat_many`), no object
    read back: the upload URL bound the grant's size and SHA-256 and the store refused any
    other body before storing it (docs/uploads.md), so an object under the granted key with
    the granted size is the granted one. The size is still compared: it costs nothing and
    catches an object put there by other means."""
    infos = await services.store.stat_many([grant.object_key for grant in grants])
    return [
        _problem(grant, None if info is None else info.size)
        for grant, info in zip(grants, infos, strict=True)
    ]


def _problem(grant: UploadGrant, size: int | None) -> str | None:
    if size is None:
        return "missing_object"
    if size != grant.bytes:
        return "size_mismatch"
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
    return await event_index.add_events(session, rows)
