"""Where a camera's event clips go (R1: one-minute clips that never overlap; an event
during a running clip joins it): :class:`simulators.clips.ClipPlan`, by tables."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from simulators.clips import Clip, ClipPlan, Placement, floor_to

T0 = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run(
    events: list[float], *, earliest: float | None = None, until: float = 1000
) -> tuple[list[tuple[float, float, tuple[str, ...]]], list[Placement]]:
    """Events at these offsets (ids ``e<offset>``), each handed out clip as ``(start, end,
    events)`` offsets once ``until`` is recorded, and each event's placement."""
    plan, placements = ClipPlan(), []
    for offset in events:
        bound = at(earliest) if earliest is not None else None
        plan, placed = plan.add(f"e{offset:g}", at(offset), earliest=bound)
        placements.append(placed)
    plan, clips = plan.due(at(until))
    assert plan.running is None
    assert plan.ended == ()
    return [
        ((c.start - T0).total_seconds(), (c.end - T0).total_seconds(), c.event_ids) for c in clips
    ], placements


@pytest.mark.parametrize(
    ("events", "clips", "placements"),
    [
        # One event: a minute from 10 s before it.
        ([30], [(20, 80, ("e30",))], ["opened"]),
        # The case: 20 s apart, one clip covers both; its end stays (R1 cap).
        ([30, 50], [(20, 80, ("e30", "e50"))], ["opened", "joined"]),
        # Three in one minute, the last a moment before the end.
        ([30, 50, 79.9], [(20, 80, ("e30", "e50", "e79.9"))], ["opened", "joined", "joined"]),
        # At the clip's end exactly: the next clip, which may not start before it.
        ([30, 80], [(20, 80, ("e30",)), (80, 140, ("e80",))], ["opened", "opened"]),
        # Soon after the end: the pre-roll is cut short rather than overlap.
        ([30, 85], [(20, 80, ("e30",)), (80, 140, ("e85",))], ["opened", "opened"]),
        # Long after: a full pre-roll again.
        ([30, 200], [(20, 80, ("e30",)), (190, 250, ("e200",))], ["opened", "opened"]),
        # The pre-roll goes back to a key frame (2-s grid): up to 12 s before the event.
        ([31.5], [(20, 80, ("e31.5",))], ["opened"]),
        ([33], [(22, 82, ("e33",))], ["opened"]),
        # An event near the start of time: a clip may open right at it.
        ([0], [(-10, 50, ("e0",))], ["opened"]),
    ],
)
def test_events_open_or_join_clips_that_never_overlap(
    events: list[float],
    clips: list[tuple[float, float, tuple[str, ...]]],
    placements: list[Placement],
) -> None:
    got, placed = run(events)
    assert got == clips
    assert placed == placements


@pytest.mark.parametrize(
    ("earliest", "events", "clips", "placements"),
    [
        # The camera holds video from 25 s on: the pre-roll starts there.
        (25, [30], [(25, 85, ("e30",))], ["opened"]),
        # An event before the oldest video held has no clip.
        (25, [20], [], ["unrecorded"]),
        # Video from well before: the full pre-roll.
        (0, [30], [(20, 80, ("e30",))], ["opened"]),
    ],
)
def test_a_clip_starts_no_earlier_than_the_video_held(
    earliest: float,
    events: list[float],
    clips: list[tuple[float, float, tuple[str, ...]]],
    placements: list[Placement],
) -> None:
    got, placed = run(events, earliest=earliest)
    assert (got, placed) == (clips, placements)


def test_clips_are_handed_out_once_their_end_is_recorded() -> None:
    plan, _ = ClipPlan().add("a", at(30))
    plan, clips = plan.due(at(79))
    assert clips == ()
    assert plan.running is not None
    plan, clips = plan.due(at(80))
    assert clips == (Clip(at(20), at(80), ("a",)),)
    assert (plan.running, plan.closed_until) == (None, at(80))
    # Detected late (its episode ended after the clip closed): the clip has it already.
    plan, placed = plan.add("late", at(79.5))
    assert (placed, plan.running) == ("covered", None)


def test_a_clip_that_ended_before_the_next_event_waits_to_be_handed_out() -> None:
    """Events of a whole stretch come before its clips are handed out."""
    plan, _ = ClipPlan().add("a", at(30))
    plan, placed = plan.add("b", at(95))
    assert placed == "opened"
    assert plan.ended == (Clip(at(20), at(80), ("a",)),)
    plan, clips = plan.due(at(100))
    assert clips == (Clip(at(20), at(80), ("a",)),)
    plan, clips = plan.due(at(143))
    assert clips == ()
    plan, clips = plan.due(at(144))
    assert clips == (Clip(at(84), at(144), ("b",)),)


def test_any_run_of_events_gives_one_minute_clips_in_order_without_overlap() -> None:
    offsets = [0, 3, 14, 59, 61, 61.5, 122, 130, 182.1, 240, 241, 400]
    got, placed = run(offsets)
    assert all(end - start == 60 for start, end, _ in got)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(got))
    events = [e for *_, ids in got for e in ids]
    assert events == [f"e{o:g}" for o in offsets], "every event in exactly one clip"
    for start, end, ids in got:
        assert all(start <= float(e[1:]) < end for e in ids)
    assert placed.count("opened") == len(got)


@pytest.mark.parametrize(
    ("offset", "grid", "floored"),
    [(31.5, 2, 30), (30, 2, 30), (29.999, 2, 28), (7, 10, 0), (-1, 2, -2)],
)
def test_floor_to_counts_the_grid_from_the_unix_epoch(
    offset: float, grid: float, floored: float
) -> None:
    # T0 is a whole minute: on every grid here.
    assert floor_to(at(offset), timedelta(seconds=grid)) == at(floored)


@pytest.mark.parametrize(
    ("pre_roll", "grid", "says"),
    [(60, 2, "pre-roll"), (-1, 2, "pre-roll"), (10, 0, "grid"), (10, 61, "grid")],
)
def test_a_plan_that_cannot_hold_is_refused(pre_roll: float, grid: float, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        ClipPlan(pre_roll=timedelta(seconds=pre_roll), grid=timedelta(seconds=grid))
