"""Playback sessions' rules (issue 15): the range, the life, the credential, the scope.

Pure: :mod:`replay.playback_sessions`. The HTTP side, ffmpeg and the stores are
``tests/test_playback_sessions_e2e.py``. Expected values are written out by hand.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from devices.errors import Invalid
from gateway.errors import http_status
from replay.playback_sessions import (
    PlaybackSession,
    SessionRefused,
    check_range,
    open_session,
    seal,
    session_expiry,
    session_refusal,
    unseal,
)

KEY = b"k" * 32
CST = timezone(timedelta(hours=8))
S = timedelta(seconds=1)
MIN = timedelta(minutes=1)
H = timedelta(hours=1)
START = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def session(**changes: object) -> PlaybackSession:
    """A session of cam-1 over 10:00-10:15, made at 12:00: it lives until 12:20."""
    made = open_session(
        account_id="acc-1",
        device_id="cam-1",
        subscription_id="sub-a",
        start=START,
        end=START + 15 * MIN,
        now=NOW,
        nonce="n0nce",
    )
    return replace(made, **changes)  # type: ignore[arg-type]


RANGES = [
    pytest.param(START, START + S, None, id="one-second"),
    pytest.param(START, START + 12 * H, None, id="exactly-12h"),
    pytest.param(START, START + 12 * H + S, "range_too_long", id="12h-plus-1s"),
    pytest.param(START, START + 31 * 24 * H, "range_too_long", id="a-month"),
    pytest.param(START, START, "invalid_range", id="empty"),
    pytest.param(START + S, START, "invalid_range", id="backwards"),
    # 18:00 in Shanghai is 10:00 UTC: 12 h across zones is still 12 h.
    pytest.param(START.astimezone(CST), START + 12 * H, None, id="12h-across-zones"),
]


@pytest.mark.parametrize(("start", "end", "code"), RANGES)
def test_check_range(start: datetime, end: datetime, code: str | None) -> None:
    if code is None:
        assert check_range(start, end) == end - start
        return
    with pytest.raises(Invalid) as caught:
        check_range(start, end)
    assert (caught.value.code, http_status(caught.value)) == (code, 400)


EXPIRIES = [
    # now + (end - start) + 5 min
    pytest.param(START, START + 15 * MIN, NOW, NOW + 20 * MIN, id="15-min-range"),
    pytest.param(START, START + 12 * H, NOW, NOW + 12 * H + 5 * MIN, id="12-h-range"),
    pytest.param(START, START + S, NOW, NOW + 5 * MIN + S, id="1-s-range"),
    # The range's place in time does not matter, only its length.
    pytest.param(NOW - H, NOW + H, NOW, NOW + 2 * H + 5 * MIN, id="range-around-now"),
]


@pytest.mark.parametrize(("start", "end", "now", "expected"), EXPIRIES)
def test_session_expiry(start: datetime, end: datetime, now: datetime, expected: datetime) -> None:
    assert session_expiry(start, end, now) == expected


def test_session_expiry_refuses_what_check_range_refuses() -> None:
    with pytest.raises(Invalid, match="12 hours"):
        session_expiry(START, START + 12 * H + S, NOW)
    with pytest.raises(ValueError, match="offset"):
        session_expiry(START, START + H, NOW.replace(tzinfo=None))


def test_open_session_binds_the_range_and_its_life() -> None:
    made = session()
    assert (made.start, made.end, made.expires_at) == (START, START + 15 * MIN, NOW + 20 * MIN)
    with pytest.raises(ValueError, match="nonce"):
        open_session(
            account_id="a",
            device_id="d",
            subscription_id="s",
            start=START,
            end=START + H,
            now=NOW,
            nonce="",
        )


COVERS = [
    # The session covers 10:00-10:15; a segment overlapping it is the session's.
    pytest.param(START, START + 10 * S, True, id="first-segment"),
    pytest.param(START - 5 * S, START + 5 * S, True, id="straddles-the-start"),
    pytest.param(START + 15 * MIN - S, START + 15 * MIN + 9 * S, True, id="straddles-the-end"),
    pytest.param(START - 10 * S, START, False, id="ends-at-the-start"),
    pytest.param(START + 15 * MIN, START + 15 * MIN + 10 * S, False, id="starts-at-the-end"),
    pytest.param(START + H, START + H + 10 * S, False, id="an-hour-later"),
]


@pytest.mark.parametrize(("start", "end", "covered"), COVERS)
def test_covers(start: datetime, end: datetime, covered: bool) -> None:
    assert session().covers(start, end) is covered


@dataclass(frozen=True, slots=True)
class Sub:
    subscription_id: str
    status: str = "active"


def test_session_refusal_only_under_the_subscription_it_was_made_under() -> None:
    assert session_refusal(session(), Sub("sub-a")) is None
    refusal = session_refusal(session(), Sub("sub-b"))  # R6: a new order after sub-a
    assert refusal is not None
    assert (http_status(refusal.error()), refusal.code, refusal.rule) == (
        403,
        "previous_subscription",
        "R6",
    )


# --- the credential --------------------------------------------------------------------


def test_a_credential_round_trips_and_is_url_safe() -> None:
    made = session()
    credential = seal(made, key=KEY)
    assert credential.startswith("v1.")
    assert set(credential) <= set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."
    )
    assert unseal(credential, key=KEY, now=NOW) == made
    # Another nonce, another credential for the same range.
    assert seal(session(nonce="other"), key=KEY) != credential


def test_a_credential_lives_until_its_expiry_exactly() -> None:
    credential = seal(session(), key=KEY)  # expires 12:20
    assert unseal(credential, key=KEY, now=NOW + 20 * MIN - timedelta(microseconds=1))
    for late in (NOW + 20 * MIN, NOW + 20 * MIN + S, NOW + 30 * 24 * H):
        with pytest.raises(SessionRefused) as caught:
            unseal(credential, key=KEY, now=late)
        assert (caught.value.code, http_status(caught.value)) == ("session_expired", 401)
    # 12:20 UTC is 20:20 in Shanghai: the same instant.
    with pytest.raises(SessionRefused, match="expired"):
        unseal(credential, key=KEY, now=datetime(2026, 5, 1, 20, 20, tzinfo=CST))


def _forged_claims(credential: str, **changes: object) -> str:
    """The credential with its claims changed but its MAC kept."""
    version, body, mac = credential.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(changes)
    raw = json.dumps(claims, separators=(",", ":")).encode()
    return f"{version}.{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}.{mac}"


GOOD = seal(session(), key=KEY)
_V, _BODY, _MAC = GOOD.split(".")

TAMPERED = [
    pytest.param(_forged_claims(GOOD, device_id="cam-2"), id="another-device"),
    pytest.param(_forged_claims(GOOD, account_id="acc-2"), id="another-account"),
    pytest.param(_forged_claims(GOOD, end="2026-05-01T22:00:00+00:00"), id="longer-range"),
    pytest.param(_forged_claims(GOOD, expires_at="2027-01-01T00:00:00+00:00"), id="longer-life"),
    pytest.param(seal(session(), key=b"another key"), id="another-key"),
    pytest.param(f"v2.{_BODY}.{_MAC}", id="another-version"),
    pytest.param(f"{_V}.{_BODY}.{_MAC[:-2]}", id="mac-cut"),
    pytest.param(f"{_V}.{_BODY}", id="no-mac"),
    pytest.param(f"{_V}.{_BODY}.{_MAC}.x", id="extra-part"),
    pytest.param(f"{_V}.{_BODY}.{_MAC[:-1]}é", id="non-ascii"),
    pytest.param("", id="empty"),
    pytest.param("kja_an-app-token", id="an-app-token"),
]


@pytest.mark.parametrize("credential", TAMPERED)
def test_a_tampered_credential_is_invalid(credential: str) -> None:
    with pytest.raises(SessionRefused) as caught:
        unseal(credential, key=KEY, now=NOW)
    assert (caught.value.code, http_status(caught.value)) == ("session_invalid", 401)


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param(b"[]", id="not-an-object"),
        pytest.param(b"{}", id="no-claims"),
        pytest.param(b"not json", id="not-json"),
    ],
)
def test_well_signed_but_unreadable_claims_are_invalid(claims: bytes) -> None:
    """Only the key's holder could sign these; they are refused all the same, not a 500."""
    from replay.playback_sessions import _mac

    body = base64.urlsafe_b64encode(claims).rstrip(b"=").decode()
    credential = f"v1.{body}.{_mac(KEY, f'v1.{body}')}"
    with pytest.raises(SessionRefused, match="claims"):
        unseal(credential, key=KEY, now=NOW)
