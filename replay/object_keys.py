"""Where recordings go and what they are called (R1, R5, R14): identifiers, object keys and
retention prefixes, pure, no I/O (split from :mod:`replay.recording`, which decides).

- **Segment ids.** A camera's ``segment_id`` (what it sends in ``upload/req`` and
  ``segment``) is its own: unique per camera, not across cameras (issue 14). The service
  indexes the segment under :func:`service_segment_id`, derived from the device id and the
  camera's id: globally unique, the ``segment_id`` of the app's timeline, playlist and
  ``/app/v1/segments/{segment_id}`` routes. Being derived, it needs no lookup and no column
  of its own: a redelivered request or notice finds its grant or segment by it.

- **Object keys.** ``rec/{n}d/{YYYY}/{MM}/{DD}/{HHMM}/{SS}-{kind}-{segment_id}@{device_id}.ts``,
  dated by the segment's *end* in UTC (:func:`object_key`, read back by
  :func:`parse_object_key`). The retention class leads the key so that one S3 lifecycle rule
  per prefix (:func:`lifecycle_rules`) backs up the sweeper. Time comes before the camera
  (issue 16, item 2): the segments of every camera that ended in one minute share a
  directory, in the order they ended, which is about the order their uploads land and
  their notices come. So a batch of notices is a short span of one or two directories,
  which the store confirms with one listing each (:meth:`~storage.objects.ObjectStore.stat_many`),
  where a directory per camera needed one request per notice. (One minute of 10,000
  cameras' 10-s segments is 60,000 keys in a directory, 1,000 new keys a second under one
  prefix: within what S3 serves per prefix, 3,500 PUTs a second.) Keys of the earlier
  layout, ``rec/{n}d/{device_id}/{YYYY}/{MM}/{DD}/{HHMMSS}-{kind}-{segment_id}.ts`` dated by
  the start, are still read back: an indexed key is never rewritten. Saved copies (R14)
  live under ``family/{account_id}/...`` (:func:`family_key`), outside every recording
  prefix.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from devices.clock import aware_utc
from devices.errors import Invalid

__all__ = [
    "DEVICE_ID",
    "DEVICE_ID_ERROR",
    "LIFECYCLE_MARGIN_DAYS",
    "RECORDING_PREFIXES",
    "SAFE_ID",
    "SAFE_ID_ERROR",
    "InvalidUpload",
    "RecordingKey",
    "SegmentKind",
    "check_id",
    "family_clip_key",
    "family_key",
    "lifecycle_rules",
    "object_key",
    "parse_object_key",
    "recording_prefix",
    "retention_class",
    "service_segment_id",
]

#: Days a lifecycle rule waits beyond the retention, so it never runs ahead of the sweeper.
LIFECYCLE_MARGIN_DAYS = 1

SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,80}")
DEVICE_ID = re.compile(r"[A-Za-z0-9_:-][A-Za-z0-9._:-]{0,63}")
_KEY = re.compile(
    r"rec/(?P<days>[1-9][0-9]*)d/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/(?P<hm>\d{4})/"
    r"(?P<s>\d{2})-(?P<kind>continuous|event)-(?P<segment>[^/@]+)@(?P<device>[^/@]+)\.ts"
)
#: The layout before issue 16: one directory per camera and day, dated by the start.
_CAMERA_FIRST_KEY = re.compile(
    r"rec/(?P<days>[1-9][0-9]*)d/(?P<device>[^/]+)/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/"
    r"(?P<hm>\d{4})(?P<s>\d{2})-(?P<kind>continuous|event)-(?P<segment>[^/]+)\.ts"
)


class InvalidUpload(Invalid, ValueError):
    """A malformed upload request; ``field`` names the culprit when there is one.

    A ``ValueError`` too: :class:`UploadRequest`'s constructor raises it for bad arguments.
    """

    code = "invalid_upload"

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class SegmentKind(StrEnum):
    """What a camera uploads: a piece of 24-hour recording or a one-minute event clip (R1)."""

    CONTINUOUS = "continuous"
    EVENT = "event"


DEVICE_ID_ERROR = "1 to 64 of A-Z a-z 0-9 . _ : - not starting with a dot"
SAFE_ID_ERROR = "1 to 80 of A-Z a-z 0-9 . _ -"


def check_id(alphabet: str, name: str, value: object, pattern: re.Pattern[str]) -> str:
    """``value`` if it is a key-safe identifier; :class:`InvalidUpload` (a ValueError) if not."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidUpload(f"{name} must be {alphabet}, not {value!r}", field=name)
    return value


def retention_class(days: int) -> str:
    """The retention class of a plan keeping video ``days`` days: ``7`` → ``"7d"``."""
    if isinstance(days, bool) or not isinstance(days, int) or days <= 0:
        raise ValueError(f"retention days must be a positive whole number, not {days!r}")
    return f"{days}d"


def recording_prefix(days: int) -> str:
    """The object-store prefix of a retention: ``7`` → ``"rec/7d/"``."""
    return f"rec/{retention_class(days)}/"


#: The prefixes of the six plans of R1 (1, 7 and 30 days).
RECORDING_PREFIXES: tuple[str, ...] = tuple(recording_prefix(days) for days in (1, 7, 30))


def lifecycle_rules(retention_days: Iterable[int]) -> tuple[tuple[str, int], ...]:
    """``(prefix, expiration days)`` per retention, for the store's lifecycle configuration.

    The store counts from the object's creation (upload, just after the segment ends) and
    rounds to whole days; waiting :data:`LIFECYCLE_MARGIN_DAYS` more than the retention
    makes the rule a backstop that never removes video the plan still keeps.
    """
    days = sorted(set(retention_days))
    return tuple((recording_prefix(d), d + LIFECYCLE_MARGIN_DAYS) for d in days)


def _stamp(start: datetime) -> str:
    at = aware_utc(start, "start")
    return f"{at:%Y/%m/%d}/{at:%H%M%S}"


def object_key(
    retention_class: str, device_id: str, end: datetime, segment_id: str, kind: SegmentKind
) -> str:
    """Where a segment that ended at ``end`` is stored (UTC, to the second):
    ``rec/7d/2026/05/01/1030/10-continuous-s1@cam-1.ts`` (see the module docstring)."""
    if not isinstance(retention_class, str) or not re.fullmatch(r"[1-9][0-9]*d", retention_class):
        raise ValueError(f"retention_class must be like '7d', not {retention_class!r}")
    check_id(DEVICE_ID_ERROR, "device_id", device_id, DEVICE_ID)
    check_id(SAFE_ID_ERROR, "segment_id", segment_id, SAFE_ID)
    kind = SegmentKind(kind)
    at = aware_utc(end, "end")
    return f"rec/{retention_class}/{at:%Y/%m/%d/%H%M/%S}-{kind}-{segment_id}@{device_id}.ts"


def service_segment_id(device_id: str, segment_id: str) -> str:
    """The service's id of the camera's segment ``segment_id`` (see the module docstring):
    ``sg_`` and the first 128 bits, in hex, of the SHA-256 of ``{device_id}/{segment_id}``
    (neither id can hold a ``/``), so two cameras never share one. Key-safe
    (:func:`family_key`) and 35 characters, within the 80 of a segment id. Cheap (about a
    microsecond): indexing derives it for every request and notice of a batch."""
    check_id(DEVICE_ID_ERROR, "device_id", device_id, DEVICE_ID)
    check_id(SAFE_ID_ERROR, "segment_id", segment_id, SAFE_ID)
    return "sg_" + hashlib.sha256(f"{device_id}/{segment_id}".encode()).hexdigest()[:32]


def family_key(account_id: str, segment_id: str, start: datetime) -> str:
    """Where a saved copy goes in the family cloud (R14): ``family/{account_id}/YYYY/MM/DD/...``."""
    check_id(DEVICE_ID_ERROR, "account_id", account_id, DEVICE_ID)  # key-safe, as device ids
    check_id(SAFE_ID_ERROR, "segment_id", segment_id, SAFE_ID)
    return f"family/{account_id}/{_stamp(start)}-{segment_id}.ts"


def family_clip_key(
    account_id: str, device_id: str, start: datetime, end: datetime, tag: str
) -> str:
    """Where a range saved as MP4 goes (R14, issue 15):
    ``family/{account_id}/YYYY/MM/DD/HHMMSS-{device_id}-{seconds}s-{tag}.mp4``; ``tag``
    (key-safe) tells apart two saves of one range."""
    check_id(DEVICE_ID_ERROR, "account_id", account_id, DEVICE_ID)
    check_id(DEVICE_ID_ERROR, "device_id", device_id, DEVICE_ID)
    check_id(SAFE_ID_ERROR, "tag", tag, SAFE_ID)
    seconds = round((aware_utc(end, "end") - aware_utc(start, "start")).total_seconds())
    return f"family/{account_id}/{_stamp(start)}-{device_id}-{seconds}s-{tag}.mp4"


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingKey:
    """The parts of a recording object key (:func:`parse_object_key`); ``dated`` is the
    instant the key is dated by, to the second (the segment's end; in a key of the earlier
    layout, its start)."""

    retention_class: str
    device_id: str
    dated: datetime
    kind: SegmentKind
    segment_id: str


def parse_object_key(key: str) -> RecordingKey | None:
    """The parts of a key written by :func:`object_key` (or of the earlier layout, see the
    module docstring); ``None`` for any other key."""
    match = _KEY.fullmatch(key) or _CAMERA_FIRST_KEY.fullmatch(key)
    if match is None:
        return None
    device, segment = match["device"], match["segment"]
    if not DEVICE_ID.fullmatch(device) or not SAFE_ID.fullmatch(segment):
        return None
    hm = match["hm"]
    try:
        dated = datetime(
            int(match["y"]),
            int(match["m"]),
            int(match["d"]),
            int(hm[:2]),
            int(hm[2:]),
            int(match["s"]),
            tzinfo=UTC,
        )
    except ValueError:
        return None
    return RecordingKey(
        retention_class=f"{match['days']}d",
        device_id=device,
        dated=dated,
        kind=SegmentKind(match["kind"]),
        segment_id=segment,
    )
