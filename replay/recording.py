"""What a camera may record and where it goes (R1, R5, R6, R8): pure decisions, no I/O.

The upload flow of the MQTT contract is ``upload/req`` → decision → ``upload/res``. This
module holds the decision and the values around it; ``gateway/`` does the wire and the
presigning, ``storage/`` the object store.

- **Parsing.** :meth:`UploadRequest.parse` turns an ``upload/req`` (or ``segment``) payload
  into a checked value or raises :class:`InvalidUpload` naming the field. Choices made here:

  * times are ISO 8601 strings *with* an offset (``Z`` or ``+08:00``), kept in UTC;
  * a continuous segment lasts more than 0 and at most :data:`MAX_CONTINUOUS_SECONDS` (60 s);
  * an event clip is one minute (R1) give or take :data:`EVENT_CLIP_TOLERANCE_S` = 2 s:
    cameras cut clips on a key frame, and with a key frame every 1-2 s a one-minute clip
    comes out up to one GOP short or long. A clip outside 58-62 s is not a one-minute clip;
  * ``bytes`` is 1 to :data:`MAX_SEGMENT_BYTES` (64 MiB: a 60-s segment at 8 Mbit/s is 60 MB);
  * ``sha256`` is 64 hex digits (kept in lower case);
  * an event clip names its ``event_id``; a continuous segment carries none (events point at
    segments, not the other way round);
  * ``segment_id`` and ``event_id`` match ``[A-Za-z0-9._-]{1,80}``; ``device_id`` is 1-64 of
    ``[A-Za-z0-9._:-]`` not starting with a dot. Both end up in object keys, so nothing else.
  * keys the contract does not name (``req_id`` …) are ignored: the contract may grow.

- **Deciding.** :func:`decide_upload` answers :class:`Accept` or :class:`Refuse`, checking in
  this order (the first reason found is the one reported):

  1. ``not_entitled``: no subscription covering the segment's start (R1), or a continuous
     segment under an event plan (R1: event clips are accepted under both families), or a
     segment that started before the subscription began (R6: video of an earlier
     subscription must not become viewable under a new one) or at or after its
     unsubscription (R5). Checked first: resuming broadband would not make it recordable.
  2. ``suspended`` (R8): the broadband account was stopped or torn down when the segment
     started. This is the MQTT code; the app's HTTP side says ``broadband_inactive``.
  3. ``in_future``: the segment ends more than ``max_skew_s`` after ``now``.
  4. ``too_old``: the segment would be born expired (``end + retention <= now``).
  5. ``clip_overlaps`` (R1): an event clip that overlaps an event clip of the camera
     already indexed (:func:`replay.events.overlapping_clip`; the caller hands the clips
     that may overlap). An event during a clip joins that clip: the camera extends the
     clip it is recording rather than start another. The segment notice is checked again
     when it is indexed (a clip indexed meanwhile, or earlier in the same batch, wins).

- **One rule at the boundaries (R5, R6, R8; RULES.md "Boundaries of a state change").** A
  continuous segment or an event clip is judged by the moment it *started* recording, never
  by when it ended or was uploaded:

  * broadband **stop** at ``T``: started before ``T`` → accepted, and served whole once the
    account is active again; started at or after ``T`` → refused ``suspended``;
  * broadband **resume** at ``T``: started before ``T`` (during the stop) → refused, even
    though most of it was recorded after the resume; started at or after ``T`` → accepted;
  * **unsubscription** at ``T`` (R5): started before ``T`` → accepted under that
    subscription and kept for its retention (never viewable: nothing is from ``T`` on);
    started at or after ``T`` → refused ``not_entitled``;
  * **new order** at ``T`` (R6): started before ``T`` → refused ``not_entitled`` (it would
    show the new subscription video from before it); started at or after ``T`` → accepted
    under the new subscription.

  Periods are half-open ``[from, to)``: the instant of a change belongs to what begins then.
  The caller passes the subscription and broadband state of the start instant.

- **Retention (R5).** A segment is kept ``retention_days`` after it was recorded, counted
  from its end: ``expires_at = end + retention_days`` (:func:`expiry`). It is expired from
  that instant on (``now >= expires_at``), the same cut-off the read path applies.

"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol, TypeAlias

from devices.broadband import AccountState
from devices.clock import aware_utc
from replay.events import Clip, overlapping_clip
from replay.object_keys import (
    DEVICE_ID,
    DEVICE_ID_ERROR,
    SAFE_ID,
    SAFE_ID_ERROR,
    InvalidUpload,
    SegmentKind,
    check_id,
    retention_class,
    service_segment_id,
)
from replay.plans import Family

__all__ = [
    "EVENT_CLIP_SECONDS",
    "EVENT_CLIP_TOLERANCE_S",
    "MAX_CONTINUOUS_SECONDS",
    "MAX_SEGMENT_BYTES",
    "Accept",
    "Decision",
    "Entitlement",
    "InvalidUpload",
    "RecordingMode",
    "RefusalCode",
    "Refuse",
    "SegmentKind",
    "SubscriptionLike",
    "UploadRequest",
    "clip_overlap",
    "decide_upload",
    "desired_recording_mode",
    "entitlement_of",
    "expiry",
    "retention_class",
]

#: The longest continuous segment accepted (the contract's ``segment_seconds`` is at most 60).
MAX_CONTINUOUS_SECONDS = 60
#: R1: an event plan stores one-minute clips.
EVENT_CLIP_SECONDS = 60
#: How far an event clip may be from one minute (a key-frame interval; see module docstring).
EVENT_CLIP_TOLERANCE_S = 2
#: The largest segment accepted, in bytes (64 MiB).
MAX_SEGMENT_BYTES = 64 * 1024 * 1024
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_REQUIRED = ("segment_id", "kind", "start", "end", "bytes", "sha256")


RecordingMode: TypeAlias = Literal["off", "continuous", "event"]
RefusalCode: TypeAlias = Literal[
    "not_entitled", "suspended", "in_future", "too_old", "clip_overlaps"
]


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadRequest:
    """One segment a camera wants to upload (``upload/req``) or has uploaded (``segment``).

    Times are kept in UTC; ``sha256`` in lower case. The constructor checks every rule of the
    module docstring and raises ``ValueError``; :meth:`parse` reports :class:`InvalidUpload`.
    """

    device_id: str
    segment_id: str
    kind: SegmentKind
    start: datetime
    end: datetime
    bytes: int
    sha256: str
    event_id: str | None = None

    def __post_init__(self) -> None:
        check_id(DEVICE_ID_ERROR, "device_id", self.device_id, DEVICE_ID)
        check_id(SAFE_ID_ERROR, "segment_id", self.segment_id, SAFE_ID)
        if not isinstance(self.kind, SegmentKind):
            raise InvalidUpload(f"kind must be a SegmentKind, not {self.kind!r}", field="kind")
        for name in ("start", "end"):
            try:
                object.__setattr__(self, name, aware_utc(getattr(self, name), name))
            except (TypeError, ValueError) as exc:
                raise InvalidUpload(str(exc), field=name) from exc
        if self.end <= self.start:
            raise InvalidUpload(
                f"end {self.end.isoformat()} is not after start {self.start.isoformat()}",
                field="end",
            )
        seconds = self.seconds
        if self.kind is SegmentKind.CONTINUOUS and seconds > MAX_CONTINUOUS_SECONDS:
            raise InvalidUpload(
                f"a continuous segment lasts at most {MAX_CONTINUOUS_SECONDS} s, not {seconds:g} s",
                field="end",
            )
        if (
            self.kind is SegmentKind.EVENT
            and abs(seconds - EVENT_CLIP_SECONDS) > EVENT_CLIP_TOLERANCE_S
        ):
            raise InvalidUpload(
                f"an event clip lasts one minute (R1, ±{EVENT_CLIP_TOLERANCE_S} s), "
                f"not {seconds:g} s",
                field="end",
            )
        if (
            isinstance(self.bytes, bool)
            or not isinstance(self.bytes, int)
            or not 0 < self.bytes <= MAX_SEGMENT_BYTES
        ):
            raise InvalidUpload(
                f"bytes must be a whole number from 1 to {MAX_SEGMENT_BYTES}, not {self.bytes!r}",
                field="bytes",
            )
        if not isinstance(self.sha256, str) or not _SHA256.fullmatch(self.sha256):
            raise InvalidUpload(
                f"sha256 must be 64 hexadecimal digits, not {self.sha256!r}", field="sha256"
            )
        object.__setattr__(self, "sha256", self.sha256.lower())
        if self.kind is SegmentKind.EVENT:
            if self.event_id is None:
                raise InvalidUpload("an event clip must name its event_id", field="event_id")
            check_id(SAFE_ID_ERROR, "event_id", self.event_id, SAFE_ID)
        elif self.event_id is not None:
            raise InvalidUpload("a continuous segment carries no event_id", field="event_id")

    @property
    def seconds(self) -> float:
        """How long the segment lasts."""
        return (self.end - self.start).total_seconds()

    @classmethod
    def parse(cls, payload: Mapping[str, object], *, device_id: str | None = None) -> UploadRequest:
        """Read a JSON payload; :class:`InvalidUpload` names the first bad field.

        ``device_id`` comes from the MQTT topic; without it the payload must carry one. When
        both are given they must agree.
        """
        if not isinstance(payload, Mapping):
            raise InvalidUpload("the payload must be a JSON object")
        missing = [key for key in _REQUIRED if key not in payload]
        if missing:
            raise InvalidUpload(f"missing {', '.join(missing)}", field=missing[0])
        in_payload = payload.get("device_id")
        if device_id is None:
            if in_payload is None:
                raise InvalidUpload("missing device_id", field="device_id")
            device = in_payload
        else:
            if in_payload is not None and in_payload != device_id:
                raise InvalidUpload(
                    f"device_id {in_payload!r} does not match the topic's {device_id!r}",
                    field="device_id",
                )
            device = device_id
        raw_kind = payload["kind"]
        if raw_kind not in tuple(SegmentKind):
            raise InvalidUpload(
                f"kind must be 'continuous' or 'event', not {raw_kind!r}", field="kind"
            )
        kind = SegmentKind(str(raw_kind))
        fields: dict[str, object] = {
            "device_id": device,
            "segment_id": payload["segment_id"],
            "kind": kind,
            "start": _parse_time("start", payload["start"]),
            "end": _parse_time("end", payload["end"]),
            "bytes": payload["bytes"],
            "sha256": payload["sha256"],
            "event_id": payload.get("event_id"),
        }
        return cls(**fields)  # type: ignore[arg-type]  # the constructor checks every field


def _parse_time(name: str, raw: object) -> datetime:
    if not isinstance(raw, str):
        raise InvalidUpload(f"{name} must be an ISO 8601 string, not {raw!r}", field=name)
    try:
        value = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise InvalidUpload(f"{name} {raw!r} is not an ISO 8601 time", field=name) from exc
    if value.utcoffset() is None:
        raise InvalidUpload(f"{name} {raw!r} must carry a timezone offset", field=name)
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Entitlement:
    """What the device's active subscription allows: its family and retention (R1).

    ``started_at``, when given, is the instant the subscription took effect, ``ended_at``
    that of its unsubscription: a segment that started outside ``[started_at, ended_at)``
    belongs to no subscription of this one (R5, R6).
    """

    subscription_id: str
    family: Family
    retention_days: int
    started_at: datetime | None = None
    ended_at: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.subscription_id, str) or not self.subscription_id:
            raise ValueError(
                f"subscription_id must be a non-empty string, not {self.subscription_id!r}"
            )
        if not isinstance(self.family, Family):
            raise TypeError(f"family must be a Family, not {self.family!r}")
        retention_class(self.retention_days)  # checks it is a positive whole number
        if self.started_at is not None:
            object.__setattr__(self, "started_at", aware_utc(self.started_at, "started_at"))
        if self.ended_at is not None:
            object.__setattr__(self, "ended_at", aware_utc(self.ended_at, "ended_at"))


class SubscriptionLike(Protocol):
    """The fields of a stored subscription that entitlement reads (``replay.models``)."""

    @property
    def subscription_id(self) -> str: ...
    @property
    def family(self) -> str: ...
    @property
    def retention_days(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def started_at(self) -> datetime: ...
    @property
    def ended_at(self) -> datetime | None: ...


def entitlement_of(subscription: SubscriptionLike | None) -> Entitlement | None:
    """The entitlement of a device's subscription row: an active one's, or an unsubscribed
    one's up to its unsubscription (segments started before it are still its own, R5);
    ``None`` for no row or any other status."""
    if subscription is None or subscription.status not in ("active", "unsubscribed"):
        return None
    ended_at = subscription.ended_at if subscription.status == "unsubscribed" else None
    if subscription.status == "unsubscribed" and ended_at is None:
        return None
    return Entitlement(
        subscription_id=subscription.subscription_id,
        family=Family(subscription.family),
        retention_days=subscription.retention_days,
        started_at=subscription.started_at,
        ended_at=ended_at,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Accept:
    """The upload may go ahead; the object goes under ``retention_class`` until ``expires_at``."""

    retention_class: str
    expires_at: datetime
    subscription_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Refuse:
    """The upload is refused; ``code`` goes on the wire, ``rule`` names the business rule."""

    code: RefusalCode
    rule: str
    message: str


Decision: TypeAlias = Accept | Refuse


def expiry(end: datetime, retention_days: int) -> datetime:
    """When a segment that ended at ``end`` expires (R5: ``retention_days`` after recording)."""
    retention_class(retention_days)
    return aware_utc(end, "end") + timedelta(days=retention_days)


def _entitled(request: UploadRequest, entitlement: Entitlement | None) -> Entitlement | Refuse:
    """The entitlement that covers the upload, or ``not_entitled``: no subscription or the
    wrong family (R1), video that started before the subscription began (R6) or at or after
    its unsubscription (R5): the boundary rule of the module docstring."""
    if entitlement is None:
        return Refuse(
            code="not_entitled",
            rule="R1",
            message=f"device {request.device_id} has no cloud-replay subscription for the segment",
        )
    if entitlement.family is Family.EVENT and request.kind is SegmentKind.CONTINUOUS:
        return Refuse(
            code="not_entitled",
            rule="R1",
            message="an event plan stores one-minute event clips, not continuous segments",
        )
    if entitlement.started_at is not None and request.start < entitlement.started_at:
        return Refuse(
            code="not_entitled",
            rule="R6",
            message=(
                f"the segment started at {request.start.isoformat()}, before subscription "
                f"{entitlement.subscription_id} began at {entitlement.started_at.isoformat()}"
            ),
        )
    if entitlement.ended_at is not None and request.start >= entitlement.ended_at:
        return Refuse(
            code="not_entitled",
            rule="R5",
            message=(
                f"the segment started at {request.start.isoformat()}, after subscription "
                f"{entitlement.subscription_id} was unsubscribed at "
                f"{entitlement.ended_at.isoformat()}"
            ),
        )
    return entitlement


def decide_upload(
    request: UploadRequest,
    *,
    entitlement: Entitlement | None,
    broadband_state: AccountState,
    now: datetime,
    max_skew_s: float = 30,
    clips: Iterable[Clip] = (),
) -> Decision:
    """Accept or refuse one upload; the order of the checks is the module docstring's.
    ``clips``: the camera's indexed event clips that may overlap it (ids are the service's).

    ``entitlement`` and ``broadband_state`` are those of ``request.start`` (the boundary
    rule of the module docstring)."""
    now = aware_utc(now, "now")
    if max_skew_s < 0:
        raise ValueError(f"max_skew_s must not be negative, not {max_skew_s}")
    entitled = _entitled(request, entitlement)
    if isinstance(entitled, Refuse):
        return entitled
    if broadband_state != "active":
        return Refuse(
            code="suspended",
            rule="R8",
            message=(
                f"the broadband account was {broadband_state} when the segment started: "
                "no recording is accepted"
            ),
        )
    latest = now + timedelta(seconds=max_skew_s)
    if request.end > latest:
        return Refuse(
            code="in_future",
            rule="R5",
            message=(
                f"the segment ends at {request.end.isoformat()}, more than {max_skew_s:g} s "
                f"after the service's {now.isoformat()}"
            ),
        )
    expires_at = expiry(request.end, entitled.retention_days)
    if expires_at <= now:
        return Refuse(
            code="too_old",
            rule="R5",
            message=(
                f"the segment ended at {request.end.isoformat()}, more than "
                f"{entitled.retention_days} days ago: it would be born expired"
            ),
        )
    overlap = clip_overlap(request, clips)
    if overlap is not None:
        return overlap
    return Accept(
        retention_class=retention_class(entitled.retention_days),
        expires_at=expires_at,
        subscription_id=entitled.subscription_id,
    )


def clip_overlap(request: UploadRequest, clips: Iterable[Clip]) -> Refuse | None:
    """``clip_overlaps`` (R1) if ``request`` is an event clip overlapping one of ``clips``
    (other than itself), else ``None``."""
    if request.kind is not SegmentKind.EVENT:
        return None
    own = service_segment_id(request.device_id, request.segment_id)
    hit = overlapping_clip(own, request.start, request.end, clips)
    if hit is None:
        return None
    return Refuse(
        code="clip_overlaps",
        rule="R1",
        message=(
            f"the clip {request.start.isoformat()} to {request.end.isoformat()} overlaps the "
            f"indexed clip {hit.segment_id} ({hit.start.isoformat()} to {hit.end.isoformat()}): "
            "an event during a clip joins that clip"
        ),
    )


def desired_recording_mode(family: Family | None, broadband_active: bool) -> RecordingMode:
    """The recording mode the desired state asks of a camera (R1, R8).

    ``off`` without an active subscription or while broadband is not active; otherwise the
    subscription's family.
    """
    if family is None or not broadband_active:
        return "off"
    return "continuous" if Family(family) is Family.CONTINUOUS else "event"
