"""Platform routes (the operator's smart-home platform, bearer platform token)."""

from __future__ import annotations

from datetime import datetime, timedelta

from aiohttp import web
from pydantic import Field

from devices import accounts, credentials
from devices.desired import account_convergence
from devices.models import Account, DeviceKind
from gateway import unbinding
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
    errors=(404,),
)
async def put_account(request: web.Request) -> web.StreamResponse:
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
    errors=(404,),
)
async def get_account(request: web.Request) -> web.StreamResponse:
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
    errors=(404, 409),
)
async def bind_device(request: web.Request) -> web.StreamResponse:
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
    errors=(404, 409),
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
    errors=(404,),
)
async def list_account_devices(request: web.Request) -> web.StreamResponse:
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
    errors=(404,),
)
async def create_app_token(request: web.Request) -> web.StreamResponse:
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
    errors=(404,),
)
async def revoke_app_token(request: web.Request) -> web.StreamResponse:
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
    errors=(404,),
)
async def revoke_account_tokens(request: web.Request) -> web.StreamResponse:
    services = services_of(request)
    async with services.db.writing() as session:
        revoked = await accounts.revoke_account_tokens(session, path_id(request, "account_id"))
        await session.commit()
    return json_out(RevokedOut(revoked=revoked))
