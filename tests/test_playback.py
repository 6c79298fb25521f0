"""Who may watch what, and for how long (R5, R6, R8): viewing, HLS, retention, reconcile.

Expected values are written out by hand; the arithmetic is in the row comments.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest

from devices.broadband import AccountState
from gateway.errors import http_status
from replay.object_keys import SegmentKind, object_key
from replay.playback import (
    RangeChanges,
    Recorded,
    Refusal,
    expired,
    fold_ranges,
    hls_playlist,
    merge_ranges,
    playback_refusal,
    retention_cutoff,
    viewable,
    visible_ranges,
)
from replay.reconcile import (
    UPLOAD_GRACE,
    GrantFate,
    ReconcilePlan,
    RefusedDevice,
    grant_fate,
    reconcile_plan,
)

CST = timezone(timedelta(hours=8))
S = timedelta(seconds=1)
DAY = timedelta(days=1)
# A segment of subscription "sub-a" that ended at 10:00:10 on 1 May, kept 7 days (R5):
RECORDED = datetime(2026, 5, 1, 10, 0, 10, tzinfo=UTC)
EXPIRES = datetime(2026, 5, 8, 10, 0, 10, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Sub:
    subscription_id: str
    status: str


@dataclass(frozen=True, slots=True)
class Seg:
    subscription_id: str
    expires_at: datetime


SEG_A = Seg("sub-a", EXPIRES)
SUB_A = Sub("sub-a", "active")
SUB_A_GONE = Sub("sub-a", "unsubscribed")
SUB_B = Sub("sub-b", "active")  # R6: a new order after unsubscribing sub-a

VIEWING = [
    # --- R5 retention: 7 days after recording ----------------------------------------------
    pytest.param(SUB_A, "active", RECORDED, None, id="R5-just-recorded"),
    # 7 days - 1 s after recording: 8 May 10:00:09.
    pytest.param(SUB_A, "active", RECORDED + 7 * DAY - S, None, id="R5-7d-minus-1s-viewable"),
    pytest.param(SUB_A, "active", RECORDED + 7 * DAY, (404, "expired", "R5"), id="R5-exactly-7d"),
    pytest.param(
        SUB_A, "active", RECORDED + 7 * DAY + S, (404, "expired", "R5"), id="R5-7d-plus-1s-gone"
    ),
    # --- R5 unsubscription: never viewable from that moment ---------------------------------
    pytest.param(
        SUB_A_GONE, "active", RECORDED + S, (403, "unsubscribed", "R5"), id="R5-unsubscribed"
    ),
    pytest.param(None, "active", RECORDED + S, (403, "unsubscribed", "R5"), id="R5-no-current"),
    # --- R6: a new subscription does not see the old one's video ----------------------------
    pytest.param(
        SUB_B, "active", RECORDED + S, (403, "previous_subscription", "R6"),
        id="R6-resubscribed-new-id",
    ),
    # --- R8: broadband -----------------------------------------------------------------------
    pytest.param(
        SUB_A, "stopped", RECORDED + S, (403, "broadband_inactive", "R8"), id="R8-stopped"
    ),
    pytest.param(
        SUB_A, "torn_down", RECORDED + S, (403, "broadband_inactive", "R8"), id="R8-torn-down"
    ),
    # R8: the retention clock keeps running while stopped: resumed after 7 days + 1 s, the
    # segment is gone all the same.
    pytest.param(
        SUB_A, "active", RECORDED + 7 * DAY + S, (404, "expired", "R5"),
        id="R8-resumed-after-expiry-retention-did-not-pause",
    ),
    # Order: the subscription before broadband, broadband before expiry.
    pytest.param(
        SUB_A_GONE, "stopped", RECORDED + S, (403, "unsubscribed", "R5"),
        id="R5-before-R8",
    ),
    pytest.param(
        SUB_A, "stopped", RECORDED + 8 * DAY, (403, "broadband_inactive", "R8"),
        id="R8-before-expiry",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("current", "broadband", "now", "expected"), VIEWING)
def test_viewable(
    current: Sub | None,
    broadband: AccountState,
    now: datetime,
    expected: tuple[int, str, str] | None,
) -> None:
    answer = viewable(SEG_A, current_subscription=current, broadband_state=broadband, now=now)
    if expected is None:
        assert answer is True
    else:
        assert isinstance(answer, Refusal)
        assert not answer  # a refusal is falsy
        assert (http_status(answer.error()), answer.code, answer.rule) == expected
        assert answer.message


def test_viewable_compares_instants_across_zones() -> None:
    # 8 May 18:00:09 in Shanghai is 10:00:09 UTC, one second before expiry.
    now = datetime(2026, 5, 8, 18, 0, 9, tzinfo=CST)
    assert viewable(SEG_A, current_subscription=SUB_A, broadband_state="active", now=now) is True
    later = now + S
    assert not viewable(SEG_A, current_subscription=SUB_A, broadband_state="active", now=later)


REFUSALS = [
    pytest.param(SUB_A, "active", "active", None, id="R1-active-plan-active-broadband"),
    pytest.param(SUB_A, "active", "stopped", (403, "broadband_inactive"), id="R8-stopped"),
    pytest.param(SUB_A, "active", "torn_down", (403, "broadband_inactive"), id="R8-torn-down"),
    pytest.param(None, "unsubscribed", "active", (403, "unsubscribed"), id="R5-unsubscribed"),
    pytest.param(None, None, "active", (403, "not_entitled"), id="R1-never-a-plan"),
    # An inactive row passed as current counts as none.
    pytest.param(
        SUB_A_GONE, "unsubscribed", "active", (403, "unsubscribed"), id="R5-inactive-current"
    ),
    # The plan before broadband: resuming would not help.
    pytest.param(
        None, "unsubscribed", "stopped", (403, "unsubscribed"), id="R5-before-R8-unsubscribed"
    ),
    pytest.param(None, None, "stopped", (403, "not_entitled"), id="R1-before-R8-no-plan"),
    # R6: resubscribed; the new subscription is current and the device may be watched.
    pytest.param(SUB_B, "active", "active", None, id="R6-resubscribed"),
]  # fmt: skip


@pytest.mark.parametrize(("current", "last", "broadband", "expected"), REFUSALS)
def test_playback_refusal(
    current: Sub | None,
    last: str | None,
    broadband: AccountState,
    expected: tuple[int, str] | None,
) -> None:
    refusal = playback_refusal(current, last, broadband)
    if expected is None:
        assert refusal is None
    else:
        assert refusal is not None
        assert (http_status(refusal.error()), refusal.code) == expected


def test_playback_refusal_refuses_inconsistent_inputs() -> None:
    with pytest.raises(ValueError, match="latest subscription"):
        playback_refusal(None, "active", "active")


# --- retention cut-off -----------------------------------------------------------------------


def test_retention_cutoff_and_expired_agree() -> None:
    now = datetime(2026, 5, 8, 10, 0, 10, tzinfo=UTC)
    # 7 days before 8 May 10:00:10 is 1 May 10:00:10: a segment ending then is expired.
    assert retention_cutoff(7, now) == RECORDED
    assert retention_cutoff(1, now) == datetime(2026, 5, 7, 10, 0, 10, tzinfo=UTC)
    assert expired(EXPIRES, now)
    assert not expired(EXPIRES, now - S)
    assert expired(EXPIRES, now + S)
    with pytest.raises(ValueError, match="positive"):
        retention_cutoff(0, now)
    with pytest.raises(ValueError, match="offset"):
        expired(EXPIRES, now.replace(tzinfo=None))


# --- merged ranges ---------------------------------------------------------------------------


def t(text: str) -> datetime:
    """A time of 1 May 2026, UTC: ``t("10:00:05")``."""
    return datetime.fromisoformat(f"2026-05-01T{text}+00:00")


def seg(a: str, b: str) -> tuple[datetime, datetime]:
    return (t(a), t(b))


MERGES = [
    pytest.param([], 1.0, [], id="empty"),
    pytest.param([seg("10:00:00", "10:00:10")], 1.0, [seg("10:00:00", "10:00:10")], id="one"),
    pytest.param(
        [seg("10:00:00", "10:00:10"), seg("10:00:10", "10:00:20"), seg("10:00:20", "10:00:30")],
        1.0, [seg("10:00:00", "10:00:30")], id="adjacent",
    ),
    pytest.param(
        [seg("10:00:00", "10:00:10"), seg("10:00:11", "10:00:20")],
        1.0, [seg("10:00:00", "10:00:20")], id="gap-exactly-tolerance-merged",
    ),
    pytest.param(
        [seg("10:00:00", "10:00:10"), seg("10:00:11.5", "10:00:20")],
        1.0, [seg("10:00:00", "10:00:10"), seg("10:00:11.5", "10:00:20")],
        id="gap-1.5s-split",
    ),
    pytest.param(
        [seg("10:00:00", "10:01:00"), seg("10:00:30", "10:01:30")],
        1.0, [seg("10:00:00", "10:01:30")], id="overlapping-event-clips",
    ),
    pytest.param(
        [seg("10:00:00", "10:01:00"), seg("10:00:10", "10:00:20"), seg("10:01:00", "10:01:10")],
        1.0, [seg("10:00:00", "10:01:10")], id="contained-segment-keeps-longer-end",
    ),
    pytest.param(
        [seg("10:00:20", "10:00:30"), seg("10:00:00", "10:00:10"), seg("10:00:10", "10:00:20")],
        1.0, [seg("10:00:00", "10:00:30")], id="unsorted-input",
    ),
    pytest.param(
        [seg("10:00:00", "10:00:10"), seg("10:00:10", "10:00:20"), seg("10:00:21", "10:00:30")],
        0.0, [seg("10:00:00", "10:00:20"), seg("10:00:21", "10:00:30")],
        id="zero-tolerance-touching-merge-1s-gap-splits",
    ),
    pytest.param(
        [seg("10:00:00", "10:00:10"), seg("10:00:15", "10:00:25"), seg("11:00:00", "11:00:10")],
        5.0, [seg("10:00:00", "10:00:25"), seg("11:00:00", "11:00:10")],
        id="wider-tolerance",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("segments", "tolerance", "expected"), MERGES)
def test_merge_ranges(
    segments: list[tuple[datetime, datetime]],
    tolerance: float,
    expected: list[tuple[datetime, datetime]],
) -> None:
    assert merge_ranges(segments, gap_tolerance_s=tolerance) == expected


@pytest.mark.parametrize(
    ("segments", "tolerance"),
    [
        pytest.param([seg("10:00:10", "10:00:10")], 1.0, id="empty-segment"),
        pytest.param([seg("10:00:10", "10:00:00")], 1.0, id="backwards-segment"),
        pytest.param([seg("10:00:00", "10:00:10")], -1.0, id="negative-tolerance"),
        pytest.param([seg("10:00:00", "10:00:10")], float("nan"), id="nan-tolerance"),
    ],
)
def test_merge_ranges_refuses(segments: list[tuple[datetime, datetime]], tolerance: float) -> None:
    with pytest.raises(ValueError):  # noqa: PT011  # each row's message differs
        merge_ranges(segments, gap_tolerance_s=tolerance)


# --- kept ranges (the timeline) --------------------------------------------------------------


def k(a: str, b: str, range_id: int | None = None) -> Recorded:
    """10:``a`` to 10:``b`` (minutes:seconds), kept a day after it ends: a stored range
    (``range_id``) or a new segment."""
    return Recorded(t(f"10:{a}"), t(f"10:{b}"), t(f"10:{b}") + DAY, range_id)


FOLDS = [
    pytest.param(
        [], [k("00:00", "00:10"), k("00:10", "00:20"), k("00:30", "00:40")],
        RangeChanges([k("00:00", "00:20"), k("00:30", "00:40")], [], []),
        id="first-segments-become-ranges",
    ),
    pytest.param(
        [k("00:00", "00:20", 1)], [k("00:20.5", "00:30")],
        RangeChanges([], [k("00:00", "00:30", 1)], []),
        id="a-segment-within-the-tolerance-extends-the-range",
    ),
    pytest.param(
        [k("00:00", "00:20", 1)], [k("00:21", "00:30")],
        RangeChanges([], [k("00:00", "00:30", 1)], []),
        id="a-gap-of-exactly-the-tolerance-joins",
    ),
    pytest.param(
        [k("00:00", "00:20", 1)], [k("00:21.001", "00:30")],
        RangeChanges([k("00:21.001", "00:30")], [], []),
        id="a-longer-gap-starts-a-range",
    ),
    pytest.param(
        [k("00:00", "00:10", 1), k("00:20", "00:30", 2), k("50:00", "50:10", 3)],
        [k("00:10", "00:20")],
        RangeChanges([], [k("00:00", "00:30", 1)], [2]),
        id="a-late-segment-joins-two-ranges-into-the-earlier",
    ),
    pytest.param(
        [k("00:00", "00:30", 1)], [k("00:05", "00:15")],
        RangeChanges([], [], []),
        id="a-segment-inside-a-range-changes-nothing",
    ),
    pytest.param(
        [k("00:10", "00:30", 1)], [k("00:00", "00:10")],
        RangeChanges([], [k("00:00", "00:30", 1)], []),
        id="a-segment-before-a-range-moves-its-start-not-its-expiry",
    ),
    pytest.param(
        [k("00:00", "00:20", 1), k("00:10", "00:40", 2)], [k("00:40", "00:50")],
        RangeChanges([], [k("00:00", "00:50", 1)], [2]),
        id="overlapping-stored-ranges-heal-when-touched",
    ),
    pytest.param(
        [k("00:00", "00:10", 7)], [k("30:00", "30:10")],
        RangeChanges([k("30:00", "30:10")], [], []),
        id="an-untouched-range-is-left-alone",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("stored", "new", "expected"), FOLDS)
def test_fold_ranges(stored: list[Recorded], new: list[Recorded], expected: RangeChanges) -> None:
    assert fold_ranges(stored, new) == expected


def test_fold_ranges_agrees_with_merging_all_segments() -> None:
    """Folding segments in any batches gives the ranges that merging them all at once does."""
    segments = [
        k("00:00", "00:10"), k("00:40", "00:50"), k("00:10.5", "00:20"),
        k("00:25", "00:35"), k("00:20", "00:25"), k("01:00", "01:10"),
    ]  # fmt: skip
    stored: dict[int, Recorded] = {}
    for first in range(0, len(segments), 2):  # three batches, out of time order
        change = fold_ranges(stored.values(), segments[first : first + 2])
        for gone in change.deletes:
            del stored[gone]
        for r in change.updates:
            assert r.range_id is not None
            stored[r.range_id] = r
        for r in change.inserts:
            rid = max(stored, default=0) + 1
            stored[rid] = Recorded(r.start, r.end, r.expires_at, rid)
    assert sorted((r.start, r.end) for r in stored.values()) == merge_ranges(
        (r.start, r.end) for r in segments
    )


VISIBLE = [
    pytest.param(
        [seg("10:00:00", "10:00:30"), seg("10:00:40", "10:01:00")],
        "10:00:10", "10:00:50", "09:00:00",
        [seg("10:00:10", "10:00:30"), seg("10:00:40", "10:00:50")],
        id="clipped-to-the-asked-window",
    ),
    pytest.param(
        [seg("10:00:00", "10:00:30"), seg("10:00:40", "10:01:00")],
        "09:00:00", "11:00:00", "10:00:20",
        [seg("10:00:20", "10:00:30"), seg("10:00:40", "10:01:00")],
        id="clipped-at-the-retention-cut-off",
    ),
    pytest.param(
        [seg("10:00:00", "10:00:30")], "09:00:00", "11:00:00", "10:00:30", [],
        id="a-range-that-ended-at-the-cut-off-is-expired",
    ),
    pytest.param(
        [seg("10:00:00", "10:00:30"), seg("10:00:20", "10:00:40")],
        "09:00:00", "11:00:00", "09:00:00",
        [seg("10:00:00", "10:00:40")],
        id="overlapping-stored-ranges-merge",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("stored", "start", "end", "cutoff", "expected"), VISIBLE)
def test_visible_ranges(
    stored: list[tuple[datetime, datetime]],
    start: str,
    end: str,
    cutoff: str,
    expected: list[tuple[datetime, datetime]],
) -> None:
    assert visible_ranges(stored, start=t(start), end=t(end), cutoff=t(cutoff)) == expected


# --- HLS playlist ----------------------------------------------------------------------------

GOLDEN = """\
#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:10
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-PROGRAM-DATE-TIME:2026-05-01T10:00:00.000Z
#EXTINF:10.000,
https://s3.example/a.ts?sig=1
#EXTINF:9.960,
https://s3.example/b.ts?sig=2
#EXT-X-DISCONTINUITY
#EXT-X-PROGRAM-DATE-TIME:2026-05-01T10:00:35.250Z
#EXTINF:8.500,
https://s3.example/c.ts?sig=3
#EXT-X-ENDLIST
"""


def test_hls_playlist_golden_three_segments_one_gap() -> None:
    # a: 10:00:00 + 10 s; b: 10:00:10 + 9.96 s ends 10:00:19.96; c starts 10:00:35.25, a
    # 15.29 s gap → discontinuity. Longest 10 s → TARGETDURATION 10. b's start is given in
    # Shanghai time (18:00:10+08:00 = 10:00:10Z).
    segments = [
        ("https://s3.example/a.ts?sig=1", t("10:00:00"), 10.0),
        ("https://s3.example/b.ts?sig=2", datetime(2026, 5, 1, 18, 0, 10, tzinfo=CST), 9.96),
        ("https://s3.example/c.ts?sig=3", t("10:00:35.250"), 8.5),
    ]
    assert hls_playlist(segments) == GOLDEN
    assert hls_playlist(list(reversed(segments))) == GOLDEN  # played in start order


def test_hls_playlist_target_duration_is_the_ceiling_of_the_longest() -> None:
    # 10.2 s → 11; 9.96 s and 10.2 s end 10:00:09.96 and 10:00:20.16: within 1 s, no gap.
    text = hls_playlist([("a", t("10:00:00"), 9.96), ("b", t("10:00:10"), 10.2)])
    assert "#EXT-X-TARGETDURATION:11\n" in text
    assert "#EXT-X-DISCONTINUITY" not in text
    assert text.count("#EXT-X-PROGRAM-DATE-TIME") == 1
    # A larger target may be asked for; a smaller one breaks RFC 8216 §4.3.3.1.
    assert "#EXT-X-TARGETDURATION:60\n" in hls_playlist(
        [("a", t("10:00:00"), 10.0)], target_duration=60
    )
    with pytest.raises(ValueError, match="shorter than the longest"):
        hls_playlist([("a", t("10:00:00"), 10.2)], target_duration=10)


def test_hls_playlist_marks_overlapping_event_clips_as_discontinuous() -> None:
    # R1 event clips of two events 30 s apart overlap: the second starts before the first
    # ends, so its timestamps go back and the player must be told.
    text = hls_playlist([("e1", t("10:00:00"), 60.0), ("e2", t("10:00:30"), 60.0)])
    assert text.splitlines()[8:11] == [
        "#EXT-X-DISCONTINUITY",
        "#EXT-X-PROGRAM-DATE-TIME:2026-05-01T10:00:30.000Z",
        "#EXTINF:60.000,",
    ]


@pytest.mark.parametrize(
    "segments",
    [
        pytest.param([], id="no-segments"),
        pytest.param([("a\n#EXT-X-ENDLIST", t("10:00:00"), 10.0)], id="url-with-newline"),
        pytest.param([("", t("10:00:00"), 10.0)], id="empty-url"),
        pytest.param([("a", t("10:00:00"), 0.0)], id="zero-duration"),
        pytest.param([("a", t("10:00:00"), float("inf"))], id="infinite-duration"),
        pytest.param([("a", datetime(2026, 5, 1), 10.0)], id="naive-start"),  # noqa: DTZ001
    ],
)
def test_hls_playlist_refuses(segments: list[tuple[str, datetime, float]]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011  # each row's message differs
        hls_playlist(segments)


# --- reconcile -------------------------------------------------------------------------------

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
OLD = NOW - timedelta(hours=2)  # well past a 10-minute grace period
GRACE_S = 600.0


def key(device: str, n: int) -> str:
    at = datetime(2026, 5, 1, 10, 0, n, tzinfo=UTC)
    return object_key("7d", device, at, f"s{n}", SegmentKind.CONTINUOUS)


def legacy_key(device: str, n: int) -> str:
    """A key of the layout before issue 16 (a directory per camera and day)."""
    return f"rec/7d/{device}/2026/05/01/1000{n:02d}-continuous-s{n}.ts"


def listing(device: str, count: int, modified: datetime = OLD) -> list[tuple[str, int, datetime]]:
    """``count`` objects of 100 bytes each, ``s0`` … ``s{count-1}``."""
    return [(key(device, n), 100, modified) for n in range(count)]


def plan(
    objects: list[tuple[str, int, datetime]], indexed: set[str], **options: object
) -> ReconcilePlan:
    return reconcile_plan(objects, indexed, now=NOW, grace_s=GRACE_S, **options)  # type: ignore[arg-type]


def test_reconcile_half_orphans_are_deleted() -> None:
    # 2 of cam-1's 4 objects have no index row: exactly half passes the guard.
    result = plan(listing("cam-1", 4), {key("cam-1", 0), key("cam-1", 1)})
    assert result == ReconcilePlan(
        delete=(key("cam-1", 2), key("cam-1", 3)),
        delete_bytes=200,
        missing=(),
        refused_devices=(),
        foreign=(),
    )


def test_reconcile_more_than_half_is_refused_without_the_flag() -> None:
    # 3 of 4 orphans: more than half, nothing of cam-1 is deleted.
    result = plan(listing("cam-1", 4), {key("cam-1", 0)})
    assert result.delete == ()
    assert result.delete_bytes == 0
    assert result.refused_devices == (
        RefusedDevice(
            device_id="cam-1",
            orphans=(key("cam-1", 1), key("cam-1", 2), key("cam-1", 3)),
            objects=4,
            reason=result.refused_devices[0].reason,
        ),
    )
    assert "3 of the device's 4" in result.refused_devices[0].reason


def test_reconcile_flag_overrides_the_guard() -> None:
    result = plan(listing("cam-1", 4), {key("cam-1", 0)}, allow_mass_delete=True)
    assert result.delete == (key("cam-1", 1), key("cam-1", 2), key("cam-1", 3))
    assert result.delete_bytes == 300
    assert result.refused_devices == ()


def test_reconcile_lost_index_deletes_nothing() -> None:
    # Issue 4, acceptance 5: a device's index rows deleted, reconcile deletes nothing.
    result = plan(listing("cam-1", 3) + listing("cam-2", 2), {key("cam-2", 0), key("cam-2", 1)})
    assert result.delete == ()
    assert [d.device_id for d in result.refused_devices] == ["cam-1"]
    assert result.refused_devices[0].objects == 3


def test_reconcile_guard_is_per_device() -> None:
    # cam-1 lost its index (refused); cam-2 has 1 orphan in 3 objects (deleted).
    objects = listing("cam-1", 2) + listing("cam-2", 3)
    result = plan(objects, {key("cam-2", 0), key("cam-2", 1)})
    assert result.delete == (key("cam-2", 2),)
    assert [d.device_id for d in result.refused_devices] == ["cam-1"]


def test_reconcile_counts_a_device_across_both_key_layouts() -> None:
    """A camera recorded before and after issue 16 has keys of both layouts: the guard
    counts them together (2 orphans of 4 objects: deleted, exactly half)."""
    objects = listing("cam-1", 2) + [(legacy_key("cam-1", n), 100, OLD) for n in (7, 8)]
    result = plan(objects, {key("cam-1", 0), legacy_key("cam-1", 7)})
    assert result.delete == tuple(sorted((key("cam-1", 1), legacy_key("cam-1", 8))))
    assert result.refused_devices == ()
    assert result.foreign == ()


@pytest.mark.parametrize(
    ("age", "deleted"),
    [
        pytest.param(timedelta(seconds=599), False, id="younger-than-grace-kept"),
        pytest.param(timedelta(seconds=600), False, id="exactly-grace-kept"),
        pytest.param(timedelta(seconds=601), True, id="older-than-grace-deleted"),
    ],
)
def test_reconcile_grace_period(age: timedelta, deleted: bool) -> None:
    # One orphan among 4 objects (under half), modified ``age`` before now.
    objects = [*listing("cam-1", 3), (key("cam-1", 9), 50, NOW - age)]
    result = plan(objects, {key("cam-1", n) for n in range(3)})
    assert result.delete == ((key("cam-1", 9),) if deleted else ())
    assert result.refused_devices == ()


def test_reconcile_young_objects_count_in_the_device_total_but_are_not_orphans() -> None:
    # 2 old orphans + 2 young unindexed uploads in flight: 2 of 4 objects → exactly half.
    objects = listing("cam-1", 2) + [(key("cam-1", 5 + n), 100, NOW - S) for n in range(2)]
    result = plan(objects, set())
    assert result.delete == (key("cam-1", 0), key("cam-1", 1))


def test_reconcile_max_fraction_parameter() -> None:
    indexed_three = {key("cam-1", n) for n in range(3)}
    # 1 of 4 = 25%: at most a quarter passes; 2 of 4 does not.
    assert plan(listing("cam-1", 4), indexed_three, max_fraction=0.25).delete == (key("cam-1", 3),)
    refused = plan(listing("cam-1", 4), indexed_three - {key("cam-1", 2)}, max_fraction=0.25)
    assert refused.delete == ()
    assert [d.device_id for d in refused.refused_devices] == ["cam-1"]


def test_reconcile_reports_missing_objects_and_foreign_keys() -> None:
    objects = [
        *listing("cam-1", 2),
        ("rec/7d/cam-1/notes.txt", 10, OLD),
        ("family/acc-1/2026/05/01/100000-s1.ts", 10, OLD),
    ]
    indexed = {key("cam-1", 0), key("cam-1", 1), key("cam-1", 7), key("cam-2", 0)}
    result = plan(objects, indexed)
    assert result == ReconcilePlan(
        delete=(),
        delete_bytes=0,
        missing=tuple(sorted((key("cam-1", 7), key("cam-2", 0)))),
        refused_devices=(),
        foreign=("family/acc-1/2026/05/01/100000-s1.ts", "rec/7d/cam-1/notes.txt"),
    )


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"grace_s": -1.0}, id="negative-grace"),
        pytest.param({"max_fraction": 0.0}, id="zero-fraction"),
        pytest.param({"max_fraction": 1.5}, id="fraction-over-1"),
        pytest.param({"now": datetime(2026, 5, 1)}, id="naive-now"),  # noqa: DTZ001
    ],
)
def test_reconcile_checks_its_arguments(options: dict[str, object]) -> None:
    arguments: dict[str, object] = {"now": NOW, "grace_s": GRACE_S, **options}
    with pytest.raises(ValueError):  # noqa: PT011  # each row's message differs
        reconcile_plan([], set(), **arguments)  # type: ignore[arg-type]


# --- the grant's fate (replay.reconcile) ---------------------------------------------------

GRANT_TTL = timedelta(seconds=60)
GRANTED_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
GRANT_EXPIRES = GRANTED_AT + timedelta(days=7)


@pytest.mark.parametrize(
    ("since_granted", "landed", "fate"),
    [
        # The URL is alive, or an upload started before expiry may still be running.
        (timedelta(0), False, GrantFate.IN_FLIGHT),
        (GRANT_TTL, True, GrantFate.IN_FLIGHT),
        (GRANT_TTL + UPLOAD_GRACE - timedelta(seconds=1), False, GrantFate.IN_FLIGHT),
        # Never landed: dropped once the URL is long dead.
        (GRANT_TTL + UPLOAD_GRACE, False, GrantFate.DROP),
        (timedelta(days=30), False, GrantFate.DROP),
        # Landed: its notice may still come (the camera offline, the gateway retrying a
        # database outage), so its object stays owned until the segment would have expired.
        (GRANT_TTL + UPLOAD_GRACE, True, GrantFate.LANDED),
        (timedelta(hours=2), True, GrantFate.LANDED),
        (timedelta(days=7) - timedelta(seconds=1), True, GrantFate.LANDED),
        (timedelta(days=7), True, GrantFate.DROP),
    ],
)
def test_a_grant_is_kept_while_its_upload_or_its_notice_may_still_come(
    since_granted: timedelta, landed: bool, fate: GrantFate
) -> None:
    got = grant_fate(
        granted_at=GRANTED_AT,
        url_ttl=GRANT_TTL,
        landed=landed,
        expires_at=GRANT_EXPIRES,
        now=GRANTED_AT + since_granted,
    )
    assert got is fate
