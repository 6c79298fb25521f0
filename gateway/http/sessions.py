"""Playback sessions on the wire (issue 15): the credential in a ``session`` query value.

The rules (range, life, what a session may serve) are :mod:`replay.playback_sessions`;
here a request's credential is verified and its refusals get their statuses:

- :func:`authenticated_session`: the request's ``session`` query value, verified
  (signature and expiry): 401 ``unauthorized`` when absent, ``session_invalid`` or
  ``session_expired`` otherwise. Routes declared ``auth="session"`` (or
  ``"app_or_session"`` with a ``session`` value) have it checked before their handler.
- :func:`session_viewing`: the session, if it may serve on this device now: 403
  ``session_scope`` for another device's path; then, on every fetch, what the family may
  watch (:func:`gateway.http.requests.watchable`: R1, R5, R8, the device still the
  account's) under the subscription the session was made under (R6).

A route that accepts the app token *or* a session (the MP4 export) declares
``auth="app_or_session"`` and calls :func:`session_viewing` when
``request.get(PLAYBACK_SESSION)`` is set, :func:`gateway.http.requests.watchable` with the
app token's account otherwise; :meth:`PlaybackSession.covers` says whether a time lies in
the session's range.

The credential is a secret: it travels only in the ``session`` query value, which the
access log writes as ``***`` (:mod:`gateway.http.access_log`), never in a path.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from urllib.parse import quote

from aiohttp import web
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.config import Settings, derived_key
from gateway.http.api import ApiError
from gateway.http.requests import services_of, watchable
from replay import playback_sessions
from replay.models import Subscription
from replay.playback_sessions import PlaybackSession

__all__ = [
    "PLAYBACK_SESSION",
    "SESSION_PARAM",
    "authenticated_session",
    "issue_session",
    "playlist_path",
    "segment_uri",
    "session_key",
    "session_viewing",
]

#: The query parameter that carries a session's credential.
SESSION_PARAM = "session"
#: The request's verified session (set by :func:`authenticated_session`).
PLAYBACK_SESSION = web.RequestKey("playback_session", PlaybackSession)


def session_key(settings: Settings) -> bytes:
    """The HMAC key of playback sessions: derived, for this purpose alone, from
    ``KANJIA_URL_SIGNING_KEY`` (else from the platform token), so every gateway sharing
    the configuration verifies every session."""
    base = derived_key(settings, settings.url_signing_key, b"kanjia-presigned-urls")
    return hmac.new(base, b"kanjia-playback-sessions", hashlib.sha256).digest()


def issue_session(
    settings: Settings,
    *,
    account_id: str,
    subscription: Subscription,
    start: datetime,
    end: datetime,
    now: datetime,
) -> tuple[str, PlaybackSession]:
    """A new session over the device's ``[start, end)`` and its credential (400
    ``range_too_long`` over 12 hours)."""
    session = playback_sessions.open_session(
        account_id=account_id,
        device_id=subscription.device_id,
        subscription_id=subscription.subscription_id,
        start=start,
        end=end,
        now=now,
        nonce=secrets.token_urlsafe(12),
    )
    return playback_sessions.seal(session, key=session_key(settings)), session


def playlist_path(device_id: str, credential: str) -> str:
    """The session's playlist, relative to the gateway's root."""
    return (
        f"/app/v1/devices/{quote(device_id)}/playback/playlist.m3u8"
        f"?{SESSION_PARAM}={quote(credential, safe='')}"
    )


def segment_uri(segment_id: str, credential: str) -> str:
    """A segment of the session's playlist, relative to the playlist's URL."""
    return f"segments/{quote(segment_id)}.ts?{SESSION_PARAM}={quote(credential, safe='')}"


def authenticated_session(request: web.Request) -> PlaybackSession:
    """The session whose credential the request's ``session`` query value is, verified
    now: 401 ``unauthorized`` (none), ``session_invalid`` or ``session_expired``."""
    if PLAYBACK_SESSION in request:
        return request[PLAYBACK_SESSION]
    credential = request.query.get(SESSION_PARAM)
    if not credential:
        raise ApiError(401, "unauthorized", f"a {SESSION_PARAM} query parameter is required")
    services = services_of(request)
    session = playback_sessions.unseal(  # SessionRefused: 401, its own code
        credential, key=session_key(services.settings), now=services.clock.now()
    )
    request[PLAYBACK_SESSION] = session
    return session


async def session_viewing(
    request: web.Request, db: AsyncSession, device_id: str
) -> tuple[PlaybackSession, Subscription]:
    """The request's session and the device's current subscription, if the session may
    serve on ``device_id`` now: its own device (403 ``session_scope``), the family still
    allowed to watch (403 ``unsubscribed`` R5, ``broadband_inactive`` R8; 404 once the
    device left the account), under the subscription it was made under (403
    ``previous_subscription``, R6). Judged again on every call: nothing is remembered."""
    session = authenticated_session(request)
    if session.device_id != device_id:
        raise ApiError(
            403, "session_scope", f"this playback session is for device {session.device_id}"
        )
    current = await watchable(db, session.account_id, device_id)
    refusal = playback_sessions.session_refusal(session, current)
    if refusal is not None:
        raise refusal.error()
    return session, current
