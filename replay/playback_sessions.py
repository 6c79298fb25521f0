"""Playback sessions (issue 15): an HLS playlist URL that carries its own credential.

A session lets a player that sends no header (``<video src>``, ffmpeg) play one device's
recorded range: the URL's ``session`` query value is the credential. Pure rules, no I/O:
the gateway supplies the key, the clock's instant and the nonce.

- **The range.** It ends after it starts and spans at most :data:`MAX_SESSION_RANGE`
  (12 hours, as long as an Amazon KVS HLS session lives): a longer one is refused
  ``range_too_long`` (:func:`check_range`).
- **The life.** A session lives while the asked range plays through from the moment it
  is made, plus :data:`PLAY_THROUGH_MARGIN`: ``expires_at = now + (end - start) + 5 min``
  (:func:`session_expiry`); it is refused ``session_expired`` from that instant on.
- **The credential.** ``v1.<claims>.<mac>``: the claims (account, device, subscription,
  range, expiry, a nonce) as compact JSON in unpadded base64url, and their HMAC-SHA256
  under the gateway's key (:func:`seal`, :func:`unseal`). Nothing is stored: any gateway
  holding the key verifies it, and changing the key ends every session. A credential
  that does not verify is ``session_invalid``.
- **What it may serve.** Its device's segments that overlap its range
  (:meth:`PlaybackSession.covers`), recorded under the subscription it was made under:
  a session made before an unsubscription is not reopened by a new order
  (:func:`session_refusal`, R6). Whether the family may watch at all (R5 unsubscribed,
  R8 broadband stopped) is judged again on every fetch by
  :func:`replay.playback.playback_refusal`, so a session is refused as soon as either no
  longer allows viewing.

:class:`SessionRefused` is :class:`~devices.errors.Unauthenticated`: the credential no
longer names a party.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Literal

from devices.clock import aware_utc
from devices.errors import Invalid, Unauthenticated
from replay.playback import Refusal, SubscriptionLike

__all__ = [
    "MAX_SESSION_RANGE",
    "PLAY_THROUGH_MARGIN",
    "PlaybackSession",
    "SessionRefused",
    "check_range",
    "open_session",
    "seal",
    "session_expiry",
    "session_refusal",
    "unseal",
]

#: The longest range one session plays.
MAX_SESSION_RANGE = timedelta(hours=12)
#: How long a session outlives the asked range played through from its making.
PLAY_THROUGH_MARGIN = timedelta(minutes=5)

_VERSION = "v1"
#: Keeps a session's MAC apart from any other message signed under a related key.
_PURPOSE = b"kanjia-playback-session\n"

#: The claims of a credential: four ids, then three instants.
_CLAIMS = ("account_id", "device_id", "subscription_id", "nonce", "start", "end", "expires_at")

SessionCode = Literal["session_invalid", "session_expired"]


class SessionRefused(Unauthenticated):
    """A session credential that does not verify (``session_invalid``) or has run out
    (``session_expired``)."""

    def __init__(self, code: SessionCode, message: str) -> None:
        super().__init__(message, code=code)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaybackSession:
    """What a session credential binds: whose, which device, which subscription's video,
    which range, until when. ``nonce`` makes each session's credential its own."""

    account_id: str
    device_id: str
    subscription_id: str
    start: datetime
    end: datetime
    expires_at: datetime
    nonce: str

    def covers(self, start: datetime, end: datetime) -> bool:
        """Whether a segment recorded ``[start, end)`` overlaps the session's range."""
        return aware_utc(start, "start") < self.end and aware_utc(end, "end") > self.start


def check_range(start: datetime, end: datetime) -> timedelta:
    """The range's length; :class:`~devices.errors.Invalid` unless it ends after it starts
    (``invalid_range``) and spans at most 12 hours (``range_too_long``)."""
    length = aware_utc(end, "end") - aware_utc(start, "start")
    if length <= timedelta(0):
        raise Invalid("the range must end after it starts", code="invalid_range")
    if length > MAX_SESSION_RANGE:
        raise Invalid(
            f"a playback session spans at most {MAX_SESSION_RANGE.total_seconds() / 3600:g} "
            f"hours, not {length}",
            code="range_too_long",
        )
    return length


def session_expiry(start: datetime, end: datetime, now: datetime) -> datetime:
    """When a session made at ``now`` for ``[start, end)`` runs out: once the range has
    played through from ``now``, plus 5 minutes."""
    return aware_utc(now, "now") + check_range(start, end) + PLAY_THROUGH_MARGIN


def open_session(
    *,
    account_id: str,
    device_id: str,
    subscription_id: str,
    start: datetime,
    end: datetime,
    now: datetime,
    nonce: str,
) -> PlaybackSession:
    """A new session over ``[start, end)`` (the range checked), living :func:`session_expiry`."""
    if not nonce:
        raise ValueError("a session needs a nonce")
    return PlaybackSession(
        account_id=account_id,
        device_id=device_id,
        subscription_id=subscription_id,
        start=aware_utc(start, "start"),
        end=aware_utc(end, "end"),
        expires_at=session_expiry(start, end, now),
        nonce=nonce,
    )


def session_refusal(
    session: PlaybackSession, current_subscription: SubscriptionLike
) -> Refusal | None:
    """``None`` if the session may serve under the device's current subscription: the one
    it was made under (R6: a new order does not reopen the old one's video)."""
    if current_subscription.subscription_id == session.subscription_id:
        return None
    return Refusal(
        code="previous_subscription",
        rule="R6",
        message=(
            f"this playback session was made under subscription {session.subscription_id}, "
            f"not the current {current_subscription.subscription_id}"
        ),
    )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, signed: str) -> str:
    if not key:
        raise ValueError("the session key must not be empty")
    return _b64(hmac.new(key, _PURPOSE + signed.encode("ascii"), hashlib.sha256).digest())


def seal(session: PlaybackSession, *, key: bytes) -> str:
    """The session's credential: ``v1.<claims>.<mac>`` (URL-safe, no padding)."""
    claims = {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name, value in asdict(session).items()
    }
    body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    signed = f"{_VERSION}.{body}"
    return f"{signed}.{_mac(key, signed)}"


def _invalid(why: str) -> SessionRefused:
    return SessionRefused("session_invalid", f"the playback session is not valid: {why}")


def _claims(body: str) -> PlaybackSession:
    try:
        data = json.loads(_unb64(body))
        if not isinstance(data, dict):
            raise TypeError("the claims are not an object")
        if set(data) != set(_CLAIMS):
            raise KeyError("not the claims of a session")
        texts = [data[name] for name in _CLAIMS[:4]]
        if not all(isinstance(value, str) and value for value in texts):
            raise TypeError("an id is not a string")
        start, end, expires_at = (
            aware_utc(datetime.fromisoformat(data[name]), name) for name in _CLAIMS[4:]
        )
        account_id, device_id, subscription_id, nonce = texts
        return PlaybackSession(
            account_id=account_id,
            device_id=device_id,
            subscription_id=subscription_id,
            start=start,
            end=end,
            expires_at=expires_at,
            nonce=nonce,
        )
    except (ValueError, TypeError, KeyError, binascii.Error) as exc:
        raise _invalid("its claims do not read") from exc


def unseal(credential: str, *, key: bytes, now: datetime) -> PlaybackSession:
    """The session a credential binds, if its MAC verifies under ``key`` (constant time)
    and it has not run out at ``now``; else :class:`SessionRefused`."""
    now = aware_utc(now, "now")
    version, _, rest = credential.partition(".")
    body, _, mac = rest.partition(".")
    if version != _VERSION or not body or not mac or "." in mac:
        raise _invalid("malformed")
    if not hmac.compare_digest(
        _mac(key, f"{version}.{body}").encode(), mac.encode("ascii", "replace")
    ):
        raise _invalid("the signature does not match")
    session = _claims(body)
    if now >= session.expires_at:
        raise SessionRefused(
            "session_expired",
            f"the playback session expired at {session.expires_at.isoformat()}: ask for a new one",
        )
    return session
