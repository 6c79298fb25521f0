"""The billing run's route: a closed month's charges of every account (issue 17; R7)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Literal, cast

from aiohttp import web
from pydantic import Field

from gateway.http.api import Api, ApiError, Body, Out, parse_query
from gateway.http.requests import services_of
from replay import ledger
from replay.billing import Month
from replay.models import ChargeLine

api = Api()

#: Lines a CSV answer reads from the ledger at a time.
CSV_PAGE = 2000
CSV_COLUMNS = (
    "account_id",
    "subscription_id",
    "device_id",
    "plan",
    "days",
    "amount",
    "kind",
    "day",
)

LineKind = Literal["cloud_replay", "family_cloud_membership", "home_network", "home_network_refund"]


class MonthChargesQuery(Body):
    month: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")
    limit: int = Field(default=1000, ge=1, le=10000)
    cursor: str | None = Field(default=None, pattern=r"^[0-9]{1,18}$")


class LedgerItemOut(Out):
    """One ledger line. ``kind`` (issue 18): ``cloud_replay`` (``subscription_id``,
    ``device_id``, ``plan``), ``family_cloud_membership`` (R18: ``subscription_id`` holds
    the membership id, ``plan`` the tier, ``device_id`` ""), ``home_network`` or
    ``home_network_refund`` (R16, R17: ``subscription_id`` holds the package id, ``plan``
    the product, ``days`` 0, ``day`` the order's or unsubscription's business date)."""

    account_id: str
    subscription_id: str
    device_id: str
    plan: str
    days: int
    amount: str
    kind: LineKind
    day: str | None = None


class MonthChargesOut(Out):
    month: str
    currency: Literal["CNY"] = "CNY"
    items: list[LedgerItemOut]
    next_cursor: str | None
    month_total: str


def _amount(line: ChargeLine) -> str:
    return f"{ledger.from_cents(line.amount_cents):.2f}"


def _item(line: ChargeLine) -> LedgerItemOut:
    return LedgerItemOut(
        account_id=line.account_id,
        subscription_id=line.subscription_id,
        device_id=line.device_id,
        plan=line.plan,
        days=line.days,
        amount=_amount(line),
        kind=cast(LineKind, line.kind),
        day=None if line.day is None else line.day.isoformat(),
    )


def _csv_rows(lines: Sequence[ChargeLine]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for line in lines:
        writer.writerow(
            (
                line.account_id,
                line.subscription_id,
                line.device_id,
                line.plan,
                line.days,
                _amount(line),
                line.kind,
                "" if line.day is None else line.day.isoformat(),
            )
        )
    return out.getvalue().encode()


@api.route(
    "GET",
    "/platform/v1/charges",
    auth="platform",
    tag="replay",
    summary="A closed month's charges of every account, every kind, paged or as CSV (R7)",
    query=MonthChargesQuery,
    response=MonthChargesOut,
    errors=("month_not_closed",),
)
async def month_charges(request: web.Request) -> web.StreamResponse:
    """The charge ledger's lines of one closed Asia/Shanghai month, over all broadband
    accounts, for the operator's billing run (R7: fees are billed with the broadband
    account): cloud replay, family-cloud memberships and home-network packages, each line
    with its ``kind``. JSON pages of ``limit`` lines follow each other by ``next_cursor`` (absent on
    the last page); ``month_total`` is the month's total over all pages. With ``Accept:
    text/csv`` the whole month is streamed as one CSV (a header row, then one row a line,
    read from the ledger page by page). A month not closed yet is refused with 409
    ``month_not_closed``."""
    services = services_of(request)
    query = parse_query(request, MonthChargesQuery)
    try:
        month = Month.parse(query.month)
    except ValueError as exc:
        raise ApiError(400, "invalid_query", str(exc)) from exc
    async with services.db.session() as session:
        if not await ledger.is_closed(session, month):
            raise ledger.MonthNotClosed(month)
    if "text/csv" in request.headers.get("Accept", ""):
        return await _stream_csv(request, month)
    after = None if query.cursor is None else int(query.cursor)
    async with services.db.session() as session:
        lines = await ledger.lines_page(session, month, after=after, limit=query.limit + 1)
        total = await ledger.month_total(session, month)
    page = lines[: query.limit]
    more = len(lines) > query.limit
    out = MonthChargesOut(
        month=str(month),
        items=[_item(line) for line in page],
        next_cursor=str(page[-1].line_id) if more and page else None,
        month_total=f"{total:.2f}",
    )
    # ``next_cursor`` is null on the last page, not left out.
    return web.Response(body=out.model_dump_json(), content_type="application/json")


async def _stream_csv(request: web.Request, month: Month) -> web.StreamResponse:
    """The month's lines as CSV, written as they are read, one ledger page at a time."""
    services = services_of(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="charges-{month}.csv"',
        }
    )
    await response.prepare(request)
    await response.write(",".join(CSV_COLUMNS).encode() + b"\r\n")
    after: int | None = None
    while True:
        async with services.db.session() as session:
            lines = await ledger.lines_page(session, month, after=after, limit=CSV_PAGE)
        if lines:
            await response.write(_csv_rows(lines))
            after = lines[-1].line_id
        if len(lines) < CSV_PAGE:
            break
    await response.write_eof()
    return response
