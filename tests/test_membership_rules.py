"""Table tests of the family-cloud membership rules (R18, with R3's formula); pure code."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from replay import membership as m
from replay.billing import Month, first_charge, monthly_charge
from replay.plans import PlansFileError

TIERS = m.TierCatalog()


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_default_tiers_are_ordinary_gold_platinum() -> None:
    assert TIERS.ids == ("ordinary", "gold", "platinum")
    fees = [tier.monthly_fee for tier in TIERS]
    quotas = [tier.quota_bytes for tier in TIERS]
    assert fees == sorted(fees), "a higher tier costs more"
    assert quotas == sorted(quotas), "a higher tier holds more"
    assert all(tier.validity_months == 12 for tier in TIERS)


def test_an_unknown_tier_is_refused_citing_r18() -> None:
    with pytest.raises(m.UnknownTier) as caught:
        TIERS.get("diamond")
    assert (caught.value.code, caught.value.rule) == ("unknown_tier", "R18")


def test_a_second_membership_is_refused_citing_r18() -> None:
    error = m.MembershipHeld("acc-1", held="fcm_1", tier="gold")
    assert (error.code, error.rule) == ("membership_held", "R18")
    assert "no stacking" in error.message


@pytest.mark.parametrize(
    ("tier", "ordered_on", "days", "amount"),
    [
        ("gold", date(2026, 11, 20), 11, "7.33"),  # 20 × 11/30 = 7.333…
        ("ordinary", date(2026, 2, 15), 14, "5.00"),  # 10 × 14/28
        ("platinum", date(2027, 1, 31), 1, "0.97"),  # 30 × 1/31 = 0.967…
        ("platinum", date(2028, 2, 1), 29, "30.00"),  # a leap February in full
        ("ordinary", date(2026, 4, 28), 3, "1.00"),  # 10 × 3/30
    ],
)
def test_the_first_month_is_charged_by_day_from_the_order_day(
    tier: str, ordered_on: date, days: int, amount: str
) -> None:
    """R18 with R3's formula: fee × days from the order day to the month's end / days in
    the month, half-up to the cent."""
    charge = first_charge(TIERS.get(tier).monthly_fee, ordered_on)
    assert (charge.days, charge.amount) == (days, Decimal(amount))


@pytest.mark.parametrize(
    ("start", "periods", "last_day"),
    [
        (date(2026, 11, 20), 1, date(2027, 11, 19)),
        (date(2026, 11, 20), 2, date(2028, 11, 19)),
        (date(2028, 2, 29), 1, date(2029, 2, 28)),  # no 29 Feb in 2029: through the 28th
        (date(2028, 2, 29), 4, date(2032, 2, 28)),  # anchored on the order day again
        (date(2026, 1, 1), 1, date(2026, 12, 31)),
    ],
)
def test_valid_one_year_through_the_day_before_the_same_date(
    start: date, periods: int, last_day: date
) -> None:
    assert m.valid_until(start, 12, periods) == last_day


@pytest.mark.parametrize(
    ("today", "period"),
    [
        (date(2026, 11, 20), 1),
        (date(2027, 11, 19), 1),  # the last day of the first year
        (date(2027, 11, 20), 2),  # renewed without objection
        (date(2029, 6, 1), 3),  # caught up after a long downtime
    ],
)
def test_renewal_periods_by_the_day(today: date, period: int) -> None:
    assert m.periods_elapsed(date(2026, 11, 20), 12, today) == period


@pytest.mark.parametrize(
    ("at", "last_day", "effective"),
    [
        ("2026-11-20T10:00:00+08:00", date(2026, 11, 30), "2026-12-01T00:00:00+08:00"),
        # 1 December in Shanghai already: effective 1 January
        ("2026-11-30T16:30:00+00:00", date(2026, 12, 31), "2027-01-01T00:00:00+08:00"),
        ("2026-12-31T23:59:59+08:00", date(2026, 12, 31), "2027-01-01T00:00:00+08:00"),
        ("2028-02-01T00:00:00+08:00", date(2028, 2, 29), "2028-03-01T00:00:00+08:00"),
    ],
)
def test_unsubscription_takes_effect_on_the_first_day_of_next_month(
    at: str, last_day: date, effective: str
) -> None:
    """R18: in force (and charged in full) through the month's end, Asia/Shanghai."""
    assert m.last_active_day(utc(at)) == last_day
    assert m.takes_effect(utc(at)) == utc(effective)


def test_the_unsubscription_month_is_charged_in_full() -> None:
    """Ordered 20 Nov, unsubscribed 5 Dec: November by day, December whole."""
    fee = TIERS.get("gold").monthly_fee
    end = m.last_active_day(utc("2026-12-05T12:00:00+08:00"))
    nov = monthly_charge(fee, Month(year=2026, month=11), date(2026, 11, 20), end)
    dec = monthly_charge(fee, Month(year=2026, month=12), date(2026, 11, 20), end)
    jan = monthly_charge(fee, Month(year=2027, month=1), date(2026, 11, 20), end)
    assert nov is not None
    assert nov.amount == Decimal("7.33")
    assert dec is not None
    assert (dec.days, dec.amount) == (31, Decimal("20.00"))
    assert jan is None


@pytest.mark.parametrize(
    ("status", "ends_at", "now", "seen"),
    [
        ("active", None, "2026-12-01T00:00:00+08:00", "active"),
        ("unsubscribed", "2026-12-01T00:00:00+08:00", "2026-11-30T23:59:59+08:00", "unsubscribed"),
        ("unsubscribed", "2026-12-01T00:00:00+08:00", "2026-12-01T00:00:00+08:00", "ended"),
        ("ended", "2026-12-01T00:00:00+08:00", "2026-11-01T00:00:00+08:00", "ended"),
    ],
)
def test_status_is_exact_whether_or_not_the_job_ran(
    status: str, ends_at: str | None, now: str, seen: str
) -> None:
    assert m.status_at(status, None if ends_at is None else utc(ends_at), utc(now)) == seen


@pytest.mark.parametrize(
    ("effective", "until"),
    [
        ("2026-12-01T00:00:00+08:00", "2027-03-01T00:00:00+08:00"),
        ("2027-01-01T00:00:00+08:00", "2027-04-01T00:00:00+08:00"),
        ("2027-12-01T00:00:00+08:00", "2028-03-01T00:00:00+08:00"),
    ],
)
def test_an_overflow_is_read_only_for_three_months(effective: str, until: str) -> None:
    assert m.read_only_until(utc(effective)) == utc(until)


def _saved(*rows: tuple[int, str, int]) -> list[m.Saved]:
    return [m.Saved(key, utc(at), size) for key, at, size in rows]


ITEMS = _saved(
    (3, "2026-11-03T00:00:00+00:00", 40),
    (1, "2026-11-01T00:00:00+00:00", 30),
    (2, "2026-11-02T00:00:00+00:00", 50),
    (4, "2026-11-02T00:00:00+00:00", 20),  # saved at the same instant as 2: by key
)


@pytest.mark.parametrize(
    ("quota", "doomed"),
    [
        (140, []),  # fits already
        (139, [1]),  # the oldest goes first
        (110, [1]),
        (109, [1, 2]),
        (60, [1, 2]),
        (40, [1, 2, 4]),
        (0, [1, 2, 4, 3]),
    ],
)
def test_the_cleanup_deletes_the_oldest_first_until_it_fits(quota: int, doomed: list[int]) -> None:
    assert m.cleanup_order(ITEMS, quota) == doomed


def test_tiers_come_from_the_plans_file(tmp_path: Path) -> None:
    path = tmp_path / "plans.json"
    path.write_text(
        '{"plans": [{"id": "event-1d", "family": "event", "retention_days": 1,'
        ' "monthly_fee": "3.00"}], "memberships": [{"id": "gold", "monthly_fee": "25.50",'
        ' "quota_bytes": 1000, "validity_months": 12}]}'
    )
    tiers = m.load_tiers(path)
    assert tiers.ids == ("gold",)
    assert (tiers.get("gold").monthly_fee, tiers.get("gold").quota_bytes) == (
        Decimal("25.50"),
        1000,
    )
    bare = tmp_path / "bare.json"
    bare.write_text('{"plans": []}')
    assert m.load_tiers(bare).ids == TIERS.ids, "no memberships: the defaults"


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ('{"id": "gold", "monthly_fee": 20.0, "quota_bytes": 1}', "decimal string"),
        ('{"id": "gold", "monthly_fee": "20.00"}', "missing keys ['quota_bytes']"),
        ('{"id": "gold", "monthly_fee": "20.00", "quota_bytes": 0}', "positive"),
        ('{"id": "gold", "monthly_fee": "20.00", "quota_bytes": 1, "x": 1}', "unknown keys"),
    ],
)
def test_a_bad_tier_entry_names_itself(tmp_path: Path, entry: str, problem: str) -> None:
    path = tmp_path / "plans.json"
    path.write_text(f'{{"plans": [], "memberships": [{entry}]}}')
    with pytest.raises(PlansFileError) as caught:
        m.load_tiers(path)
    assert "memberships[0]" in str(caught.value)
    assert problem in str(caught.value)
