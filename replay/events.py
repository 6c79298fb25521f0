"""Which video shows a camera event, and which event clips collide (R1, issue 15): pure rules.

- **An event's video is derived, never stored.** An event links to the indexed segment of
  its camera whose ``[start, end)`` holds the event's instant: under an event plan the
  clip that was recording when it happened (R1: an event during a clip joins that clip),
  under a continuous plan the segment recorded then. The camera tells nothing more (no
  device field names the clip). When several segments hold the instant (a continuous
  segment and an event clip, or two gateways' racing clips), the one indexed first wins,
  then the smaller service id: :func:`link_event`. A segment indexed later never takes an
  event from the one it is linked to, so the link is the same on every read once the
  event's video is indexed. (Indexing instants come from the gateways' clocks: two
  gateways whose clocks disagree could order two racing segments otherwise; the answer
  is still the same on every read.)
- **Event clips of one camera never overlap (R1).** :func:`overlapping_clip` names the
  indexed event clip a new clip would overlap (``[start, end)`` intervals: a clip that
  starts where another ends does not overlap it); the segment itself (a request or notice
  sent again) is not counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol, TypeVar

__all__ = ["Candidate", "Clip", "link_event", "overlapping_clip", "windows"]


class Candidate(Protocol):
    """What :func:`link_event` reads of an indexed segment an event may link to."""

    @property
    def segment_id(self) -> str: ...
    @property
    def start(self) -> datetime: ...
    @property
    def end(self) -> datetime: ...
    @property
    def indexed_at(self) -> datetime: ...


class Clip(NamedTuple):
    """An indexed event clip of one camera."""

    segment_id: str
    start: datetime
    end: datetime


C = TypeVar("C", bound=Candidate)


def link_event(at: datetime, candidates: Iterable[C]) -> C | None:
    """The segment that shows an event at ``at``: among those whose ``[start, end)`` holds
    ``at``, the first indexed, then the smallest id; ``None`` when none holds it."""
    holding = [c for c in candidates if c.start <= at < c.end]
    return min(holding, key=lambda c: (c.indexed_at, c.segment_id), default=None)


def overlapping_clip(
    segment_id: str, start: datetime, end: datetime, clips: Iterable[Clip]
) -> Clip | None:
    """The first (by start) of ``clips`` other than ``segment_id`` itself that overlaps
    ``[start, end)``, or ``None``."""
    hits = [c for c in clips if c.segment_id != segment_id and c.start < end and start < c.end]
    return min(hits, key=lambda c: (c.start, c.segment_id), default=None)


def windows(
    spans: Iterable[tuple[datetime, datetime]], before: timedelta
) -> list[tuple[datetime, datetime]]:
    """The spans' windows ``[start - before, end]`` merged where they touch, in order: where
    a segment that starts at most ``before`` ahead of a span and reaches into it starts."""
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(spans):
        low, high = start - before, end
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged
