"""The MQTT contract's messages, typed: parsed once at the edge, built once for the wire.

Device → service topics live under ``kj/v1/dev/{device_id}/``. :func:`parse` turns a
topic and its payload into one frozen value per message kind (:data:`Inbound`); a message
whose topic or payload does not fit the contract raises :class:`Malformed` with a short
``reason`` that the caller counts and logs (it never stops the loop). An ``upload/req``
that is JSON but not a valid request is not malformed: the camera is answered, so it
parses to :class:`InvalidUploadAsk`.

Service → device messages (:data:`Outbound`) know their ``topic()``, ``payload()`` and
whether the broker keeps them (``retain``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from replay.recording import InvalidUpload, UploadRequest

PREFIX = "kj/v1/dev/"

#: Device → service suffixes (the gateway subscribes to each of these).
INBOUND = ("state", "telemetry", "event", "upload/req", "segment", "reported", "rpc/res")

#: What a camera's ``event`` may report.
EVENT_TYPES = ("person", "pet", "door", "motion")
#: A device id in a topic: what an account can bind (R7's ids), nothing longer.
DEVICE_ID = re.compile(r"[A-Za-z0-9_:-][A-Za-z0-9._:-]{0,63}")
#: An event id: 1 to 80 of A-Z a-z 0-9 . _ -
EVENT_ID = re.compile(r"[A-Za-z0-9._-]{1,80}")
#: Firmware versions are stored as up to 64 printable ASCII characters.
FIRMWARE = re.compile(r"[\x20-\x7e]{0,64}")


#: Why a message is malformed, as a metric label: a fixed set, never device input.
MalformedCode = Literal["topic", "device_id", "too_large", "not_json", "not_object", "invalid"]


class Malformed(ValueError):
    """``kind`` and ``code`` are bounded (metric labels); ``reason`` is the sentence to log."""

    def __init__(self, kind: str, reason: str, code: MalformedCode = "invalid") -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason
        self.code: MalformedCode = code


def subscriptions(shared_group: str = "") -> list[str]:
    prefix = f"$share/{shared_group}/" if shared_group else ""
    return [f"{prefix}{PREFIX}+/{suffix}" for suffix in INBOUND]


def topic(device_id: str, suffix: str) -> str:
    return f"{PREFIX}{device_id}/{suffix}"


# --- device → service -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class State:
    """``state`` (retained; the Last Will sends ``{"online": false}``)."""

    device_id: str
    online: bool
    device_kind: str | None
    firmware: str | None


@dataclass(frozen=True, slots=True)
class Telemetry:
    """``telemetry``: periodic metrics, free-form beyond being a JSON object."""

    device_id: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reported:
    """``reported``: the desired version the device has applied."""

    device_id: str
    version: int


@dataclass(frozen=True, slots=True)
class UploadAsk:
    """A valid ``upload/req``; ``req_id`` is echoed in the answer."""

    device_id: str
    req_id: object
    request: UploadRequest


@dataclass(frozen=True, slots=True)
class InvalidUploadAsk:
    """An ``upload/req`` that is no valid request: answered with ``invalid_upload``."""

    device_id: str
    req_id: object
    segment_id: str | None
    message: str


@dataclass(frozen=True, slots=True)
class SegmentNotice:
    """``segment``: an upload finished; the segment is to be checked and indexed."""

    device_id: str
    segment: UploadRequest


@dataclass(frozen=True, slots=True)
class EventNotice:
    """``event``: what the camera saw, and when."""

    device_id: str
    event_id: str
    type: str
    at: datetime
    score: float


@dataclass(frozen=True, slots=True)
class RpcResult:
    """``rpc/res``: a device's answer to a command."""

    device_id: str
    id: str
    ok: bool
    result: object
    error: object


Inbound = (
    State
    | Telemetry
    | Reported
    | UploadAsk
    | InvalidUploadAsk
    | SegmentNotice
    | EventNotice
    | RpcResult
)


def _state(device_id: str, data: Mapping[str, Any]) -> State:
    online = data.get("online")
    if not isinstance(online, bool):
        raise Malformed("state", "'online' must be true or false")
    kind = data.get("kind")
    fw = data.get("fw")
    if kind is not None and kind not in ("camera", "router"):
        raise Malformed("state", "'kind' must be camera or router")
    if fw is not None and not (isinstance(fw, str) and FIRMWARE.fullmatch(fw)):
        raise Malformed("state", "'fw' must be up to 64 printable characters")
    return State(device_id=device_id, online=online, device_kind=kind, firmware=fw)


def _telemetry(device_id: str, data: Mapping[str, Any]) -> Telemetry:
    return Telemetry(device_id=device_id, payload=dict(data))


def _reported(device_id: str, data: Mapping[str, Any]) -> Reported:
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise Malformed("reported", "'version' must be a non-negative integer")
    return Reported(device_id=device_id, version=version)


def _upload_ask(device_id: str, data: Mapping[str, Any]) -> UploadAsk | InvalidUploadAsk:
    req_id = data.get("req_id")
    try:
        request = UploadRequest.parse(data, device_id=device_id)
    except InvalidUpload as exc:
        segment_id = data.get("segment_id")
        return InvalidUploadAsk(
            device_id=device_id,
            req_id=req_id,
            segment_id=segment_id if isinstance(segment_id, str) else None,
            message=str(exc),
        )
    return UploadAsk(device_id=device_id, req_id=req_id, request=request)


def _segment(device_id: str, data: Mapping[str, Any]) -> SegmentNotice:
    try:
        return SegmentNotice(device_id, UploadRequest.parse(data, device_id=device_id))
    except InvalidUpload as exc:
        raise Malformed("segment", exc.reason) from exc


def _event(device_id: str, data: Mapping[str, Any]) -> EventNotice:
    event_id, kind, at_raw = data.get("event_id"), data.get("type"), data.get("at")
    score = data.get("score", 0.0)
    if not isinstance(event_id, str) or not EVENT_ID.fullmatch(event_id):
        raise Malformed("event", "'event_id' must be 1 to 80 of A-Z a-z 0-9 . _ -")
    if kind not in EVENT_TYPES:
        raise Malformed("event", "'type' must be person, pet, door or motion")
    if not isinstance(score, int | float) or isinstance(score, bool):
        raise Malformed("event", "'score' must be a number")
    try:
        at = datetime.fromisoformat(str(at_raw))
    except ValueError as exc:
        raise Malformed("event", "'at' must be an ISO time") from exc
    if at.tzinfo is None:
        raise Malformed("event", "'at' must carry an offset")
    return EventNotice(
        device_id=device_id, event_id=event_id, type=str(kind), at=at, score=float(score)
    )


def _rpc_result(device_id: str, data: Mapping[str, Any]) -> RpcResult:
    command_id, ok = data.get("id"), data.get("ok")
    if not isinstance(command_id, str) or not command_id:
        raise Malformed("rpc/res", "'id' must be a non-empty string")
    if not isinstance(ok, bool):
        raise Malformed("rpc/res", "'ok' must be true or false")
    return RpcResult(
        device_id=device_id,
        id=command_id,
        ok=ok,
        result=data.get("result"),
        error=data.get("error"),
    )


#: One parser per inbound suffix.
PARSERS: Mapping[str, Callable[[str, Mapping[str, Any]], Inbound]] = {
    "state": _state,
    "telemetry": _telemetry,
    "reported": _reported,
    "upload/req": _upload_ask,
    "segment": _segment,
    "event": _event,
    "rpc/res": _rpc_result,
}


def kind_of(topic_name: str) -> str:
    """The message kind of a device topic (``unknown`` outside the contract): a bounded
    set, fit for a metric label."""
    suffix = topic_name[len(PREFIX) :].partition("/")[2] if topic_name.startswith(PREFIX) else ""
    return suffix if suffix in PARSERS else "unknown"


def parse(topic_name: str, payload: bytes, *, max_bytes: int | None = None) -> Inbound:
    """The typed message of one device topic and payload; :class:`Malformed` if it is not
    (or if the payload is over ``max_bytes``)."""
    if not topic_name.startswith(PREFIX):
        raise Malformed("unknown", "topic outside kj/v1/dev/", "topic")
    device_id, _, kind = topic_name[len(PREFIX) :].partition("/")
    parser = PARSERS.get(kind)
    if not device_id or parser is None:
        raise Malformed("unknown", f"unexpected topic {topic_name[:200]!r}", "topic")
    if not DEVICE_ID.fullmatch(device_id):
        raise Malformed(kind, "the device id must be 1 to 64 of A-Z a-z 0-9 . _ : -", "device_id")
    if max_bytes is not None and len(payload) > max_bytes:
        raise Malformed(kind, f"payload of {len(payload)} bytes, over {max_bytes}", "too_large")
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Malformed(kind, "not JSON", "not_json") from exc
    if not isinstance(data, dict):
        raise Malformed(kind, "not a JSON object", "not_object")
    return parser(device_id, data)


# --- service → device -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UploadAnswer:
    """``upload/res``: a short-lived upload URL, or a refusal naming the rule."""

    device_id: str
    req_id: object
    segment_id: str | None
    ok: bool
    #: ``url``, ``key``, ``expires_in`` when granted; ``code``, ``rule``?, ``message`` if not.
    fields: Mapping[str, Any] = field(default_factory=dict)
    retain = False

    @classmethod
    def refused(
        cls,
        device_id: str,
        req_id: object,
        segment_id: str | None,
        *,
        code: str,
        message: str,
        rule: str | None = None,
    ) -> UploadAnswer:
        fields: dict[str, Any] = {"code": code}
        if rule is not None:
            fields["rule"] = rule
        fields["message"] = message
        return cls(device_id, req_id, segment_id, ok=False, fields=fields)

    def topic(self) -> str:
        return topic(self.device_id, "upload/res")

    def payload(self) -> bytes:
        body = {"req_id": self.req_id, "segment_id": self.segment_id, "ok": self.ok}
        return json.dumps({**body, **self.fields}).encode()


@dataclass(frozen=True, slots=True)
class Desired:
    """``desired`` (retained): the versioned document a device converges to."""

    device_id: str
    version: int
    document: Mapping[str, Any]
    retain = True

    def topic(self) -> str:
        return topic(self.device_id, "desired")

    def payload(self) -> bytes:
        return json.dumps({"version": self.version, **self.document}).encode()


@dataclass(frozen=True, slots=True)
class RpcRequest:
    """``rpc/req``: ``{"id", "method", "params", "deadline"}``, answered on ``rpc/res``."""

    device_id: str
    id: str
    method: str
    params: Mapping[str, Any]
    deadline: datetime
    retain = False

    def topic(self) -> str:
        return topic(self.device_id, "rpc/req")

    def payload(self) -> bytes:
        body = {
            "id": self.id,
            "method": self.method,
            "params": dict(self.params),
            "deadline": self.deadline.isoformat(),
        }
        return json.dumps(body).encode()


Outbound = UploadAnswer | Desired | RpcRequest
