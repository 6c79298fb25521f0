"""Home-network packages (R16, R17) over a database session: orders, visits,
unsubscriptions, expiry and the household's tunings.

The rules are :mod:`devices.home_network` (pure); this module stores what they decide.
A package is one row of ``home_packages``; each router it covers is one row of
``home_package_devices``, which counts that router's tunings (``used``) and repeats the
package's family and status so that a partial unique index keeps a router under at most
one active whole-home WiFi package (R16) even under racing orders. A tuning is taken by a
conditional update (``used < tunings``), so two gateways cannot spend one tuning twice.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import JSON, Column, Index, text, update
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from devices import home_network as rules
from devices.accounts import get_account
from devices.errors import Invalid, NotFound
from devices.home_network import ACTIVE, ENDED, UNSUBSCRIBED, HomeProduct, PackageFamily
from devices.models import Device, DeviceKind
from storage.db import UTCDateTime

__all__ = [
    "HomePackage",
    "PackageDevice",
    "account_packages",
    "expire_packages",
    "get_package",
    "holdings_of",
    "order_package",
    "package_devices",
    "record_visit",
    "release_tuning",
    "take_tuning",
    "unsubscribe_package",
]


class HomePackage(SQLModel, table=True):
    """One home-network product ordered by an account (R16 gift or R17 pack).

    ``valid_through`` is the last valid Shanghai day, ``ends_at`` the instant it ends; the
    fee is the catalog's when ordered, a decimal string (never a float).
    """

    __tablename__ = "home_packages"

    package_id: str = Field(primary_key=True, max_length=40)
    order_id: str = Field(max_length=128, unique=True)
    account_id: str = Field(foreign_key="accounts.account_id", index=True, max_length=64)
    product_id: str = Field(max_length=64)
    family: str = Field(max_length=16)
    fee: str = Field(max_length=16)
    tunings_per_device: int
    devices: list[str] = Field(sa_column=Column(JSON, nullable=False))
    orderer_id: str = Field(max_length=64)
    channel: str = Field(max_length=16)
    status: str = Field(max_length=16, index=True)
    started_at: datetime = Field(sa_type=UTCDateTime)
    start_date: date
    valid_through: date
    ends_at: datetime = Field(sa_type=UTCDateTime, index=True)
    visited_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    visit_order_id: str | None = Field(default=None, max_length=128)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    end_date: date | None = None
    unsubscribe_order_id: str | None = Field(default=None, max_length=128)


class PackageDevice(SQLModel, table=True):
    """A router one package covers, and how many of its tunings the household used."""

    __tablename__ = "home_package_devices"
    __table_args__ = (
        # R16: at most one active whole-home WiFi package per router, even under races.
        Index(
            "one_active_gift_per_router",
            "device_id",
            unique=True,
            sqlite_where=text("family = 'gift' AND status = 'active'"),
            postgresql_where=text("family = 'gift' AND status = 'active'"),
        ),
    )

    package_id: str = Field(primary_key=True, foreign_key="home_packages.package_id", max_length=40)
    device_id: str = Field(primary_key=True, index=True, max_length=64)
    family: str = Field(max_length=16)
    status: str = Field(max_length=16)
    used: int = 0
    last_tuned_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


def new_package_id() -> str:
    return "hn_" + secrets.token_hex(12)


@dataclass(frozen=True, slots=True, kw_only=True)
class PackageOrder:
    """An order as the platform sends it (the products are the catalog's)."""

    order_id: str
    account_id: str
    product_id: str
    orderer_id: str
    channel: str
    ordered_at: datetime
    devices: Sequence[str]


async def _covered_routers(session: AsyncSession, account_id: str, devices: Iterable[str]) -> None:
    for device_id in devices:
        device = await session.get(Device, device_id)
        if device is None or device.account_id != account_id or device.kind != DeviceKind.ROUTER:
            raise NotFound("router", device_id, on=f"account {account_id}")


async def _check_gift_free(session: AsyncSession, devices: Iterable[str]) -> None:
    """R16: no router under two active whole-home WiFi packages."""
    result = await session.exec(
        select(PackageDevice).where(
            col(PackageDevice.device_id).in_(list(devices)),
            PackageDevice.family == PackageFamily.GIFT.value,
            PackageDevice.status == ACTIVE,
        )
    )
    held = result.first()
    if held is not None:
        raise rules.AlreadyCovered(held.device_id, held.package_id)


async def order_package(
    session: AsyncSession,
    products: Mapping[str, HomeProduct],
    order: PackageOrder,
    *,
    now: datetime,
) -> HomePackage:
    """Stage a new package in ``session`` (the caller commits) or raise a refusal (R7, R8,
    R12, R16, R17): effective at once, valid from the order day."""
    if order.channel not in rules.CHANNELS:
        raise Invalid(f"channel must be one of {', '.join(rules.CHANNELS)}")
    product = products.get(order.product_id)
    if product is None:
        raise rules.UnknownProduct(order.product_id, known=products)
    devices = rules.check_devices(product, order.devices)
    account = await get_account(session, order.account_id)
    if order.orderer_id != account.owner_id:
        raise rules.NotAccountOwner()
    await _covered_routers(session, order.account_id, devices)
    if account.broadband_state != "active":
        raise rules.BroadbandInactive(account.broadband_state)
    if product.family is PackageFamily.GIFT:
        await _check_gift_free(session, devices)
    start = rules.order_date(order.ordered_at)
    last = rules.valid_through(start, product.validity_months)
    end = rules.ends_at(last)
    # An order given with a business time already past its validity is stored ended.
    status = ACTIVE if end > now else ENDED
    package = HomePackage(
        package_id=new_package_id(),
        order_id=order.order_id,
        account_id=order.account_id,
        product_id=product.id,
        family=product.family.value,
        fee=str(product.fee),
        tunings_per_device=product.tunings_per_device,
        devices=list(devices),
        orderer_id=order.orderer_id,
        channel=order.channel,
        status=status,
        started_at=order.ordered_at,
        start_date=start,
        valid_through=last,
        ends_at=end,
        ended_at=None if status == ACTIVE else end,
        end_date=None if status == ACTIVE else last,
    )
    session.add(package)
    for device_id in devices:
        session.add(
            PackageDevice(
                package_id=package.package_id,
                device_id=device_id,
                family=package.family,
                status=status,
            )
        )
    return package


async def get_package(session: AsyncSession, package_id: str) -> HomePackage:
    package = await session.get(HomePackage, package_id)
    if package is None:
        raise NotFound("home-network package", package_id)
    return package


async def _set_status(session: AsyncSession, package: HomePackage, status: str) -> None:
    package.status = status
    session.add(package)
    await session.exec(
        update(PackageDevice)
        .where(col(PackageDevice.package_id) == package.package_id)
        .values(status=status)
    )


async def unsubscribe_package(
    session: AsyncSession, *, package_id: str, order_id: str, at: datetime
) -> HomePackage:
    """Stage the unsubscription (R16, R17): only before the visit, at once, refunded."""
    package = await get_package(session, package_id)
    family = PackageFamily(package.family)
    rules.check_unsubscribe(
        package_id, status=package.status, visited=package.visited_at is not None, family=family
    )
    if at < package.started_at:
        raise rules.InvalidTime("the unsubscription is earlier than the order")
    package.ended_at = at
    package.end_date = rules.order_date(at)
    package.unsubscribe_order_id = order_id
    await _set_status(session, package, UNSUBSCRIBED)
    return package


async def record_visit(
    session: AsyncSession, *, package_id: str, order_id: str, at: datetime
) -> HomePackage:
    """Stage the engineer's visit: from then on the package cannot be unsubscribed."""
    package = await get_package(session, package_id)
    rules.check_visit(
        package_id,
        status=package.status,
        visited=package.visited_at is not None,
        family=PackageFamily(package.family),
    )
    if at < package.started_at:
        raise rules.InvalidTime("the visit is earlier than the order")
    package.visited_at = at
    package.visit_order_id = order_id
    session.add(package)
    return package


async def account_packages(session: AsyncSession, account_id: str) -> list[HomePackage]:
    """Every package of the account, in order of ordering."""
    await get_account(session, account_id)
    result = await session.exec(
        select(HomePackage)
        .where(HomePackage.account_id == account_id)
        .order_by(col(HomePackage.started_at), col(HomePackage.package_id))
    )
    return list(result.all())


async def package_devices(
    session: AsyncSession, package_ids: Iterable[str]
) -> dict[str, list[PackageDevice]]:
    """Each package's covered routers with their tunings used."""
    ids = list(package_ids)
    found: dict[str, list[PackageDevice]] = {i: [] for i in ids}
    if not ids:
        return found
    result = await session.exec(
        select(PackageDevice)
        .where(col(PackageDevice.package_id).in_(ids))
        .order_by(col(PackageDevice.package_id), col(PackageDevice.device_id))
    )
    for row in result.all():
        found[row.package_id].append(row)
    return found


async def expire_packages(session: AsyncSession, now: datetime) -> int:
    """End every active package whose validity is over (R16: 1 year, R17: 1 month), as of
    its own end, whenever the job runs (a job that was down catches up); commits."""
    result = await session.exec(
        select(HomePackage).where(HomePackage.status == ACTIVE, col(HomePackage.ends_at) <= now)
    )
    ended = 0
    for package in result.all():
        package.ended_at = package.ends_at
        package.end_date = package.valid_through
        await _set_status(session, package, ENDED)
        ended += 1
    await session.commit()
    return ended


# --- tunings ------------------------------------------------------------------------------


async def holdings_of(session: AsyncSession, device_id: str) -> list[rules.Holding]:
    """The active packages covering a router, as :func:`devices.home_network.tuning_package`
    reads them."""
    # populate_existing: a retry after a lost race must see the counts as stored now.
    result = await session.exec(
        select(HomePackage, PackageDevice)
        .join(PackageDevice, col(PackageDevice.package_id) == col(HomePackage.package_id))
        .where(PackageDevice.device_id == device_id, HomePackage.status == ACTIVE)
        .execution_options(populate_existing=True)
    )
    return [
        rules.Holding(
            package_id=package.package_id,
            status=package.status,
            devices=(device_id,),
            tunings_per_device=package.tunings_per_device,
            started_at=package.started_at,
            ends_at=package.ends_at,
            used={device_id: covered.used},
        )
        for package, covered in result.all()
    ]


async def take_tuning(session: AsyncSession, device_id: str, at: datetime) -> str:
    """Spend one of the household's tunings of ``device_id`` (R16, R17): the package that
    pays, refused when none can; staged in ``session``. Returns the package's id."""
    for _ in range(3):
        chosen = rules.tuning_package(await holdings_of(session, device_id), device_id, at)
        spent = await session.exec(
            update(PackageDevice)
            .where(
                col(PackageDevice.package_id) == chosen.package_id,
                col(PackageDevice.device_id) == device_id,
                col(PackageDevice.used) < chosen.tunings_per_device,
            )
            .values(used=col(PackageDevice.used) + 1, last_tuned_at=at)
        )
        if spent.rowcount == 1:
            return chosen.package_id
    raise rules.TuningsUsedUp(device_id)


async def release_tuning(session: AsyncSession, package_id: str, device_id: str) -> None:
    """Give back a tuning whose run did not complete (the router failed or went silent)."""
    await session.exec(
        update(PackageDevice)
        .where(
            col(PackageDevice.package_id) == package_id,
            col(PackageDevice.device_id) == device_id,
            col(PackageDevice.used) > 0,
        )
        .values(used=col(PackageDevice.used) - 1)
    )
