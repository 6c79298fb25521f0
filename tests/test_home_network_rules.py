"""Whole-home WiFi packages and WiFi tuning packs, the pure rules (issue 18; R16, R17).

Validity (Asia/Shanghai natural days, 29 February and month ends), the visit lock, the
household's tunings counted per device and package, the refusals with the rule they cite,
the one-time charges and refunds, and the catalog read from a plans file.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from devices import home_network as hn
from devices.errors import DomainError
from devices.home_network import (
    ACTIVE,
    DEFAULT_HOME_PRODUCTS,
    ENDED,
    UNSUBSCRIBED,
    Holding,
    PackageFamily,
)
from replay.billing import Month
from replay.catalog import DEFAULT_PRODUCTS, load_catalog
from replay.package_charges import PackageBill, package_lines
from replay.plans import PlansFileError

PRODUCTS = {p.id: p for p in DEFAULT_HOME_PRODUCTS}


# --- the catalog --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("product_id", "family", "fee", "months", "devices"),
    [
        ("wifi-gift-299", "gift", "299.00", 12, 2),
        ("wifi-gift-499", "gift", "499.00", 12, 3),
        ("wifi-gift-699", "gift", "699.00", 12, 4),
        ("wifi-tuning-70", "service", "70.00", 1, 1),
        ("wifi-tuning-140", "service", "140.00", 1, 1),
        ("wifi-addon-40", "addon", "40.00", 1, 1),
        ("wifi-addon-60", "addon", "60.00", 1, 1),
        ("wifi-addon-30", "addon", "30.00", 1, 1),
    ],
)
def test_default_products_are_the_seeds(
    product_id: str, family: str, fee: str, months: int, devices: int
) -> None:
    product = PRODUCTS[product_id]
    assert product.family == family
    assert product.fee == Decimal(fee)
    assert (product.validity_months, product.devices, product.tunings_per_device) == (
        months,
        devices,
        1,
    )
    assert product.rule == ("R16" if family == "gift" else "R17")


def test_default_catalog_has_every_product_and_the_three_tiers() -> None:
    assert list(DEFAULT_PRODUCTS.home) == list(PRODUCTS)
    assert list(DEFAULT_PRODUCTS.tiers.ids) == ["ordinary", "gold", "platinum"]
    assert len(DEFAULT_PRODUCTS.plans) == 6


def test_a_plans_file_replaces_the_home_products_and_keeps_default_tiers(tmp_path: Path) -> None:
    path = tmp_path / "plans.json"
    path.write_text(
        '{"plans": [{"id": "event-7d", "family": "event", "retention_days": 7,'
        ' "monthly_fee": "6.00"}],'
        ' "home_network": [{"id": "wifi-gift-999", "family": "gift", "fee": "999.00",'
        ' "validity_months": 12, "devices": 5, "tunings_per_device": 2}]}'
    )
    catalog = load_catalog(path)
    assert catalog.plans.ids == ("event-7d",)
    (gift,) = catalog.home.values()
    assert (gift.id, gift.fee, gift.devices, gift.tunings_per_device) == (
        "wifi-gift-999",
        Decimal("999.00"),
        5,
        2,
    )
    assert list(catalog.tiers.ids) == ["ordinary", "gold", "platinum"]


@pytest.mark.parametrize(
    ("home", "problem"),
    [
        ('[{"id": "g", "family": "gift", "fee": 299, "validity_months": 12, "devices": 2}]',
         "not the number 299"),
        ('[{"id": "g", "family": "gift", "fee": "1.005", "validity_months": 12, "devices": 2}]',
         "decimal string"),
        ('[{"id": "g", "family": "boat", "fee": "1.00", "validity_months": 12, "devices": 2}]',
         "'boat'"),
        ('[{"id": "g", "family": "gift", "fee": "1.00", "validity_months": 12}]',
         "missing key 'devices'"),
        ('[{"id": "g", "family": "gift", "fee": "1.00", "validity_months": 0, "devices": 2}]',
         "validity_months must be a positive"),
        ('[{"id": "event-7d", "family": "gift", "fee": "1.00", "validity_months": 1,'
         ' "devices": 1}]', "appears twice"),
        ("[]", "non-empty list"),
    ],
)  # fmt: skip
def test_a_bad_home_network_entry_names_the_problem(
    tmp_path: Path, home: str, problem: str
) -> None:
    path = tmp_path / "plans.json"
    path.write_text(
        '{"plans": [{"id": "event-7d", "family": "event", "retention_days": 7,'
        f' "monthly_fee": "6.00"}}], "home_network": {home}}}'
    )
    with pytest.raises(PlansFileError, match=problem):
        load_catalog(path)


# --- validity -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ordered", "months", "through"),
    [
        (date(2026, 12, 3), 12, date(2027, 12, 2)),  # R16: the day before a year later
        (date(2028, 2, 29), 12, date(2029, 2, 28)),  # R16: 29 Feb -> 28 Feb (no 29th)
        (date(2027, 3, 1), 12, date(2028, 2, 29)),  # the day before 1 March, a leap year
        (date(2026, 1, 15), 1, date(2026, 2, 14)),  # R17: the day before next month's date
        (date(2026, 1, 31), 1, date(2026, 2, 28)),  # R17: no 31 Feb -> its last day
        (date(2028, 1, 31), 1, date(2028, 2, 29)),  # ... 29 in a leap year
        (date(2026, 1, 29), 1, date(2026, 2, 28)),  # no 29 Feb 2026 -> 28 Feb
        (date(2026, 1, 28), 1, date(2026, 2, 27)),
        (date(2026, 3, 31), 1, date(2026, 4, 30)),
        (date(2026, 12, 31), 1, date(2027, 1, 30)),  # across the year
        (date(2026, 2, 1), 1, date(2026, 2, 28)),
    ],
)
def test_valid_through(ordered: date, months: int, through: date) -> None:
    assert hn.valid_through(ordered, months) == through


def test_order_day_and_end_are_shanghai_natural_days() -> None:
    """An order at 2026-01-30T16:30Z is a 31 January order in Shanghai: an R17 pack runs
    through 28 February and ends at midnight starting 1 March Shanghai (28 Feb 16:00Z)."""
    day = hn.order_date(datetime(2026, 1, 30, 16, 30, tzinfo=UTC))
    assert day == date(2026, 1, 31)
    last = hn.valid_through(day, 1)
    assert hn.ends_at(last) == datetime(2026, 2, 28, 16, 0, tzinfo=UTC)


# --- orders, the visit lock ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("product_id", "devices", "ok"),
    [
        ("wifi-gift-299", ["rt-1", "rt-2"], True),
        ("wifi-gift-299", ["rt-1", "rt-2", "rt-3"], False),
        ("wifi-gift-699", ["rt-1", "rt-2", "rt-3", "rt-4"], True),
        ("wifi-tuning-70", ["rt-1"], True),
        ("wifi-tuning-70", ["rt-1", "rt-2"], False),
        ("wifi-addon-30", ["rt-1", "rt-1"], True),  # the same router once
        ("wifi-gift-299", [], False),
    ],
)
def test_devices_covered(product_id: str, devices: list[str], ok: bool) -> None:
    product = PRODUCTS[product_id]
    if ok:
        assert hn.check_devices(product, devices) == tuple(dict.fromkeys(devices))
    else:
        with pytest.raises(hn.TooManyDevices) as caught:
            hn.check_devices(product, devices)
        assert caught.value.rule == product.rule


@pytest.mark.parametrize(
    ("status", "visited", "family", "code", "rule"),
    [
        (ACTIVE, False, PackageFamily.GIFT, None, None),
        (ACTIVE, True, PackageFamily.GIFT, "visit_done", "R16"),
        (ACTIVE, True, PackageFamily.SERVICE, "visit_done", "R17"),
        (ACTIVE, True, PackageFamily.ADDON, "visit_done", "R17"),
        (UNSUBSCRIBED, False, PackageFamily.GIFT, "package_not_active", "R16"),
        (ENDED, False, PackageFamily.ADDON, "package_not_active", "R17"),
    ],
)
def test_unsubscription_only_before_the_visit(
    status: str, visited: bool, family: PackageFamily, code: str | None, rule: str | None
) -> None:
    if code is None:
        hn.check_unsubscribe("hn_1", status=status, visited=visited, family=family)
        return
    with pytest.raises(DomainError) as caught:
        hn.check_unsubscribe("hn_1", status=status, visited=visited, family=family)
    assert (caught.value.code, caught.value.rule) == (code, rule)


def test_a_visit_is_recorded_once_on_an_active_package() -> None:
    hn.check_visit("hn_1", status=ACTIVE, visited=False, family=PackageFamily.SERVICE)
    with pytest.raises(hn.AlreadyVisited):
        hn.check_visit("hn_1", status=ACTIVE, visited=True, family=PackageFamily.SERVICE)
    with pytest.raises(hn.PackageNotActive):
        hn.check_visit("hn_1", status=ENDED, visited=False, family=PackageFamily.SERVICE)


# --- tunings ------------------------------------------------------------------------------

T0 = datetime(2026, 12, 3, 2, 0, tzinfo=UTC)


def holding(
    package_id: str,
    devices: Sequence[str] = ("rt-1",),
    *,
    days: int = 30,
    used: dict[str, int] | None = None,
    status: str = ACTIVE,
    started: datetime = T0,
) -> Holding:
    return Holding(
        package_id=package_id,
        status=status,
        devices=tuple(devices),
        tunings_per_device=1,
        started_at=started,
        ends_at=started + timedelta(days=days),
        used=used or {},
    )


@pytest.mark.parametrize(
    ("holdings", "device", "at", "paid_by", "code"),
    [
        ([], "rt-1", T0, None, "tuning_not_covered"),
        ([holding("gift")], "rt-2", T0, None, "tuning_not_covered"),  # another router
        ([holding("gift", ("rt-1", "rt-2"))], "rt-2", T0, "gift", None),
        ([holding("gift", used={"rt-1": 1})], "rt-1", T0, None, "tunings_used_up"),
        # used per device: rt-1's tuning used leaves rt-2's
        ([holding("gift", ("rt-1", "rt-2"), used={"rt-1": 1})], "rt-2", T0, "gift", None),
        # per period: expired, not yet started, unsubscribed or ended packages do not pay
        ([holding("pack", days=1)], "rt-1", T0 + timedelta(days=1), None, "tuning_not_covered"),
        ([holding("pack")], "rt-1", T0 - timedelta(seconds=1), None, "tuning_not_covered"),
        ([holding("pack", status=UNSUBSCRIBED)], "rt-1", T0, None, "tuning_not_covered"),
        ([holding("pack", status=ENDED)], "rt-1", T0, None, "tuning_not_covered"),
        # R17 after R16: a pack pays once the gift's tuning is used
        ([holding("gift", days=365, used={"rt-1": 1}), holding("pack")], "rt-1", T0, "pack", None),
        # the package ending first pays first
        ([holding("gift", days=365), holding("pack")], "rt-1", T0, "pack", None),
        ([holding("pack", used={"rt-1": 1}), holding("gift", days=365)], "rt-1", T0, "gift", None),
    ],
)
def test_tuning_package(
    holdings: list[Holding], device: str, at: datetime, paid_by: str | None, code: str | None
) -> None:
    if paid_by is not None:
        assert hn.tuning_package(holdings, device, at).package_id == paid_by
        return
    with pytest.raises(DomainError) as caught:
        hn.tuning_package(holdings, device, at)
    assert caught.value.code == code
    assert caught.value.rule == ("R16" if code == "tuning_not_covered" else "R17")


def test_a_tuning_left_counts_against_the_package_not_other_packages() -> None:
    h = holding("gift", ("rt-1", "rt-2"), used={"rt-1": 1})
    assert (h.left("rt-1"), h.left("rt-2"), h.left("rt-9")) == (0, 1, 0)


# --- charges ------------------------------------------------------------------------------


def bill(package_id: str, fee: str, ordered: date, unsubscribed: date | None = None) -> PackageBill:
    return PackageBill(
        package_id=package_id,
        product_id="p-" + package_id,
        fee=Decimal(fee),
        ordered_on=ordered,
        unsubscribed_on=unsubscribed,
    )


def test_the_fee_is_charged_once_on_the_order_day() -> None:
    bills = [bill("a", "299.00", date(2026, 11, 30)), bill("b", "30.00", date(2026, 12, 3))]
    nov = package_lines(bills, Month(year=2026, month=11))
    assert [(x.kind, x.package_id, x.day, x.amount) for x in nov] == [
        ("home_network", "a", date(2026, 11, 30), Decimal("299.00"))
    ]
    dec = package_lines(bills, Month(year=2026, month=12))
    assert [(x.package_id, x.amount) for x in dec] == [("b", Decimal("30.00"))]
    assert package_lines(bills, Month(year=2027, month=1)) == []  # prepaid: no renewal


def test_an_unsubscription_refunds_in_full_as_a_line_of_its_month() -> None:
    """R16: the refund is a correction line of the unsubscription's month; the order
    month's charge stays as billed."""
    b = bill("a", "499.00", date(2026, 11, 30), date(2026, 12, 2))
    (charge,) = package_lines([b], Month(year=2026, month=11))
    (refund,) = package_lines([b], Month(year=2026, month=12))
    assert (charge.kind, charge.amount) == ("home_network", Decimal("499.00"))
    assert (refund.kind, refund.day, refund.amount) == (
        "home_network_refund",
        date(2026, 12, 2),
        Decimal("-499.00"),
    )
    same = bill("c", "70.00", date(2026, 12, 5), date(2026, 12, 5))
    lines = package_lines([same], Month(year=2026, month=12))
    assert [x.amount for x in lines] == [Decimal("70.00"), Decimal("-70.00")]
    assert sum(x.amount for x in lines) == 0
