"""What every route module shares: the application keys, the request's services and app
token, the shapes of ids taken from paths and bodies, what the family may watch, and the
device answers the platform and the app give alike.

Route modules import this module, never :mod:`gateway.http.app`, which imports them.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from aiohttp import web
from pydantic import Field, StringConstraints
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from devices import accounts
from devices.broadband import account_state
from devices.errors import NotFound
from devices.models import AppToken, Device, DeviceKind
from gateway.errors import Declared
from gateway.http.api import Out, RouteSpec
from gateway.services import Services
from replay import index_store, playback
from replay.models import Segment, Subscription
from replay.subscriptions import active_subscription

SERVICES = web.AppKey("services", Services)
OPENAPI = web.AppKey("openapi", dict[str, Any])
ROUTES = web.AppKey("routes", list[RouteSpec])
APP_TOKEN = web.RequestKey("app_token", AppToken)

#: An account, device or subscription id in a body.
Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
#: The platform's order id (printable ASCII).
OrderId = Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")

_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


# --- answers the platform's and the app's routes give alike ------------------------------


class DeviceOut(Out):
    device_id: str
    account_id: str
    kind: DeviceKind
    name: str | None = None
    online: bool
    last_seen: datetime | None = None
    firmware: str | None = None

    @classmethod
    def of(cls, device: Device) -> DeviceOut:
        return cls.model_validate(device, from_attributes=True)


class DeviceList(Out):
    devices: list[DeviceOut]


def services_of(request: web.Request) -> Services:
    return request.app[SERVICES]


def app_token_of(request: web.Request) -> AppToken:
    return request[APP_TOKEN]


def path_id(request: web.Request, name: str) -> str:
    """An id from the path; one that no record could have is simply not found."""
    value = request.match_info[name]
    if not _ID.fullmatch(value):
        raise NotFound(name, repr(value))
    return value


async def watchable(session: AsyncSession, account_id: str, device_id: str) -> Subscription:
    """The device's current subscription if the family may watch it now; else 403/404."""
    await accounts.device_of_account(session, account_id, device_id)
    account = await accounts.get_account(session, account_id)
    current = await active_subscription(session, device_id)
    latest = (  # this account's: a device bound again shows nothing of its past (issue 17)
        await session.exec(
            select(Subscription.status)
            .where(Subscription.device_id == device_id, Subscription.account_id == account_id)
            .order_by(col(Subscription.started_at).desc())
            .limit(1)
        )
    ).first()
    refusal = playback.playback_refusal(current, latest, account_state(account.broadband_state))
    if refusal is not None:
        raise refusal.error()
    assert current is not None
    return current


async def viewable_segment(request: web.Request, session: AsyncSession) -> Segment:
    """The segment the path names, if the requesting family may watch it now (R5, R6, R8);
    else 403/404."""
    account_id = app_token_of(request).account_id
    segment_id = path_id(request, "segment_id")
    segment = await index_store.segment(session, segment_id)
    if segment is None or segment.account_id != account_id:
        raise NotFound("segment", segment_id)
    current = await watchable(session, account_id, segment.device_id)
    now = services_of(request).clock.now()
    verdict = playback.viewable(
        segment, current_subscription=current, broadband_state="active", now=now
    )
    if verdict is not True:
        raise verdict.error()
    return segment


#: The error codes a route declares (``Api.route``'s ``errors=``), by what it does. Showing
#: a camera's video: no plan (R1), unsubscribed (R5), broadband stopped (R8, 403 here).
WATCHING: tuple[Declared, ...] = ("not_entitled", "unsubscribed", ("broadband_inactive", 403))
#: One segment: also recorded under an earlier subscription (R6), or past its retention.
SEGMENT: tuple[Declared, ...] = (*WATCHING, "previous_subscription", "expired")
#: A playback session's credential (``app_or_session`` and ``session`` routes).
SESSION: tuple[Declared, ...] = ("session_invalid", "session_expired", "session_scope")
#: A time range asked for: backwards, or longer than the route allows.
RANGE: tuple[Declared, ...] = ("invalid_range", "range_too_long")
