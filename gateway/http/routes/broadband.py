"""Platform routes of broadband stop, resume, teardown and emergency resume (R8-R12).

Each order answers 200 with the account's broadband view (``applied: false`` and a
``reason`` when it changed nothing: ``stale``, ``already_stopped``, ``not_stopped``), or
409 with the rule's refusal (``active_subscriptions`` R9, ``torn_down`` R9,
``emergency_not_allowed`` R11), or 404 for an unknown account. A repeated ``order_id``
returns the first answer. The batch route applies up to 1,000 orders, each on its own
(one bad order does not fail the others), and answers per order, in order. Device
commands (``rpc/req``) are enqueued and listed here too.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import AwareDatetime, Field, ValidationError, model_validator

from devices import commands as cmd
from devices.broadband import StopType
from devices.models import Device
from devices.orders import Answer
from gateway import broadband
from gateway.http.api import Api, ApiError, Body, Out, error_body, json_out, parse_body
from gateway.http.errors import REFUSALS, http_status
from gateway.http.requests import Identifier, OrderId, path_id, services_of
from gateway.orders import execute_order
from gateway.services import Services

log = logging.getLogger(__name__)

api = Api()

#: Most orders one batch may carry.
MAX_BATCH = 1000
#: Groups of a batch worked on at once (see :func:`_groups`); SQLite serialises writes.
BATCH_CONCURRENCY = {"postgresql": 4}


class TypedOrderIn(Body):
    """A stop or a resume of one stop type (R10)."""

    order_id: str = OrderId
    stop_type: StopType
    issued_at: AwareDatetime | None = None


class OrderIn(Body):
    """A teardown (R9) or an emergency resume (R11)."""

    order_id: str = OrderId
    issued_at: AwareDatetime | None = None


class BatchOrderIn(Body):
    action: broadband.Action
    account_id: Identifier
    order_id: str = OrderId
    stop_type: StopType | None = None
    issued_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _stop_type_fits_action(self) -> BatchOrderIn:
        if self.action in broadband.TYPED_ACTIONS and self.stop_type is None:
            raise ValueError(f"stop_type is required for {self.action}")
        if self.action not in broadband.TYPED_ACTIONS and self.stop_type is not None:
            raise ValueError(f"{self.action} takes no stop_type")
        return self


class BatchIn(Body):
    """What the handler parses: each order is validated on its own."""

    orders: list[Any] = Field(min_length=1, max_length=MAX_BATCH)


class BatchDoc(Body):
    """The documented shape of a batch (orders as :class:`BatchOrderIn`)."""

    orders: list[BatchOrderIn] = Field(min_length=1, max_length=MAX_BATCH)


class BatchResultOut(Out):
    index: int
    order_id: str | None = None
    account_id: str | None = None
    status: int
    body: dict[str, Any]


class BatchOut(Out):
    results: list[BatchResultOut]


def _order(
    action: broadband.Action, account_id: str, body: TypedOrderIn | OrderIn
) -> broadband.BroadbandOrder:
    return broadband.BroadbandOrder(
        action=action,
        account_id=account_id,
        order_id=body.order_id,
        stop_type=body.stop_type if isinstance(body, TypedOrderIn) else None,
        issued_at=body.issued_at,
    )


def _order_route(action: broadband.Action, summary: str) -> None:
    typed = action in broadband.TYPED_ACTIONS
    model: type[TypedOrderIn] | type[OrderIn] = TypedOrderIn if typed else OrderIn

    async def handler(request: web.Request) -> web.StreamResponse:
        services = services_of(request)
        account_id = path_id(request, "account_id")
        body = parse_body(await request.read(), model)
        return await broadband.run_order(services, _order(action, account_id, body))

    handler.__name__ = f"broadband_{action.replace('-', '_')}"
    api.route(
        "POST",
        f"/platform/v1/broadband/{{account_id}}/{action}",
        auth="platform",
        tag="broadband",
        summary=summary,
        body=model,
        response=broadband.BroadbandViewOut,
        errors=(404, 409),
    )(handler)


_order_route("stop", "Stop the account's broadband for one stop type (R8, R10, R12)")
_order_route("resume", "Lift the stop of one type (R8, R10, R12)")
_order_route("teardown", "Tear the broadband account down (拆机, R9)")
_order_route("emergency-resume", "Emergency resume for 7 days during an arrears stop (R11)")


@api.route(
    "GET",
    "/platform/v1/broadband/{account_id}",
    auth="platform",
    tag="broadband",
    summary="The account's broadband view with its devices' convergence",
    response=broadband.BroadbandViewOut,
    errors=(404,),
)
async def broadband_view(request: web.Request) -> web.StreamResponse:
    services = services_of(request)
    view = await broadband.current_view(services, path_id(request, "account_id"))
    return json_out(view)


def _invalid(exc: ValidationError) -> dict[str, Any]:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "order"
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{where}: {msg}")
    return error_body("invalid_body", "; ".join(parts))


async def _one(services: Services, index: int, raw: Any) -> BatchResultOut:
    ids = raw if isinstance(raw, dict) else {}
    order_id = ids.get("order_id") if isinstance(ids.get("order_id"), str) else None
    account_id = ids.get("account_id") if isinstance(ids.get("account_id"), str) else None
    try:
        item = BatchOrderIn.model_validate(raw)
    except ValidationError as exc:
        return BatchResultOut(
            index=index, order_id=order_id, account_id=account_id, status=400, body=_invalid(exc)
        )
    order = broadband.BroadbandOrder(
        action=item.action,
        account_id=item.account_id,
        order_id=item.order_id,
        stop_type=item.stop_type,
        issued_at=item.issued_at,
    )
    try:
        response = await broadband.run_order(services, order)
        status, body = response.status, broadband.response_json(response)
    except REFUSALS as exc:
        status, body = http_status(exc), error_body(exc.code, exc.message, exc.rule)
    except Exception:
        log.exception("batch order %s failed", item.order_id)
        status, body = 500, error_body("internal", "internal error")
    return BatchResultOut(
        index=index, order_id=item.order_id, account_id=item.account_id, status=status, body=body
    )


def _groups(orders: list[Any]) -> list[list[int]]:
    """Orders that must run one after the other, in batch order: those of one account,
    and those sharing an ``order_id`` (the first in the batch is the one applied)."""
    parent = list(range(len(orders)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    for index, raw in enumerate(orders):
        if not isinstance(raw, dict):
            continue
        for name in ("account_id", "order_id"):
            value = raw.get(name)
            if not isinstance(value, str):
                continue
            seen = first.setdefault((name, value), index)
            parent[root(index)] = root(seen)
    groups: dict[int, list[int]] = {}
    for index in range(len(orders)):
        groups.setdefault(root(index), []).append(index)
    return list(groups.values())


@api.route(
    "POST",
    "/platform/v1/broadband/batch",
    auth="platform",
    tag="broadband",
    summary="Up to 1,000 broadband orders; per-order results, in order",
    body=BatchDoc,
    response=BatchOut,
)
async def broadband_batch(request: web.Request) -> web.StreamResponse:
    services = services_of(request)
    batch = parse_body(await request.read(), BatchIn)
    results: list[BatchResultOut | None] = [None] * len(batch.orders)
    limit = asyncio.Semaphore(BATCH_CONCURRENCY.get(services.db.dialect, 1))

    async def run_group(indexes: list[int]) -> None:
        async with limit:
            for index in indexes:
                results[index] = await _one(services, index, batch.orders[index])

    async with asyncio.TaskGroup() as tg:
        for indexes in _groups(batch.orders):
            tg.create_task(run_group(indexes), name=f"broadband[batch].{indexes[0]}")
    return json_out(BatchOut(results=[r for r in results if r is not None]))


# --- device commands ----------------------------------------------------------------------


class CommandIn(Body):
    order_id: str | None = Field(
        default=None, min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$"
    )
    method: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    params: dict[str, Any] = Field(default_factory=dict)
    deadline_seconds: float = Field(default=60.0, gt=0, le=cmd.MAX_DEADLINE_SECONDS)
    max_attempts: int = Field(default=3, ge=1, le=cmd.MAX_ATTEMPTS_LIMIT)


class CommandOut(Out):
    command_id: str
    device_id: str
    order_id: str | None = None
    method: str
    params: dict[str, Any]
    status: cmd.CommandStatus
    attempts: int
    max_attempts: int
    deadline: datetime
    created_at: datetime
    sent_at: datetime | None = None
    finished_at: datetime | None = None
    result: Any = None
    error: dict[str, Any] | None = None

    @classmethod
    def of(cls, row: cmd.DeviceCommand) -> CommandOut:
        return cls.model_validate(row, from_attributes=True)


class CommandList(Out):
    device_id: str
    commands: list[CommandOut]


def _dump(model: Out) -> dict[str, Any]:
    data: dict[str, Any] = model.model_dump(mode="json", exclude_none=True)
    return data


@api.route(
    "POST",
    "/platform/v1/devices/{device_id}/commands",
    auth="platform",
    tag="commands",
    summary="Send an imperative command (rpc/req): queued, sent, retried, timed out",
    body=CommandIn,
    response=CommandOut,
    status=201,
    errors=(404, 409),
)
async def create_command(request: web.Request) -> web.StreamResponse:
    services = services_of(request)
    device_id = path_id(request, "device_id")
    body = parse_body(await request.read(), CommandIn)
    wanted = broadband.CommandRequest(
        device_id=device_id,
        method=body.method,
        params=body.params,
        deadline_seconds=body.deadline_seconds,
        max_attempts=body.max_attempts,
        order_id=body.order_id,
    )

    def kick() -> None:
        services.jobs.trigger(broadband.COMMANDS_JOB)

    if body.order_id is None:
        async with services.db.session() as session:
            row = await broadband.create_command(services, session, wanted)
            await session.commit()
        kick()
        return json_out(CommandOut.of(row), 201)

    async def effect(session: Any) -> tuple[Answer, dict[str, Any] | None]:
        row = await broadband.create_command(services, session, wanted)
        return Answer(201, _dump(CommandOut.of(row))), None

    response = await execute_order(
        services,
        order_id=body.order_id,
        action="device.command",
        target=device_id,
        request_body=body.model_dump(mode="json", exclude={"order_id"}),
        effect=effect,
    )
    kick()
    return response


@api.route(
    "GET",
    "/platform/v1/devices/{device_id}/commands",
    auth="platform",
    tag="commands",
    summary="The device's commands, newest first",
    response=CommandList,
    errors=(404,),
)
async def list_commands(request: web.Request) -> web.StreamResponse:
    services = services_of(request)
    device_id = path_id(request, "device_id")
    async with services.db.session() as session:
        if await session.get(Device, device_id) is None:
            raise ApiError(404, "not_found", f"device {device_id} not found")
        rows = await cmd.device_commands(session, device_id)
    return json_out(CommandList(device_id=device_id, commands=[CommandOut.of(r) for r in rows]))
