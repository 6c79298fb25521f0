"""Why the timeline has a gap (issue 15): windows, down periods and causes, pure.

Tables written out by hand; times are seconds after T.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devices.broadband_periods import InactivePeriod
from replay.gaps import Cause, Gap, down_periods, inactive_spans, timeline_gaps, window

T = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def t(seconds: float) -> datetime:
    return T + timedelta(seconds=seconds)


def spans(*pairs: tuple[float, float]) -> list[tuple[datetime, datetime]]:
    return [(t(a), t(b)) for a, b in pairs]


WINDOWS = [
    pytest.param((0, 100), -10, 200, (0, 100), id="all-of-it"),
    pytest.param((0, 100), 20, 200, (20, 100), id="cut-at-retention"),
    pytest.param((0, 100), -10, 50, (0, 50), id="cut-at-now"),
    pytest.param((0, 100), 120, 200, None, id="all-expired"),
    pytest.param((0, 100), -10, 0, None, id="all-in-the-future"),
]


@pytest.mark.parametrize(("asked", "cutoff", "now", "expected"), WINDOWS)
def test_window(
    asked: tuple[float, float], cutoff: float, now: float, expected: tuple[float, float] | None
) -> None:
    got = window(t(asked[0]), t(asked[1]), cutoff=t(cutoff), now=t(now))
    assert got == (None if expected is None else (t(expected[0]), t(expected[1])))


DOWNS = [
    pytest.param([], [], id="no-history-never-down"),
    pytest.param([(-50, True)], [(0, 100)], id="down-since-before"),
    pytest.param([(-50, True), (30, False)], [(0, 30)], id="down-at-start-then-up"),
    pytest.param([(-50, False), (30, True), (60, False)], [(30, 60)], id="one-outage"),
    pytest.param([(30, True), (40, True), (60, False)], [(30, 60)], id="down-twice-is-once"),
    pytest.param([(30, True)], [(30, 100)], id="still-down"),
    pytest.param([(30, False), (50, True), (150, False)], [(50, 100)], id="up-later-than-end"),
    pytest.param([(0, True), (0, False)], [], id="an-empty-outage"),
]


@pytest.mark.parametrize(("changes", "expected"), DOWNS)
def test_down_periods(
    changes: list[tuple[float, bool]], expected: list[tuple[float, float]]
) -> None:
    got = down_periods([(t(at), down) for at, down in changes], t(0), t(100))
    assert got == spans(*expected)


def gap(a: float, b: float, cause: Cause) -> Gap:
    return Gap(t(a), t(b), cause)


GAPS = [
    pytest.param(spans((0, 100)), {}, [], id="all-recorded"),
    pytest.param([], {}, [gap(0, 100, "unknown")], id="nothing-recorded-nothing-known"),
    pytest.param(
        spans((10, 40), (60, 90)), {},
        [gap(0, 10, "unknown"), gap(40, 60, "unknown"), gap(90, 100, "unknown")],
        id="gaps-between-ranges",
    ),
    pytest.param(
        spans((0, 40), (60, 100)), {"offline": spans((45, 55))},
        [gap(40, 45, "unknown"), gap(45, 55, "offline"), gap(55, 60, "unknown")],
        id="offline-inside-a-gap",
    ),
    pytest.param(
        spans((0, 40), (60, 100)), {"offline": spans((30, 70))},
        [gap(40, 60, "offline")], id="offline-beyond-the-gap-is-cut",
    ),
    # R6 before the subscription, then broadband stopped while offline: the precedence.
    pytest.param(
        spans((80, 100)),
        {
            "not_entitled": spans((0, 20)),
            "broadband_stopped": spans((30, 60)),
            "offline": spans((10, 50)),
        },
        [gap(0, 20, "not_entitled"), gap(20, 30, "offline"), gap(30, 60, "broadband_stopped"),
         gap(60, 80, "unknown")],
        id="precedence-not-entitled-broadband-offline",
    ),
    # Two periods of one cause that meet are one gap.
    pytest.param(
        [], {"offline": spans((0, 50), (50, 100))}, [gap(0, 100, "offline")],
        id="neighbouring-parts-of-one-cause-join",
    ),
    pytest.param(
        spans((0, 50)), {"broadband_stopped": spans((50, 100)), "offline": spans((50, 100))},
        [gap(50, 100, "broadband_stopped")], id="stopped-before-offline",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("ranges", "known", "expected"), GAPS)
def test_timeline_gaps(
    ranges: list[tuple[datetime, datetime]],
    known: dict[Cause, list[tuple[datetime, datetime]]],
    expected: list[Gap],
) -> None:
    assert timeline_gaps((t(0), t(100)), ranges, known) == expected


def test_no_window_no_gaps() -> None:
    assert timeline_gaps(None, [], {"offline": spans((0, 10))}) == []


@pytest.mark.parametrize(
    ("periods", "expected"),
    [
        ([], []),
        # Stopped before the window, resumed inside it.
        ([(-50, 30)], [(0, 30)]),
        # Still stopped: to the window's end.
        ([(40, None)], [(40, 100)]),
        # Ended before, or began after, the window: outside it.
        ([(-50, -10), (120, None)], []),
        # Resumed at the stop's instant (an emergency lapse): empty, left out.
        ([(20, 20), (60, 80)], [(60, 80)]),
        # Out of order in, in order out.
        ([(60, 80), (10, 20)], [(10, 20), (60, 80)]),
    ],
)
def test_inactive_spans(
    periods: list[tuple[float, float | None]], expected: list[tuple[float, float]]
) -> None:
    """R8: the parts of the window inside the account's inactive periods (the history the
    boundary rule reads) are the broadband_stopped gaps' candidates."""
    got = inactive_spans(
        [InactivePeriod("stopped", t(a), None if b is None else t(b)) for a, b in periods],
        t(0),
        t(100),
    )
    assert got == [(t(a), t(b)) for a, b in expected]
