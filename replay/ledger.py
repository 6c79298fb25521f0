"""The charge ledger: closed months' charges, kept apart from the subscription records
(issue 17; R3–R5, R7).

R5 purges an unsubscribed *subscription record* six months on; the fees are billed with the
broadband account (R7, 合账计费), and a billed month is a record the operator must be able
to read again. So when a month closes, each subscription's charge for it becomes a
statement line (:class:`replay.models.ChargeLine`) that outlives the record:

- **Closing.** A month closes when the Asia/Shanghai calendar has left it. :func:`close_month`
  writes one line (``line_no`` 0) per subscription active on any of its days, computed by
  the one formula of R3/R5 (:func:`replay.billing.monthly_charge`, the numbers the live
  route gives), one per family-cloud membership (R18) and the month's home-network package
  lines (R16, R17: a fee line 0, a refund line 1 of its package; issue 18), each with its
  ``kind``, and marks the month closed (:class:`replay.models.ClosedMonth`) in the same
  transaction. It is idempotent: a closed month is never written again (and the unique
  index refuses a second line 0). :func:`months_to_close` lists every month from the one
  after the last closed (or the earliest order's month) to the one before ``now``'s: a
  gateway down for months catches up, oldest first. The purge of R5 closes due months
  first (``gateway.schedule``), so no record is purged before its months are in the ledger.
- **Never edited.** A correction is a new line (``line_no`` 1, 2…) of the same subscription
  and month, with the signed difference (:func:`add_correction`); the month's amount for a
  subscription is the sum of its lines. An order or unsubscription dated in a month already
  closed (the platform's business time may lag) is brought into the ledger the same way
  (:func:`amend`).
- **Money.** Lines hold whole cents (``amount_cents``) so that totals are exact sums in SQL on
  SQLite and PostgreSQL alike; :func:`from_cents` gives the Decimal back, quantized.
- **Retention.** Lines are kept ``years`` (``KANJIA_LEDGER_RETENTION_YEARS``, default 7)
  after their month: :func:`purge_expired` deletes the lines of months that ended more than
  that long ago. The month stays marked closed, so catching up never writes it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, delete, func, insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import and_, col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from devices.errors import Conflict, NotFound
from devices.home_network import UNSUBSCRIBED
from devices.home_network_store import HomePackage
from replay import membership_store
from replay.billing import CENT, Month, business_date, monthly_charge
from replay.models import ChargeLine, ClosedMonth, FamilyCloudMembership, Subscription
from replay.package_charges import CHARGE, PackageLine, bill_of, package_lines
from replay.package_charges import account_package_lines as live_package_lines

__all__ = [
    "CLOSE_PAGE",
    "DEFAULT_RETENTION_YEARS",
    "MonthNotClosed",
    "account_lines",
    "add_correction",
    "amend",
    "close_month",
    "from_cents",
    "is_closed",
    "lines_page",
    "month_total",
    "months_to_close",
    "purge_expired",
    "retention_cutoff",
    "to_cents",
]

#: Subscriptions read (and lines written) at a time when a month closes.
CLOSE_PAGE = 2000
DEFAULT_RETENTION_YEARS = 7

_LINES: Table = ChargeLine.__table__  # type: ignore[attr-defined]

#: The kinds of ledger line (issue 18): a subscription's, a membership's (R18), a
#: home-network package's fee and refund (R16, R17: ``replay.package_charges``).
CLOUD_REPLAY = "cloud_replay"
MEMBERSHIP = "family_cloud_membership"
PACKAGE_KINDS = ("home_network", "home_network_refund")


class MonthNotClosed(Conflict):
    code = "month_not_closed"

    def __init__(self, month: Month) -> None:
        super().__init__(f"{month} is not closed yet: its charges are not in the ledger", rule="R7")


def to_cents(amount: Decimal) -> int:
    """A Decimal amount quantized to the cent, as whole cents."""
    quantized = amount.quantize(CENT)
    if quantized != amount:
        raise ValueError(f"{amount} is not a whole number of cents")
    return int(quantized * 100)


def from_cents(cents: int) -> Decimal:
    """Whole cents as a Decimal amount with two places."""
    return (Decimal(int(cents)) / 100).quantize(CENT)


def current_month(now: datetime) -> Month:
    return Month.of(business_date(now))


async def _last_closed(session: AsyncSession) -> Month | None:
    last = (await session.exec(select(func.max(ClosedMonth.month)))).one()
    return None if last is None else Month.parse(str(last))


async def is_closed(session: AsyncSession, month: Month) -> bool:
    return await session.get(ClosedMonth, str(month)) is not None


async def months_to_close(session: AsyncSession, now: datetime) -> list[Month]:
    """The months to close, oldest first: those after the last closed one (else from the
    earliest order's month) up to, not including, ``now``'s month (Asia/Shanghai)."""
    last = await _last_closed(session)
    if last is not None:
        month = last.next()
    else:
        # The earliest order of any kind the ledger holds (issue 18).
        firsts: list[date] = []
        for column in (
            Subscription.start_date,
            FamilyCloudMembership.start_date,
            HomePackage.start_date,
        ):
            first: date | None = (await session.exec(select(func.min(column)))).one()
            if first is not None:
                firsts.append(first)
        if not firsts:
            return []
        month = Month.of(min(firsts))
    current = current_month(now)
    months = []
    while month < current:
        months.append(month)
        month = month.next()
    return months


async def close_month(session: AsyncSession, month: Month, now: datetime) -> int:
    """Write ``month``'s lines and mark it closed (the caller commits); the number of lines,
    0 if it was closed already. Refuses to close the current or a later month."""
    if month >= current_month(now):
        raise ValueError(f"{month} has not ended at {now.isoformat()}")
    if await is_closed(session, month):
        return 0
    # The month is claimed before its lines are written: a second closer (another gateway,
    # or the job beside a catch-up) waits on the claim's key and then finds it taken.
    claim = ClosedMonth(month=str(month), lines=0, closed_at=now)
    session.add(claim)
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        return 0
    written = await _close_subscriptions(session, month, now)
    written += await _close_memberships(session, month, now)
    written += await _close_packages(session, month, now)
    claim.lines = written
    return written


async def _close_subscriptions(session: AsyncSession, month: Month, now: datetime) -> int:
    """The month's cloud-replay lines, in order of the orders (keyset pages)."""
    connection = await session.connection()
    written = 0
    after: tuple[datetime, str] | None = None
    while True:
        # In order of the orders, as the live route lists them (keyset pages).
        query = select(Subscription).where(
            col(Subscription.start_date) <= month.last,
            or_(col(Subscription.end_date).is_(None), col(Subscription.end_date) >= month.first),
        )
        if after is not None:
            query = query.where(
                or_(
                    col(Subscription.started_at) > after[0],
                    and_(
                        col(Subscription.started_at) == after[0],
                        col(Subscription.subscription_id) > after[1],
                    ),
                )
            )
        order = (col(Subscription.started_at), col(Subscription.subscription_id))
        page = (await session.exec(query.order_by(*order).limit(CLOSE_PAGE))).all()
        rows = [row for row in (_line(sub, month, now) for sub in page) if row is not None]
        if rows:
            await connection.execute(insert(_LINES), rows)
        written += len(rows)
        if len(page) < CLOSE_PAGE:
            break
        after = (page[-1].started_at, page[-1].subscription_id)
    return written


async def _close_memberships(session: AsyncSession, month: Month, now: datetime) -> int:
    """The month's family-cloud membership lines (R18), one per membership, one insert."""
    rows = [
        {
            "month": str(month),
            "account_id": item.membership.account_id,
            "subscription_id": item.membership.membership_id,
            "device_id": "",
            "plan": item.membership.tier,
            "line_no": 0,
            "days": item.charge.days,
            "amount_cents": to_cents(item.charge.amount),
            "reason": None,
            "recorded_at": now,
            "kind": MEMBERSHIP,
            "day": None,
        }
        for item in await membership_store.charges_of_month(session, month)
    ]
    if rows:
        await (await session.connection()).execute(insert(_LINES), rows)
    return len(rows)


async def _close_packages(session: AsyncSession, month: Month, now: datetime) -> int:
    """The month's home-network package lines (R16, R17): a fee on its order day (line 0),
    a refund on its unsubscription day (line 1, a correction of the package), one insert."""
    found = await session.exec(
        select(HomePackage).where(
            or_(
                and_(
                    col(HomePackage.start_date) >= month.first,
                    col(HomePackage.start_date) <= month.last,
                ),
                and_(
                    col(HomePackage.status) == UNSUBSCRIBED,
                    col(HomePackage.end_date) >= month.first,
                    col(HomePackage.end_date) <= month.last,
                ),
            )
        )
    )
    packages = found.all()
    owners = {package.package_id: package.account_id for package in packages}
    rows = [
        {
            "month": str(month),
            "account_id": owners[line.package_id],
            "subscription_id": line.package_id,
            "device_id": "",
            "plan": line.product_id,
            "line_no": 0 if line.kind == CHARGE else 1,
            "days": 0,
            "amount_cents": to_cents(line.amount),
            "reason": None,
            "recorded_at": now,
            "kind": line.kind,
            "day": line.day,
        }
        for line in package_lines((bill_of(p) for p in packages), month)
    ]
    if rows:
        await (await session.connection()).execute(insert(_LINES), rows)
    return len(rows)


def _line(sub: Subscription, month: Month, now: datetime) -> dict[str, Any] | None:
    charge = monthly_charge(Decimal(sub.monthly_fee), month, sub.start_date, sub.end_date)
    if charge is None:
        return None
    line = _line_fields(sub, month, now, 0, to_cents(charge.amount))
    return line | {"days": charge.days, "reason": None}


async def add_correction(
    session: AsyncSession,
    *,
    subscription_id: str,
    month: Month,
    amount: Decimal,
    reason: str,
    now: datetime,
) -> ChargeLine:
    """Stage a correction of a closed month's charge: a new line with the signed ``amount``
    (never an edit of the line it corrects). :class:`NotFound` without a line to correct."""
    lines = (
        await session.exec(
            select(ChargeLine)
            .where(ChargeLine.month == str(month), ChargeLine.subscription_id == subscription_id)
            .order_by(col(ChargeLine.line_no))
        )
    ).all()
    if not lines:
        raise NotFound("charge line", subscription_id, on=f"month {month}")
    first = lines[0]
    line = ChargeLine(
        month=str(month),
        account_id=first.account_id,
        subscription_id=subscription_id,
        device_id=first.device_id,
        plan=first.plan,
        line_no=lines[-1].line_no + 1,
        days=0,
        amount_cents=to_cents(amount),
        reason=reason,
        recorded_at=now,
        kind=first.kind,
    )
    session.add(line)
    return line


async def amend(session: AsyncSession, sub: Subscription, now: datetime) -> int:
    """Bring the closed months of ``sub`` in line with its record after a change that
    reaches into them (an order or an unsubscription dated in a closed month): per month,
    the difference between the formula's charge and the month's lines becomes a new line
    (line 0 when the month has none, else a correction). Staged; how many lines added."""
    last = await _last_closed(session)
    first = Month.of(sub.start_date)
    if last is None or first > last:
        return 0
    rows = (
        await session.exec(
            select(ChargeLine.month, ChargeLine.line_no, ChargeLine.amount_cents).where(
                ChargeLine.subscription_id == sub.subscription_id
            )
        )
    ).all()
    added, month = 0, first
    while month <= last:
        lines = [(no, cents) for m, no, cents in rows if m == str(month)]
        charge = monthly_charge(Decimal(sub.monthly_fee), month, sub.start_date, sub.end_date)
        due = 0 if charge is None else to_cents(charge.amount)
        delta = due - sum(cents for _, cents in lines)
        if delta and await is_closed(session, month):
            line = _line(sub, month, now) if not lines and charge is not None else None
            if line is None:
                line = _line_fields(sub, month, now, max(no for no, _ in lines) + 1, delta)
            session.add(ChargeLine(**line))
            added += 1
        month = month.next()
    return added


async def amend_products(
    session: AsyncSession, account_id: str, since: datetime, now: datetime
) -> int:
    """:func:`amend` for the account's memberships (R18) and packages (R16, R17): after an
    order or an unsubscription dated ``since``, in a month already closed, each closed month
    from then on gets a line per membership or package line (by kind) whose live amount
    differs from what the ledger holds: line 0 when it holds none, else a correction.
    Staged; how many lines added."""
    last = await _last_closed(session)
    month = Month.of(business_date(since))
    added = 0
    while last is not None and month <= last:
        if await is_closed(session, month):
            added += await _amend_products_month(session, account_id, month, now)
        month = month.next()
    return added


async def _amend_products_month(
    session: AsyncSession, account_id: str, month: Month, now: datetime
) -> int:
    # (id, kind) -> (cents due, plan, days, day): what the formulas give live.
    due: dict[tuple[str, str], tuple[int, str, int, date | None]] = {}
    for item in await membership_store.month_charges(session, account_id, month):
        m = item.membership
        cents = to_cents(item.charge.amount)
        due[(m.membership_id, MEMBERSHIP)] = (cents, m.tier, item.charge.days, None)
    for line in await live_package_lines(session, account_id, month):
        due[(line.package_id, line.kind)] = (to_cents(line.amount), line.product_id, 0, line.day)
    booked = (
        await session.exec(
            select(ChargeLine).where(
                ChargeLine.account_id == account_id,
                ChargeLine.month == str(month),
                col(ChargeLine.kind).in_([MEMBERSHIP, *PACKAGE_KINDS]),
            )
        )
    ).all()
    held: dict[tuple[str, str], int] = {}
    numbers: dict[str, int] = {}
    for b in booked:
        held[(b.subscription_id, b.kind)] = held.get((b.subscription_id, b.kind), 0)
        held[(b.subscription_id, b.kind)] += b.amount_cents
        numbers[b.subscription_id] = max(numbers.get(b.subscription_id, -1), b.line_no)
    added = 0
    for (key, kind), (cents, plan, days, day) in sorted(due.items(), key=lambda kv: kv[0][1]):
        delta = cents - held.get((key, kind), 0)
        if not delta:
            continue
        line_no = numbers.get(key, -1) + 1
        numbers[key] = line_no
        reason = None if (key, kind) not in held else "changed after the month closed"
        session.add(
            ChargeLine(
                month=str(month),
                account_id=account_id,
                subscription_id=key,
                device_id="",
                plan=plan,
                line_no=line_no,
                days=days if (key, kind) not in held else 0,
                amount_cents=delta,
                reason=reason,
                recorded_at=now,
                kind=kind,
                day=day,
            )
        )
        added += 1
    return added


def _line_fields(
    sub: Subscription, month: Month, now: datetime, line_no: int, cents: int
) -> dict[str, Any]:
    return {
        "month": str(month),
        "account_id": sub.account_id,
        "subscription_id": sub.subscription_id,
        "device_id": sub.device_id,
        "plan": sub.plan_id,
        "line_no": line_no,
        "days": 0,
        "amount_cents": cents,
        "reason": "the subscription changed after the month closed",
        "recorded_at": now,
        "kind": CLOUD_REPLAY,
        "day": None,
    }


async def lines_page(
    session: AsyncSession, month: Month, *, after: int | None, limit: int
) -> Sequence[ChargeLine]:
    """Up to ``limit`` lines of ``month`` of every account, in ledger order, after line
    ``after`` (a page's cursor)."""
    query = select(ChargeLine).where(ChargeLine.month == str(month))
    if after is not None:
        query = query.where(col(ChargeLine.line_id) > after)
    return (await session.exec(query.order_by(col(ChargeLine.line_id)).limit(limit))).all()


async def month_total(session: AsyncSession, month: Month) -> Decimal:
    """The sum of every line of ``month``, over all accounts."""
    total = (
        await session.exec(
            select(func.coalesce(func.sum(ChargeLine.amount_cents), 0)).where(
                ChargeLine.month == str(month)
            )
        )
    ).one()
    return from_cents(int(total))


async def account_lines(
    session: AsyncSession, account_id: str, month: Month, kinds: Sequence[str] = (CLOUD_REPLAY,)
) -> Sequence[ChargeLine]:
    """The lines of one account's ``month`` of the given ``kinds``, in ledger order."""
    return (
        await session.exec(
            select(ChargeLine)
            .where(
                ChargeLine.account_id == account_id,
                ChargeLine.month == str(month),
                col(ChargeLine.kind).in_(kinds),
            )
            .order_by(col(ChargeLine.line_id))
        )
    ).all()


async def account_package_lines(
    session: AsyncSession, account_id: str, month: Month
) -> list[PackageLine]:
    """One account's home-network package lines of a closed ``month``, from the ledger, as
    :func:`replay.package_charges.account_package_lines` gives them live (by day, package,
    kind); a correction line of a package adds to the line of its kind."""
    totals: dict[tuple[str, str], tuple[ChargeLine, int]] = {}
    for line in await account_lines(session, account_id, month, PACKAGE_KINDS):
        key = (line.subscription_id, line.kind)
        first, cents = totals.get(key, (line, 0))
        totals[key] = (first, cents + line.amount_cents)
    lines = [
        PackageLine(
            kind=CHARGE if first.kind == CHARGE else "home_network_refund",
            package_id=first.subscription_id,
            product_id=first.plan,
            day=first.day if first.day is not None else month.first,
            amount=from_cents(cents),
        )
        for first, cents in totals.values()
    ]
    lines.sort(key=lambda line: (line.day, line.package_id, line.kind))
    return lines


def retention_cutoff(now: datetime, years: int) -> Month:
    """The oldest month still kept: months before it ended more than ``years`` ago."""
    if years <= 0:
        raise ValueError(f"the ledger keeps lines a positive number of years, not {years}")
    current = current_month(now)
    return Month(year=current.year - years, month=current.month)


async def purge_expired(session: AsyncSession, now: datetime, years: int) -> int:
    """Delete the lines of months before :func:`retention_cutoff` (the caller commits)."""
    cutoff = str(retention_cutoff(now, years))
    result = await session.exec(delete(ChargeLine).where(col(ChargeLine.month) < cutoff))
    return int(result.rowcount)
