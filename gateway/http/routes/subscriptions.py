"""Platform routes of cloud-replay orders, unsubscriptions and charges (R1-R7)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from aiohttp import web
from pydantic import AwareDatetime, Field

from devices.accounts import get_account
from devices.orders import Answer
from gateway.desired import refresh_desired
from gateway.http.api import (
    Api,
    ApiError,
    Body,
    Out,
    answer_out,
    json_out,
    parse_body,
    parse_query,
)
from gateway.http.order_answers import (
    ChargeOut,
    PackageLineOut,
    completion_report,
    dump,
    money,
)
from gateway.http.requests import Identifier, OrderId, path_id, services_of
from gateway.orders import execute_order
from gateway.services import Services
from replay import ledger, membership_store
from replay import subscriptions as subs
from replay.billing import Month
from replay.models import Subscription
from replay.package_charges import PackageLine, account_package_lines

api = Api()


class SubscribeIn(Body):
    order_id: str = OrderId
    account_id: Identifier
    device_id: Identifier
    plan: str = Field(min_length=1, max_length=64)
    orderer_id: str = Field(min_length=1, max_length=64)
    channel: Literal["physical", "electronic"]
    ordered_at: AwareDatetime | None = None


class SubscribeOut(Out):
    subscription_id: str
    order_id: str
    account_id: str
    device_id: str
    plan: str
    status: str
    started_at: datetime
    first_charge: ChargeOut


class UnsubscribeIn(Body):
    order_id: str = OrderId
    at: AwareDatetime | None = None


class UnsubscribeOut(Out):
    subscription_id: str
    status: str
    ended_at: datetime
    final_charge: ChargeOut


class TermOut(Out):
    number: int
    ends_on: str


class SubscriptionOut(Out):
    subscription_id: str
    order_id: str
    account_id: str
    device_id: str
    plan: str
    family: str
    retention_days: int
    monthly_fee: str
    orderer_id: str
    channel: str
    status: str
    started_at: datetime
    ended_at: datetime | None = None
    term: TermOut

    @classmethod
    def of(cls, s: Subscription) -> SubscriptionOut:
        return cls(
            subscription_id=s.subscription_id,
            order_id=s.order_id,
            account_id=s.account_id,
            device_id=s.device_id,
            plan=s.plan_id,
            family=s.family,
            retention_days=s.retention_days,
            monthly_fee=s.monthly_fee,
            orderer_id=s.orderer_id,
            channel=s.channel,
            status=s.status,
            started_at=s.started_at,
            ended_at=s.ended_at,
            term=TermOut(number=s.term_number, ends_on=s.term_end.isoformat()),
        )


class SubscriptionList(Out):
    subscriptions: list[SubscriptionOut]


class ChargesQuery(Body):
    month: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")


class ChargeItemOut(Out):
    """One line of the month: ``kind`` ``cloud_replay`` (a camera's subscription: its
    ``subscription_id``, ``device_id``, ``plan``) or ``family_cloud_membership`` (R18: its
    ``membership_id`` and ``tier``)."""

    kind: Literal["cloud_replay", "family_cloud_membership"] = "cloud_replay"
    subscription_id: str | None = None
    device_id: str | None = None
    plan: str | None = None
    membership_id: str | None = None
    tier: str | None = None
    days: int
    amount: str


class ChargesOut(Out):
    account_id: str
    month: str
    currency: Literal["CNY"] = "CNY"
    items: list[ChargeItemOut]
    #: The home-network packages' lines of the month (R16, R17), kept apart from ``items``.
    package_lines: list[PackageLineOut]
    total: str


@api.route(
    "POST",
    "/platform/v1/subscriptions",
    auth="platform",
    tag="replay",
    summary="Order a cloud-replay product for a camera (R1-R3, R7)",
    body=SubscribeIn,
    response=SubscribeOut,
    status=201,
    errors=(
        "not_found",
        "unknown_plan",
        "invalid",
        "not_account_owner",
        "already_subscribed",
        "broadband_inactive",
        "order_id_reused",
    ),
)
async def create_subscription(request: web.Request) -> web.StreamResponse:
    """Order a cloud-replay product for a camera (R1-R3, R7): effective at once, the first
    month charged by day (R3). Only the account's owner orders (403); one product per camera
    (409, R2); none while broadband is stopped (409, R8). A repeated order_id answers the first
    result."""
    services = services_of(request)
    raw = await request.read()
    body = parse_body(raw, SubscribeIn)
    ordered_at = body.ordered_at or services.clock.now()

    async def effect(session: Any) -> tuple[Answer, dict[str, Any] | None]:
        done = await subs.subscribe(
            session,
            catalog=services.catalog,
            order_id=body.order_id,
            account_id=body.account_id,
            device_id=body.device_id,
            plan_id=body.plan,
            orderer_id=body.orderer_id,
            channel=body.channel,
            ordered_at=ordered_at,
        )
        s = done.subscription
        await ledger.amend(session, s, services.clock.now())  # an order dated in a closed month
        await refresh_desired(services, session, [s.device_id])
        out = SubscribeOut(
            subscription_id=s.subscription_id,
            order_id=s.order_id,
            account_id=s.account_id,
            device_id=s.device_id,
            plan=s.plan_id,
            status=s.status,
            started_at=s.started_at,
            first_charge=ChargeOut.of(done.first_charge),
        )
        report = completion_report(body.order_id, "subscribe", services.clock.now(), out)
        return Answer(201, dump(out)), report

    answer = await execute_order(
        services,
        order_id=body.order_id,
        action="subscribe",
        target="",
        request_body=body.model_dump(mode="json", exclude={"order_id"}),
        effect=effect,
        account_id=body.account_id,
    )
    return answer_out(answer)


async def _account_of(services: Services, subscription_id: str) -> str | None:
    """The account of a subscription, to record its unsubscription under (None: unknown)."""
    async with services.db.session() as session:
        found = await session.get(Subscription, subscription_id)
    return None if found is None else found.account_id


@api.route(
    "POST",
    "/platform/v1/subscriptions/{subscription_id}/unsubscribe",
    auth="platform",
    tag="replay",
    summary="Unsubscribe at once (R5)",
    body=UnsubscribeIn,
    response=UnsubscribeOut,
    errors=("not_found", "not_active", "invalid_time", "order_id_reused"),
)
async def unsubscribe(request: web.Request) -> web.StreamResponse:
    """Unsubscribe at once (R5): the month's final charge by day up to the unsubscription day,
    and the recorded video is no longer viewable. An unsubscribed subscription is 409
    not_active; a repeated order_id answers the first result."""
    services = services_of(request)
    subscription_id = path_id(request, "subscription_id")
    body = parse_body(await request.read(), UnsubscribeIn)
    at = body.at or services.clock.now()

    async def effect(session: Any) -> tuple[Answer, dict[str, Any] | None]:
        done = await subs.unsubscribe(
            session, subscription_id=subscription_id, order_id=body.order_id, at=at
        )
        s = done.subscription
        await ledger.amend(session, s, services.clock.now())  # dated in a closed month
        await refresh_desired(services, session, [s.device_id])
        assert s.ended_at is not None
        out = UnsubscribeOut(
            subscription_id=s.subscription_id,
            status=s.status,
            ended_at=s.ended_at,
            final_charge=ChargeOut.of(done.final_charge),
        )
        report = completion_report(body.order_id, "unsubscribe", services.clock.now(), out)
        return Answer(200, dump(out)), report

    answer = await execute_order(
        services,
        order_id=body.order_id,
        action="unsubscribe",
        target=subscription_id,
        request_body=body.model_dump(mode="json", exclude={"order_id"}),
        effect=effect,
        account_id=await _account_of(services, subscription_id),
    )
    return answer_out(answer)


@api.route(
    "GET",
    "/platform/v1/subscriptions/{subscription_id}",
    auth="platform",
    tag="replay",
    summary="One subscription",
    response=SubscriptionOut,
    errors=("not_found",),
)
async def get_subscription(request: web.Request) -> web.StreamResponse:
    """One subscription: its plan, family, retention, monthly fee, channel, status, dates and
    the current 24-month tariff term (R4)."""
    services = services_of(request)
    async with services.db.session() as session:
        s = await subs.get_subscription(session, path_id(request, "subscription_id"))
    return json_out(SubscriptionOut.of(s))


@api.route(
    "GET",
    "/platform/v1/accounts/{account_id}/subscriptions",
    auth="platform",
    tag="replay",
    summary="The account's subscriptions",
    response=SubscriptionList,
    errors=("not_found",),
)
async def list_subscriptions(request: web.Request) -> web.StreamResponse:
    """Every subscription of the account, active and ended (an unsubscribed one is kept six
    months, R5)."""
    services = services_of(request)
    async with services.db.session() as session:
        found = await subs.account_subscriptions(session, path_id(request, "account_id"))
    return json_out(SubscriptionList(subscriptions=[SubscriptionOut.of(s) for s in found]))


@api.route(
    "GET",
    "/platform/v1/accounts/{account_id}/charges",
    auth="platform",
    tag="replay",
    summary="The account's charges of one month: replay, memberships, packages (R3-R7, R16-R18)",
    query=ChargesQuery,
    response=ChargesOut,
    errors=("not_found",),
)
async def charges(request: web.Request) -> web.StreamResponse:
    """The account's charges of one Asia/Shanghai month (month=YYYY-MM), in CNY, billed
    with the broadband account (R7): per cloud-replay subscription (kind ``cloud_replay``)
    and per family-cloud membership (kind ``family_cloud_membership``, R18) the days active
    and the amount (R3-R5, half-up to the cent); the home-network packages' one-time fees on
    their order day and refunds on their unsubscription day (package_lines, R16, R17); and
    the total of all. A closed month's lines of every kind are read from the charge ledger
    (issue 18), so they stay the same after R5 purges the subscription records; an open
    month's are computed live."""
    services = services_of(request)
    account_id = path_id(request, "account_id")
    query = parse_query(request, ChargesQuery)
    try:
        month = Month.parse(query.month)
    except ValueError as exc:
        raise ApiError(400, "invalid_query", str(exc)) from exc
    async with services.db.session() as session:
        await get_account(session, account_id)
        items = await _replay_items(session, account_id, month)
        items += await _membership_items(session, account_id, month)
        lines = await _package_lines(session, account_id, month)
    total = sum((Decimal(item.amount) for item in items), Decimal("0.00"))
    total += sum((line.amount for line in lines), Decimal("0.00"))
    packages = [PackageLineOut.of(line) for line in lines]
    out = ChargesOut(
        account_id=account_id,
        month=str(month),
        items=items,
        package_lines=packages,
        total=money(total),
    )
    return json_out(out)


async def _replay_items(session: Any, account_id: str, month: Month) -> list[ChargeItemOut]:
    """Each cloud-replay subscription's line of ``month`` (R3-R5): from the charge ledger
    once the month is closed (issue 17), else computed live."""
    if await ledger.is_closed(session, month):
        return [
            ChargeItemOut(
                subscription_id=line.subscription_id,
                device_id=line.device_id,
                plan=line.plan,
                days=line.days,
                amount=money(ledger.from_cents(line.amount_cents)),
            )
            for line in await ledger.account_lines(session, account_id, month)
        ]
    return [
        ChargeItemOut(
            subscription_id=i.subscription.subscription_id,
            device_id=i.subscription.device_id,
            plan=i.subscription.plan_id,
            days=i.charge.days,
            amount=money(i.charge.amount),
        )
        for i in await subs.month_charges(session, account_id, month)
    ]


async def _membership_items(session: Any, account_id: str, month: Month) -> list[ChargeItemOut]:
    """Each family-cloud membership's line of ``month`` (R18: the first month by day): from
    the charge ledger once the month is closed (issue 18), else computed live."""
    if await ledger.is_closed(session, month):
        kinds = (ledger.MEMBERSHIP,)
        return [
            ChargeItemOut(
                kind="family_cloud_membership",
                membership_id=line.subscription_id,
                tier=line.plan,
                days=line.days,
                amount=money(ledger.from_cents(line.amount_cents)),
            )
            for line in await ledger.account_lines(session, account_id, month, kinds)
        ]
    return [
        ChargeItemOut(
            kind="family_cloud_membership",
            membership_id=m.membership.membership_id,
            tier=m.membership.tier,
            days=m.charge.days,
            amount=money(m.charge.amount),
        )
        for m in await membership_store.month_charges(session, account_id, month)
    ]


async def _package_lines(session: Any, account_id: str, month: Month) -> list[PackageLine]:
    """The home-network package lines of ``month`` (R16, R17): from the charge ledger once
    the month is closed (issue 18), else computed live."""
    if await ledger.is_closed(session, month):
        return await ledger.account_package_lines(session, account_id, month)
    return await account_package_lines(session, account_id, month)
