"""Device credentials (platform token) and the broker's HTTP hooks (their own token).

The hooks speak EMQX's HTTP authentication and authorization shapes: the broker posts
``{"clientid", "username", "password", ...}`` on connect and ``{"clientid", "username",
"topic", "action"}`` on publish and subscribe, and reads ``{"result": "allow"|"deny",
"is_superuser": false}``. Fields the broker adds are ignored; a missing one denies.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from gateway import credentials
from gateway.http.api import Api, Handler, Out, json_out, parse_body
from gateway.http.requests import path_id, services_of

api = Api()

CREDENTIALS_PATH = "/platform/v1/devices/{device_id}/credentials"


class CredentialsOut(Out):
    """Issued credentials: the password is shown this once."""

    device_id: str
    username: str
    password: str
    issued_at: datetime


class BrokerRequest(BaseModel):
    """What a broker sends about a client; the fields it adds besides are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    clientid: str | None = None
    username: str | None = None


class AuthenticateIn(BrokerRequest):
    password: str | None = None


class AuthorizeIn(BrokerRequest):
    topic: str = ""
    action: str = ""


class BrokerVerdict(Out):
    result: Literal["allow", "deny"]
    is_superuser: bool = False

    @classmethod
    def of(cls, allowed: bool) -> BrokerVerdict:
        return cls(result="allow" if allowed else "deny")


@api.route(
    "POST",
    CREDENTIALS_PATH,
    auth="platform",
    tag="platform",
    summary="Issue (or rotate) a bound device's MQTT credentials; the password is shown once",
    response=CredentialsOut,
    status=201,
    errors=("not_found", "reserved_client_id"),
)
async def issue_credentials(request: web.Request) -> web.StreamResponse:
    """Issue MQTT credentials to a bound device, or rotate them: a new password, shown in this
    answer only (stored as a keyed hash), registered with the broker after the commit. The
    gateway's own client id cannot be issued (409)."""
    services = services_of(request)
    issued = await credentials.issue_credentials(services, path_id(request, "device_id"))
    return json_out(CredentialsOut.model_validate(issued, from_attributes=True), 201)


@api.route(
    "DELETE",
    CREDENTIALS_PATH,
    auth="platform",
    tag="platform",
    summary="Revoke a device's MQTT credentials",
    status=204,
    errors=("not_found",),
)
async def revoke_credentials(request: web.Request) -> web.StreamResponse:
    """Revoke the device's MQTT credentials: removed from the database and then from the
    broker, so the device can no longer connect."""
    await credentials.revoke_credentials(services_of(request), path_id(request, "device_id"))
    return web.Response(status=204)


def _hook(name: str, summary: str, body: type[BrokerRequest]) -> Callable[[Handler], Handler]:
    """Declare one of the broker's hooks: its own token, EMQX's answer shape."""
    return api.route(
        "POST",
        f"/broker/v1/{name}",
        auth="broker",
        tag="broker",
        summary=summary,
        body=body,
        response=BrokerVerdict,
    )


@_hook("authenticate", "EMQX-style HTTP authentication: may this client connect?", AuthenticateIn)
async def broker_authenticate(request: web.Request) -> web.StreamResponse:
    """The broker asks whether a client may connect: allowed when the client id is the
    username, a device's id, and the password that device's current one. Anonymous clients
    and missing fields are denied. 404 while the hooks are off."""
    ask = parse_body(await request.read(), AuthenticateIn)
    services = services_of(request)
    allowed = await credentials.authenticate(
        services, client_id=ask.clientid, username=ask.username, password=ask.password
    )
    return json_out(BrokerVerdict.of(allowed))


@_hook("authorize", "EMQX-style HTTP authorization: may this client use a topic?", AuthorizeIn)
async def broker_authorize(request: web.Request) -> web.StreamResponse:
    """The broker asks whether a client may publish or subscribe to a topic: allowed only
    by the topic rule for the device the client is, and while its credentials are current
    (a revocation bites at the next call). A missing field denies. 404 while the hooks are
    off."""
    ask = parse_body(await request.read(), AuthorizeIn)
    allowed = await credentials.authorize(
        services_of(request),
        client_id=ask.clientid,
        username=ask.username,
        topic=ask.topic,
        action=ask.action,
    )
    return json_out(BrokerVerdict.of(allowed))
