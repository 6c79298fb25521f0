"""Platform routes of device commands (``rpc/req``): queue one, list a device's.

``POST /platform/v1/devices/{id}/commands`` answers 201 with the queued command; with an
``order_id``, a repeated order answers the first time's command. The command is then
sent, retried and timed out by :mod:`gateway.commands`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field

from devices import commands as cmd
from gateway import commands
from gateway.commands import CommandOut
from gateway.http.api import Api, Body, Out, answer_out, json_out, parse_body
from gateway.http.requests import path_id, services_of

api = Api()


class CommandIn(Body):
    order_id: str | None = Field(
        default=None, min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$"
    )
    method: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    params: dict[str, Any] = Field(default_factory=dict)
    deadline_seconds: float = Field(default=60.0, gt=0, le=cmd.MAX_DEADLINE_SECONDS)
    max_attempts: int = Field(default=3, ge=1, le=cmd.MAX_ATTEMPTS_LIMIT)


class CommandList(Out):
    device_id: str
    commands: list[CommandOut]


@api.route(
    "POST",
    "/platform/v1/devices/{device_id}/commands",
    auth="platform",
    tag="commands",
    summary="Send an imperative command (rpc/req): queued, sent, retried, timed out",
    body=CommandIn,
    response=CommandOut,
    status=201,
    errors=("not_found", "order_id_reused"),
)
async def create_command(request: web.Request) -> web.StreamResponse:
    """Queue an imperative command for a device (rpc/req): sent over MQTT, retried up to
    max_attempts and timed out after deadline_seconds. With an order_id, a repeated order
    answers the first command."""
    services = services_of(request)
    device_id = path_id(request, "device_id")
    body = parse_body(await request.read(), CommandIn)
    wanted = commands.CommandRequest(
        device_id=device_id,
        method=body.method,
        params=body.params,
        deadline_seconds=body.deadline_seconds,
        max_attempts=body.max_attempts,
    )
    if body.order_id is None:
        row = await commands.create_command(services, wanted)
        return json_out(CommandOut.of(row), 201)
    return answer_out(await commands.order_command(services, wanted, body.order_id))


@api.route(
    "GET",
    "/platform/v1/devices/{device_id}/commands",
    auth="platform",
    tag="commands",
    summary="The device's commands, newest first",
    response=CommandList,
    errors=("not_found",),
)
async def list_commands(request: web.Request) -> web.StreamResponse:
    """The device's commands, newest first, with their status, attempts and result."""
    services = services_of(request)
    device_id = path_id(request, "device_id")
    rows = await commands.list_commands(services, device_id)
    return json_out(CommandList(device_id=device_id, commands=[CommandOut.of(r) for r in rows]))
