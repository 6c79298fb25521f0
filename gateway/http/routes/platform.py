"""Platform routes (the operator's smart-home platform, bearer platform token)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from aiohttp import web
from pydantic import Field

from devices import accounts, credentials, orders
from devices.desired import account_convergence
from devices.models import Account, DeviceKind
from gateway import unbinding
from gateway.desired import PUBLISH_JOB, refresh_desired
from gateway.http.api import Api, ApiError, Body, Out, json_out, parse_body, parse_query
from gateway.http.paging import decode_cursor, page
from gateway.http.requests import DeviceOut, Identifier, path_id, services_of

api = Api()


class AccountIn(Body):
    owner_id: Identifier
    star_level: int = Field(ge=0, le=7)
    name: str | None = Field(default=None, max_length=200)


class AccountOut(Out):
    account_id: str
    owner_id: str
    star_level: int
    name: str | None = None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, account: Account) -> AccountOut:
        return cls.model_validate(account, from_attributes=True)


class DeviceIn(Body):
    device_id: Identifier
    kind: DeviceKind
    name: str | None = Field(default=None, max_length=200)


class ConvergedDeviceOut(DeviceOut):
    """A device with its desired-state convergence and, never their secret, whether it
    has current MQTT credentials and since when (platform view)."""

    desired_version: int = 0
    reported_version: int = 0
    converged: bool = True
    has_credentials: bool = False
    credentials_issued_at: datetime | None = None
    #: The broker lost the device's client (found at the gateway's start): issue again.
    credentials_need_rotation: bool = False


class ConvergedDeviceList(Out):
    devices: list[ConvergedDeviceOut]


class AppTokenIn(Body):
    account_id: Identifier
    user_id: Identifier


class AppTokenOut(Out):
    token: str
    token_id: str
    account_id: str
    user_id: str
    expires_at: datetime


class RevokedOut(Out):
    revoked: int


@api.route(
    "PUT",
    "/platform/v1/accounts/{account_id}",
    auth="platform",
    tag="platform",
    summary="Create or update a broadband account",
    body=AccountIn,
    response=AccountOut,
    errors=("not_found",),
)
async def put_account(request: web.Request) -> web.StreamResponse:
    """Create the broadband account, or update its owner, star level and name: 201 when
    created, 200 when it existed. The platform's CRM is the source of accounts; the service
    keeps its own broadband state (stops, resumes) beside them."""
    services = services_of(request)
    account_id = path_id(request, "account_id")
    body = parse_body(await request.read(), AccountIn)
    async with services.db.writing() as session:
        result = await accounts.upsert_account(
            session,
            account_id=account_id,
            owner_id=body.owner_id,
            star_level=body.star_level,
            name=body.name,
            now=services.clock.now(),
        )
    return json_out(AccountOut.of(result.account), 201 if result.created else 200)


@api.route(
    "GET",
    "/platform/v1/accounts/{account_id}",
    auth="platform",
    tag="platform",
    summary="A broadband account",
    response=AccountOut,
    errors=("not_found",),
)
async def get_account(request: web.Request) -> web.StreamResponse:
    """One broadband account: owner, star level (R11), name and when it was created and last
    changed."""
    services = services_of(request)
    async with services.db.session() as session:
        account = await accounts.get_account(session, path_id(request, "account_id"))
    return json_out(AccountOut.of(account))


@api.route(
    "POST",
    "/platform/v1/accounts/{account_id}/devices",
    auth="platform",
    tag="platform",
    summary="Bind a camera or router to the account",
    body=DeviceIn,
    response=DeviceOut,
    status=201,
    errors=("not_found", "device_bound_elsewhere", "device_kind_mismatch"),
)
async def bind_device(request: web.Request) -> web.StreamResponse:
    """Bind a camera or a router to the account: 201 when bound now, 200 when it already was. A
    device bound to another account, or bound as the other kind, is 409. A new camera's desired
    state is written and published."""
    services = services_of(request)
    account_id = path_id(request, "account_id")
    body = parse_body(await request.read(), DeviceIn)
    async with services.db.writing() as session:
        result = await accounts.bind_device(
            session,
            account_id=account_id,
            device_id=body.device_id,
            kind=body.kind,
            name=body.name,
            now=services.clock.now(),
        )
        if result.created:
            await refresh_desired(services, session, [body.device_id])
            await session.commit()
            services.jobs.trigger(PUBLISH_JOB)
    return json_out(DeviceOut.of(result.device), 201 if result.created else 200)


class UnboundOut(Out):
    device_id: str
    account_id: str
    kind: str
    credentials_revoked: bool
    router_access_released: bool
    commands_abandoned: int


@api.route(
    "DELETE",
    "/platform/v1/accounts/{account_id}/devices/{device_id}",
    auth="platform",
    tag="platform",
    summary="Unbind a camera or router from the account (R9: unsubscribe first)",
    response=UnboundOut,
    errors=("subscription_active",),
)
async def unbind_device(request: web.Request) -> web.StreamResponse:
    """Remove a device from the account so that it can be bound to another: refused with
    409 ``subscription_active`` (R9) while a cloud-replay product is active on the camera;
    otherwise the account's app views answer 404 for it, its MQTT credentials are revoked,
    its unfinished commands fail, a router's SSH access is forgotten, and its desired
    document becomes that of an unbound device (recording off, nothing suspended). Its
    stored video stays under the old subscription's retention and is never shown to any
    later account; binding it again starts clean."""
    services = services_of(request)
    done = await unbinding.unbind(
        services, path_id(request, "account_id"), path_id(request, "device_id")
    )
    return json_out(
        UnboundOut(
            device_id=done.device_id,
            account_id=done.account_id,
            kind=done.kind,
            credentials_revoked=done.credentials_revoked,
            router_access_released=done.router_access_released,
            commands_abandoned=done.commands_abandoned,
        )
    )


@api.route(
    "GET",
    "/platform/v1/accounts/{account_id}/devices",
    auth="platform",
    tag="platform",
    summary="The account's devices with their desired-state convergence",
    response=ConvergedDeviceList,
    errors=("not_found",),
)
async def list_account_devices(request: web.Request) -> web.StreamResponse:
    """The account's devices with their presence, their desired-state convergence (desired and
    reported versions) and whether each has current MQTT credentials (never the secret),
    including those the broker lost and must be issued again."""
    services = services_of(request)
    account_id = path_id(request, "account_id")
    async with services.db.session() as session:
        await accounts.get_account(session, account_id)
        devices = await accounts.list_devices(session, account_id)
        convergence = await account_convergence(session, account_id, devices)
        issued = await credentials.issued_at_of(session, (d.device_id for d in devices))
    out = [
        ConvergedDeviceOut(
            **DeviceOut.of(c.device).model_dump(),
            desired_version=c.desired_version,
            reported_version=c.reported_version,
            converged=c.converged,
            has_credentials=c.device.device_id in issued,
            credentials_issued_at=issued.get(c.device.device_id),
            credentials_need_rotation=c.device.device_id in services.need_rotation,
        )
        for c in convergence
    ]
    return json_out(ConvergedDeviceList(devices=out))


@api.route(
    "POST",
    "/platform/v1/app-tokens",
    auth="platform",
    tag="platform",
    summary="A token for one app user of one account",
    body=AppTokenIn,
    response=AppTokenOut,
    status=201,
    errors=("not_found",),
)
async def create_app_token(request: web.Request) -> web.StreamResponse:
    """Issue a bearer token for one user of the companion app, scoped to one account, valid for
    KANJIA_APP_TOKEN_TTL_DAYS; the token is shown in this answer only (it is stored hashed)."""
    services = services_of(request)
    body = parse_body(await request.read(), AppTokenIn)
    async with services.db.writing() as session:
        issued = await accounts.issue_app_token(
            session,
            account_id=body.account_id,
            user_id=body.user_id,
            now=services.clock.now(),
            ttl=timedelta(days=services.settings.app_token_ttl_days),
        )
    out = AppTokenOut(
        token=issued.token,
        token_id=issued.token_id,
        account_id=body.account_id,
        user_id=body.user_id,
        expires_at=issued.expires_at,
    )
    return json_out(out, 201)


@api.route(
    "DELETE",
    "/platform/v1/app-tokens/{token_id}",
    auth="platform",
    tag="platform",
    summary="Revoke one app token at once",
    status=204,
    errors=("not_found",),
)
async def revoke_app_token(request: web.Request) -> web.StreamResponse:
    """Revoke one app token by its token_id, at once: its next request is 401."""
    services = services_of(request)
    async with services.db.writing() as session:
        await accounts.revoke_app_token(session, path_id(request, "token_id"))
        await session.commit()
    return web.Response(status=204)


@api.route(
    "DELETE",
    "/platform/v1/accounts/{account_id}/app-tokens",
    auth="platform",
    tag="platform",
    summary="Revoke every app token of the account at once",
    response=RevokedOut,
    errors=("not_found",),
)
async def revoke_account_tokens(request: web.Request) -> web.StreamResponse:
    """Revoke every app token of the account at once and say how many were revoked."""
    services = services_of(request)
    async with services.db.writing() as session:
        revoked = await accounts.revoke_account_tokens(session, path_id(request, "account_id"))
        await session.commit()
    return json_out(RevokedOut(revoked=revoked))


# --- the operator's lists (issue 15: the console's operator view) --------------------------

#: A page of a list route: 50 items unless asked, at most 200.
PageSize = Field(default=50, ge=1, le=200)
Cursor = Field(default=None, min_length=1, max_length=512)


class AccountsQuery(Body):
    limit: int = PageSize
    cursor: str | None = Cursor
    #: The start of an account id or of its owner's id.
    q: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    broadband_state: Literal["active", "stopped", "torn_down"] | None = None


class AccountSummaryOut(AccountOut):
    broadband_state: str
    devices: int
    online: int


class AccountPage(Out):
    accounts: list[AccountSummaryOut]
    #: Pass it back as ``cursor`` for the next page; absent on the last one.
    next_cursor: str | None = None


@api.route(
    "GET",
    "/platform/v1/accounts",
    auth="platform",
    tag="platform",
    summary="Accounts, paged and filtered, with their device and online counts",
    query=AccountsQuery,
    response=AccountPage,
)
async def list_accounts(request: web.Request) -> web.StreamResponse:
    """The broadband accounts in account-id order, a page at a time (``limit``, and the
    opaque ``next_cursor`` passed back as ``cursor``), filtered by the start of the account
    or owner id (``q``) and by broadband state; each with its broadband state, how many
    devices it has and how many of them are online now."""
    services = services_of(request)
    query = parse_query(request, AccountsQuery)
    after = decode_cursor(query.cursor, 1)[0] if query.cursor else None
    async with services.db.session() as session:
        found = await accounts.list_accounts(
            session,
            prefix=query.q,
            broadband_state=query.broadband_state,
            after=after,
            limit=query.limit + 1,
        )
    shown, cursor = page(found, query.limit, lambda a: (a.account.account_id,))
    out = [
        AccountSummaryOut(
            **AccountOut.of(a.account).model_dump(),
            broadband_state=a.account.broadband_state,
            devices=a.devices,
            online=a.online,
        )
        for a in shown
    ]
    return json_out(AccountPage(accounts=out, next_cursor=cursor))


class OrdersQuery(Body):
    account_id: Identifier | None = None
    #: An action (``subscribe``, ``unsubscribe``, ``device.command``, ``broadband.stop``...)
    #: or its kind (``broadband``: every broadband order).
    action: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_.-]{0,31}$")
    limit: int = PageSize
    cursor: str | None = Cursor


class ReportOut(Out):
    """The completion report (报竣) owed to the platform's callback for this order."""

    delivered: bool
    delivered_at: datetime | None = None
    attempts: int
    last_error: str | None = None


class OrderOut(Out):
    order_id: str
    action: str
    account_id: str | None = None
    target: str | None = None
    #: The HTTP status the order was answered with, and that answer's body.
    status: int
    result: dict[str, Any]
    answered_at: datetime
    report: ReportOut | None = None

    @classmethod
    def of(cls, recorded: orders.RecordedOrder) -> OrderOut:
        o, r = recorded.order, recorded.report
        return cls(
            order_id=o.order_id,
            action=o.action,
            account_id=o.account_id,
            target=o.target,
            status=o.status_code,
            result=o.response,
            answered_at=o.created_at,
            report=None
            if r is None
            else ReportOut(
                delivered=r.delivered_at is not None,
                delivered_at=r.delivered_at,
                attempts=r.attempts,
                last_error=r.last_error,
            ),
        )


class OrderPage(Out):
    orders: list[OrderOut]
    next_cursor: str | None = None


def _order_key(cursor: str) -> tuple[datetime, str]:
    at, order_id = decode_cursor(cursor, 2)
    try:
        return datetime.fromisoformat(at), order_id
    except ValueError as exc:
        raise ApiError(400, "invalid_cursor", "the cursor is not one this service gave") from exc


@api.route(
    "GET",
    "/platform/v1/orders",
    auth="platform",
    tag="platform",
    summary="The platform's orders with each one's answer, newest first, paged",
    query=OrdersQuery,
    response=OrderPage,
)
async def list_orders(request: web.Request) -> web.StreamResponse:
    """Every order the platform sent that the service answered under its ``order_id``
    (subscriptions, unsubscriptions, broadband stops, resumes and teardowns, device
    commands), newest first, of one account and one action when asked; each with the
    status and body it was answered with (a refusal too: a repeat gets the same) and the
    state of its completion report. Paged like the accounts (``limit``, ``cursor``)."""
    services = services_of(request)
    query = parse_query(request, OrdersQuery)
    after = _order_key(query.cursor) if query.cursor else None
    async with services.db.session() as session:
        found = await orders.list_orders(
            session,
            account_id=query.account_id,
            action=query.action,
            after=after,
            limit=query.limit + 1,
        )
    shown, cursor = page(
        found, query.limit, lambda o: (o.order.created_at.isoformat(), o.order.order_id)
    )
    return json_out(OrderPage(orders=[OrderOut.of(o) for o in shown], next_cursor=cursor))
