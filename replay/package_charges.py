"""The one-time charges of home-network packages in a month (R7, R16, R17).

A whole-home WiFi package or a tuning pack is prepaid: its whole fee is charged on the
order day (Asia/Shanghai), in the order's month. An unsubscription (allowed only before
the engineer's visit) refunds the fee in full as a correction line of the unsubscription's
month: a negative amount, its own kind, never netted into the order's line, so that a
month already billed stays as billed. A package that ended at its validity's end is not
refunded. Amounts are Decimal, rounded half-up to the cent.

:func:`package_lines` is pure; :func:`account_package_lines` reads an account's packages.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from sqlmodel.ext.asyncio.session import AsyncSession

from devices.home_network import UNSUBSCRIBED
from devices.home_network_store import HomePackage, account_packages
from replay.billing import CENT, Month

__all__ = [
    "CHARGE",
    "REFUND",
    "PackageBill",
    "PackageLine",
    "account_package_lines",
    "bill_of",
    "package_lines",
]

#: The kinds of line a package gives: its charge on the order day, its refund.
CHARGE: Literal["home_network"] = "home_network"
REFUND: Literal["home_network_refund"] = "home_network_refund"
LineKind = Literal["home_network", "home_network_refund"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PackageBill:
    """What billing needs of one package."""

    package_id: str
    product_id: str
    fee: Decimal
    ordered_on: date
    #: The unsubscription's business date; None when never unsubscribed (ended or active).
    unsubscribed_on: date | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PackageLine:
    """One line of an account's monthly charges: ``kind``, the package, the business
    ``day`` it falls on, and the amount (CNY; negative for a refund)."""

    kind: LineKind
    package_id: str
    product_id: str
    day: date
    amount: Decimal


def package_lines(bills: Iterable[PackageBill], month: Month) -> list[PackageLine]:
    """The packages' lines in ``month``: each fee on its order day, each refund on its
    unsubscription day (R16, R17), by day then package."""
    lines: list[PackageLine] = []
    for bill in bills:
        fee = bill.fee.quantize(CENT, rounding=ROUND_HALF_UP)
        if bill.ordered_on in month:
            lines.append(
                PackageLine(
                    kind=CHARGE,
                    package_id=bill.package_id,
                    product_id=bill.product_id,
                    day=bill.ordered_on,
                    amount=fee,
                )
            )
        if bill.unsubscribed_on is not None and bill.unsubscribed_on in month:
            lines.append(
                PackageLine(
                    kind=REFUND,
                    package_id=bill.package_id,
                    product_id=bill.product_id,
                    day=bill.unsubscribed_on,
                    amount=-fee,
                )
            )
    lines.sort(key=lambda line: (line.day, line.package_id, line.kind))
    return lines


def bill_of(package: HomePackage) -> PackageBill:
    return PackageBill(
        package_id=package.package_id,
        product_id=package.product_id,
        fee=Decimal(package.fee),
        ordered_on=package.start_date,
        unsubscribed_on=package.end_date if package.status == UNSUBSCRIBED else None,
    )


async def account_package_lines(
    session: AsyncSession, account_id: str, month: Month
) -> list[PackageLine]:
    """The account's package lines of ``month`` (:func:`package_lines`)."""
    packages = await account_packages(session, account_id)
    return package_lines((bill_of(p) for p in packages), month)
