"""What the platform's order routes answer alike (cloud replay R1-R7, home-network packages
R16-R17, family-cloud memberships R18): amounts, charge lines and completion reports
(报竣). Route modules never import each other; they share these."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from gateway.answers import Out
from replay.billing import Charge
from replay.package_charges import PackageLine

__all__ = ["ChargeOut", "PackageLineOut", "completion_report", "dump", "money"]


def money(amount: Decimal) -> str:
    """An amount of CNY as sent: two places (amounts are quantized half-up before)."""
    return f"{amount:.2f}"


def dump(model: Out) -> dict[str, Any]:
    """An answer model as its JSON body (absent fields left out)."""
    data: dict[str, Any] = model.model_dump(mode="json", exclude_none=True)
    return data


def completion_report(order_id: str, action: str, at: datetime, result: Out) -> dict[str, Any]:
    """What the platform's callback receives for a completed order (报竣)."""
    return {
        "order_id": order_id,
        "action": action,
        "status": "completed",
        "completed_at": at.isoformat(),
        "result": dump(result),
    }


class ChargeOut(Out):
    """One month's charge of a subscription or a membership: the days and the amount."""

    month: str
    days: int
    amount: str

    @classmethod
    def of(cls, charge: Charge) -> ChargeOut:
        return cls(month=str(charge.month), days=charge.days, amount=money(charge.amount))


class PackageLineOut(Out):
    """A home-network package's one-time line (R16, R17): its fee on the order day, or its
    refund (negative) on the unsubscription day."""

    kind: Literal["home_network", "home_network_refund"]
    package_id: str
    product: str
    day: str
    amount: str

    @classmethod
    def of(cls, line: PackageLine) -> PackageLineOut:
        return cls(
            kind=line.kind,
            package_id=line.package_id,
            product=line.product_id,
            day=line.day.isoformat(),
            amount=money(line.amount),
        )
