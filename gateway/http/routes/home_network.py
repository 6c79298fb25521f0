"""Platform routes of home-network products (R16, R17) and the catalog of everything sold.

Orders follow the cloud-replay orders' conventions (:mod:`gateway.http.routes.subscriptions`):
the platform's ``order_id`` runs once (a repeat answers the first result), ``ordered_at``
(or ``at``) is the business time (the service clock's now when absent), only the broadband
account's owner orders (R7), the channel is kept, and each completed order is reported to
the platform's callback URL (报竣). The rules are :mod:`devices.home_network`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import AwareDatetime, Field
from sqlmodel.ext.asyncio.session import AsyncSession

from devices import home_network_store as store
from devices.home_network_store import HomePackage, PackageDevice
from devices.orders import Answer
from gateway.http.api import Api, Body, Out, answer_out, json_out, parse_body
from gateway.http.order_answers import PackageLineOut, completion_report, dump, money
from gateway.http.requests import Identifier, OrderId, app_token_of, path_id, services_of
from gateway.orders import execute_order
from gateway.services import Services
from replay import ledger
from replay.billing import Month
from replay.package_charges import CHARGE, REFUND, bill_of, package_lines

api = Api()


# --- bodies and answers -------------------------------------------------------------------


class OrderIn(Body):
    order_id: str = OrderId
    account_id: Identifier
    product: str = Field(min_length=1, max_length=64)
    orderer_id: str = Field(min_length=1, max_length=64)
    channel: Literal["physical", "electronic"]
    ordered_at: AwareDatetime | None = None
    devices: list[Identifier] = Field(min_length=1, max_length=16)


class StepIn(Body):
    """An unsubscription or a visit: the platform's order id and when (default: now)."""

    order_id: str = OrderId
    at: AwareDatetime | None = None


class CoveredOut(Out):
    device_id: str
    tunings: int
    used: int


class PackageOut(Out):
    id: str
    order_id: str
    account_id: str
    product: str
    family: str
    fee: str
    orderer_id: str
    channel: str
    #: active, ended (its validity is over) or unsubscribed.
    status: str
    started_at: datetime
    #: The last valid day (Asia/Shanghai), valid through its end.
    valid_until: str
    ends_at: datetime
    visited_at: datetime | None = None
    ended_at: datetime | None = None
    devices: list[CoveredOut]
    charge: PackageLineOut
    refund: PackageLineOut | None = None

    @classmethod
    def of(cls, p: HomePackage, covered: list[PackageDevice]) -> PackageOut:
        bill = bill_of(p)
        lines = package_lines([bill], Month.of(bill.ordered_on))
        if bill.unsubscribed_on is not None:
            lines += package_lines([bill], Month.of(bill.unsubscribed_on))
        charge = next(line for line in lines if line.kind == CHARGE)
        refund = next((line for line in lines if line.kind == REFUND), None)
        return cls(
            id=p.package_id,
            order_id=p.order_id,
            account_id=p.account_id,
            product=p.product_id,
            family=p.family,
            fee=p.fee,
            orderer_id=p.orderer_id,
            channel=p.channel,
            status=p.status,
            started_at=p.started_at,
            valid_until=p.valid_through.isoformat(),
            ends_at=p.ends_at,
            visited_at=p.visited_at,
            ended_at=p.ended_at,
            devices=[
                CoveredOut(device_id=c.device_id, tunings=p.tunings_per_device, used=c.used)
                for c in covered
            ],
            charge=PackageLineOut.of(charge),
            refund=None if refund is None else PackageLineOut.of(refund),
        )


class PackageList(Out):
    packages: list[PackageOut]


class CatalogItem(Out):
    id: str
    kind: Literal["cloud_replay", "home_network", "family_cloud"]
    family: str
    rule: str
    #: ``one_time`` (R16, R17) or ``monthly`` (R1, R18).
    billing: Literal["one_time", "monthly"]
    fee: str
    validity_months: int | None = None
    retention_days: int | None = None
    devices: int | None = None
    tunings_per_device: int | None = None
    quota_bytes: int | None = None


class CatalogOut(Out):
    currency: Literal["CNY"] = "CNY"
    products: list[CatalogItem]


# --- helpers ------------------------------------------------------------------------------


async def _out(session: AsyncSession, package: HomePackage) -> PackageOut:
    await session.flush()
    covered = await store.package_devices(session, [package.package_id])
    return PackageOut.of(package, covered[package.package_id])


async def _account_of(services: Services, package_id: str) -> str | None:
    async with services.db.session() as session:
        found = await session.get(HomePackage, package_id)
    return None if found is None else found.account_id


# --- orders -------------------------------------------------------------------------------


@api.route(
    "POST",
    "/platform/v1/home-network/orders",
    auth="platform",
    tag="home-network",
    summary="Order a whole-home WiFi package or a WiFi tuning pack (R16, R17, R7)",
    body=OrderIn,
    response=PackageOut,
    status=201,
    errors=(
        "not_found",
        "invalid",
        "unknown_product",
        "too_many_devices",
        "not_account_owner",
        "broadband_inactive",
        "already_covered",
        "order_id_reused",
    ),
)
async def order_package(request: web.Request) -> web.StreamResponse:
    """Order a whole-home WiFi package (R16, valid a year) or a WiFi tuning pack (R17, valid a
    month) for routers of the account: effective at once, its whole fee charged on the order
    day. Only the owner orders (403, R7); none while broadband is stopped (409, R12); a router
    holds one whole-home package at a time (409 already_covered, R16). A repeated order_id
    answers the first result."""
    services = services_of(request)
    body = parse_body(await request.read(), OrderIn)
    order = store.PackageOrder(
        order_id=body.order_id,
        account_id=body.account_id,
        product_id=body.product,
        orderer_id=body.orderer_id,
        channel=body.channel,
        ordered_at=body.ordered_at or services.clock.now(),
        devices=body.devices,
    )

    async def effect(session: Any) -> tuple[Answer, dict[str, Any] | None]:
        package = await store.order_package(
            session, services.products.home, order, now=services.clock.now()
        )
        now = services.clock.now()
        await ledger.amend_products(session, order.account_id, order.ordered_at, now)  # dated back
        out = await _out(session, package)
        report = completion_report(body.order_id, "home_network.order", services.clock.now(), out)
        return Answer(201, dump(out)), report

    answer = await execute_order(
        services,
        order_id=body.order_id,
        action="home_network.order",
        target="",
        request_body=body.model_dump(mode="json", exclude={"order_id"}),
        effect=effect,
        account_id=body.account_id,
    )
    return answer_out(answer)


async def _step(request: web.Request, action: Literal["unsubscribe", "visit"]) -> web.Response:
    services = services_of(request)
    package_id = path_id(request, "package_id")
    body = parse_body(await request.read(), StepIn)
    at = body.at or services.clock.now()
    apply = store.unsubscribe_package if action == "unsubscribe" else store.record_visit

    async def effect(session: Any) -> tuple[Answer, dict[str, Any] | None]:
        package = await apply(session, package_id=package_id, order_id=body.order_id, at=at)
        if action == "unsubscribe":  # a refund dated back into a closed month
            await ledger.amend_products(session, package.account_id, at, services.clock.now())
        out = await _out(session, package)
        report = completion_report(
            body.order_id, f"home_network.{action}", services.clock.now(), out
        )
        return Answer(200, dump(out)), report

    answer = await execute_order(
        services,
        order_id=body.order_id,
        action=f"home_network.{action}",
        target=package_id,
        request_body=body.model_dump(mode="json", exclude={"order_id"}),
        effect=effect,
        account_id=await _account_of(services, package_id),
    )
    return answer_out(answer)


@api.route(
    "POST",
    "/platform/v1/home-network/orders/{package_id}/unsubscribe",
    auth="platform",
    tag="home-network",
    summary="Unsubscribe a package before the engineer's visit; refunded in full (R16, R17)",
    body=StepIn,
    response=PackageOut,
    errors=("not_found", "package_not_active", "visit_done", "invalid_time", "order_id_reused"),
)
async def unsubscribe_package(request: web.Request) -> web.StreamResponse:
    """Unsubscribe a home-network package, effective at once: its fee is refunded in full as a
    correction line of the unsubscription's month (R16, R17). Refused once the engineer's visit
    is recorded (409 visit_done) and for a package no longer active (409 package_not_active).
    A repeated order_id answers the first result."""
    return await _step(request, "unsubscribe")


@api.route(
    "POST",
    "/platform/v1/home-network/orders/{package_id}/visit",
    auth="platform",
    tag="home-network",
    summary="Record the engineer's visit: from then on no unsubscription (R16, R17)",
    body=StepIn,
    response=PackageOut,
    errors=(
        "not_found",
        "package_not_active",
        "already_visited",
        "invalid_time",
        "order_id_reused",
    ),
)
async def record_visit(request: web.Request) -> web.StreamResponse:
    """Record that the smart-home engineer's visit of the package is done (上门): from then on
    the package cannot be unsubscribed (R16, R17). A second visit is refused (409
    already_visited); a repeated order_id answers the first result."""
    return await _step(request, "visit")


@api.route(
    "GET",
    "/platform/v1/home-network/orders/{package_id}",
    auth="platform",
    tag="home-network",
    summary="One home-network package",
    response=PackageOut,
    errors=("not_found",),
)
async def get_package(request: web.Request) -> web.StreamResponse:
    """One home-network package: its product, routers and their tunings used, status (active,
    ended at its validity's end, or unsubscribed), validity, visit, charge and refund."""
    services = services_of(request)
    async with services.db.session() as session:
        package = await store.get_package(session, path_id(request, "package_id"))
        return json_out(await _out(session, package))


async def _listed(services: Services, account_id: str) -> PackageList:
    async with services.db.session() as session:
        packages = await store.account_packages(session, account_id)
        covered = await store.package_devices(session, [p.package_id for p in packages])
    return PackageList(packages=[PackageOut.of(p, covered[p.package_id]) for p in packages])


@api.route(
    "GET",
    "/platform/v1/accounts/{account_id}/home-network",
    auth="platform",
    tag="home-network",
    summary="The account's home-network packages",
    response=PackageList,
    errors=("not_found",),
)
async def list_packages(request: web.Request) -> web.StreamResponse:
    """Every home-network package of the account, active, ended and unsubscribed, in order of
    ordering, with the tunings used per router."""
    services = services_of(request)
    return json_out(await _listed(services, path_id(request, "account_id")))


@api.route(
    "GET",
    "/app/v1/home-network",
    auth="app",
    tag="app",
    summary="The family's home-network packages and tunings left",
    response=PackageList,
)
async def app_home_network(request: web.Request) -> web.StreamResponse:
    """The home-network packages the token's family holds (R16, R17), with each router's
    tunings included and used: what the app shows before offering a tuning."""
    services = services_of(request)
    return json_out(await _listed(services, app_token_of(request).account_id))


# --- the catalog --------------------------------------------------------------------------


def catalog_items(services: Services) -> list[CatalogItem]:
    """Every product on sale: cloud-replay plans, home-network products, membership tiers."""
    products = services.products
    items = [
        CatalogItem(
            id=plan.id,
            kind="cloud_replay",
            family=plan.family.value,
            rule="R1",
            billing="monthly",
            fee=money(plan.monthly_fee),
            retention_days=plan.retention_days,
        )
        for plan in services.catalog
    ]
    items += [
        CatalogItem(
            id=p.id,
            kind="home_network",
            family=p.family.value,
            rule=p.rule,
            billing="one_time",
            fee=money(p.fee),
            validity_months=p.validity_months,
            devices=p.devices,
            tunings_per_device=p.tunings_per_device,
        )
        for p in products.home_products()
    ]
    items += [
        CatalogItem(
            id=t.id,
            kind="family_cloud",
            family="membership",
            rule="R18",
            billing="monthly",
            fee=money(t.monthly_fee),
            validity_months=t.validity_months,
            quota_bytes=t.quota_bytes,
        )
        for t in products.tiers
    ]
    return items


@api.route(
    "GET",
    "/platform/v1/catalog",
    auth="platform",
    tag="home-network",
    summary="Every product the service sells, with fees, validity, devices and quotas",
    response=CatalogOut,
)
async def get_catalog(request: web.Request) -> web.StreamResponse:
    """Every product the service sells, for the CRM and the console: the cloud-replay plans
    (R1, monthly), the whole-home WiFi packages and tuning packs (R16, R17, one-time, with
    validity and routers covered) and the family-cloud membership tiers (R18, monthly, with
    quotas), from the plans file or the seed's defaults; fees in CNY."""
    return json_out(CatalogOut(products=catalog_items(services_of(request))))
