"""MP4 export (issue 15, item 2): the remux of real H.264 segments, read back by ffprobe,
and the pure rules of exports and the family cloud (R14, R15).

Segments are encoded as cameras encode them (``simulators.media.encode_segment``: H.264 in
MPEG-TS, the wall time on the 90 kHz clock). ffprobe reads each export: its duration must
be the recorded seconds, its packets' timestamps must never go back.
"""

from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import pytest

from devices.broadband import FamilyCloudStatus
from devices.errors import Conflict, Gone, Invalid
from gateway.errors import http_status
from replay.clips import (
    MAX_EXPORT,
    FamilyCloudUse,
    NothingRecorded,
    export_refusal,
    family_cloud_refusal,
    quota_refusal,
)
from replay.export import NothingToExport, Source, remux_mp4, timeline
from replay.object_keys import family_clip_key
from simulators.media import encode_segment, synthetic_segment
from simulators.scene import Scene
from simulators.stream import KEYFRAME_SECONDS

T = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
S = timedelta(seconds=1)
#: The 33-bit MPEG-TS clock wraps every 2^33 / 90,000 s (about 26.5 hours).
WRAP_S = (1 << 33) / 90_000


@functools.cache
def segment(start: datetime, seconds: float = 10) -> bytes:
    """A camera's segment recorded from ``start`` (cached: the suite encodes each once)."""
    return encode_segment(Scene(seed="export"), start, seconds)


@dataclass(frozen=True, slots=True)
class Probe:
    duration: float
    dts: list[int]
    pts: list[int]
    keyframes: int
    codec: str


def probe(path: Path) -> Probe:
    """What ffprobe reads of an MP4: its duration, its video packets' timestamps."""

    def run(*args: str) -> str:
        done = subprocess.run(
            ["ffprobe", "-v", "error", *args, str(path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return done.stdout

    duration = float(run("-show_entries", "format=duration", "-of", "csv=p=0"))
    codec = run("-select_streams", "v:0", "-show_entries", "stream=codec_name", "-of", "csv=p=0")
    rows = run(
        "-select_streams", "v:0", "-show_entries", "packet=pts,dts,flags", "-of", "csv=p=0"
    ).split()
    pts, dts, keys = [], [], 0
    for row in rows:
        p, d, flags = row.split(",")
        pts.append(int(p))
        dts.append(int(d))
        keys += "K" in flags
    return Probe(duration, dts, pts, keys, codec.strip())


def assert_monotonic(found: Probe) -> None:
    """No backwards timestamps: decoding times rise, from 0; presentation never goes back
    (the camera encodes no B-frames)."""
    assert found.dts[0] == 0
    assert all(b > a for a, b in zip(found.dts, found.dts[1:], strict=False))
    assert all(b >= a for a, b in zip(found.pts, found.pts[1:], strict=False))


def run_of(start: datetime, count: int) -> list[Source]:
    """``count`` back-to-back 10-s segments from ``start``."""
    return [Source(start + 10 * i * S, segment(start + 10 * i * S)) for i in range(count)]


def test_back_to_back_segments_make_one_mp4_of_their_seconds(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    done = remux_mp4(run_of(T, 6), out, start=T, end=T + 60 * S)
    found = probe(out)
    assert found.codec == "h264"
    assert abs(found.duration - 60) <= 1
    assert (done.seconds, done.segments, done.skipped, done.first) == (60.0, 6, 0, T)
    assert len(found.dts) == done.packets == 600  # 10 fps, every frame copied
    assert found.keyframes == 60 // KEYFRAME_SECONDS, "copied as recorded: no re-encoding"
    assert_monotonic(found)


def test_gaps_are_skipped_and_restarted_clocks_continue(tmp_path: Path) -> None:
    """Three runs of recording (20 s, 20 s, 10 s) with gaps between; the fourth segment's
    camera clock restarted (its timestamps are a 2021 wall time, far behind), and the
    fifth's was never set (1970): 50 recorded seconds, timestamps continuous."""
    sources = [
        *run_of(T, 2),
        Source(T + 60 * S, segment(T + 60 * S)),
        Source(T + 70 * S, segment(datetime(2021, 3, 1, tzinfo=UTC))),
        Source(T + 300 * S, segment(datetime(1970, 1, 1, 0, 0, 5, tzinfo=UTC))),
    ]
    out = tmp_path / "gaps.mp4"
    done = remux_mp4(sources, out, start=T, end=T + 600 * S)
    found = probe(out)
    assert abs(found.duration - 50) <= 1
    assert done.seconds == 50.0
    assert_monotonic(found)


def test_the_33_bit_clock_wrapping_does_not_send_time_back(tmp_path: Path) -> None:
    """Segments recorded across the instant the 90 kHz MPEG-TS clock wraps (every ~26.5 h):
    one before, one across (wrapped halfway), one after."""
    wrap = datetime.fromtimestamp(round(WRAP_S * 18_500, 3), UTC)
    start = (wrap - 15 * S).replace(microsecond=0)
    out = tmp_path / "wrap.mp4"
    done = remux_mp4(run_of(start, 3), out, start=start, end=start + 30 * S)
    found = probe(out)
    assert abs(found.duration - 30) <= 1
    assert done.seconds == 30.0
    assert_monotonic(found)


@pytest.mark.parametrize(
    ("start", "end", "seconds", "first"),
    [
        # The range opens between keyframes (one every 2 s): the copy opens on the one
        # before, at 14 s.
        pytest.param(15, 40, 26.0, 14, id="opens-on-the-keyframe-before-start"),
        # It ends mid-segment: the frames shown before 25 s (20.0 .. 24.9).
        pytest.param(10, 25, 15.0, 10, id="ends-at-the-last-frame-before-end"),
        # Exactly one segment.
        pytest.param(20, 30, 10.0, 20, id="one-segment"),
    ],
)
def test_the_range_is_cut_on_frames(
    tmp_path: Path, start: int, end: int, seconds: float, first: int
) -> None:
    out = tmp_path / "cut.mp4"
    done = remux_mp4(run_of(T, 6), out, start=T + start * S, end=T + end * S)
    found = probe(out)
    assert (done.seconds, done.first) == (seconds, T + first * S)
    assert abs(found.duration - seconds) <= 1
    assert_monotonic(found)


def test_unreadable_segments_are_left_out_and_counted(tmp_path: Path) -> None:
    sources = [
        Source(T, segment(T)),
        Source(T + 10 * S, synthetic_segment(20_000, "placeholder")),  # no video
        Source(T + 20 * S, b"not video at all"),
        Source(T + 30 * S, segment(T + 30 * S)),
    ]
    out = tmp_path / "partial.mp4"
    done = remux_mp4(sources, out, start=T, end=T + 40 * S)
    assert (done.segments, done.skipped, done.seconds) == (2, 2, 20.0)
    assert abs(probe(out).duration - 20) <= 1


def test_a_segment_of_another_size_is_left_out(tmp_path: Path) -> None:
    """One MP4 track has one picture size: a segment of another is not mixed in."""
    other = encode_segment(
        Scene(width=160, height=90, seed="small"), T + 10 * S, 10, width=160, height=90
    )
    sources = [Source(T, segment(T)), Source(T + 10 * S, other)]
    done = remux_mp4(sources, tmp_path / "one-size.mp4", start=T, end=T + 20 * S)
    assert (done.segments, done.skipped) == (1, 1)
    # The track takes the size of the first segment exported, not of one before the range.
    sources = [Source(T - 10 * S, other), Source(T, segment(T))]
    done = remux_mp4(sources, tmp_path / "first.mp4", start=T, end=T + 10 * S)
    assert (done.segments, done.skipped) == (1, 0)


def test_nothing_in_the_range_is_nothing_to_export(tmp_path: Path) -> None:
    with pytest.raises(NothingToExport):
        remux_mp4(run_of(T, 1), tmp_path / "none.mp4", start=T + 10 * S, end=T + 20 * S)
    with pytest.raises(NothingToExport):
        remux_mp4([Source(T, b"garbage")], tmp_path / "none.mp4", start=T, end=T + 10 * S)


def test_sources_must_come_in_start_order(tmp_path: Path) -> None:
    later, earlier = run_of(T, 2)[::-1]
    with pytest.raises(ValueError, match="start order"):
        remux_mp4([later, earlier], tmp_path / "x.mp4", start=T, end=T + 20 * S)


# --- the per-segment timeline (pure) ---------------------------------------------------------


@dataclass
class Pkt:
    """What :func:`replay.export.timeline` reads of a packet."""

    dts: int | None
    pts: int | None
    duration: int = 0


def _dts(raw: list[int | None]) -> list[int]:
    packets: list[Any] = [Pkt(d, d) for d in raw]
    return [t.dts for t in timeline(packets, step=10, max_jump=100)]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param([500, 510, 520], [0, 10, 20], id="counted-from-the-first-packet"),
        # The clock restarts: the packet follows the previous one by a step.
        pytest.param([500, 510, 3, 13], [0, 10, 20, 30], id="restart-backwards"),
        # A jump ahead beyond max_jump (100) is a jump, not time recorded.
        pytest.param([0, 10, 5000, 5010], [0, 10, 20, 30], id="jump-forward"),
        # A step of max_jump or less is time recorded (a dropped frame or two).
        pytest.param([0, 10, 40], [0, 10, 40], id="dropped-frames-kept"),
        # The same time twice is a discontinuity too (decoding times must rise).
        pytest.param([0, 10, 10], [0, 10, 20], id="repeated-time"),
        pytest.param([None, 0, 10], [0, 10], id="untimed-packet-dropped"),
    ],
)
def test_timeline(raw: list[int | None], expected: list[int]) -> None:
    assert _dts(raw) == expected


def test_timeline_keeps_the_composition_offset() -> None:
    packets: list[Any] = [Pkt(100, 120, 10), Pkt(110, 110, 10)]
    assert [(t.dts, t.pts, t.duration) for t in timeline(packets, 10, 100)] == [
        (0, 20, 10),
        (10, 10, 10),
    ]


# --- the rules (pure) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        pytest.param(MAX_EXPORT, None, id="one-hour"),
        pytest.param(MAX_EXPORT + S, (400, "range_too_long"), id="one-hour-and-a-second"),
        pytest.param(timedelta(0), (400, "invalid_range"), id="empty"),
        pytest.param(-S, (400, "invalid_range"), id="backwards"),
    ],
)
def test_export_refusal(length: timedelta, expected: tuple[int, str] | None) -> None:
    refusal = export_refusal(T, T + length)
    if expected is None:
        assert refusal is None
    else:
        assert isinstance(refusal, Invalid)
        assert (http_status(refusal), refusal.code) == expected


@pytest.mark.parametrize(
    ("used", "adding", "quota", "refused"),
    [
        pytest.param(0, 100, 100, False, id="fills-exactly"),
        pytest.param(1, 100, 100, True, id="one-byte-over"),
        pytest.param(100, 0, 100, False, id="nothing-more"),
        pytest.param(100, 1, 100, True, id="full"),
    ],
)
def test_quota_refusal_r14(used: int, adding: int, quota: int, refused: bool) -> None:
    refusal = quota_refusal(used, adding, quota)
    assert (refusal is not None) == refused
    if refusal is not None:
        assert isinstance(refusal, Conflict)
        assert (http_status(refusal), refusal.code, refusal.rule) == (409, "quota_exceeded", "R14")


CLOSED = (409, "family_cloud_closed")
DELETED = (404, "family_cloud_deleted")
R15_TABLE = [
    *[pytest.param("open", use, None, id=f"open-{use}") for use in get_args(FamilyCloudUse)],
    # Closed: no saves (R15); reading and deleting go on (as R18 has it for an over-quota cloud).
    pytest.param("closed", "save", CLOSED, id="closed-save"),
    pytest.param("closed", "list", None, id="closed-list"),
    pytest.param("closed", "download", None, id="closed-download"),
    pytest.param("closed", "delete", None, id="closed-delete"),
    # Deleted: no saves, and nothing left to read or delete.
    pytest.param("deleted", "save", CLOSED, id="deleted-save"),
    pytest.param("deleted", "list", DELETED, id="deleted-list"),
    pytest.param("deleted", "download", DELETED, id="deleted-download"),
    pytest.param("deleted", "delete", DELETED, id="deleted-delete"),
]


@pytest.mark.parametrize(("status", "use", "expected"), R15_TABLE)
def test_family_cloud_refusal_r15(
    status: FamilyCloudStatus, use: FamilyCloudUse, expected: tuple[int, str] | None
) -> None:
    refusal = family_cloud_refusal(status, use)
    if expected is None:
        assert refusal is None
    else:
        assert refusal is not None
        assert isinstance(refusal, Conflict if expected[0] == 409 else Gone)
        assert (http_status(refusal), refusal.code, refusal.rule) == (*expected, "R15")


def test_no_recording_is_not_found() -> None:
    error = NothingRecorded("cam-1", T, T + S)
    assert (http_status(error), error.code) == (404, "no_recording")
    assert "cam-1" in error.message


def test_family_clip_key() -> None:
    key = family_clip_key("acc-1", "cam-1", T, T + 600 * S, "ab12")
    assert key == "family/acc-1/2026/11/20/020000-cam-1-600s-ab12.mp4"
    with pytest.raises(ValueError, match="tag"):
        family_clip_key("acc-1", "cam-1", T, T + S, "a/b")
