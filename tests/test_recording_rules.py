"""What a camera may record and where it goes (R1, R5, R6, R8): parsing, decisions, keys.

Expected values are written out by hand; the arithmetic is in the row comments.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest

from devices.broadband import AccountState
from devices.broadband_periods import InactivePeriod, state_at
from replay.object_keys import (
    RECORDING_PREFIXES,
    RecordingKey,
    family_key,
    lifecycle_rules,
    object_key,
    parse_object_key,
    recording_prefix,
    service_segment_id,
)
from replay.plans import Family
from replay.recording import (
    EVENT_CLIP_TOLERANCE_S,
    MAX_SEGMENT_BYTES,
    Accept,
    Decision,
    Entitlement,
    InvalidUpload,
    RecordingMode,
    Refuse,
    SegmentKind,
    UploadRequest,
    decide_upload,
    desired_recording_mode,
    entitlement_of,
    expiry,
    retention_class,
)

CST = timezone(timedelta(hours=8))
NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
SHA = "ab" * 32
S = timedelta(seconds=1)
DAY = timedelta(days=1)


def payload(**changes: object) -> dict[str, object]:
    """A valid 10-s continuous ``upload/req`` of cam-1, changed by ``changes`` (None drops)."""
    base: dict[str, object] = {
        "req_id": "r-1",
        "segment_id": "seg-1",
        "kind": "continuous",
        "start": "2026-05-01T19:59:50+08:00",
        "end": "2026-05-01T20:00:00+08:00",
        "bytes": 200_000,
        "sha256": SHA,
    }
    for key, value in changes.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


EVENT = {
    "kind": "event",
    "event_id": "ev-1",
    "start": "2026-05-01T11:59:00Z",
    "end": "2026-05-01T12:00:00Z",
}


# --- parsing ---------------------------------------------------------------------------------


def test_parse_keeps_times_in_utc_and_sha_in_lower_case() -> None:
    request = UploadRequest.parse(payload(sha256="AB" * 32), device_id="cam-1")
    assert request == UploadRequest(
        device_id="cam-1",
        segment_id="seg-1",
        kind=SegmentKind.CONTINUOUS,
        # 19:59:50 and 20:00:00 in Shanghai (UTC+8) are 11:59:50 and 12:00:00 UTC.
        start=datetime(2026, 5, 1, 11, 59, 50, tzinfo=UTC),
        end=datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC),
        bytes=200_000,
        sha256=SHA,
    )
    assert request.start.tzinfo is UTC
    assert request.seconds == 10


def test_parse_reads_an_event_clip_and_the_device_from_the_payload() -> None:
    request = UploadRequest.parse(payload(device_id="cam-2", **EVENT))
    assert (request.device_id, request.kind, request.event_id) == ("cam-2", "event", "ev-1")


ACCEPTED_SHAPES = [
    # R1: continuous segments last at most 60 s.
    pytest.param(
        {"end": "2026-05-01T12:00:50Z", "start": "2026-05-01T11:59:50Z"}, id="R1-cont-60s"
    ),
    pytest.param(
        {"end": "2026-05-01T11:59:50.001Z", "start": "2026-05-01T11:59:50Z"}, id="cont-1ms"
    ),
    # R1: one-minute event clips, 58 s to 62 s (±2 s).
    pytest.param({**EVENT, "start": "2026-05-01T11:59:02Z"}, id="R1-event-58s"),
    pytest.param({**EVENT, "start": "2026-05-01T11:58:58Z"}, id="R1-event-62s"),
    pytest.param({"bytes": 1}, id="bytes-1"),
    pytest.param({"bytes": 64 * 1024 * 1024}, id="bytes-64MiB"),
    pytest.param({"segment_id": "A" * 80}, id="segment-id-80-chars"),
    pytest.param({"segment_id": "2026.05.01_cam-1"}, id="segment-id-dots-underscores"),
    pytest.param({"event_id": None, "extra": [1, 2]}, id="unknown-keys-ignored"),
]


@pytest.mark.parametrize("changes", ACCEPTED_SHAPES)
def test_parse_accepts(changes: dict[str, object]) -> None:
    UploadRequest.parse(payload(**changes), device_id="cam-1")


REFUSED_SHAPES = [
    pytest.param({"sha256": None}, "sha256", id="missing-sha256"),
    pytest.param({"start": None}, "start", id="missing-start"),
    pytest.param({"kind": "timelapse"}, "kind", id="unknown-kind"),
    pytest.param({"start": "2026-05-01T11:59:50"}, "start", id="naive-start"),
    pytest.param({"end": "2026-05-01T12:00:00"}, "end", id="naive-end"),
    pytest.param({"start": "yesterday"}, "start", id="start-not-iso"),
    pytest.param({"end": 1777636800}, "end", id="end-a-number"),
    pytest.param({"end": "2026-05-01T11:59:50Z"}, "end", id="end-equals-start"),
    pytest.param({"end": "2026-05-01T11:59:40Z"}, "end", id="end-before-start"),
    # 11:59:50 → 12:00:51 is 61 s.
    pytest.param({"end": "2026-05-01T12:00:51Z"}, "end", id="R1-cont-61s"),
    # 11:59:02.5 → 12:00:00 is 57.5 s, 11:58:57.5 → 12:00:00 is 62.5 s.
    pytest.param({**EVENT, "start": "2026-05-01T11:59:02.5Z"}, "end", id="R1-event-57.5s"),
    pytest.param({**EVENT, "start": "2026-05-01T11:58:57.5Z"}, "end", id="R1-event-62.5s"),
    pytest.param({**EVENT, "start": "2026-05-01T11:59:50Z"}, "end", id="R1-event-10s"),
    pytest.param({"bytes": 0}, "bytes", id="bytes-0"),
    pytest.param({"bytes": -5}, "bytes", id="bytes-negative"),
    pytest.param({"bytes": 64 * 1024 * 1024 + 1}, "bytes", id="bytes-over-64MiB"),
    pytest.param({"bytes": True}, "bytes", id="bytes-bool"),
    pytest.param({"bytes": 1000.0}, "bytes", id="bytes-float"),
    pytest.param({"sha256": "ab" * 31 + "a"}, "sha256", id="sha256-63-chars"),
    pytest.param({"sha256": "zz" * 32}, "sha256", id="sha256-not-hex"),
    pytest.param({**EVENT, "event_id": None}, "event_id", id="event-without-event-id"),
    pytest.param({"event_id": "ev-1"}, "event_id", id="continuous-with-event-id"),
    pytest.param({**EVENT, "event_id": "ev/1"}, "event_id", id="event-id-with-slash"),
    pytest.param({"segment_id": "../x"}, "segment_id", id="segment-id-with-slash"),
    pytest.param({"segment_id": ""}, "segment_id", id="segment-id-empty"),
    pytest.param({"segment_id": "A" * 81}, "segment_id", id="segment-id-81-chars"),
    pytest.param({"segment_id": "seg 1"}, "segment_id", id="segment-id-with-space"),
    pytest.param({"segment_id": 7}, "segment_id", id="segment-id-a-number"),
    pytest.param({"device_id": "cam-2"}, "device_id", id="device-not-the-topics"),
]


@pytest.mark.parametrize(("changes", "field"), REFUSED_SHAPES)
def test_parse_refuses(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidUpload) as caught:
        UploadRequest.parse(payload(**changes), device_id="cam-1")
    assert caught.value.field == field
    assert caught.value.reason == str(caught.value)


@pytest.mark.parametrize(
    ("device_id", "in_payload"),
    [
        pytest.param(None, None, id="no-device-anywhere"),
        pytest.param(None, ".hidden", id="device-starting-with-dot"),
        pytest.param(None, "cam/1", id="device-with-slash"),
        pytest.param(None, "c" * 65, id="device-65-chars"),
    ],
)
def test_parse_refuses_bad_device_ids(device_id: str | None, in_payload: str | None) -> None:
    with pytest.raises(InvalidUpload) as caught:
        UploadRequest.parse(payload(device_id=in_payload), device_id=device_id)
    assert caught.value.field == "device_id"


def test_parse_refuses_a_payload_that_is_not_an_object() -> None:
    with pytest.raises(InvalidUpload, match="JSON object"):
        UploadRequest.parse(["seg-1"], device_id="cam-1")  # type: ignore[arg-type]


def test_the_constructor_raises_value_error() -> None:
    # InvalidUpload is a ValueError: the keyword-only constructor checks its arguments.
    with pytest.raises(ValueError, match="one minute"):
        UploadRequest(
            device_id="cam-1",
            segment_id="s",
            kind=SegmentKind.EVENT,
            start=NOW,
            end=NOW + 30 * S,
            bytes=1,
            sha256=SHA,
            event_id="e",
        )
    assert EVENT_CLIP_TOLERANCE_S == 2
    assert MAX_SEGMENT_BYTES == 67_108_864


# --- the upload decision ---------------------------------------------------------------------

CONT_7D = Entitlement(subscription_id="sub-c7", family=Family.CONTINUOUS, retention_days=7)
CONT_1D = Entitlement(subscription_id="sub-c1", family=Family.CONTINUOUS, retention_days=1)
EVENT_7D = Entitlement(subscription_id="sub-e7", family=Family.EVENT, retention_days=7)
# Subscribed at 11:00 UTC on 1 May.
CONT_30D_NEW = Entitlement(
    subscription_id="sub-c30",
    family=Family.CONTINUOUS,
    retention_days=30,
    started_at=datetime(2026, 5, 1, 19, 0, tzinfo=CST),
)


def segment(kind: str, end: datetime) -> UploadRequest:
    """A 10-s continuous segment or a 60-s event clip of cam-1 ending at ``end``."""
    if kind == "continuous":
        return UploadRequest(
            device_id="cam-1",
            segment_id="s1",
            kind=SegmentKind.CONTINUOUS,
            start=end - 10 * S,
            end=end,
            bytes=1000,
            sha256=SHA,
        )
    return UploadRequest(
        device_id="cam-1",
        segment_id="e1",
        kind=SegmentKind.EVENT,
        start=end - 60 * S,
        end=end,
        bytes=1000,
        sha256=SHA,
        event_id="ev-1",
    )


def accept(cls: str, expires: datetime, sub: str) -> Accept:
    return Accept(retention_class=cls, expires_at=expires, subscription_id=sub)


def refuse(code: str, rule: str) -> tuple[str, str]:
    return (code, rule)


T10 = datetime(2026, 5, 1, 11, 59, 50, tzinfo=UTC)  # NOW - 10 s

DECISIONS = [
    # --- R1: families ----------------------------------------------------------------------
    # 11:59:50 + 7 days = 8 May 11:59:50.
    pytest.param(
        "continuous", T10, CONT_7D, "active",
        accept("7d", datetime(2026, 5, 8, 11, 59, 50, tzinfo=UTC), "sub-c7"),
        id="R1-continuous-under-continuous-plan",
    ),
    pytest.param(
        "continuous", T10, EVENT_7D, "active", refuse("not_entitled", "R1"),
        id="R1-continuous-under-event-plan-refused",
    ),
    pytest.param(
        "event", T10, EVENT_7D, "active",
        accept("7d", datetime(2026, 5, 8, 11, 59, 50, tzinfo=UTC), "sub-e7"),
        id="R1-event-clip-under-event-plan",
    ),
    pytest.param(
        "event", T10, CONT_7D, "active",
        accept("7d", datetime(2026, 5, 8, 11, 59, 50, tzinfo=UTC), "sub-c7"),
        id="R1-event-clip-under-continuous-plan",
    ),
    pytest.param(
        "continuous", T10, None, "active", refuse("not_entitled", "R1"), id="R1-no-plan"
    ),
    pytest.param("event", T10, None, "active", refuse("not_entitled", "R1"), id="R1-no-plan-event"),
    # 11:59:50 + 1 day = 2 May 11:59:50.
    pytest.param(
        "continuous", T10, CONT_1D, "active",
        accept("1d", datetime(2026, 5, 2, 11, 59, 50, tzinfo=UTC), "sub-c1"),
        id="R1-1d-plan-class",
    ),
    # --- R8: broadband ---------------------------------------------------------------------
    pytest.param(
        "continuous", T10, CONT_7D, "stopped", refuse("suspended", "R8"), id="R8-stopped"
    ),
    pytest.param(
        "event", T10, EVENT_7D, "stopped", refuse("suspended", "R8"), id="R8-stopped-event"
    ),
    pytest.param(
        "continuous", T10, CONT_7D, "torn_down", refuse("suspended", "R8"), id="R8-torn-down"
    ),
    # No plan and stopped: resuming would not help, so the plan is reported first.
    pytest.param(
        "continuous", T10, None, "stopped", refuse("not_entitled", "R1"),
        id="R1-before-R8-no-plan-and-stopped",
    ),
    pytest.param(
        "continuous", T10, EVENT_7D, "stopped", refuse("not_entitled", "R1"),
        id="R1-before-R8-wrong-family-and-stopped",
    ),
    # --- clock skew (30 s) -----------------------------------------------------------------
    pytest.param(
        "continuous", NOW, CONT_7D, "active",
        accept("7d", datetime(2026, 5, 8, 12, 0, 0, tzinfo=UTC), "sub-c7"),
        id="skew-ends-now",
    ),
    # ends 12:00:30, exactly now + 30 s: still inside the skew; + 7 days = 8 May 12:00:30.
    pytest.param(
        "continuous", NOW + 30 * S, CONT_7D, "active",
        accept("7d", datetime(2026, 5, 8, 12, 0, 30, tzinfo=UTC), "sub-c7"),
        id="skew-exactly-plus-30s-accepted",
    ),
    pytest.param(
        "continuous", NOW + 31 * S, CONT_7D, "active", refuse("in_future", "R5"),
        id="skew-plus-31s-refused",
    ),
    pytest.param(
        "event", NOW + 31 * S, EVENT_7D, "active", refuse("in_future", "R5"),
        id="skew-event-plus-31s-refused",
    ),
    # --- too old: born expired (R5, end + retention <= now) --------------------------------
    # ends 24 Apr 12:00:00 = now - 7 days: expires exactly now → refused.
    pytest.param(
        "continuous", NOW - 7 * DAY, CONT_7D, "active", refuse("too_old", "R5"),
        id="R5-too-old-exactly-7d",
    ),
    # ends 24 Apr 12:00:01: expires 1 May 12:00:01, one second from now.
    pytest.param(
        "continuous", NOW - 7 * DAY + S, CONT_7D, "active",
        accept("7d", datetime(2026, 5, 1, 12, 0, 1, tzinfo=UTC), "sub-c7"),
        id="R5-7d-minus-1s-accepted",
    ),
    pytest.param(
        "continuous", NOW - DAY, CONT_1D, "active", refuse("too_old", "R5"),
        id="R5-too-old-exactly-1d",
    ),
    # ends 30 Apr 12:00:00, 1 day ago: fine for a 7-day plan, expires 7 May 12:00:00.
    pytest.param(
        "continuous", NOW - DAY, CONT_7D, "active",
        accept("7d", datetime(2026, 5, 7, 12, 0, 0, tzinfo=UTC), "sub-c7"),
        id="R5-1d-old-under-7d-plan",
    ),
    # --- R6: segments from before the subscription began (started 11:00 UTC) ---------------
    pytest.param(
        "continuous", datetime(2026, 5, 1, 10, 59, 59, tzinfo=UTC), CONT_30D_NEW, "active",
        refuse("not_entitled", "R6"), id="R6-ended-before-subscription",
    ),
    pytest.param(
        "continuous", datetime(2026, 5, 1, 11, 0, 0, tzinfo=UTC), CONT_30D_NEW, "active",
        refuse("not_entitled", "R6"), id="R6-ended-as-subscription-began",
    ),
    # ends 11:00:01 (began 10:59:51, straddling the order): started before it, refused.
    pytest.param(
        "continuous", datetime(2026, 5, 1, 11, 0, 1, tzinfo=UTC), CONT_30D_NEW, "active",
        refuse("not_entitled", "R6"), id="R6-straddling-the-order-refused",
    ),
    # began 11:00:00, the order's instant: ours; + 30 days = 31 May 11:00:10.
    pytest.param(
        "continuous", datetime(2026, 5, 1, 11, 0, 10, tzinfo=UTC), CONT_30D_NEW, "active",
        accept("30d", datetime(2026, 5, 31, 11, 0, 10, tzinfo=UTC), "sub-c30"),
        id="R6-started-at-the-order-accepted",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "end", "entitlement", "broadband", "expected"), DECISIONS)
def test_decide_upload(
    kind: str,
    end: datetime,
    entitlement: Entitlement | None,
    broadband: AccountState,
    expected: Accept | tuple[str, str],
) -> None:
    decision: Decision = decide_upload(
        segment(kind, end), entitlement=entitlement, broadband_state=broadband, now=NOW
    )
    if isinstance(expected, Accept):
        assert decision == expected
    else:
        assert isinstance(decision, Refuse)
        assert (decision.code, decision.rule) == expected
        assert decision.message


def test_decide_upload_takes_the_skew_as_a_parameter() -> None:
    late = segment("continuous", NOW + 5 * S)
    assert isinstance(
        decide_upload(late, entitlement=CONT_7D, broadband_state="active", now=NOW, max_skew_s=5),
        Accept,
    )
    refused = decide_upload(
        late, entitlement=CONT_7D, broadband_state="active", now=NOW, max_skew_s=4
    )
    assert isinstance(refused, Refuse)
    assert refused.code == "in_future"


def test_decide_upload_needs_an_aware_now() -> None:
    with pytest.raises(ValueError, match="offset"):
        decide_upload(
            segment("continuous", T10),
            entitlement=CONT_7D,
            broadband_state="active",
            now=NOW.replace(tzinfo=None),
        )


# --- entitlement -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    subscription_id: str
    family: str
    retention_days: int
    status: str
    started_at: datetime
    ended_at: datetime | None = None


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        pytest.param(
            Row(subscription_id="s", family="event", retention_days=30, status="active",
                started_at=NOW),
            Entitlement(subscription_id="s", family=Family.EVENT, retention_days=30,
                        started_at=NOW),
            id="R1-active-row",
        ),
        pytest.param(
            Row(subscription_id="s", family="event", retention_days=30, status="unsubscribed",
                started_at=NOW, ended_at=NOW + DAY),
            Entitlement(subscription_id="s", family=Family.EVENT, retention_days=30,
                        started_at=NOW, ended_at=NOW + DAY),
            id="R5-unsubscribed-row-covers-up-to-its-end",
        ),
        pytest.param(
            Row(subscription_id="s", family="event", retention_days=30, status="unsubscribed",
                started_at=NOW),
            None,
            id="R5-unsubscribed-row-without-end",
        ),
        pytest.param(
            Row(subscription_id="s", family="event", retention_days=30, status="cancelled",
                started_at=NOW),
            None,
            id="unknown-status",
        ),
        pytest.param(None, None, id="R1-no-row"),
    ],
)  # fmt: skip
def test_entitlement_of(row: Row | None, expected: Entitlement | None) -> None:
    assert entitlement_of(row) == expected


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"subscription_id": ""}, id="empty-id"),
        pytest.param({"retention_days": 0}, id="zero-days"),
        pytest.param({"retention_days": True}, id="bool-days"),
        pytest.param({"started_at": datetime(2026, 5, 1)}, id="naive-start"),  # noqa: DTZ001
    ],
)
def test_entitlement_checks_its_arguments(changes: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "subscription_id": "s",
        "family": Family.CONTINUOUS,
        "retention_days": 7,
        **changes,
    }
    with pytest.raises(ValueError):  # noqa: PT011  # each row's message differs
        Entitlement(**fields)  # type: ignore[arg-type]


# --- desired recording mode ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "broadband_active", "expected"),
    [
        pytest.param(Family.CONTINUOUS, True, "continuous", id="R1-continuous"),
        pytest.param(Family.EVENT, True, "event", id="R1-event"),
        pytest.param(None, True, "off", id="R1-no-plan"),
        pytest.param(Family.CONTINUOUS, False, "off", id="R8-stopped-continuous"),
        pytest.param(Family.EVENT, False, "off", id="R8-stopped-event"),
        pytest.param(None, False, "off", id="R8-stopped-no-plan"),
    ],
)
def test_desired_recording_mode(
    family: Family | None, broadband_active: bool, expected: RecordingMode
) -> None:
    assert desired_recording_mode(family, broadband_active) == expected


# --- keys, classes, expiry -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "device", "end", "segment_id", "kind", "expected"),
    [
        # 18:30:05 in Shanghai is 10:30:05 UTC.
        pytest.param(
            "7d", "cam-1", datetime(2026, 5, 1, 18, 30, 5, tzinfo=CST), "seg-1",
            SegmentKind.CONTINUOUS, "rec/7d/2026/05/01/1030/05-continuous-seg-1@cam-1.ts",
            id="continuous-utc",
        ),
        # 02:00 on 1 Jan 2027 in Shanghai is still 31 Dec 2026 18:00 UTC.
        pytest.param(
            "30d", "cam-9", datetime(2027, 1, 1, 2, 0, 0, tzinfo=CST), "e.7",
            SegmentKind.EVENT, "rec/30d/2026/12/31/1800/00-event-e.7@cam-9.ts",
            id="event-utc-date-before-shanghai-new-year",
        ),
        pytest.param(
            "1d", "aa:bb:cc", datetime(2026, 5, 1, 0, 0, 59, 999_999, tzinfo=UTC), "x",
            SegmentKind.CONTINUOUS, "rec/1d/2026/05/01/0000/59-continuous-x@aa:bb:cc.ts",
            id="sub-second-end-truncated",
        ),
        # Ids that hold the other separators still read back whole.
        pytest.param(
            "7d", "cam-event-1.ts", datetime(2026, 5, 1, 10, 0, 0, tzinfo=UTC), "s-continuous-2",
            SegmentKind.EVENT, "rec/7d/2026/05/01/1000/00-event-s-continuous-2@cam-event-1.ts.ts",
            id="ids-holding-separators",
        ),
    ],
)  # fmt: skip
def test_object_key(
    cls: str, device: str, end: datetime, segment_id: str, kind: SegmentKind, expected: str
) -> None:
    key = object_key(cls, device, end, segment_id, kind)
    assert key == expected
    assert parse_object_key(key) == RecordingKey(
        retention_class=cls,
        device_id=device,
        dated=end.astimezone(UTC).replace(microsecond=0),
        kind=kind,
        segment_id=segment_id,
    )


def test_keys_of_one_minute_share_a_directory_in_the_order_they_ended() -> None:
    """Issue 16, item 2: the store confirms a batch of notices with one listing because
    the segments that ended in one minute, every camera's, are one directory, sorted by
    the second they ended."""
    base = datetime(2026, 5, 1, 10, 30, 0, tzinfo=UTC)
    keys = [
        object_key("7d", device, base + timedelta(seconds=s), f"s{s}", SegmentKind.CONTINUOUS)
        for s, device in ((40, "cam-a"), (5, "cam-z"), (21, "cam-m"), (5, "cam-b"))
    ]
    assert {key.rpartition("/")[0] for key in keys} == {"rec/7d/2026/05/01/1030"}
    assert [parse_object_key(key).dated.second for key in sorted(keys)] == [5, 5, 21, 40]  # type: ignore[union-attr]


def test_keys_of_the_earlier_layout_are_still_read() -> None:
    """Keys written before issue 16 (a directory per camera and day, dated by the start)
    stay indexed as they are; reconcile still reads their camera."""
    assert parse_object_key("rec/7d/cam-1/2026/05/01/103005-continuous-seg-1.ts") == (
        RecordingKey(
            retention_class="7d",
            device_id="cam-1",
            dated=datetime(2026, 5, 1, 10, 30, 5, tzinfo=UTC),
            kind=SegmentKind.CONTINUOUS,
            segment_id="seg-1",
        )
    )


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("7", "cam-1", NOW, "s", SegmentKind.CONTINUOUS), id="class-without-d"),
        pytest.param(("0d", "cam-1", NOW, "s", SegmentKind.CONTINUOUS), id="class-zero"),
        pytest.param(("7d", "cam/1", NOW, "s", SegmentKind.CONTINUOUS), id="device-slash"),
        pytest.param(("7d", "..", NOW, "s", SegmentKind.CONTINUOUS), id="device-dots"),
        pytest.param(("7d", "cam-1", NOW, "a/b", SegmentKind.CONTINUOUS), id="segment-slash"),
        pytest.param(("7d", "cam-1", NOW, "s", "timelapse"), id="unknown-kind"),
        pytest.param(
            ("7d", "cam-1", datetime(2026, 5, 1), "s", SegmentKind.EVENT),  # noqa: DTZ001
            id="naive-start",
        ),
    ],
)
def test_object_key_refuses_unsafe_parts(args: tuple[object, ...]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011  # each row's message differs
        object_key(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("family/acc-1/2026/05/01/103005-seg-1.ts", id="family-key"),
        pytest.param("rec/7d/cam-1/2026/05/01/103005-seg-1.ts", id="no-kind"),
        pytest.param("rec/7d/cam-1/2026/02/30/103005-continuous-s.ts", id="30-february"),
        pytest.param("rec/7d/cam-1/2026/05/01/256005-continuous-s.ts", id="hour-25"),
        pytest.param("rec/0d/cam-1/2026/05/01/103005-continuous-s.ts", id="class-zero"),
        pytest.param("rec/7d/.x/2026/05/01/103005-continuous-s.ts", id="dot-device"),
        pytest.param("rec/7d/cam-1/2026/05/01/103005-continuous-s.ts.tmp", id="suffix"),
        pytest.param("rec/7d/cam-1/2026/05/01/", id="folder"),
        pytest.param("rec/7d/2026/05/01/1030/05-continuous-s.ts", id="no-device"),
        pytest.param("rec/7d/2026/05/01/1060/05-continuous-s@cam-1.ts", id="minute-60"),
        pytest.param("rec/7d/2026/05/01/1030/05-continuous-s@.x.ts", id="new-dot-device"),
        pytest.param("rec/7d/2026/05/01/1030/05-continuous-s@a@b.ts", id="two-devices"),
    ],
)
def test_parse_object_key_ignores_other_keys(key: str) -> None:
    assert parse_object_key(key) is None


def test_family_key_is_outside_the_recording_prefixes() -> None:
    # R14: a saved copy is outside retention; 20:00:00 in Shanghai is 12:00:00 UTC.
    key = family_key("acc-1", "seg-1", datetime(2026, 5, 1, 20, 0, 0, tzinfo=CST))
    assert key == "family/acc-1/2026/05/01/120000-seg-1.ts"
    assert not key.startswith(RECORDING_PREFIXES)
    with pytest.raises(ValueError, match="account_id"):
        family_key("acc/1", "seg-1", NOW)


def test_a_service_segment_id_is_the_cameras_segment_alone() -> None:
    """Issue 14: the same segment_id of two cameras is two segments; the id is stable (a
    redelivered request or notice finds it), key-safe and within a segment id's 80."""
    ids = {
        service_segment_id(device, segment)
        for device, segment in (("cam-1", "s1"), ("cam-2", "s1"), ("cam-1", "s2"), ("s1", "cam-1"))
    }
    assert len(ids) == 4
    assert service_segment_id("cam-1", "s1") == "sg_1a5ee96085273849f0a9faad8cf83743"
    for made in ids:
        assert len(made) == 35
        family_key("acc-1", made, NOW)  # key-safe: a family-cloud key may carry it
    with pytest.raises(ValueError, match="segment_id"):
        service_segment_id("cam-1", "s/1")


def test_retention_classes_and_prefixes() -> None:
    assert [retention_class(d) for d in (1, 7, 30)] == ["1d", "7d", "30d"]
    assert RECORDING_PREFIXES == ("rec/1d/", "rec/7d/", "rec/30d/")
    assert recording_prefix(90) == "rec/90d/"
    for bad in (0, -7, True, 7.0):
        with pytest.raises(ValueError, match="positive whole number"):
            retention_class(bad)  # type: ignore[arg-type]


def test_lifecycle_rules_wait_a_day_beyond_retention() -> None:
    # The store's rule is a backstop: retention + 1 day, one rule per distinct retention.
    assert lifecycle_rules([7, 1, 30, 7]) == (("rec/1d/", 2), ("rec/7d/", 8), ("rec/30d/", 31))


@pytest.mark.parametrize(
    ("end", "days", "expected"),
    [
        # R5 example: a 7-day plan keeps video 7 days after recording.
        pytest.param(
            datetime(2026, 5, 1, 12, 0, tzinfo=UTC), 7, datetime(2026, 5, 8, 12, 0, tzinfo=UTC),
            id="R5-7d",
        ),
        # 31 Jan 23:30 Shanghai = 31 Jan 15:30 UTC; + 30 days = 2 March 15:30 UTC (2026: 28 Feb).
        pytest.param(
            datetime(2026, 1, 31, 23, 30, tzinfo=CST), 30,
            datetime(2026, 3, 2, 15, 30, tzinfo=UTC), id="R5-30d-over-february",
        ),
    ],
)  # fmt: skip
def test_expiry(end: datetime, days: int, expected: datetime) -> None:
    assert expiry(end, days) == expected


# --- one rule at the boundaries (RULES.md "Boundaries of a state change") ------------------

#: An instant of change (a stop, a resume, an unsubscription, an order): 12:00 UTC, 1 May.
CHANGE = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
LATER = CHANGE + 5 * 60 * S  # every piece is uploaded after the change


def piece(kind: str, start: datetime) -> UploadRequest:
    """A 10-s segment or a one-minute clip of cam-1 that started recording at ``start``."""
    return segment(kind, start + (10 if kind == "continuous" else 60) * S)


def entitled(kind: str, **times: datetime) -> Entitlement:
    family = Family.CONTINUOUS if kind == "continuous" else Family.EVENT
    return Entitlement(subscription_id="sub-b", family=family, retention_days=7, **times)


BEFORE, AT, AFTER = CHANGE - 2 * S, CHANGE, CHANGE + 2 * S
STOPPED_FROM_CHANGE = (InactivePeriod("stopped", CHANGE),)
STOPPED_UNTIL_CHANGE = (InactivePeriod("stopped", CHANGE - DAY, CHANGE),)

BOUNDARIES = [
    # (change, started, periods, entitlement times, expected code or None for accepted)
    ("stop", BEFORE, STOPPED_FROM_CHANGE, {}, None),
    ("stop", AT, STOPPED_FROM_CHANGE, {}, "suspended"),
    ("stop", AFTER, STOPPED_FROM_CHANGE, {}, "suspended"),
    ("resume", BEFORE, STOPPED_UNTIL_CHANGE, {}, "suspended"),
    ("resume", AT, STOPPED_UNTIL_CHANGE, {}, None),
    ("resume", AFTER, STOPPED_UNTIL_CHANGE, {}, None),
    ("unsubscribe", BEFORE, (), {"started_at": CHANGE - DAY, "ended_at": CHANGE}, None),
    ("unsubscribe", AT, (), {"started_at": CHANGE - DAY, "ended_at": CHANGE}, "not_entitled"),
    ("unsubscribe", AFTER, (), {"started_at": CHANGE - DAY, "ended_at": CHANGE}, "not_entitled"),
    ("order", BEFORE, (), {"started_at": CHANGE}, "not_entitled"),
    ("order", AT, (), {"started_at": CHANGE}, None),
    ("order", AFTER, (), {"started_at": CHANGE}, None),
]


@pytest.mark.parametrize("kind", ["continuous", "event"])
@pytest.mark.parametrize(
    ("change", "started", "periods", "times", "expected"),
    [pytest.param(*row, id=f"{row[0]}-{i % 3}") for i, row in enumerate(BOUNDARIES)],
)
def test_a_piece_is_judged_by_the_moment_it_started(
    kind: str,
    change: str,
    started: datetime,
    periods: tuple[InactivePeriod, ...],
    times: dict[str, datetime],
    expected: str | None,
) -> None:
    """Before the change (-2 s), at its instant, after it (+2 s); the account is active now
    and the piece is uploaded five minutes after the change, as a camera catching up."""
    state = state_at("active", periods, started)
    decision = decide_upload(
        piece(kind, started),
        entitlement=entitled(kind, **times),
        broadband_state=state,
        now=LATER,
    )
    if expected is None:
        assert isinstance(decision, Accept)
        assert decision.subscription_id == "sub-b"
    else:
        assert isinstance(decision, Refuse)
        assert decision.code == expected
        assert decision.rule == {"suspended": "R8", "not_entitled": change_rule(change)}[expected]


def change_rule(change: str) -> str:
    return "R5" if change == "unsubscribe" else "R6"


@pytest.mark.parametrize(
    ("current", "periods", "at", "expected"),
    [
        pytest.param("active", (), CHANGE, "active", id="never-stopped"),
        pytest.param("stopped", (), CHANGE, "stopped", id="stopped-before-history-was-kept"),
        pytest.param("stopped", STOPPED_FROM_CHANGE, BEFORE, "active", id="before-the-open-stop"),
        pytest.param("stopped", STOPPED_FROM_CHANGE, AT, "stopped", id="at-the-stop"),
        pytest.param("active", STOPPED_UNTIL_CHANGE, BEFORE, "stopped", id="during-a-past-stop"),
        pytest.param("active", STOPPED_UNTIL_CHANGE, AT, "active", id="at-the-resume"),
        pytest.param(
            "torn_down", (InactivePeriod("torn_down", CHANGE),), AFTER, "torn_down",
            id="torn-down",
        ),
    ],
)  # fmt: skip
def test_state_at(
    current: AccountState, periods: tuple[InactivePeriod, ...], at: datetime, expected: str
) -> None:
    assert state_at(current, periods, at) == expected


def test_an_inactive_period_checks_its_bounds() -> None:
    with pytest.raises(ValueError, match="active"):
        InactivePeriod("active", CHANGE)
    with pytest.raises(ValueError, match="before it began"):
        InactivePeriod("stopped", CHANGE, CHANGE - S)
