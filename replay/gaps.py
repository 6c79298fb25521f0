"""Why the timeline has a gap where it has one (issue 15): pure rules, no I/O.

A gap is time the timeline could show but no recorded range covers. The window it could
show is the asked ``[start, end)`` cut to the retention cut-off (R5: before it, video is
gone whatever happened) and to ``now`` (later time has not happened yet): :func:`window`.

Each gap is split by what the service knows of that time, one ``cause`` per part:

- ``not_entitled``: the device had no subscription it may watch under now (R1, R6: the
  timeline shows the current subscription's video only, so before it took effect);
- ``broadband_stopped``: the account's broadband was stopped or torn down (R8: no
  recording is accepted);
- ``offline``: the camera was offline (R1: continuous recording has gaps only then);
- ``unknown``: none of these (under an event plan, most of the day: nothing happened, or
  the camera did not say).

When several apply, the first of that list wins (:data:`PRECEDENCE`): the most lasting
reason first, the one a customer can act on. Not entitled means nothing would have been
kept whatever the camera did; a stopped broadband refuses recording from an online
camera; offline is the camera's own state. Neighbouring parts of one cause are one gap.

The known periods come from histories of changes (presence, broadband state), read by
:func:`down_periods`: each change says from when a state holds; the last change at or
before the window's start gives the state at the start, and before the first change the
state is not known (never counted as down).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, TypeAlias

from devices.broadband_periods import InactivePeriod
from devices.clock import aware_utc

__all__ = ["PRECEDENCE", "Cause", "Gap", "down_periods", "timeline_gaps", "window"]

Cause: TypeAlias = Literal["not_entitled", "broadband_stopped", "offline", "unknown"]
Span: TypeAlias = tuple[datetime, datetime]

#: The cause reported when several apply: the first of these.
PRECEDENCE: tuple[Cause, ...] = ("not_entitled", "broadband_stopped", "offline")


@dataclass(frozen=True, slots=True)
class Gap:
    start: datetime
    end: datetime
    cause: Cause


def window(start: datetime, end: datetime, *, cutoff: datetime, now: datetime) -> Span | None:
    """The part of ``[start, end)`` a gap may be in: after the retention ``cutoff``, before
    ``now``; ``None`` when nothing is left."""
    low = max(aware_utc(start, "start"), aware_utc(cutoff, "cutoff"))
    high = min(aware_utc(end, "end"), aware_utc(now, "now"))
    return (low, high) if low < high else None


def down_periods(
    changes: Iterable[tuple[datetime, bool]], start: datetime, end: datetime
) -> list[Span]:
    """The parts of ``[start, end)`` during which a state was down, from its changes
    ``(at, down)`` in time order (the last one at or before ``start`` first, if any)."""
    periods: list[Span] = []
    since: datetime | None = None
    for at, down in changes:
        at = max(aware_utc(at, "at"), start)
        if at >= end:
            break
        if down and since is None:
            since = at
        elif not down and since is not None:
            if since < at:
                periods.append((since, at))
            since = None
    if since is not None:
        periods.append((since, end))
    return periods


def inactive_spans(periods: Iterable[InactivePeriod], start: datetime, end: datetime) -> list[Span]:
    """The parts of ``[start, end)`` inside the account's inactive periods (stopped or torn
    down, R8: :mod:`devices.broadband_periods`, the history the boundary rule reads too)."""
    spans = []
    for period in periods:
        low = max(period.since, start)
        high = end if period.until is None else min(period.until, end)
        if low < high:
            spans.append((low, high))
    return sorted(spans)


def _uncovered(span: Span, ranges: Iterable[Span]) -> list[Span]:
    """The parts of ``span`` no range covers."""
    low, high = span
    parts: list[Span] = []
    cursor = low
    for a, b in sorted(ranges):
        if b <= cursor or a >= high:
            continue
        if a > cursor:
            parts.append((cursor, a))
        cursor = max(cursor, b)
    if cursor < high:
        parts.append((cursor, high))
    return parts


def _cause_at(at: datetime, known: Mapping[Cause, Sequence[Span]]) -> Cause:
    for cause in PRECEDENCE:
        if any(a <= at < b for a, b in known.get(cause, ())):
            return cause
    return "unknown"


def timeline_gaps(
    span: Span | None, ranges: Iterable[Span], known: Mapping[Cause, Sequence[Span]]
) -> list[Gap]:
    """The gaps of ``span`` (:func:`window`) between the recorded ``ranges``, each with its
    cause from the ``known`` periods of each cause, in time order."""
    if span is None:
        return []
    gaps: list[Gap] = []
    for low, high in _uncovered(span, ranges):
        cuts = {low, high}
        for periods in known.values():
            for a, b in periods:
                cuts.update(t for t in (a, b) if low < t < high)
        points = sorted(cuts)
        for a, b in itertools.pairwise(points):
            cause = _cause_at(a, known)
            if gaps and gaps[-1].end == a and gaps[-1].cause == cause:
                gaps[-1] = Gap(gaps[-1].start, b, cause)
            else:
                gaps.append(Gap(a, b, cause))
    return gaps
