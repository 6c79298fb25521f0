"""Everything the service sells, in one catalog: cloud-replay plans (R1), home-network
products (R16, R17) and family-cloud membership tiers (R18).

The plans file (``KANJIA_PLANS_FILE``, :mod:`replay.plans`) may hold, beside ``plans``,
the lists ``home_network`` and ``memberships``; each list given replaces that part of the
catalog, each absent keeps the defaults (the seed's prices)::

    {"plans": [...],
     "home_network": [{"id": "wifi-gift-299", "family": "gift", "fee": "299.00",
                       "validity_months": 12, "devices": 2, "tunings_per_device": 1}, ...],
     "memberships": [{"id": "gold", "monthly_fee": "20.00",
                      "quota_bytes": 1099511627776}, ...]}

``tunings_per_device`` may be left out (1). Fees are decimal strings, never numbers.

Choice made here: the seed names the membership tiers (普通 / 黄金 / 铂金) without fees or
quotas; :data:`DEFAULT_TIERS` gives 10 / 20 / 30 yuan a month for 200 GiB / 1 TiB / 4 TiB.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType

from devices.home_network import DEFAULT_HOME_PRODUCTS, HomeProduct, PackageFamily
from replay.plans import DEFAULT_CATALOG, PlanCatalog, PlansFileError, load_plans, read_document

__all__ = [
    "DEFAULT_PRODUCTS",
    "DEFAULT_TIERS",
    "MembershipTier",
    "ProductCatalog",
    "load_catalog",
]

_CENT = Decimal("0.01")
_FEE_TEXT = re.compile(r"\d+(\.\d{1,2})?")
_GIB = 1024**3


@dataclass(frozen=True, slots=True, kw_only=True)
class MembershipTier:
    """One family-cloud membership tier (R18): its monthly fee and its quota."""

    id: str
    monthly_fee: Decimal
    quota_bytes: int
    validity_months: int = 12

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id or any(c.isspace() for c in self.id):
            raise ValueError(f"id must be a non-empty word without spaces, not {self.id!r}")
        fee = self.monthly_fee
        if not isinstance(fee, Decimal) or not fee.is_finite() or fee < 0:
            raise ValueError(f"monthly_fee must be a non-negative Decimal, not {fee!r}")
        if fee != fee.quantize(_CENT):
            raise ValueError(f"monthly_fee {fee} has more than 2 decimal places")
        object.__setattr__(self, "monthly_fee", fee.quantize(_CENT))
        for name in ("quota_bytes", "validity_months"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive whole number, not {value!r}")


#: R18's three tiers (the fees and quotas are a choice made here, see the module).
DEFAULT_TIERS: tuple[MembershipTier, ...] = (
    MembershipTier(id="ordinary", monthly_fee=Decimal("10.00"), quota_bytes=200 * _GIB),
    MembershipTier(id="gold", monthly_fee=Decimal("20.00"), quota_bytes=1024 * _GIB),
    MembershipTier(id="platinum", monthly_fee=Decimal("30.00"), quota_bytes=4096 * _GIB),
)


@dataclass(frozen=True, slots=True)
class ProductCatalog:
    """The plans, the home-network products and the membership tiers on sale."""

    plans: PlanCatalog
    home: Mapping[str, HomeProduct]
    tiers: Mapping[str, MembershipTier]

    @classmethod
    def of(
        cls,
        plans: PlanCatalog = DEFAULT_CATALOG,
        home: tuple[HomeProduct, ...] = DEFAULT_HOME_PRODUCTS,
        tiers: tuple[MembershipTier, ...] = DEFAULT_TIERS,
    ) -> ProductCatalog:
        home_ids = [p.id for p in home]
        tier_ids = [t.id for t in tiers]
        ids = [*plans.ids, *home_ids, *tier_ids]
        if len(set(ids)) != len(ids):
            raise ValueError("a product id appears twice in the catalog")
        return cls(
            plans=plans,
            home=MappingProxyType({p.id: p for p in home}),
            tiers=MappingProxyType({t.id: t for t in tiers}),
        )

    def home_products(self) -> Iterator[HomeProduct]:
        return iter(self.home.values())


DEFAULT_PRODUCTS = ProductCatalog.of()


def _fee(raw: object, key: str) -> Decimal:
    if isinstance(raw, int | float):
        raise ValueError(
            f'{key} must be a decimal string such as "10.00", not the number {raw!r}: '
            "floats are not money"
        )
    if not isinstance(raw, str) or not _FEE_TEXT.fullmatch(raw):
        raise ValueError(f'{key} must be a decimal string such as "10.00", not {raw!r}')
    return Decimal(raw)


def _entries(path: Path, document: Mapping[str, object], key: str) -> list[Mapping[str, object]]:
    entries = document[key]
    if not isinstance(entries, list) or not entries:
        raise PlansFileError(path=path, problem=f"'{key}' must be a non-empty list of entries")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise PlansFileError(path=path, problem=f"{key}[{index}] must be a table")
    return entries


def _checked(
    path: Path,
    key: str,
    index: int,
    entry: Mapping[str, object],
    need: tuple[str, ...],
    may: tuple[str, ...] = (),
) -> None:
    where = f"{key}[{index}] (id {entry.get('id')!r})"
    twice = getattr(entry, "duplicate_keys", [])
    if twice:
        raise PlansFileError(path=path, problem=f"{where}: key {twice[0]!r} is given twice")
    unknown = sorted(set(entry) - set(need) - set(may))
    if unknown:
        raise PlansFileError(path=path, problem=f"{where}: unknown key {unknown[0]!r}")
    missing = [k for k in need if k not in entry]
    if missing:
        raise PlansFileError(path=path, problem=f"{where}: missing key {missing[0]!r}")


_HOME_KEYS = ("id", "family", "fee", "validity_months", "devices")
_TIER_KEYS = ("id", "monthly_fee", "quota_bytes")


def _home_products(path: Path, document: Mapping[str, object]) -> tuple[HomeProduct, ...]:
    products: list[HomeProduct] = []
    for index, entry in enumerate(_entries(path, document, "home_network")):
        _checked(path, "home_network", index, entry, _HOME_KEYS, ("tunings_per_device",))
        try:
            products.append(
                HomeProduct(
                    id=entry["id"],  # type: ignore[arg-type]  # HomeProduct checks types
                    family=PackageFamily(str(entry["family"])),
                    fee=_fee(entry["fee"], "fee"),
                    validity_months=entry["validity_months"],  # type: ignore[arg-type]
                    devices=entry["devices"],  # type: ignore[arg-type]
                    tunings_per_device=entry.get("tunings_per_device", 1),  # type: ignore[arg-type]
                )
            )
        except (TypeError, ValueError) as exc:
            problem = f"home_network[{index}] (id {entry.get('id')!r}): {exc}"
            raise PlansFileError(path=path, problem=problem) from exc
    return tuple(products)


def _tiers(path: Path, document: Mapping[str, object]) -> tuple[MembershipTier, ...]:
    tiers: list[MembershipTier] = []
    for index, entry in enumerate(_entries(path, document, "memberships")):
        _checked(path, "memberships", index, entry, _TIER_KEYS, ("validity_months",))
        try:
            tiers.append(
                MembershipTier(
                    id=entry["id"],  # type: ignore[arg-type]
                    monthly_fee=_fee(entry["monthly_fee"], "monthly_fee"),
                    quota_bytes=entry["quota_bytes"],  # type: ignore[arg-type]
                    validity_months=entry.get("validity_months", 12),  # type: ignore[arg-type]
                )
            )
        except (TypeError, ValueError) as exc:
            problem = f"memberships[{index}] (id {entry.get('id')!r}): {exc}"
            raise PlansFileError(path=path, problem=problem) from exc
    return tuple(tiers)


def load_catalog(path: Path | None) -> ProductCatalog:
    """The catalog of a plans file (the defaults for what it leaves out); no file: the
    defaults. :class:`~replay.plans.PlansFileError` when the file cannot be used."""
    if path is None:
        return DEFAULT_PRODUCTS
    plans = load_plans(path)
    document = read_document(path)
    assert isinstance(document, dict)  # load_plans checked it
    home = _home_products(path, document) if "home_network" in document else DEFAULT_HOME_PRODUCTS
    tiers = _tiers(path, document) if "memberships" in document else DEFAULT_TIERS
    try:
        return ProductCatalog.of(plans, home, tiers)
    except ValueError as exc:
        raise PlansFileError(path=path, problem=str(exc)) from exc
