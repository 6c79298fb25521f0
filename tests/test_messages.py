"""The MQTT contract's messages, typed at the edge (issue 12): each inbound topic parses to
its own frozen value, and each outbound message builds its topic and payload."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from gateway.mqtt.ingest import LogBudget, RateLimits
from gateway.mqtt.messages import (
    INBOUND,
    Desired,
    EventNotice,
    InvalidUploadAsk,
    Malformed,
    Reported,
    RpcRequest,
    RpcResult,
    SegmentNotice,
    State,
    Telemetry,
    UploadAnswer,
    UploadAsk,
    kind_of,
    parse,
)

UPLOAD = {
    "req_id": "r1",
    "segment_id": "s1",
    "kind": "continuous",
    "start": "2026-05-01T10:00:00+00:00",
    "end": "2026-05-01T10:00:10+00:00",
    "bytes": 1000,
    "sha256": "0" * 64,
}


@pytest.mark.parametrize(
    ("suffix", "payload", "kind"),
    [
        ("state", {"online": True, "kind": "camera", "fw": "1.2"}, State),
        ("telemetry", {"fps": 10}, Telemetry),
        ("reported", {"version": 3}, Reported),
        ("upload/req", UPLOAD, UploadAsk),
        ("upload/req", {**UPLOAD, "bytes": "many"}, InvalidUploadAsk),
        ("segment", UPLOAD, SegmentNotice),
        ("event", {"event_id": "e1", "type": "person", "at": "2026-05-01T10:00:00Z"}, EventNotice),
        ("rpc/res", {"id": "c1", "ok": True, "result": {"x": 1}}, RpcResult),
    ],
)
def test_each_inbound_topic_parses_to_its_type(
    suffix: str, payload: dict[str, object], kind: type[object]
) -> None:
    msg = parse(f"kj/v1/dev/cam-1/{suffix}", json.dumps(payload).encode())
    assert type(msg) is kind
    assert msg.device_id == "cam-1"
    assert kind_of(f"kj/v1/dev/cam-1/{suffix}") == suffix


@pytest.mark.parametrize(
    ("suffix", "payload", "reason"),
    [
        ("state", {"online": "yes"}, "'online' must be true or false"),
        ("state", {"online": True, "kind": "toaster"}, "'kind' must be camera or router"),
        ("reported", {"version": -1}, "'version' must be a non-negative integer"),
        ("reported", {"version": True}, "'version' must be a non-negative integer"),
        (
            "event",
            {"event_id": "", "type": "person", "at": "2026-05-01T10:00:00Z"},
            "'event_id' must be 1 to 80 of A-Z a-z 0-9 . _ -",
        ),
        (
            "event",
            {"event_id": "e", "type": "ghost", "at": "2026-05-01T10:00:00Z"},
            "'type' must be person, pet, door or motion",
        ),
        (
            "event",
            {"event_id": "e", "type": "pet", "at": "2026-05-01T10:00:00"},
            "'at' must carry an offset",
        ),
        ("rpc/res", {"id": "", "ok": True}, "'id' must be a non-empty string"),
        ("rpc/res", {"id": "c1", "ok": 1}, "'ok' must be true or false"),
        (
            "segment",
            {**UPLOAD, "kind": "movie"},
            "kind must be 'continuous' or 'event', not 'movie'",
        ),
    ],
)
def test_a_payload_outside_the_contract_is_malformed_with_its_reason(
    suffix: str, payload: dict[str, object], reason: str
) -> None:
    with pytest.raises(Malformed) as caught:
        parse(f"kj/v1/dev/cam-1/{suffix}", json.dumps(payload).encode())
    assert (caught.value.kind, caught.value.reason) == (suffix, reason)


def test_an_invalid_upload_request_keeps_what_its_answer_echoes() -> None:
    msg = parse("kj/v1/dev/cam-1/upload/req", json.dumps({**UPLOAD, "bytes": -5}).encode())
    assert isinstance(msg, InvalidUploadAsk)
    assert (msg.req_id, msg.segment_id) == ("r1", "s1")


def test_topics_outside_the_contract_are_one_bounded_label() -> None:
    assert kind_of("kj/v1/dev/cam-1/whatever") == "unknown"
    assert kind_of("elsewhere/cam-1/state") == "unknown"


def test_outbound_messages_build_the_contract_payloads() -> None:
    refused = UploadAnswer.refused(
        "cam-1", "r1", "s1", code="suspended", rule="R8", message="stopped"
    )
    assert refused.topic() == "kj/v1/dev/cam-1/upload/res"
    assert json.loads(refused.payload()) == {
        "req_id": "r1",
        "segment_id": "s1",
        "ok": False,
        "code": "suspended",
        "rule": "R8",
        "message": "stopped",
    }
    assert not refused.retain
    desired = Desired("cam-1", 4, {"recording": {"mode": "off"}})
    assert desired.topic() == "kj/v1/dev/cam-1/desired"
    assert json.loads(desired.payload()) == {"version": 4, "recording": {"mode": "off"}}
    assert desired.retain
    deadline = datetime(2026, 5, 1, 10, tzinfo=UTC)
    rpc = RpcRequest("cam-1", "c1", "reboot", {}, deadline)
    assert rpc.topic() == "kj/v1/dev/cam-1/rpc/req"
    assert json.loads(rpc.payload()) == {
        "id": "c1",
        "method": "reboot",
        "params": {},
        "deadline": "2026-05-01T10:00:00+00:00",
    }


@pytest.mark.parametrize(
    ("topic", "payload", "code"),
    [
        (f"kj/v1/dev/{'x' * 100_000}/segment", b"{}", "device_id"),
        ("kj/v1/dev/cam\x00/state", b"{}", "device_id"),
        ("kj/v1/dev/cam-1/" + "y" * 5000, b"{}", "topic"),
        ("other/cam-1/state", b"{}", "topic"),
        ("kj/v1/dev/cam-1/state", b"\xff", "not_json"),
        ("kj/v1/dev/cam-1/state", b"[]", "not_object"),
        ("kj/v1/dev/cam-1/state", b'{"online": true, "fw": "' + b"9" * 65 + b'"}', "invalid"),
        ("kj/v1/dev/cam-1/state", b'{"online": true, "fw": "1.0\\u0000"}', "invalid"),
        ("kj/v1/dev/cam-1/event", b'{"event_id": "e\\u0000", "type": "pet", "at": "x"}', "invalid"),
        ("kj/v1/dev/cam-1/event", b'{"event_id": "' + b"e" * 81 + b'", "type": "pet"}', "invalid"),
    ],
)
def test_malformed_codes_are_a_fixed_set_never_device_input(
    topic: str, payload: bytes, code: str
) -> None:
    """Issue 14: labels come from a fixed set; long or odd ids never reach SQL or metrics."""
    with pytest.raises(Malformed) as caught:
        parse(topic, payload)
    assert caught.value.code == code
    assert caught.value.kind in {*INBOUND, "unknown"}
    assert len(caught.value.reason) < 300


def test_the_malformed_log_keeps_to_its_budget() -> None:
    budget = LogBudget(per_window=3, window=3600)
    assert [budget.take() for _ in range(5)] == [True, True, True, False, False]


def test_a_payload_over_the_limit_is_refused_before_it_is_read() -> None:
    big = json.dumps({"fps": 10, "pad": "x" * 2000}).encode()
    with pytest.raises(Malformed) as caught:
        parse("kj/v1/dev/cam-1/telemetry", big, max_bytes=1024)
    assert (caught.value.kind, caught.value.code) == ("telemetry", "too_large")
    assert isinstance(parse("kj/v1/dev/cam-1/telemetry", big, max_bytes=4096), Telemetry)


def test_upload_requests_are_limited_per_device() -> None:
    limits = RateLimits(per_minute=3)
    assert [limits.take("cam-1") for _ in range(4)] == [True, True, True, False]
    assert limits.take("cam-2"), "each device has its own allowance"


def test_forgetting_keeps_the_devices_still_limited() -> None:
    limits = RateLimits(per_minute=1, forget_after=2)
    assert limits.take("cam-1")
    assert limits.take("cam-2")
    assert limits.take("cam-3")  # the table is full: only buckets full again are dropped
    assert not limits.take("cam-1"), "a device out of allowance stays limited"
