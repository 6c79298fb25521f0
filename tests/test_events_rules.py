"""Which video shows an event, and which event clips collide (R1, issue 15): pure rules.

Tables written out by hand; times are seconds after T.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import pytest

from replay.events import Clip, link_event, overlapping_clip, windows
from replay.object_keys import service_segment_id
from replay.plans import Family
from replay.recording import Accept, Entitlement, Refuse, SegmentKind, UploadRequest, decide_upload

T = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
SHA = "ab" * 32


def t(seconds: float) -> datetime:
    return T + timedelta(seconds=seconds)


class Seg(NamedTuple):
    segment_id: str
    start: datetime
    end: datetime
    indexed_at: datetime


def seg(name: str, start: float, end: float, indexed: float) -> Seg:
    return Seg(name, t(start), t(end), t(indexed))


LINKS = [
    pytest.param(5, [seg("a", 0, 10, 10)], "a", id="inside"),
    pytest.param(0, [seg("a", 0, 10, 10)], "a", id="at-the-start-is-inside"),
    pytest.param(10, [seg("a", 0, 10, 10)], None, id="at-the-end-is-outside"),
    pytest.param(10, [seg("a", 0, 10, 10), seg("b", 10, 20, 20)], "b", id="the-next-segment"),
    pytest.param(15, [seg("a", 0, 10, 10)], None, id="in-a-gap"),
    # A continuous segment indexed first, then an event clip over it: the first keeps it.
    pytest.param(
        5, [seg("clip", 0, 60, 70), seg("cont", 0, 10, 11)], "cont", id="first-indexed-wins"
    ),
    # The same, the other way round: the order given does not matter.
    pytest.param(
        5, [seg("cont", 0, 10, 11), seg("clip", 0, 60, 70)], "cont", id="order-given-is-irrelevant"
    ),
    # A late segment that started earlier and holds the instant does not take it either.
    pytest.param(
        30, [seg("b", 20, 80, 80), seg("a", 0, 60, 200)], "b", id="a-late-upload-takes-nothing"
    ),
    pytest.param(5, [seg("y", 0, 10, 10), seg("x", 0, 10, 10)], "x", id="same-instant-smaller-id"),
    pytest.param(5, [], None, id="nothing-indexed"),
]


@pytest.mark.parametrize(("at", "candidates", "expected"), LINKS)
def test_link_event(at: float, candidates: list[Seg], expected: str | None) -> None:
    linked = link_event(t(at), candidates)
    assert (None if linked is None else linked.segment_id) == expected


def test_a_link_stays_as_segments_arrive() -> None:
    """Issue 15: once an event's video is indexed, later segments never change its link."""
    arrived = [seg("a", 0, 60, 60)]
    first = link_event(t(30), arrived)
    for later in (seg("b", 10, 70, 71), seg("c", 25, 35, 72), seg("0", -10, 50, 73)):
        arrived.append(later)
        assert link_event(t(30), arrived) == first


def clip(name: str, start: float, end: float) -> Clip:
    return Clip(name, t(start), t(end))


OVERLAPS = [
    pytest.param((0, 60), [clip("a", 60, 120)], None, id="touching-after"),
    pytest.param((60, 120), [clip("a", 0, 60)], None, id="touching-before"),
    pytest.param((30, 90), [clip("a", 0, 60)], "a", id="overlaps-the-end"),
    pytest.param((0, 60), [clip("a", 59.9, 120)], "a", id="overlaps-by-a-tenth"),
    pytest.param((10, 20), [clip("a", 0, 60)], "a", id="inside"),
    pytest.param((0, 60), [clip("me", 0, 60)], None, id="itself-sent-again"),
    pytest.param((0, 120), [clip("b", 70, 130), clip("a", 50, 110)], "a", id="the-earliest"),
    pytest.param((0, 60), [], None, id="none-indexed"),
]


@pytest.mark.parametrize(("span", "clips", "expected"), OVERLAPS)
def test_overlapping_clip(
    span: tuple[float, float], clips: list[Clip], expected: str | None
) -> None:
    hit = overlapping_clip("me", t(span[0]), t(span[1]), clips)
    assert (None if hit is None else hit.segment_id) == expected


def test_windows_merge_where_they_touch() -> None:
    before = timedelta(seconds=62)
    spans = [(t(200), t(200)), (t(0), t(0)), (t(50), t(60)), (t(300), t(360))]
    assert windows(spans, before) == [(t(-62), t(60)), (t(138), t(200)), (t(238), t(360))]


EVENT_PLAN = Entitlement(subscription_id="sub-e", family=Family.EVENT, retention_days=7)
CONT_PLAN = Entitlement(subscription_id="sub-c", family=Family.CONTINUOUS, retention_days=7)


def request(
    kind: SegmentKind, start: float, seconds: float, segment_id: str = "c2"
) -> UploadRequest:
    return UploadRequest(
        device_id="cam-1",
        segment_id=segment_id,
        kind=kind,
        start=t(start),
        end=t(start + seconds),
        bytes=1000,
        sha256=SHA,
        event_id="ev-2" if kind is SegmentKind.EVENT else None,
    )


INDEXED = [Clip(service_segment_id("cam-1", "c1"), t(0), t(60))]
NOW = t(600)

CLIP_DECISIONS = [
    pytest.param(request(SegmentKind.EVENT, 30, 60), EVENT_PLAN, ("clip_overlaps", "R1"),
                 id="R1-clip-overlapping-an-indexed-clip"),
    pytest.param(request(SegmentKind.EVENT, 60, 60), EVENT_PLAN, "accept",
                 id="R1-clip-starting-where-the-last-ended"),
    pytest.param(request(SegmentKind.EVENT, 0, 60, segment_id="c1"), EVENT_PLAN, "accept",
                 id="the-indexed-clip-itself-is-no-overlap"),
    # A continuous segment is no event clip: the rule is about clips (R1).
    pytest.param(request(SegmentKind.CONTINUOUS, 30, 10), CONT_PLAN, "accept",
                 id="continuous-over-a-clip-accepted"),
    # The rules of entitlement come first: no plan is reported, not the overlap.
    pytest.param(request(SegmentKind.EVENT, 30, 60), None, ("not_entitled", "R1"),
                 id="R1-no-plan-before-overlap"),
]  # fmt: skip


@pytest.mark.parametrize(("upload", "entitlement", "expected"), CLIP_DECISIONS)
def test_decide_upload_refuses_overlapping_clips(
    upload: UploadRequest, entitlement: Entitlement | None, expected: str | tuple[str, str]
) -> None:
    decision = decide_upload(
        upload, entitlement=entitlement, broadband_state="active", now=NOW, clips=INDEXED
    )
    if expected == "accept":
        assert isinstance(decision, Accept)
    else:
        assert isinstance(decision, Refuse)
        assert (decision.code, decision.rule) == expected
        if decision.code == "clip_overlaps":
            assert INDEXED[0].segment_id in decision.message, "it names the clip"
