"""Family-cloud memberships over a database session (R18, with R3, R7, R8): the one home
of their SQL. The rules are :mod:`replay.membership`; the jobs and the object store are the
gateway's (``gateway.memberships``).

- R7: only the broadband account's owner orders; the channel is kept.
- R8: no order while the broadband is not active.
- R18: one membership held per account (a partial unique index backs the check); effective
  at once; unsubscription in force through the month's end; the family cloud's quota is
  the held membership's, else the base quota.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from devices.accounts import get_account
from devices.errors import Invalid, NotFound
from replay import membership as rules
from replay.billing import Charge, Month, business_date, first_charge, monthly_charge
from replay.models import FamilyCloudItem, FamilyCloudMembership
from replay.subscriptions import CHANNELS, BroadbandInactive, InvalidTime

__all__ = [
    "MembershipCharge",
    "Ordered",
    "charges_of_month",
    "cleanup_due",
    "ending_due",
    "finish",
    "get",
    "held",
    "month_charges",
    "of_account",
    "order",
    "quota_at",
    "read_only_at",
    "renewal_due",
    "saved_items",
    "unsubscribe",
]

Membership = FamilyCloudMembership
ACTIVE, UNSUBSCRIBED, ENDED = "active", "unsubscribed", "ended"


@dataclass(frozen=True, slots=True)
class Ordered:
    """A membership staged by an order or an unsubscription, and the charge it answers."""

    membership: Membership
    charge: Charge


async def held(session: AsyncSession, account_id: str, now: datetime) -> Membership | None:
    """The membership the account holds at ``now`` (ordered, not yet ended), or ``None``."""
    found = await session.exec(
        select(Membership).where(
            Membership.account_id == account_id, col(Membership.status) != ENDED
        )
    )
    for membership in found.all():
        if rules.status_at(membership.status, membership.ends_at, now) != ENDED:
            return membership
    return None


async def order(
    session: AsyncSession,
    *,
    tiers: rules.TierCatalog,
    order_id: str,
    account_id: str,
    tier_id: str,
    orderer_id: str,
    channel: str,
    ordered_at: datetime,
    base_quota: int,
) -> Ordered:
    """Stage a new membership (the caller commits) or raise the refusal (R7, R8, R18).
    A membership whose unsubscription took effect but that the job has not ended yet is
    ended here first (its overflow decided against ``base_quota``)."""
    if channel not in CHANNELS:
        raise Invalid(f"channel must be one of {', '.join(CHANNELS)}")
    tier = tiers.get(tier_id)
    account = await get_account(session, account_id)
    if orderer_id != account.owner_id:
        raise rules.NotOwner()
    if account.broadband_state != "active":
        raise BroadbandInactive(account.broadband_state)
    current = await held(session, account_id, ordered_at)
    if current is not None:
        raise rules.MembershipHeld(account_id, held=current.membership_id, tier=current.tier)
    for lapsed in await ending_due(session, ordered_at, 10, account_id=account_id):
        await finish(session, lapsed, base_quota)
    start = business_date(ordered_at)
    membership = Membership(
        membership_id="fcm_" + secrets.token_hex(12),
        order_id=order_id,
        account_id=account_id,
        tier=tier.id,
        quota_bytes=tier.quota_bytes,
        monthly_fee=str(tier.monthly_fee),
        validity_months=tier.validity_months,
        orderer_id=orderer_id,
        channel=channel,
        status=ACTIVE,
        started_at=ordered_at,
        start_date=start,
        valid_until=rules.valid_until(start, tier.validity_months),
    )
    session.add(membership)
    return Ordered(membership, first_charge(tier.monthly_fee, start))


async def get(session: AsyncSession, membership_id: str) -> Membership:
    found = await session.get(Membership, membership_id)
    if found is None:
        raise NotFound("membership", membership_id)
    return found


async def unsubscribe(
    session: AsyncSession, *, membership_id: str, order_id: str, at: datetime
) -> Ordered:
    """Stage the unsubscription (R18): in force, and charged in full, through the month's
    last day; it takes effect on the next month's first day."""
    membership = await get(session, membership_id)
    status = rules.status_at(membership.status, membership.ends_at, at)
    if status != ACTIVE:
        raise rules.MembershipNotActive(membership_id, status)
    if at < membership.started_at:
        raise InvalidTime("the unsubscription is earlier than the order")
    membership.status = UNSUBSCRIBED
    membership.unsubscribe_order_id = order_id
    membership.unsubscribed_at = at
    membership.end_date = rules.last_active_day(at)
    membership.ends_at = rules.takes_effect(at)
    session.add(membership)
    charge = monthly_charge(
        Decimal(membership.monthly_fee),
        Month.of(membership.end_date),
        membership.start_date,
        membership.end_date,
    )
    assert charge is not None  # the end month is never before the start month
    return Ordered(membership, charge)


async def of_account(session: AsyncSession, account_id: str) -> list[Membership]:
    """The account's memberships, the first ordered first (404 for an unknown account)."""
    await get_account(session, account_id)
    found = await session.exec(
        select(Membership)
        .where(Membership.account_id == account_id)
        .order_by(col(Membership.started_at), col(Membership.membership_id))
    )
    return list(found.all())


@dataclass(frozen=True, slots=True)
class MembershipCharge:
    membership: Membership
    charge: Charge


async def month_charges(
    session: AsyncSession, account_id: str, month: Month
) -> list[MembershipCharge]:
    """Each membership's charge in ``month`` (R3's formula; R18: the unsubscription month in
    full, every month in between at the full fee)."""
    items = []
    for membership in await of_account(session, account_id):
        charge = monthly_charge(
            Decimal(membership.monthly_fee), month, membership.start_date, membership.end_date
        )
        if charge is not None:
            items.append(MembershipCharge(membership, charge))
    return items


async def charges_of_month(session: AsyncSession, month: Month) -> list[MembershipCharge]:
    """Every account's membership charges in ``month``, in order of the orders: what the
    charge ledger writes when it closes the month (issue 17; one line per membership)."""
    found = await session.exec(
        select(Membership)
        .where(
            col(Membership.start_date) <= month.last,
            or_(col(Membership.end_date).is_(None), col(Membership.end_date) >= month.first),
        )
        .order_by(col(Membership.started_at), col(Membership.membership_id))
    )
    items = []
    for membership in found.all():
        charge = monthly_charge(
            Decimal(membership.monthly_fee), month, membership.start_date, membership.end_date
        )
        if charge is not None:
            items.append(MembershipCharge(membership, charge))
    return items


async def quota_at(session: AsyncSession, account_id: str, now: datetime, base: int) -> int:
    """R14 with R18: the held membership's quota, else the ``base`` quota."""
    membership = await held(session, account_id, now)
    return base if membership is None else membership.quota_bytes


async def read_only_at(session: AsyncSession, account_id: str, now: datetime) -> datetime | None:
    """R18: until when the account's family cloud is read-only at ``now`` (an overflow not
    yet cleaned up, and no membership held since), or ``None``."""
    if await held(session, account_id, now) is not None:
        return None
    found = await session.exec(
        select(Membership.read_only_until).where(
            Membership.account_id == account_id,
            Membership.overflow == "read_only",
            col(Membership.read_only_until) > now,
        )
    )
    return found.first()


# --- the jobs' queries ---------------------------------------------------------------------


async def renewal_due(session: AsyncSession, today: date, limit: int) -> list[Membership]:
    """Memberships held past their validity: renewed without objection (R18)."""
    found = await session.exec(
        select(Membership)
        .where(col(Membership.status) != ENDED, col(Membership.valid_until) < today)
        .order_by(col(Membership.membership_id))
        .limit(limit)
    )
    return list(found.all())


async def ending_due(
    session: AsyncSession, now: datetime, limit: int, *, account_id: str | None = None
) -> list[Membership]:
    """Unsubscriptions whose effective instant has come and that the job has not ended."""
    query = select(Membership).where(
        Membership.status == UNSUBSCRIBED, col(Membership.ends_at) <= now
    )
    if account_id is not None:
        query = query.where(Membership.account_id == account_id)
    found = await session.exec(
        query.order_by(col(Membership.ends_at), col(Membership.membership_id)).limit(limit)
    )
    return list(found.all())


async def finish(session: AsyncSession, membership: Membership, base_quota: int) -> None:
    """R18: the unsubscription has taken effect: the membership ends, and if the saved
    content exceeds the quota left (``base_quota``), the family cloud is read-only for three
    months from the effective instant. Staged; the caller commits."""
    assert membership.ends_at is not None
    used = sum(item.bytes for item in await saved_items(session, membership.account_id))
    membership.status = ENDED
    if used > base_quota:
        membership.overflow = "read_only"
        membership.read_only_until = rules.read_only_until(membership.ends_at)
    else:
        membership.overflow = "none"
    session.add(membership)


async def cleanup_due(session: AsyncSession, now: datetime, limit: int) -> list[Membership]:
    """Overflows whose three read-only months are over, not yet cleaned up."""
    found = await session.exec(
        select(Membership)
        .where(Membership.overflow == "read_only", col(Membership.read_only_until) <= now)
        .order_by(col(Membership.read_only_until), col(Membership.membership_id))
        .limit(limit)
    )
    return list(found.all())


async def saved_items(session: AsyncSession, account_id: str) -> list[FamilyCloudItem]:
    """The account's saved items, the oldest saved first (the cleanup's order, R18)."""
    found = await session.exec(
        select(FamilyCloudItem)
        .where(FamilyCloudItem.account_id == account_id)
        .order_by(col(FamilyCloudItem.saved_at), col(FamilyCloudItem.item_id))
    )
    return list(found.all())
