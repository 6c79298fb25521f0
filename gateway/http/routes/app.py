"""Companion-app routes (bearer app token; one account's view)."""

from __future__ import annotations

from aiohttp import web

from devices import accounts
from gateway.http.api import Api, json_out
from gateway.http.requests import DeviceList, DeviceOut, app_token_of, services_of

api = Api()


@api.route(
    "GET",
    "/app/v1/devices",
    auth="app",
    tag="app",
    summary="The family's cameras and routers with their presence",
    response=DeviceList,
)
async def app_devices(request: web.Request) -> web.StreamResponse:
    """The cameras and routers of the token's account, with their presence (online, last seen)
    and firmware; a family sees only its own devices."""
    services = services_of(request)
    token = app_token_of(request)
    async with services.db.session() as session:
        devices = await accounts.list_devices(session, token.account_id)
    return json_out(DeviceList(devices=[DeviceOut.of(d) for d in devices]))
