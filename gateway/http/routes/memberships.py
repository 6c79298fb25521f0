"""Platform routes of family-cloud memberships (家庭云会员, R18; R3, R7, R8).

The conventions of cloud-replay orders (:mod:`gateway.http.routes.subscriptions`): the
platform's ``order_id`` is idempotent, ``ordered_at``/``at`` are business time (else the
service clock), only the broadband owner orders (R7), the channel is kept, and a completed
order owes its completion report (报竣). The rules are :mod:`replay.membership`, the SQL
:mod:`replay.membership_store`, the clock-driven job ``gateway.memberships``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import AwareDatetime, Field

from devices.orders import Answer
from gateway.http.api import Api, Body, Out, answer_out, json_out, parse_body
from gateway.http.order_answers import ChargeOut, completion_report, dump
from gateway.http.requests import Identifier, OrderId, path_id, services_of
from gateway.orders import execute_order
from gateway.services import Services
from replay import ledger
from replay import membership as rules
from replay import membership_store as store
from replay.billing import Charge, business_date
from replay.models import FamilyCloudMembership

api = Api()

_BASE = "/platform/v1/family-cloud/memberships"


# Route modules never import each other (import-linter): the charge's shape and the
# completion report are those of ``gateway.http.routes.subscriptions``, repeated here.
class MembershipIn(Body):
    order_id: str = OrderId
    account_id: Identifier
    tier: str = Field(min_length=1, max_length=32)
    orderer_id: str = Field(min_length=1, max_length=64)
    channel: Literal["physical", "electronic"]
    ordered_at: AwareDatetime | None = None


class MembershipUnsubscribeIn(Body):
    order_id: str = OrderId
    at: AwareDatetime | None = None


class MembershipOut(Out):
    membership_id: str
    order_id: str
    account_id: str
    tier: str
    quota_bytes: int
    monthly_fee: str
    orderer_id: str
    channel: str
    #: ``active``; ``unsubscribed`` (in force until ``ends_at``); ``ended``.
    status: Literal["active", "unsubscribed", "ended"]
    started_at: datetime
    #: The last day in force: the yearly validity's (renewed without objection), or the
    #: unsubscription month's last day.
    valid_until: date
    unsubscribed_at: datetime | None = None
    #: When the unsubscription takes effect: the next month's first day, 00:00 Shanghai.
    ends_at: datetime | None = None
    #: After it ended: ``none``, ``read_only`` (until ``read_only_until``) or ``cleaned``.
    overflow: str | None = None
    read_only_until: datetime | None = None
    #: The charge of the answer's order: the first month's (order) or the last's (unsubscribe).
    charge: ChargeOut | None = None

    @classmethod
    def of(
        cls, m: FamilyCloudMembership, now: datetime, charge: Charge | None = None
    ) -> MembershipOut:
        status = rules.status_at(m.status, m.ends_at, now)
        valid = m.valid_until
        if status == "active" and m.start_date <= (today := business_date(now)):
            period = rules.periods_elapsed(m.start_date, m.validity_months, today)
            valid = rules.valid_until(m.start_date, m.validity_months, period)
        return cls(
            membership_id=m.membership_id,
            order_id=m.order_id,
            account_id=m.account_id,
            tier=m.tier,
            quota_bytes=m.quota_bytes,
            monthly_fee=m.monthly_fee,
            orderer_id=m.orderer_id,
            channel=m.channel,
            status=status,
            started_at=m.started_at,
            valid_until=valid if m.end_date is None else min(valid, m.end_date),
            unsubscribed_at=m.unsubscribed_at,
            ends_at=m.ends_at,
            overflow=m.overflow or None,
            read_only_until=m.read_only_until,
            charge=None if charge is None else ChargeOut.of(charge),
        )


class MembershipList(Out):
    memberships: list[MembershipOut]


@api.route(
    "POST",
    _BASE,
    auth="platform",
    tag="family-cloud",
    summary="Order a family-cloud membership (R18, R3, R7)",
    body=MembershipIn,
    response=MembershipOut,
    status=201,
    errors=(
        "not_found",
        "unknown_tier",
        "invalid",
        "not_account_owner",
        "membership_held",
        "broadband_inactive",
        "order_id_reused",
    ),
)
async def order_membership(request: web.Request) -> web.StreamResponse:
    """Order a family-cloud membership of a tier (ordinary, gold, platinum) for a broadband
    account: effective at once, the first month charged by day from the order day (R3's
    formula), valid one year and renewed without objection; the family cloud's quota becomes
    the tier's (R14, R18). Only the account's owner orders (403, R7); one membership per
    account, of any tier (409 ``membership_held``, R18); none while broadband is stopped
    (409, R8). A repeated order_id answers the first result."""
    services = services_of(request)
    body = parse_body(await request.read(), MembershipIn)
    ordered_at = body.ordered_at or services.clock.now()

    async def effect(session: Any) -> tuple[Answer, dict[str, Any] | None]:
        done = await store.order(
            session,
            tiers=services.tiers,
            order_id=body.order_id,
            account_id=body.account_id,
            tier_id=body.tier,
            orderer_id=body.orderer_id,
            channel=body.channel,
            ordered_at=ordered_at,
            base_quota=services.settings.family_cloud_quota_bytes,
        )
        now = services.clock.now()
        await ledger.amend_products(session, body.account_id, ordered_at, now)  # dated back
        out = MembershipOut.of(done.membership, ordered_at, done.charge)
        report = completion_report(body.order_id, "membership.order", now, out)
        return Answer(201, dump(out)), report

    answer = await execute_order(
        services,
        order_id=body.order_id,
        action="membership.order",
        target="",
        request_body=body.model_dump(mode="json", exclude={"order_id"}),
        effect=effect,
        account_id=body.account_id,
    )
    return answer_out(answer)


async def _account_of(services: Services, membership_id: str) -> str | None:
    async with services.db.session() as session:
        found = await session.get(FamilyCloudMembership, membership_id)
    return None if found is None else found.account_id


@api.route(
    "POST",
    _BASE + "/{membership_id}/unsubscribe",
    auth="platform",
    tag="family-cloud",
    summary="Unsubscribe a family-cloud membership from next month (R18)",
    body=MembershipUnsubscribeIn,
    response=MembershipOut,
    errors=("not_found", "membership_not_active", "invalid_time", "order_id_reused"),
)
async def unsubscribe_membership(request: web.Request) -> web.StreamResponse:
    """Unsubscribe a family-cloud membership (R18): it stays in force, and is charged in
    full, through the month's last day, and takes effect on the next month's first day
    (00:00 Asia/Shanghai). If the saved content then exceeds the base quota, the family
    cloud is read-only for three months, then cleaned up oldest first. An unsubscribed or
    ended membership is 409 ``membership_not_active``; a repeated order_id answers the first
    result."""
    services = services_of(request)
    membership_id = path_id(request, "membership_id")
    body = parse_body(await request.read(), MembershipUnsubscribeIn)
    at = body.at or services.clock.now()

    async def effect(session: Any) -> tuple[Answer, dict[str, Any] | None]:
        done = await store.unsubscribe(
            session, membership_id=membership_id, order_id=body.order_id, at=at
        )
        now = services.clock.now()
        await ledger.amend_products(session, done.membership.account_id, at, now)  # dated back
        out = MembershipOut.of(done.membership, at, done.charge)
        report = completion_report(body.order_id, "membership.unsubscribe", now, out)
        return Answer(200, dump(out)), report

    answer = await execute_order(
        services,
        order_id=body.order_id,
        action="membership.unsubscribe",
        target=membership_id,
        request_body=body.model_dump(mode="json", exclude={"order_id"}),
        effect=effect,
        account_id=await _account_of(services, membership_id),
    )
    return answer_out(answer)


@api.route(
    "GET",
    _BASE + "/{membership_id}",
    auth="platform",
    tag="family-cloud",
    summary="One family-cloud membership (R18)",
    response=MembershipOut,
    errors=("not_found",),
)
async def get_membership(request: web.Request) -> web.StreamResponse:
    """One family-cloud membership: tier, quota, monthly fee, channel, its status now
    (``active``, ``unsubscribed`` until it takes effect, ``ended``), the last day in force
    and, once ended, its overflow (read-only until when, or cleaned)."""
    services = services_of(request)
    async with services.db.session() as session:
        found = await store.get(session, path_id(request, "membership_id"))
    return json_out(MembershipOut.of(found, services.clock.now()))


@api.route(
    "GET",
    "/platform/v1/accounts/{account_id}/family-cloud/memberships",
    auth="platform",
    tag="family-cloud",
    summary="The account's family-cloud memberships (R18)",
    response=MembershipList,
    errors=("not_found",),
)
async def list_memberships(request: web.Request) -> web.StreamResponse:
    """Every family-cloud membership of the account, the first ordered first: at most one is
    held (``active`` or ``unsubscribed``) at a time (R18)."""
    services = services_of(request)
    now = services.clock.now()
    async with services.db.session() as session:
        found = await store.of_account(session, path_id(request, "account_id"))
    return json_out(MembershipList(memberships=[MembershipOut.of(m, now) for m in found]))
