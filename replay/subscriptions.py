"""Ordering, unsubscribing and billing cloud replay (R1-R7, R9), over a database session.

The arithmetic lives in :mod:`replay.billing` (pure, table-tested); this module applies
the ordering rules to stored subscriptions:

- R7: only the broadband account's owner may order; the channel is kept.
- R2: one product per camera; a second order while one is active is refused, whether
  for another product or the same one. A partial unique index backs the check, so two
  racing orders cannot both win.
- R8: no order while the account's broadband is stopped or torn down.
- R3/R5: effective at once; charges by day in the operator's zone.
- R5: unsubscription is immediate; the record is purged six months later.
- R4: the 24-month tariff term is recorded and rolled over; it changes no charge.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from sqlmodel import col, delete, func, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from devices.accounts import get_account
from devices.errors import Conflict, Forbidden, Invalid, NotFound
from devices.models import Device, DeviceKind
from replay.billing import (
    Charge,
    Month,
    business_date,
    current_term,
    final_charge,
    first_charge,
    monthly_charge,
    purge_due,
)
from replay.models import ClosedMonth, Subscription
from replay.plans import PlanCatalog, UnknownPlan

ACTIVE = "active"
UNSUBSCRIBED = "unsubscribed"
CHANNELS = ("physical", "electronic")


class NotAccountOwner(Forbidden):
    code = "not_account_owner"
    rule = "R7"

    def __init__(self, orderer_id: str) -> None:
        super().__init__("only the broadband account's owner may order cloud replay")
        self.orderer_id = orderer_id


class AlreadySubscribed(Conflict):
    code = "already_subscribed"
    rule = "R2"

    def __init__(self, device_id: str, *, held: str, asked: str) -> None:
        product = "the same product" if held == asked else held
        super().__init__(f"camera {device_id} already holds {product}; unsubscribe first")
        self.device_id = device_id
        self.held = held
        self.asked = asked


class BroadbandInactive(Conflict):
    code = "broadband_inactive"
    rule = "R8"

    def __init__(self, state: str) -> None:
        super().__init__(f"the broadband account is {state}")
        self.state = state


class NotActive(Conflict):
    code = "not_active"
    rule = "R5"

    def __init__(self, subscription_id: str) -> None:
        super().__init__(f"subscription {subscription_id} is not active")
        self.subscription_id = subscription_id


class UnknownPlanRequested(Invalid):
    code = "unknown_plan"
    rule = "R1"

    def __init__(self, plan_id: str) -> None:
        super().__init__(f"unknown plan {plan_id!r}")
        self.plan_id = plan_id


class InvalidTime(Invalid):
    code = "invalid_time"


class SubscriptionActive(Conflict):
    """A device with an active product cannot leave its account (R9, as for teardown)."""

    code = "subscription_active"

    def __init__(self, device_id: str, subscription_id: str) -> None:
        super().__init__(
            f"cloud-replay subscription {subscription_id} is active on device {device_id}; "
            "unsubscribe it before unbinding the device",
            rule="R9",
        )


@dataclass(frozen=True, slots=True)
class Ordered:
    subscription: Subscription
    first_charge: Charge


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    subscription: Subscription
    final_charge: Charge


def new_subscription_id() -> str:
    return "sub_" + secrets.token_hex(12)


async def active_subscription(session: AsyncSession, device_id: str) -> Subscription | None:
    result = await session.exec(
        select(Subscription).where(
            Subscription.device_id == device_id, Subscription.status == ACTIVE
        )
    )
    return result.first()


async def active_subscriptions(
    session: AsyncSession, device_ids: Collection[str]
) -> dict[str, Subscription]:
    """Each device's active subscription (R2: at most one), for a batch of devices."""
    if not device_ids:
        return {}
    result = await session.exec(
        select(Subscription).where(
            col(Subscription.device_id).in_(list(device_ids)), Subscription.status == ACTIVE
        )
    )
    return {sub.device_id: sub for sub in result.all()}


async def upload_subscriptions(
    session: AsyncSession, cameras: Mapping[str, str], since: datetime
) -> dict[str, list[Subscription]]:
    """Per camera (device id → its account id), the subscriptions of that account on it
    that could cover a segment started at or after ``since``: the active one and those
    unsubscribed after ``since`` (the boundary rule of :mod:`replay.recording`)."""
    if not cameras:
        return {}
    result = await session.exec(
        select(Subscription).where(
            col(Subscription.device_id).in_(list(cameras)),
            or_(
                Subscription.status == ACTIVE,
                col(Subscription.ended_at) > since,
            ),
        )
    )
    found: dict[str, list[Subscription]] = {}
    for sub in result.all():
        if cameras.get(sub.device_id) == sub.account_id:  # a rebound camera starts clean
            found.setdefault(sub.device_id, []).append(sub)
    return found


def covering(subscriptions: Sequence[Subscription], at: datetime) -> Subscription | None:
    """The subscription in force at ``at`` (``[started_at, ended_at)``); else the latest
    one, whose entitlement then refuses the segment naming R5 or R6; ``None`` if none."""
    for sub in subscriptions:
        if sub.started_at <= at and (sub.ended_at is None or at < sub.ended_at):
            return sub
    return max(subscriptions, key=lambda sub: sub.started_at, default=None)


async def has_active_subscription(session: AsyncSession, account_id: str) -> bool:
    """R9's question: does this account hold any active cloud-replay product?"""
    result = await session.exec(
        select(Subscription.subscription_id)
        .where(Subscription.account_id == account_id, Subscription.status == ACTIVE)
        .limit(1)
    )
    return result.first() is not None


async def accounts_with_active_subscription(
    session: AsyncSession, account_ids: Iterable[str]
) -> set[str]:
    """R9's question for many accounts at once: those holding an active product."""
    ids = list(account_ids)
    if not ids:
        return set()
    result = await session.exec(
        select(Subscription.account_id)
        .where(col(Subscription.account_id).in_(ids), Subscription.status == ACTIVE)
        .distinct()
    )
    return set(result.all())


async def subscribe(
    session: AsyncSession,
    *,
    catalog: PlanCatalog,
    order_id: str,
    account_id: str,
    device_id: str,
    plan_id: str,
    orderer_id: str,
    channel: str,
    ordered_at: datetime,
) -> Ordered:
    """Stage a new subscription in ``session`` (the caller commits) or raise a refusal."""
    if channel not in CHANNELS:
        raise Invalid(f"channel must be one of {', '.join(CHANNELS)}")
    try:
        plan = catalog.get(plan_id)
    except UnknownPlan as exc:
        raise UnknownPlanRequested(plan_id) from exc
    account = await get_account(session, account_id)
    if orderer_id != account.owner_id:
        raise NotAccountOwner(orderer_id)
    device = await session.get(Device, device_id)
    if device is None or device.account_id != account_id or device.kind != DeviceKind.CAMERA:
        raise NotFound("camera", device_id, on=f"account {account_id}")
    if account.broadband_state != "active":
        raise BroadbandInactive(account.broadband_state)
    current = await active_subscription(session, device_id)
    if current is not None:
        raise AlreadySubscribed(device_id, held=current.plan_id, asked=plan_id)
    start = business_date(ordered_at)
    term = current_term(start, start)
    subscription = Subscription(
        subscription_id=new_subscription_id(),
        order_id=order_id,
        account_id=account_id,
        device_id=device_id,
        plan_id=plan.id,
        family=plan.family.value,
        retention_days=plan.retention_days,
        monthly_fee=str(plan.monthly_fee),
        orderer_id=orderer_id,
        channel=channel,
        status=ACTIVE,
        started_at=ordered_at,
        start_date=start,
        term_number=term.number,
        term_end=term.end,
    )
    session.add(subscription)
    return Ordered(subscription, first_charge(plan.monthly_fee, start))


async def get_subscription(session: AsyncSession, subscription_id: str) -> Subscription:
    subscription = await session.get(Subscription, subscription_id)
    if subscription is None:
        raise NotFound("subscription", subscription_id)
    return subscription


async def unsubscribe(
    session: AsyncSession, *, subscription_id: str, order_id: str, at: datetime
) -> Unsubscribed:
    """Stage the unsubscription (R5): immediate, charged by day, purged in six months."""
    subscription = await get_subscription(session, subscription_id)
    if subscription.status != ACTIVE:
        raise NotActive(subscription_id)
    if at < subscription.started_at:
        raise InvalidTime("the unsubscription is earlier than the order")
    end = business_date(at)
    subscription.status = UNSUBSCRIBED
    subscription.ended_at = at
    subscription.end_date = end
    subscription.unsubscribe_order_id = order_id
    subscription.purge_after = purge_due(at)
    session.add(subscription)
    charge = final_charge(Decimal(subscription.monthly_fee), subscription.start_date, end)
    return Unsubscribed(subscription, charge)


async def account_subscriptions(session: AsyncSession, account_id: str) -> list[Subscription]:
    await get_account(session, account_id)
    result = await session.exec(
        select(Subscription)
        .where(Subscription.account_id == account_id)
        .order_by(col(Subscription.started_at), col(Subscription.subscription_id))
    )
    return list(result.all())


@dataclass(frozen=True, slots=True)
class ChargeItem:
    subscription: Subscription
    charge: Charge


async def month_charges(session: AsyncSession, account_id: str, month: Month) -> list[ChargeItem]:
    """Each subscription's charge in ``month`` by the one formula of R3/R5 (R4, R7)."""
    items = []
    for subscription in await account_subscriptions(session, account_id):
        charge = monthly_charge(
            Decimal(subscription.monthly_fee),
            month,
            subscription.start_date,
            subscription.end_date,
        )
        if charge is not None:
            items.append(ChargeItem(subscription, charge))
    return items


async def roll_terms(session: AsyncSession, today: date) -> int:
    """R4: renew the 24-month tariff term of active subscriptions whose term ended."""
    result = await session.exec(
        select(Subscription).where(
            Subscription.status == ACTIVE, col(Subscription.term_end) < today
        )
    )
    rolled = 0
    for subscription in result.all():
        term = current_term(subscription.start_date, today)
        subscription.term_number = term.number
        subscription.term_end = term.end
        session.add(subscription)
        rolled += 1
    await session.commit()
    return rolled


async def purge_unsubscribed(session: AsyncSession, now: datetime) -> int:
    """R5: delete subscription records six months after their unsubscription, once the
    month of their unsubscription is closed in the charge ledger (months close in order, so
    all of theirs are): a record never takes a billed month with it (issue 17)."""
    closed: str | None = (await session.exec(select(func.max(ClosedMonth.month)))).one()
    if closed is None:
        return 0
    closed_through = Month.parse(closed).last
    result = await session.exec(
        delete(Subscription).where(
            col(Subscription.status) == UNSUBSCRIBED,
            col(Subscription.purge_after) <= now,
            col(Subscription.end_date) <= closed_through,
        )
    )
    await session.commit()
    return int(result.rowcount)


async def active_families(session: AsyncSession, device_ids: list[str]) -> dict[str, str]:
    """The family of each device's active product (devices without one are absent)."""
    if not device_ids:
        return {}
    result = await session.exec(
        select(Subscription.device_id, Subscription.family).where(
            col(Subscription.device_id).in_(device_ids), Subscription.status == ACTIVE
        )
    )
    return dict(result.all())
