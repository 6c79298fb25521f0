"""Platform routes (the operator's smart-home platform, bearer platform token)."""

from __future__ import annotations

from datetime import datetime, timedelta

from aiohttp import web
from pydantic import Field

from devices import accounts, credentials
from devices.desired import account_convergence
from devices.models import Account, DeviceKind
from gateway.desired import PUBLISH_JOB, refresh_desired
from gateway.http.api import Api, Body, Out, json_out, parse_body
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
