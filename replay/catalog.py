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

The membership tiers, their defaults and their entries' checks are
:mod:`replay.membership`'s (:func:`~replay.membership.load_tiers`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType

from devices.home_network import DEFAULT_HOME_PRODUCTS, HomeProduct, PackageFamily
from replay.membership import TierCatalog, load_tiers
from replay.plans import (
    DEFAULT_CATALOG,
    PlanCatalog,
    PlansFileError,
    load_plans,
    read_plans_document,
)

__all__ = [
    "DEFAULT_PRODUCTS",
    "ProductCatalog",
    "load_catalog",
]

_CENT = Decimal("0.01")
_FEE_TEXT = re.compile(r"\d+(\.\d{1,2})?")


@dataclass(frozen=True, slots=True)
class ProductCatalog:
    """The plans, the home-network products and the membership tiers on sale."""

    plans: PlanCatalog
    home: Mapping[str, HomeProduct]
    tiers: TierCatalog

    @classmethod
    def of(
        cls,
        plans: PlanCatalog = DEFAULT_CATALOG,
        home: tuple[HomeProduct, ...] = DEFAULT_HOME_PRODUCTS,
        tiers: TierCatalog | None = None,
    ) -> ProductCatalog:
        tiers = TierCatalog() if tiers is None else tiers
        home_ids = [p.id for p in home]
        ids = [*plans.ids, *home_ids, *tiers.ids]
        if len(set(ids)) != len(ids):
            raise ValueError("a product id appears twice in the catalog")
        return cls(
            plans=plans,
            home=MappingProxyType({p.id: p for p in home}),
            tiers=tiers,
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


def load_catalog(path: Path | None) -> ProductCatalog:
    """The catalog of a plans file (the defaults for what it leaves out); no file: the
    defaults. :class:`~replay.plans.PlansFileError` when the file cannot be used."""
    if path is None:
        return DEFAULT_PRODUCTS
    plans = load_plans(path)
    document = read_plans_document(path)
    assert isinstance(document, dict)  # load_plans checked it
    home = _home_products(path, document) if "home_network" in document else DEFAULT_HOME_PRODUCTS
    tiers = load_tiers(path)
    try:
        return ProductCatalog.of(plans, home, tiers)
    except ValueError as exc:
        raise PlansFileError(path=path, problem=str(exc)) from exc
