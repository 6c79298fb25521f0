"""Platform orders: idempotency by ``order_id`` and completion reports (报竣).

Every platform command carries the platform's own ``order_id``. The first answer to an
order (its status and body) is stored in the same transaction as its effect; the same
``order_id`` with the same request returns that answer unchanged and changes nothing,
and the same ``order_id`` with a different request is refused (``order_id_reused``).
Completed orders also get a :class:`CallbackReport`, written in that same transaction, so
a report is owed exactly when the order took effect, and survives a restart.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from devices.errors import Conflict
from devices.models import CallbackReport, PlatformOrder
from storage.db import insert_many


class OrderIdReused(Conflict):
    code = "order_id_reused"

    def __init__(self, order_id: str) -> None:
        super().__init__(f"order_id {order_id} was already used for a different request")
        self.order_id = order_id


def fingerprint(action: str, target: str, body: dict[str, Any]) -> str:
    """A stable digest of what was asked (action, target and body, keys sorted)."""
    canonical = json.dumps([action, target, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]


async def replay_order(session: AsyncSession, order_id: str, print_: str) -> Answer | None:
    """The stored answer to a repeated order, ``None`` for a new one; refuses reuse."""
    return replayed(await session.get(PlatformOrder, order_id), order_id, print_)


def replayed(stored: PlatformOrder | None, order_id: str, print_: str) -> Answer | None:
    """:func:`replay_order` on a record already read (None: no order had this id)."""
    if stored is None:
        return None
    if stored.fingerprint != print_:
        raise OrderIdReused(order_id)
    return Answer(stored.status_code, stored.response)


async def stored_orders(
    session: AsyncSession, order_ids: Iterable[str]
) -> dict[str, PlatformOrder]:
    """The records of those of ``order_ids`` already answered, by id (one statement)."""
    ids = sorted(set(order_ids))
    if not ids:
        return {}
    result = await session.exec(select(PlatformOrder).where(col(PlatformOrder.order_id).in_(ids)))
    return {order.order_id: order for order in result.all()}


def record_order(
    session: AsyncSession,
    *,
    order_id: str,
    action: str,
    print_: str,
    answer: Answer,
    now: datetime,
    report: dict[str, Any] | None,
    account_id: str | None = None,
    target: str | None = None,
) -> None:
    """Stage the answer (and a completion report) in the caller's transaction, with the
    account the order concerns and its target when known (the operator lists them)."""
    order, report_row = order_rows(
        order_id=order_id,
        action=action,
        print_=print_,
        answer=answer,
        now=now,
        report=report,
        account_id=account_id,
        target=target,
    )
    session.add(PlatformOrder(**order))
    if report_row is not None:
        session.add(CallbackReport(**report_row))


@dataclass(frozen=True, slots=True)
class RecordedOrder:
    """An order as the operator lists it: what was asked, its answer, its report."""

    order: PlatformOrder
    report: CallbackReport | None


async def list_orders(
    session: AsyncSession,
    *,
    account_id: str | None,
    action: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[RecordedOrder]:
    """Orders newest first (by when they were answered, then ``order_id``), of one account
    and one action kind (``broadband`` takes every ``broadband.*``) when given, starting
    after the ``(created_at, order_id)`` key ``after``; at most ``limit``."""
    query = select(PlatformOrder, CallbackReport).join(
        CallbackReport,
        col(CallbackReport.order_id) == col(PlatformOrder.order_id),
        isouter=True,
    )
    if account_id is not None:
        query = query.where(PlatformOrder.account_id == account_id)
    if action is not None:
        query = query.where(
            (col(PlatformOrder.action) == action)
            | col(PlatformOrder.action).startswith(f"{action}.", autoescape=True)
        )
    if after is not None:
        at, order_id = after
        query = query.where(
            (col(PlatformOrder.created_at) < at)
            | ((col(PlatformOrder.created_at) == at) & (col(PlatformOrder.order_id) < order_id))
        )
    query = query.order_by(
        col(PlatformOrder.created_at).desc(), col(PlatformOrder.order_id).desc()
    ).limit(limit)
    rows = await session.exec(query)
    return [RecordedOrder(order, report) for order, report in rows.all()]


def order_rows(
    *,
    order_id: str,
    action: str,
    print_: str,
    answer: Answer,
    now: datetime,
    report: dict[str, Any] | None,
    account_id: str | None = None,
    target: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """:func:`record_order`'s rows, for :func:`write_orders`: the answer, and the report."""
    order = {
        "order_id": order_id,
        "action": action,
        "fingerprint": print_,
        "status_code": answer.status,
        "response": answer.body,
        "created_at": now,
        "account_id": account_id,
        "target": target or None,
    }
    if report is None:
        return order, None
    return order, {
        "order_id": order_id,
        "payload": report,
        "next_attempt_at": now,
        "created_at": now,
        "attempts": 0,
    }


async def write_orders(
    session: AsyncSession, orders: list[dict[str, Any]], reports: list[dict[str, Any]]
) -> None:
    """Many orders' answers and completion reports (:func:`order_rows`), two statements."""
    await insert_many(session, PlatformOrder.__table__, orders)  # type: ignore[attr-defined]
    await insert_many(session, CallbackReport.__table__, reports)  # type: ignore[attr-defined]


#: Retry delays of completion reports (clock seconds), the last one repeating.
REPORT_BACKOFF = (1, 2, 5, 15, 60, 300, 900)


def next_attempt(now: datetime, attempts: int) -> datetime:
    delay = REPORT_BACKOFF[min(attempts - 1, len(REPORT_BACKOFF) - 1)]
    return now + timedelta(seconds=delay)


async def due_reports(session: AsyncSession, now: datetime, limit: int) -> list[CallbackReport]:
    result = await session.exec(
        select(CallbackReport)
        .where(col(CallbackReport.delivered_at).is_(None), CallbackReport.next_attempt_at <= now)
        .order_by(col(CallbackReport.id))
        .limit(limit)
    )
    return list(result.all())
