"""Platform routes of broadband stop, resume, teardown and emergency resume (R8-R12).

Each order answers 200 with the account's broadband view (``applied: false`` and a
``reason`` when it changed nothing: ``stale``, ``already_stopped``, ``not_stopped``), or
409 with the rule's refusal (``active_subscriptions`` R9, ``torn_down`` R9,
``emergency_not_allowed`` R11), or 404 for an unknown account. A repeated ``order_id``
returns the first answer. The batch route applies up to 1,000 orders in chunks, one
transaction each (``gateway.broadband_batch``), each order with its own answer, the one
it would get sent alone after those before it (one bad order does not fail the others),
in order.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import AwareDatetime, Field, ValidationError, model_validator

from devices.broadband import StopType
from devices.orders import Answer
from gateway import broadband
from gateway.broadband_batch import run_batch, run_single
from gateway.http.api import (
    Api,
    Body,
    Out,
    answer_out,
    error_body,
    json_out,
    parse_body,
)
from gateway.http.requests import Identifier, OrderId, path_id, services_of

api = Api()

#: Most orders one batch may carry.
MAX_BATCH = 1000


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
    action: broadband.Action, account_id: str, body: TypedOrderIn | OrderIn | BatchOrderIn
) -> broadband.BroadbandOrder:
    return broadband.BroadbandOrder(
        action=action,
        account_id=account_id,
        order_id=body.order_id,
        stop_type=None if isinstance(body, OrderIn) else body.stop_type,
        issued_at=body.issued_at,
    )


def _order_route(action: broadband.Action, summary: str) -> None:
    typed = action in broadband.TYPED_ACTIONS
    model: type[TypedOrderIn] | type[OrderIn] = TypedOrderIn if typed else OrderIn

    async def handler(request: web.Request) -> web.StreamResponse:
        services = services_of(request)
        account_id = path_id(request, "account_id")
        body = parse_body(await request.read(), model)
        return answer_out(await run_single(services, _order(action, account_id, body)))

    handler.__name__ = f"broadband_{action.replace('-', '_')}"
    handler.__doc__ = f"""{summary}.

    Answers 200 with the account's broadband view (``applied: false`` and a ``reason``
    when the order changed nothing: ``stale``, ``already_stopped``, ``not_stopped``), or 409
    with the rule's refusal. A repeated ``order_id`` answers the first result."""
    api.route(
        "POST",
        f"/platform/v1/broadband/{{account_id}}/{action}",
        auth="platform",
        tag="broadband",
        summary=summary,
        body=model,
        response=broadband.BroadbandViewOut,
        errors=(
            "not_found",
            "active_subscriptions",
            "torn_down",
            "emergency_not_allowed",
            "order_id_reused",
        ),
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
    errors=("not_found",),
)
async def broadband_view(request: web.Request) -> web.StreamResponse:
    """The account's broadband view: state, the stop types in force, any emergency resume
    running, and whether each of its devices has reported the desired state that follows
    (convergence)."""
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


def _batch_order(raw: Any) -> broadband.BroadbandOrder | dict[str, Any]:
    """One order of a batch, or the error body that refuses it (400)."""
    try:
        item = BatchOrderIn.model_validate(raw)
    except ValidationError as exc:
        return _invalid(exc)
    return _order(item.action, item.account_id, item)


def _refused(index: int, raw: Any, body: dict[str, Any]) -> BatchResultOut:
    ids = raw if isinstance(raw, dict) else {}
    order_id = ids.get("order_id") if isinstance(ids.get("order_id"), str) else None
    account_id = ids.get("account_id") if isinstance(ids.get("account_id"), str) else None
    return BatchResultOut(
        index=index, order_id=order_id, account_id=account_id, status=400, body=body
    )


def _answered(index: int, order: broadband.BroadbandOrder, answer: Answer) -> BatchResultOut:
    return BatchResultOut(
        index=index,
        order_id=order.order_id,
        account_id=order.account_id,
        status=answer.status,
        body=answer.body,
    )


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
    """Apply up to 1,000 broadband orders, each on its own (one bad order does not fail the
    others), and answer per order, in order, with the status and body its single route would
    answer."""
    services = services_of(request)
    batch = parse_body(await request.read(), BatchIn)
    parsed = [_batch_order(raw) for raw in batch.orders]
    orders = [item for item in parsed if isinstance(item, broadband.BroadbandOrder)]
    answers = iter(await run_batch(services, orders))
    results = [
        _answered(index, item, next(answers))
        if isinstance(item, broadband.BroadbandOrder)
        else _refused(index, batch.orders[index], item)
        for index, item in enumerate(parsed)
    ]
    return json_out(BatchOut(results=results))
