"""Run one platform order exactly once: replay a repeat, store the first answer.

``execute_order`` opens a session, returns the stored answer for a repeated ``order_id``
(refusing a different request under the same id), otherwise runs the effect. A domain
refusal is stored as that order's answer too, so a retry gets the same refusal; a
success is stored together with its completion report in one transaction. Two racing
requests with one ``order_id`` end with one effect: the loser replays the winner.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from devices.orders import Answer, fingerprint, record_order, replay_order
from gateway.answers import error_body
from gateway.desired import PUBLISH_JOB
from gateway.errors import REFUSALS, http_status
from gateway.services import Services

#: What an order's effect returns: its answer and the completion report it owes (or None).
Effect = Callable[[AsyncSession], Awaitable[tuple[Answer, dict[str, Any] | None]]]

#: The background job that delivers completion reports.
CALLBACK_JOB = "callbacks"


async def execute_order(
    services: Services,
    *,
    order_id: str,
    action: str,
    target: str,
    request_body: dict[str, Any],
    effect: Effect,
    account_id: str | None = None,
) -> Answer:
    """Run ``effect`` once for ``order_id`` (see the module); the order is recorded with
    ``account_id``, the account it concerns when the caller knows it, and ``target``."""
    print_ = fingerprint(action, target, request_body)
    now = services.clock.now()
    for _ in range(2):
        async with services.db.writing() as session:
            stored = await replay_order(session, order_id, print_)
            if stored is not None:
                return stored
            report: dict[str, Any] | None
            try:
                answer, report = await effect(session)
            except REFUSALS as exc:
                await session.rollback()
                answer = Answer(http_status(exc), error_body(exc.code, exc.message, exc.rule))
                report = None
            record_order(
                session,
                order_id=order_id,
                action=action,
                print_=print_,
                answer=answer,
                now=now,
                report=report,
                account_id=account_id,
                target=target,
            )
            try:
                await session.commit()
            except IntegrityError:
                # A concurrent request with this order_id won; replay its answer.
                await session.rollback()
                continue
        if report is not None:
            services.jobs.trigger(PUBLISH_JOB)
            if services.settings.platform_callback_url:
                services.jobs.trigger(CALLBACK_JOB)
        return answer
    raise RuntimeError(f"order {order_id} could not be recorded")
