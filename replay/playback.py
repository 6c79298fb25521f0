"""Who may watch what, and for how long (R5, R6, R8): pure playback and retention decisions.

No I/O: ``gateway/`` turns these answers into HTTP, ``storage/`` lists and deletes objects.

- **Viewing window (R5, R6, R8).** A segment is viewable only while the device's *current*
  subscription is active and is the one the segment was recorded under (R5: nothing is
  viewable from the moment of unsubscription; R6: a new subscription does not see the old
  one's video), the account's broadband is active (R8), and the segment has not expired
  (``now < expires_at``: the read path applies the cut-off itself, however late the
  sweeper runs). :func:`viewable` answers ``True`` or a :class:`Refusal` (which is falsy).
- **Device-level refusals for the app.** :func:`playback_refusal`: ``unsubscribed`` (R5),
  ``not_entitled`` (R1, never a plan), ``broadband_inactive`` (R8), all forbidden. The
  subscription is judged before broadband: resuming broadband would not help a device
  without a plan. :meth:`Refusal.error` is the refusal to raise: video past its retention
  is gone, any other refusal forbidden (the gateway picks the statuses).
- **Timeline and HLS.** :func:`merge_ranges` merges segments that touch or overlap (within
  a gap tolerance, 1 s by default) into recorded ranges; :func:`hls_playlist` writes an
  RFC 8216 VOD playlist with ``#EXT-X-DISCONTINUITY`` and a fresh
  ``#EXT-X-PROGRAM-DATE-TIME`` wherever consecutive segments do not follow each other
  within that tolerance (a gap, or an overlap of two event clips). The timeline does not
  read segments: :func:`fold_ranges` keeps merged ranges per device and subscription as
  segments are indexed, and :func:`visible_ranges` clips them to the asked window and the
  retention cut-off.
- **Retention (R5).** :func:`retention_cutoff` and :func:`expired` are the sweeper's and the
  read path's one cut-off: a segment expires ``retention_days`` after it ended.

Reconciling the store with the index is :mod:`replay.reconcile`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol, TypeAlias

from devices.broadband import AccountState
from devices.clock import aware_utc
from devices.errors import DomainError, Forbidden, Gone
from replay.recording import retention_class

__all__ = [
    "DEFAULT_GAP_TOLERANCE_S",
    "PlaybackCode",
    "RangeChanges",
    "Recorded",
    "Refusal",
    "SegmentLike",
    "SubscriptionLike",
    "expired",
    "fold_ranges",
    "hls_playlist",
    "merge_ranges",
    "playback_refusal",
    "retention_cutoff",
    "viewable",
    "visible_ranges",
]

#: Segments closer than this (seconds) count as continuous recording.
DEFAULT_GAP_TOLERANCE_S = 1.0

PlaybackCode: TypeAlias = Literal[
    "unsubscribed", "not_entitled", "broadband_inactive", "previous_subscription", "expired"
]
Range: TypeAlias = tuple[datetime, datetime]


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """Why playback is refused: the wire ``code``, the rule, a sentence.

    A refusal is falsy, so ``if viewable(...)`` reads naturally.
    """

    code: PlaybackCode
    rule: str
    message: str

    def __bool__(self) -> bool:
        return False

    def error(self) -> DomainError:
        """The refusal to raise: expired video is gone (R5), any other refusal forbidden."""
        kind = Gone if self.code == "expired" else Forbidden
        return kind(self.message, code=self.code, rule=self.rule)


class SubscriptionLike(Protocol):
    """What playback reads of a subscription (a ``replay.models.Subscription`` row fits)."""

    @property
    def subscription_id(self) -> str: ...
    @property
    def status(self) -> str: ...


class SegmentLike(Protocol):
    """What playback reads of an indexed segment."""

    @property
    def subscription_id(self) -> str: ...
    @property
    def expires_at(self) -> datetime: ...


def _active(subscription: SubscriptionLike | None) -> bool:
    return subscription is not None and subscription.status == "active"


def _broadband_refusal(broadband_state: AccountState) -> Refusal:
    return Refusal(
        code="broadband_inactive",
        rule="R8",
        message=f"the broadband account is {broadband_state}: no video is served",
    )


def playback_refusal(
    current_subscription: SubscriptionLike | None,
    last_subscription_status: str | None,
    broadband_state: AccountState,
) -> Refusal | None:
    """Whether the app may watch a device at all; ``None`` when it may.

    ``current_subscription`` is the device's active subscription (an inactive one counts as
    none); ``last_subscription_status`` is the status of its latest subscription, ``None``
    when it never had one.
    """
    if _active(current_subscription):
        if broadband_state != "active":
            return _broadband_refusal(broadband_state)
        return None
    if last_subscription_status == "unsubscribed":
        return Refusal(
            code="unsubscribed",
            rule="R5",
            message="the device's cloud replay was unsubscribed: its video cannot be viewed",
        )
    if last_subscription_status is None:
        return Refusal(
            code="not_entitled",
            rule="R1",
            message="the device has no cloud-replay plan",
        )
    raise ValueError(
        f"the latest subscription is {last_subscription_status!r} but none is given as current"
    )


def viewable(
    segment: SegmentLike,
    *,
    current_subscription: SubscriptionLike | None,
    broadband_state: AccountState,
    now: datetime,
) -> Literal[True] | Refusal:
    """``True`` if the segment may be served now, else the first reason it may not.

    Checked in this order: the subscription (R5 unsubscribed, R6 an earlier subscription),
    broadband (R8), expiry (R5 retention).
    """
    now = aware_utc(now, "now")
    if current_subscription is None or not _active(current_subscription):
        return Refusal(
            code="unsubscribed",
            rule="R5",
            message="the subscription this video was recorded under is no longer active",
        )
    if segment.subscription_id != current_subscription.subscription_id:
        return Refusal(
            code="previous_subscription",
            rule="R6",
            message=(
                f"this video was recorded under subscription {segment.subscription_id}, "
                f"not the current {current_subscription.subscription_id}"
            ),
        )
    if broadband_state != "active":
        return _broadband_refusal(broadband_state)
    expires_at = aware_utc(segment.expires_at, "expires_at")
    if expired(expires_at, now):
        return Refusal(
            code="expired",
            rule="R5",
            message=f"this video expired at {expires_at.isoformat()}",
        )
    return True


def retention_cutoff(retention_days: int, now: datetime) -> datetime:
    """Segments that ended at or before this instant are expired (R5)."""
    retention_class(retention_days)  # a positive whole number of days
    return aware_utc(now, "now") - timedelta(days=retention_days)


def expired(expires_at: datetime, now: datetime) -> bool:
    """Whether a segment expiring at ``expires_at`` is gone at ``now`` (from that instant on)."""
    return aware_utc(now, "now") >= aware_utc(expires_at, "expires_at")


def _tolerance(gap_tolerance_s: float) -> timedelta:
    if not gap_tolerance_s >= 0:  # also refuses NaN
        raise ValueError(f"gap_tolerance_s must not be negative, not {gap_tolerance_s!r}")
    return timedelta(seconds=gap_tolerance_s)


def _checked(start: datetime, end: datetime) -> Range:
    start, end = aware_utc(start, "start"), aware_utc(end, "end")
    if end <= start:
        raise ValueError(f"a segment must end after it starts: {start} to {end}")
    return start, end


def merge_ranges(
    segments: Iterable[Range], *, gap_tolerance_s: float = DEFAULT_GAP_TOLERANCE_S
) -> list[Range]:
    """Recorded ranges: segments that overlap or are at most ``gap_tolerance_s`` apart merge.

    The segments may come in any order; the ranges come out in time order.
    """
    tolerance = _tolerance(gap_tolerance_s)
    checked = sorted(_checked(start, end) for start, end in segments)
    ranges: list[Range] = []
    for start, end in checked:
        if ranges and start <= ranges[-1][1] + tolerance:
            last_start, last_end = ranges[-1]
            ranges[-1] = (last_start, max(last_end, end))
        else:
            ranges.append((start, end))
    return ranges


@dataclass(frozen=True, slots=True)
class Recorded:
    """Recorded time of one device under one subscription: a stored range (``range_id``
    set) or new segments to fold in (``range_id`` ``None``). It expires with its last
    segment: ``expires_at`` is the latest of its segments' (R5)."""

    start: datetime
    end: datetime
    expires_at: datetime
    range_id: int | None = None


@dataclass(frozen=True, slots=True)
class RangeChanges:
    """What :func:`fold_ranges` changes in the stored ranges of one device/subscription."""

    inserts: list[Recorded]
    updates: list[Recorded]  # the stored ``range_id`` with its new bounds
    deletes: list[int]


def fold_ranges(
    stored: Iterable[Recorded],
    new: Iterable[Recorded],
    *,
    gap_tolerance_s: float = DEFAULT_GAP_TOLERANCE_S,
) -> RangeChanges:
    """Fold newly indexed segments into the stored ranges of one device/subscription.

    The stored ranges and the new segments merge as :func:`merge_ranges` merges segments.
    A merged range that holds no new segment is left as it is; one that holds stored
    ranges keeps the earliest of them (updated when its bounds grow) and the others are
    deleted (two ranges that one segment joins become one); one that holds only new
    segments is inserted. Stored ranges may overlap (a writer that raced another): the
    fold heals them as soon as a segment touches them.
    """
    tolerance = _tolerance(gap_tolerance_s)
    items: list[Recorded] = []
    for item in (*stored, *new):
        start, end = _checked(item.start, item.end)
        items.append(Recorded(start, end, aware_utc(item.expires_at, "expires_at"), item.range_id))
    items.sort(key=lambda r: (r.start, r.end))
    groups: list[list[Recorded]] = []
    reach = datetime.min.replace(tzinfo=UTC)
    for item in items:
        if groups and item.start <= reach + tolerance:
            groups[-1].append(item)
            reach = max(reach, item.end)
        else:
            groups.append([item])
            reach = item.end
    changes = RangeChanges(inserts=[], updates=[], deletes=[])
    for group in groups:
        if all(item.range_id is not None for item in group):
            continue  # nothing new here
        merged = Recorded(
            start=group[0].start,
            end=max(item.end for item in group),
            expires_at=max(item.expires_at for item in group),
        )
        kept = [item for item in group if item.range_id is not None]
        if not kept:
            changes.inserts.append(merged)
            continue
        keep, *rest = kept
        if (updated := replace(merged, range_id=keep.range_id)) != keep:
            changes.updates.append(updated)
        changes.deletes.extend(item.range_id for item in rest if item.range_id is not None)
    return changes


def visible_ranges(
    stored: Iterable[Range],
    *,
    start: datetime,
    end: datetime,
    cutoff: datetime,
    gap_tolerance_s: float = DEFAULT_GAP_TOLERANCE_S,
) -> list[Range]:
    """The timeline's ranges: stored ranges clipped to the asked ``[start, end)`` and to the
    retention ``cutoff`` (R5: what ended at or before it is expired), merged again (stored
    ranges may overlap).

    Clipping at the cut-off is exact for a stored range: its segments lie at most the gap
    tolerance apart, so every instant after the cut-off is recorded by a segment that ends
    after it, and such a segment has not expired.
    """
    low = max(aware_utc(start, "start"), aware_utc(cutoff, "cutoff"))
    high = aware_utc(end, "end")
    clipped = [(max(a, low), min(b, high)) for a, b in (_checked(a, b) for a, b in stored)]
    return merge_ranges([(a, b) for a, b in clipped if a < b], gap_tolerance_s=gap_tolerance_s)


def _program_date_time(at: datetime) -> str:
    return f"#EXT-X-PROGRAM-DATE-TIME:{at:%Y-%m-%dT%H:%M:%S}.{at.microsecond // 1000:03d}Z"


def hls_playlist(
    segments: Iterable[tuple[str, datetime, float]],
    *,
    target_duration: int | None = None,
    gap_tolerance_s: float = DEFAULT_GAP_TOLERANCE_S,
) -> str:
    """An HLS VOD playlist (RFC 8216, version 3) of ``(url, start, duration_s)`` segments.

    Segments are played in start order. ``#EXT-X-TARGETDURATION`` is the ceiling of the
    longest duration, or ``target_duration`` when given (it may not be smaller: RFC 8216
    §4.3.3.1). A discontinuity, with a new program date-time, marks each place where a
    segment does not start within ``gap_tolerance_s`` of the previous one's end.
    """
    tolerance = _tolerance(gap_tolerance_s)
    items: list[tuple[datetime, str, float]] = []
    for url, start, duration in segments:
        if not isinstance(url, str) or not url or any(c in url for c in "\r\n"):
            raise ValueError(f"a segment URL must be one non-empty line, not {url!r}")
        if (
            isinstance(duration, bool)
            or not isinstance(duration, int | float)
            or not 0 < duration < math.inf
        ):
            raise ValueError(f"a segment duration must be positive seconds, not {duration!r}")
        items.append((aware_utc(start, "start"), url, float(duration)))
    if not items:
        raise ValueError("a playlist needs at least one segment")
    items.sort(key=lambda item: item[0])
    longest = math.ceil(max(duration for _, _, duration in items))
    if target_duration is None:
        target_duration = longest
    elif target_duration < longest:
        raise ValueError(
            f"target_duration {target_duration} is shorter than the longest segment ({longest} s)"
        )
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{target_duration}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
    ]
    expected: datetime | None = None
    for start, url, duration in items:
        if expected is None:
            lines.append(_program_date_time(start))
        elif abs(start - expected) > tolerance:
            lines.append("#EXT-X-DISCONTINUITY")
            lines.append(_program_date_time(start))
        lines.append(f"#EXTINF:{duration:.3f},")
        lines.append(url)
        expected = start + timedelta(seconds=duration)
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"
