"""Whole-home WiFi packages and WiFi tuning packs (R16, R17): the pure rules.

Nothing here does I/O or reads a clock; callers pass the instants. The store
(:mod:`devices.home_network_store`) applies these rules to stored packages.

- **Products (catalog).** Three families: *gift* (R16, 全屋 WiFi 礼包: 299 / 499 / 699 yuan,
  valid 12 months, covering up to 2 / 3 / 4 operator routers), *service* (R17, 调优服务礼包:
  70 / 140 yuan, one visit and the tuning of one device, valid 1 month) and *addon* (R17,
  加装包: 40 / 60 / 30 yuan, the tuning of one more device, valid 1 month). Each covered
  device gets ``tunings_per_device`` tunings (1) within the validity.
- **Validity.** From the order instant, through the end of the day before the same date
  ``validity_months`` later, Asia/Shanghai; where that month has no such date, through the
  end of its last day (R16: 29 February → 28 February next year; R17: 31 January → 28/29
  February). :func:`valid_through` gives the last valid day, :func:`ends_at` the instant
  the package ends (midnight starting the next day, as UTC).
- **Visit lock.** Unsubscription is allowed, effective at once and refunded in full, only
  until the engineer's visit is recorded; after it, refused (:func:`check_unsubscribe`).
- **Tunings.** A tuning the household asks for (R13, through the app) uses one tuning of
  one package covering that router, in force at that instant, with one left for it
  (:func:`tuning_package`); the operator's own tuning from the platform uses none.
  Choice made here: when several packages could pay, the one ending first is used (then the
  one ordered first), so that a tuning is not lost to expiry while another would keep.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum

from devices.clock import OPERATOR_TZ, aware_utc
from devices.errors import Conflict, Forbidden, Invalid

__all__ = [
    "ACTIVE",
    "CHANNELS",
    "DEFAULT_HOME_PRODUCTS",
    "ENDED",
    "UNSUBSCRIBED",
    "AlreadyCovered",
    "AlreadyVisited",
    "BroadbandInactive",
    "Holding",
    "HomeProduct",
    "InvalidTime",
    "NotAccountOwner",
    "PackageFamily",
    "PackageNotActive",
    "TooManyDevices",
    "TuningNotCovered",
    "TuningsUsedUp",
    "UnknownProduct",
    "VisitDone",
    "check_devices",
    "check_unsubscribe",
    "check_visit",
    "ends_at",
    "order_date",
    "tuning_package",
    "valid_through",
]

ACTIVE = "active"
ENDED = "ended"
UNSUBSCRIBED = "unsubscribed"
CHANNELS = ("physical", "electronic")
_CENT = Decimal("0.01")


class PackageFamily(StrEnum):
    """The three kinds of home-network product, and the rule each follows."""

    GIFT = "gift"  # R16 全屋 WiFi 礼包: routers included, one year
    SERVICE = "service"  # R17 调优服务礼包: one visit and one device's tuning, one month
    ADDON = "addon"  # R17 加装包: one more device's tuning, one month

    @property
    def rule(self) -> str:
        return "R16" if self is PackageFamily.GIFT else "R17"


@dataclass(frozen=True, slots=True, kw_only=True)
class HomeProduct:
    """One home-network product of the catalog: its one-time fee (CNY, whole cents), how
    many months it is valid, how many routers it may cover, and the tunings of each."""

    id: str
    family: PackageFamily
    fee: Decimal
    validity_months: int
    devices: int
    tunings_per_device: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id or any(c.isspace() for c in self.id):
            raise ValueError(f"id must be a non-empty word without spaces, not {self.id!r}")
        if not isinstance(self.family, PackageFamily):
            raise TypeError(f"family must be a PackageFamily, not {self.family!r}")
        if not isinstance(self.fee, Decimal):
            raise TypeError(f"fee must be a Decimal, not {type(self.fee).__name__}")
        if not self.fee.is_finite() or self.fee < 0 or self.fee != self.fee.quantize(_CENT):
            raise ValueError(f"fee must be a non-negative amount in whole cents, not {self.fee}")
        object.__setattr__(self, "fee", self.fee.quantize(_CENT))
        for name in ("validity_months", "devices", "tunings_per_device"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive whole number, not {value!r}")

    @property
    def rule(self) -> str:
        return self.family.rule


def _product(pid: str, family: PackageFamily, fee: str, months: int, devices: int) -> HomeProduct:
    return HomeProduct(
        id=pid, family=family, fee=Decimal(fee), validity_months=months, devices=devices
    )


#: The seed's products (section 二) with its prices: R16 gifts cover 2 / 3 / 4 routers for a
#: year; R17 packs cover one device for a month.
DEFAULT_HOME_PRODUCTS: tuple[HomeProduct, ...] = (
    _product("wifi-gift-299", PackageFamily.GIFT, "299.00", 12, 2),
    _product("wifi-gift-499", PackageFamily.GIFT, "499.00", 12, 3),
    _product("wifi-gift-699", PackageFamily.GIFT, "699.00", 12, 4),
    _product("wifi-tuning-70", PackageFamily.SERVICE, "70.00", 1, 1),
    _product("wifi-tuning-140", PackageFamily.SERVICE, "140.00", 1, 1),
    _product("wifi-addon-40", PackageFamily.ADDON, "40.00", 1, 1),
    _product("wifi-addon-60", PackageFamily.ADDON, "60.00", 1, 1),
    _product("wifi-addon-30", PackageFamily.ADDON, "30.00", 1, 1),
)


# --- refusals -----------------------------------------------------------------------------


class UnknownProduct(Invalid):
    code = "unknown_product"

    def __init__(self, product_id: str, *, known: Iterable[str]) -> None:
        super().__init__(
            f"unknown home-network product {product_id!r}; the catalog has " + ", ".join(known),
            rule="R16",
        )
        self.product_id = product_id


class NotAccountOwner(Forbidden):
    code = "not_account_owner"
    rule = "R7"

    def __init__(self) -> None:
        super().__init__("only the broadband account's owner may order home-network products")


class BroadbandInactive(Conflict):
    """R8, R12: no new product while the broadband account is not active."""

    code = "broadband_inactive"
    rule = "R12"

    def __init__(self, state: str) -> None:
        super().__init__(
            f"the broadband account is {state}: managed networking is suspended and no "
            "home-network product can be ordered until it is resumed"
        )
        self.state = state


class TooManyDevices(Invalid):
    code = "too_many_devices"

    def __init__(self, product: HomeProduct, given: int) -> None:
        super().__init__(
            f"{product.id} covers 1 to {product.devices} routers, not {given}", rule=product.rule
        )


class AlreadyCovered(Conflict):
    """R16: a router is covered by at most one whole-home WiFi package at a time."""

    code = "already_covered"
    rule = "R16"

    def __init__(self, device_id: str, package_id: str) -> None:
        super().__init__(
            f"router {device_id} is already covered by the whole-home WiFi package "
            f"{package_id}: no change operation, no second package while it is valid"
        )
        self.device_id = device_id


class PackageNotActive(Conflict):
    code = "package_not_active"

    def __init__(self, package_id: str, status: str, rule: str) -> None:
        super().__init__(f"package {package_id} is {status}", rule=rule)


class VisitDone(Conflict):
    """R16/R17: after the engineer's visit the package cannot be unsubscribed."""

    code = "visit_done"

    def __init__(self, package_id: str, rule: str) -> None:
        super().__init__(
            f"the engineer's visit of package {package_id} is recorded: unsubscription is "
            "allowed only before the visit",
            rule=rule,
        )


class AlreadyVisited(Conflict):
    code = "already_visited"

    def __init__(self, package_id: str, rule: str) -> None:
        super().__init__(
            f"the engineer's visit of package {package_id} is recorded already", rule=rule
        )


class TuningNotCovered(Forbidden):
    """R16/R17: the household's own tuning needs a package covering the router."""

    code = "tuning_not_covered"
    rule = "R16"

    def __init__(self, device_id: str) -> None:
        super().__init__(
            f"no whole-home WiFi package or tuning pack in force covers router {device_id}"
        )


class TuningsUsedUp(Forbidden):
    """R17: the packages' tunings of this router are used; a tuning pack gives another."""

    code = "tunings_used_up"
    rule = "R17"

    def __init__(self, device_id: str) -> None:
        super().__init__(
            f"the tunings included for router {device_id} are used up: further tuning needs a "
            "WiFi tuning pack"
        )


class InvalidTime(Invalid):
    code = "invalid_time"


# --- validity -----------------------------------------------------------------------------


def order_date(at: datetime) -> date:
    """The Asia/Shanghai calendar day of an order instant (the validity's first day)."""
    return aware_utc(at, "ordered_at").astimezone(OPERATOR_TZ).date()


def valid_through(start: date, months: int) -> date:
    """The last valid day of a package ordered on ``start`` and valid ``months`` months:
    the day before the same date ``months`` later or, where that month has no such date,
    its last day (29 Feb 2028 + 12 → 28 Feb 2029; 31 Jan + 1 → 28/29 Feb)."""
    if isinstance(start, datetime) or not isinstance(start, date):
        raise TypeError(f"start must be a date, not {start!r}")
    index = start.year * 12 + start.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    last = calendar.monthrange(year, month)[1]
    if start.day > last:
        return date(year, month, last)
    return date(year, month, start.day) - timedelta(days=1)


def ends_at(last_day: date) -> datetime:
    """The instant a package valid through ``last_day`` ends: the next Shanghai midnight, UTC."""
    midnight = datetime.combine(last_day + timedelta(days=1), time(0), tzinfo=OPERATOR_TZ)
    return midnight.astimezone(UTC)


# --- orders -------------------------------------------------------------------------------


def check_devices(product: HomeProduct, devices: Iterable[str]) -> tuple[str, ...]:
    """The routers the order covers, once each, in order; 1 to ``product.devices`` of them."""
    unique = tuple(dict.fromkeys(devices))
    if not 1 <= len(unique) <= product.devices:
        raise TooManyDevices(product, len(unique))
    return unique


def check_unsubscribe(
    package_id: str, *, status: str, visited: bool, family: PackageFamily
) -> None:
    """R16/R17: only an active package, and only before the engineer's visit."""
    if status != ACTIVE:
        raise PackageNotActive(package_id, status, family.rule)
    if visited:
        raise VisitDone(package_id, family.rule)


def check_visit(package_id: str, *, status: str, visited: bool, family: PackageFamily) -> None:
    """A visit is recorded once, on an active package."""
    if status != ACTIVE:
        raise PackageNotActive(package_id, status, family.rule)
    if visited:
        raise AlreadyVisited(package_id, family.rule)


# --- tunings ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Holding:
    """A package as tuning sees it: what it covers, when, and the tunings used per router."""

    package_id: str
    status: str
    devices: tuple[str, ...]
    tunings_per_device: int
    started_at: datetime
    ends_at: datetime
    used: Mapping[str, int] = field(default_factory=dict)

    def in_force(self, at: datetime) -> bool:
        return self.status == ACTIVE and self.started_at <= at < self.ends_at

    def left(self, device_id: str) -> int:
        if device_id not in self.devices:
            return 0
        return max(0, self.tunings_per_device - self.used.get(device_id, 0))


def tuning_package(holdings: Iterable[Holding], device_id: str, at: datetime) -> Holding:
    """The package that pays for the household's tuning of ``device_id`` at ``at``
    (the one ending first with a tuning left); refused citing R16 when none covers the
    router, R17 when those covering it have no tuning left."""
    covering = [h for h in holdings if device_id in h.devices and h.in_force(at)]
    if not covering:
        raise TuningNotCovered(device_id)
    payable = [h for h in covering if h.left(device_id) > 0]
    if not payable:
        raise TuningsUsedUp(device_id)
    return min(payable, key=lambda h: (h.ends_at, h.started_at, h.package_id))
