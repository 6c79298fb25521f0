"""Cloud-replay billing (R3, R4, R5): business dates, months, the one formula, terms, purges.

Every expected amount below was worked out by hand; the arithmetic is in each row's comment.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.billing import (
    CENT,
    PURGE_AFTER_MONTHS,
    TERM_MONTHS,
    Charge,
    Month,
    Term,
    add_months,
    business_date,
    charges_between,
    current_term,
    final_charge,
    first_charge,
    monthly_charge,
    purge_due,
    term_end,
)
from replay.plans import load_plans

CST = timezone(timedelta(hours=8))  # Asia/Shanghai has had no DST since 1991


def D(text: str) -> date:
    return date.fromisoformat(text)


def M(text: str) -> Month:
    return Month.parse(text)


def charge(month: str, days: int, amount: str) -> Charge:
    return Charge(month=M(month), days=days, amount=Decimal(amount))


# 2026-11-30T16:30Z is 2026-12-01 00:30 in Shanghai: a December order (issue 3).
DEC_ORDER = datetime(2026, 11, 30, 16, 30, tzinfo=UTC)
# 2026-11-30T15:59:59Z is 2026-11-30 23:59:59 in Shanghai: still a November order.
NOV_ORDER = datetime(2026, 11, 30, 15, 59, 59, tzinfo=UTC)
# 2026-05-31T16:00Z is 2026-06-01 00:00 in Shanghai: a June unsubscription.
JUNE_END = datetime(2026, 5, 31, 16, 0, tzinfo=UTC)

# fee, ordered (date or instant), unsubscribed (date, instant or None), month, expected
# (days, amount) or None when the month has no active day.
TABLE = [
    # --- R3: first month, order day to month end -------------------------------------------
    # 10.00 × 31/31 = 10.00
    pytest.param("10.00", "2026-01-01", None, "2026-01", (31, "10.00"), id="R3-order-on-1st-31d"),
    # 10.00 × 1/31 = 0.32258… → 0.32
    pytest.param("10.00", "2026-01-31", None, "2026-01", (1, "0.32"), id="R3-order-on-last-31d"),
    # 30.00 × 30/30 = 30.00
    pytest.param("30.00", "2026-04-01", None, "2026-04", (30, "30.00"), id="R3-order-on-1st-30d"),
    # 30.00 × 1/30 = 1.00
    pytest.param("30.00", "2026-04-30", None, "2026-04", (1, "1.00"), id="R3-order-on-last-30d"),
    # 6.00 × 28/28 = 6.00
    pytest.param("6.00", "2026-02-01", None, "2026-02", (28, "6.00"), id="R3-order-on-1st-28d"),
    # 6.00 × 1/28 = 0.214285… → 0.21
    pytest.param("6.00", "2026-02-28", None, "2026-02", (1, "0.21"), id="R3-order-on-last-28d"),
    # 15..28 Feb = 14 days: 5.00 × 14/28 = 2.50
    pytest.param("5.00", "2026-02-15", None, "2026-02", (14, "2.50"), id="R3-mid-28d"),
    # 15.00 × 29/29 = 15.00 (February 2028 is a leap month)
    pytest.param("15.00", "2028-02-01", None, "2028-02", (29, "15.00"), id="R3-order-on-1st-29d"),
    # 15.00 × 1/29 = 0.517241… → 0.52
    pytest.param("15.00", "2028-02-29", None, "2028-02", (1, "0.52"), id="R3-order-on-last-29d"),
    # 28..29 Feb = 2 days: 3.00 × 2/29 = 6/29 = 0.206896… → 0.21
    pytest.param("3.00", "2028-02-28", None, "2028-02", (2, "0.21"), id="R3-order-on-28th-29d"),
    # 15..29 Feb = 15 days: 10.00 × 15/29 = 150/29 = 5.172413… → 5.17
    pytest.param("10.00", "2028-02-15", None, "2028-02", (15, "5.17"), id="R3-mid-29d"),
    # 16..31 Jul = 16 days: 10.00 × 16/31 = 160/31 = 5.161290… → 5.16
    pytest.param("10.00", "2026-07-16", None, "2026-07", (16, "5.16"), id="R3-mid-31d"),
    # 11..30 Jun = 20 days: 5.00 × 20/30 = 3.3333… → 3.33
    pytest.param("5.00", "2026-06-11", None, "2026-06", (20, "3.33"), id="R3-mid-30d"),
    # 30.00 × 1/31 = 0.967741… → 0.97
    pytest.param("30.00", "2026-12-31", None, "2026-12", (1, "0.97"), id="R3-order-on-dec-31st"),
    # 17..30 Sep = 14 days: 999.99 × 14 = 13999.86; / 30 = 466.662 → 466.66
    pytest.param("999.99", "2026-09-17", None, "2026-09", (14, "466.66"), id="R3-large-fee"),
    # 16..31 Jul = 16 days: 0.00 × 16/31 = 0.00
    pytest.param("0.00", "2026-07-16", None, "2026-07", (16, "0.00"), id="R3-zero-fee"),
    # Shanghai 2026-12-01: 1..31 Dec = 31 days: 10.00 × 31/31 = 10.00
    pytest.param("10.00", DEC_ORDER, None, "2026-12", (31, "10.00"), id="R3-utc-nov30-is-dec"),
    # … and November has no active day at all.
    pytest.param("10.00", DEC_ORDER, None, "2026-11", None, id="R3-utc-nov30-no-nov-charge"),
    # Shanghai 2026-11-30 23:59:59: 1 day of 30: 10.00 × 1/30 = 0.3333… → 0.33
    pytest.param("10.00", NOV_ORDER, None, "2026-11", (1, "0.33"), id="R3-utc-nov30-still-nov"),
    # A month before the order month: nothing.
    pytest.param("10.00", "2026-05-10", None, "2026-04", None, id="R3-month-before-order"),
    # --- R4: renewed months at the full fee ------------------------------------------------
    # Mar 2026 fully active: 30.00 × 31/31 = 30.00
    pytest.param("30.00", "2026-01-15", None, "2026-03", (31, "30.00"), id="R4-renewed-31d"),
    # Apr 2026 fully active: 6.00 × 30/30 = 6.00
    pytest.param("6.00", "2026-01-10", None, "2026-04", (30, "6.00"), id="R4-renewed-30d"),
    # Feb 2026 fully active: 3.00 × 28/28 = 3.00
    pytest.param("3.00", "2025-10-05", None, "2026-02", (28, "3.00"), id="R4-renewed-28d"),
    # Feb 2028 fully active: 15.00 × 29/29 = 15.00
    pytest.param("15.00", "2027-12-20", None, "2028-02", (29, "15.00"), id="R4-renewed-29d"),
    # Jun 2028 is in the second 24-month term (from 2028-01-10): 5.00 × 30/30 = 5.00
    pytest.param("5.00", "2026-01-10", None, "2028-06", (30, "5.00"), id="R4-after-term-rollover"),
    # --- R5: unsubscription month, its first day (or order day) to unsubscription day --------
    # same day, 1 day of 31: 10.00 × 1/31 = 0.32258… → 0.32
    pytest.param("10.00", "2026-03-10", "2026-03-10", "2026-03", (1, "0.32"), id="R5-same-day-31d"),
    # same day, 1 day of 28: 6.00 × 1/28 = 0.214285… → 0.21
    pytest.param("6.00", "2026-02-01", "2026-02-01", "2026-02", (1, "0.21"), id="R5-same-day-28d"),
    # same day, 1 day of 29: 30.00 × 1/29 = 1.034482… → 1.03
    pytest.param("30.00", "2028-02-29", "2028-02-29", "2028-02", (1, "1.03"), id="R5-same-day-29d"),
    # 10..20 Apr = 11 days: 30.00 × 11/30 = 11.00
    pytest.param("30.00", "2026-04-10", "2026-04-20", "2026-04", (11, "11.00"), id="R5-same-month"),
    # Ordered 2026-01-20, unsubscribed 2026-04-10, month by month:
    # 20..31 Jan = 12 days: 10.00 × 12/31 = 120/31 = 3.870967… → 3.87
    pytest.param(
        "10.00", "2026-01-20", "2026-04-10", "2026-01", (12, "3.87"), id="R5-later-order-m"
    ),
    # all 28 days of Feb: 10.00 × 28/28 = 10.00
    pytest.param(
        "10.00", "2026-01-20", "2026-04-10", "2026-02", (28, "10.00"), id="R5-later-middle-28d"
    ),
    # all 31 days of Mar: 10.00 × 31/31 = 10.00
    pytest.param(
        "10.00", "2026-01-20", "2026-04-10", "2026-03", (31, "10.00"), id="R5-later-middle-31d"
    ),
    # 1..10 Apr = 10 days: 10.00 × 10/30 = 3.3333… → 3.33
    pytest.param("10.00", "2026-01-20", "2026-04-10", "2026-04", (10, "3.33"), id="R5-later-final"),
    # after the unsubscription month: nothing
    pytest.param("10.00", "2026-01-20", "2026-04-10", "2026-05", None, id="R5-after-end"),
    # before the order month: nothing
    pytest.param("10.00", "2026-01-20", "2026-04-10", "2025-12", None, id="R5-before-order"),
    # unsubscribed on a month's last day: 1..31 May = 31 days: 15.00 × 31/31 = 15.00
    pytest.param(
        "15.00", "2026-03-05", "2026-05-31", "2026-05", (31, "15.00"), id="R5-end-on-last-day"
    ),
    # unsubscribed on a month's 1st: 1 day of 30: 15.00 × 1/30 = 0.50
    pytest.param("15.00", "2026-03-05", "2026-06-01", "2026-06", (1, "0.50"), id="R5-end-on-1st"),
    # 1..14 Feb 2028 = 14 days: 6.00 × 14/29 = 84/29 = 2.896551… → 2.90
    pytest.param("6.00", "2027-11-11", "2028-02-14", "2028-02", (14, "2.90"), id="R5-end-in-29d"),
    # Unsubscribed 2026-05-31T16:00Z = Shanghai 2026-06-01: 1 day of 30: 30.00 × 1/30 = 1.00
    pytest.param("30.00", "2026-05-10", JUNE_END, "2026-06", (1, "1.00"), id="R5-utc-is-june"),
    # … and May is 10..31 = 22 days: 30.00 × 22/31 = 660/31 = 21.290322… → 21.29
    pytest.param("30.00", "2026-05-10", JUNE_END, "2026-05", (22, "21.29"), id="R5-utc-may-part"),
    # --- Exact half cents: half-up, not banker's (fees from a plans file in practice) --------
    # 28..30 Apr = 3 days: 2.25 × 3/30 = 6.75/30 = 0.225 exactly → 0.23 (half-even: 0.22)
    pytest.param("2.25", "2026-04-28", None, "2026-04", (3, "0.23"), id="R3-half-cent-up"),
    # 1 Feb only, 1 day of 28: 3.50 × 1/28 = 0.125 exactly → 0.13 (half-even: 0.12)
    pytest.param("3.50", "2026-01-05", "2026-02-01", "2026-02", (1, "0.13"), id="R5-half-cent-up"),
]


def _day(value: str | datetime | None) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return business_date(value)
    return D(value)


@pytest.mark.parametrize(("fee", "ordered", "ended", "month", "expected"), TABLE)
def test_monthly_charge_table(
    fee: str,
    ordered: str | datetime,
    ended: str | datetime | None,
    month: str,
    expected: tuple[int, str] | None,
) -> None:
    active_from = _day(ordered)
    assert active_from is not None
    got = monthly_charge(Decimal(fee), M(month), active_from, _day(ended))
    if expected is None:
        assert got is None
    else:
        assert got == charge(month, *expected)
        assert got is not None
        assert str(got.amount) == expected[1]  # two places, as the API prints it


def test_the_table_has_at_least_thirty_cases() -> None:
    assert len(TABLE) >= 30


# The two exact half cents of TABLE: fee, active days, days in the month, exact, half-up.
HALF_CENTS = [
    pytest.param("2.25", 3, 30, "0.225", "0.23", id="R3-2.25x3/30"),
    pytest.param("3.50", 1, 28, "0.125", "0.13", id="R5-3.50x1/28"),
]


@pytest.mark.parametrize(("fee", "days", "month_days", "exact", "rounded"), HALF_CENTS)
def test_half_cents_round_up_not_to_even(
    fee: str, days: int, month_days: int, exact: str, rounded: str
) -> None:
    quotient = Decimal(fee) * days / month_days
    assert quotient == Decimal(exact)  # the prorated value really ends in a half cent
    banker = quotient.quantize(CENT, rounding=ROUND_HALF_EVEN)
    assert banker != Decimal(rounded)  # so half-even would bill one cent less
    assert banker == Decimal(rounded) - CENT


def test_half_cent_from_a_plans_file_rounds_up(tmp_path: Path) -> None:
    """R3/R5 with fees only a plans file can give (the defaults never produce a half cent)."""
    path = tmp_path / "plans.toml"
    path.write_text(
        "[[plans]]\n"
        'id = "event-3d"\nfamily = "event"\nretention_days = 3\nmonthly_fee = "2.25"\n'
        "[[plans]]\n"
        'id = "continuous-3d"\nfamily = "continuous"\nretention_days = 3\nmonthly_fee = "3.50"\n'
    )
    catalog = load_plans(path)
    # R3: ordered 2026-04-28, 3 days of 30: 2.25 × 3/30 = 0.225 → 0.23
    first = first_charge(catalog.get("event-3d").monthly_fee, D("2026-04-28"))
    assert first == charge("2026-04", 3, "0.23")
    # R5: unsubscribed 2026-02-01, 1 day of 28: 3.50 × 1/28 = 0.125 → 0.13
    final = final_charge(catalog.get("continuous-3d").monthly_fee, D("2026-01-05"), D("2026-02-01"))
    assert final == charge("2026-02", 1, "0.13")


@pytest.mark.parametrize(
    ("fee", "ordered_on", "expected"),
    [
        # 1 day of 31: 10.00 / 31 = 0.322… → 0.32
        pytest.param("10.00", D("2026-01-31"), charge("2026-01", 1, "0.32"), id="R3-last-day"),
        # Shanghai 2026-12-01, 31 of 31 days: 10.00
        pytest.param(
            "10.00", business_date(DEC_ORDER), charge("2026-12", 31, "10.00"), id="R3-utc-dec"
        ),
        # 28..29 Feb 2028 = 2 of 29 days: 15.00 × 2/29 = 30/29 = 1.034… → 1.03
        pytest.param("15.00", D("2028-02-28"), charge("2028-02", 2, "1.03"), id="R3-leap"),
    ],
)
def test_first_charge(fee: str, ordered_on: date, expected: Charge) -> None:
    assert first_charge(Decimal(fee), ordered_on) == expected


@pytest.mark.parametrize(
    ("fee", "started_on", "ended_on", "expected"),
    [
        # 1..10 Apr = 10 of 30 days: 10.00 / 3 = 3.33
        pytest.param(
            "10.00", D("2026-01-20"), D("2026-04-10"), charge("2026-04", 10, "3.33"), id="R5-later"
        ),
        # ordered and unsubscribed 10 Mar: 1 of 31 days: 0.32
        pytest.param(
            "10.00", D("2026-03-10"), D("2026-03-10"), charge("2026-03", 1, "0.32"), id="R5-same"
        ),
        # 10..20 Feb = 11 of 28 days: 6.00 × 11/28 = 66/28 = 2.357… → 2.36
        pytest.param(
            "6.00", D("2026-02-10"), D("2026-02-20"), charge("2026-02", 11, "2.36"), id="R5-month"
        ),
    ],
)
def test_final_charge(fee: str, started_on: date, ended_on: date, expected: Charge) -> None:
    assert final_charge(Decimal(fee), started_on, ended_on) == expected


@pytest.mark.parametrize(
    ("active_from", "active_to", "through", "expected"),
    [
        pytest.param(
            D("2026-01-20"),
            D("2026-04-10"),
            M("2026-12"),
            # 12/31 → 3.87; 28/28 → 10.00; 31/31 → 10.00; 10/30 → 3.33; stops at the end month
            [
                charge("2026-01", 12, "3.87"),
                charge("2026-02", 28, "10.00"),
                charge("2026-03", 31, "10.00"),
                charge("2026-04", 10, "3.33"),
            ],
            id="R5-through-after-end",
        ),
        pytest.param(
            D("2026-01-20"),
            D("2026-04-10"),
            M("2026-02"),
            [charge("2026-01", 12, "3.87"), charge("2026-02", 28, "10.00")],
            id="R5-through-before-end",
        ),
        pytest.param(
            business_date(DEC_ORDER),
            None,
            M("2027-02"),
            # Dec 31/31, Jan 31/31, Feb 28/28: the full fee each month (R4)
            [
                charge("2026-12", 31, "10.00"),
                charge("2027-01", 31, "10.00"),
                charge("2027-02", 28, "10.00"),
            ],
            id="R4-still-active",
        ),
        pytest.param(business_date(DEC_ORDER), None, M("2026-11"), [], id="R3-through-before"),
    ],
)
def test_charges_between(
    active_from: date, active_to: date | None, through: Month, expected: list[Charge]
) -> None:
    assert charges_between(Decimal("10.00"), active_from, active_to, through) == expected


def test_unsubscribing_before_the_order_is_refused() -> None:
    fee = Decimal("10.00")
    with pytest.raises(ValueError, match="before the order date"):
        monthly_charge(fee, M("2026-03"), D("2026-03-10"), D("2026-03-09"))
    with pytest.raises(ValueError, match="before the order date"):
        final_charge(fee, D("2026-03-10"), D("2026-02-28"))
    with pytest.raises(ValueError, match="before the order date"):
        charges_between(fee, D("2026-03-10"), D("2026-03-09"), M("2026-12"))


@pytest.mark.parametrize(
    ("fee", "error", "match"),
    [
        pytest.param(10.0, TypeError, "floats are not money", id="float"),
        pytest.param(Decimal("-1.00"), ValueError, "non-negative", id="negative"),
        pytest.param(Decimal("1.005"), ValueError, "more than 2 decimal places", id="sub-cent"),
        pytest.param(Decimal("NaN"), ValueError, "finite", id="nan"),
    ],
)
def test_bad_fees_are_refused(fee: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        first_charge(fee, D("2026-03-10"))  # type: ignore[arg-type]


def test_instants_are_not_taken_for_business_dates() -> None:
    with pytest.raises(TypeError, match="business_date"):
        first_charge(Decimal("1.00"), DEC_ORDER)
    with pytest.raises(TypeError, match="business_date"):
        Month.of(DEC_ORDER)


@pytest.mark.parametrize(
    ("month", "days", "amount", "match"),
    [
        pytest.param("2026-02", 0, "0.00", "1 to 28 active days", id="no-day"),
        pytest.param("2026-02", 29, "1.00", "1 to 28 active days", id="too-many-days"),
        pytest.param("2026-02", 1, "0.5", "quantized to the cent", id="not-quantized"),
        pytest.param("2026-02", 1, "-0.01", "non-negative", id="negative"),
    ],
)
def test_bad_charges_are_refused(month: str, days: int, amount: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Charge(month=M(month), days=days, amount=Decimal(amount))


# --- business dates and months -------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        pytest.param(DEC_ORDER, D("2026-12-01"), id="utc-16:30-is-next-day"),
        pytest.param(NOV_ORDER, D("2026-11-30"), id="utc-15:59:59-same-day"),
        pytest.param(datetime(2026, 12, 31, 16, tzinfo=UTC), D("2027-01-01"), id="new-year"),
        pytest.param(datetime(2026, 3, 1, 0, 0, tzinfo=CST), D("2026-03-01"), id="cst-midnight"),
        # 20:00 at UTC-5 = 01:00Z on 2 Mar = 09:00 in Shanghai
        pytest.param(
            datetime(2026, 3, 1, 20, tzinfo=timezone(timedelta(hours=-5))),
            D("2026-03-02"),
            id="other-offset",
        ),
    ],
)
def test_business_date_is_the_shanghai_date(at: datetime, expected: date) -> None:
    assert business_date(at) == expected


def test_business_date_refuses_naive_instants() -> None:
    with pytest.raises(ValueError, match="timezone"):
        business_date(datetime(2026, 11, 30, 16, 30))  # noqa: DTZ001 - the point of the test


@pytest.mark.parametrize(
    ("month", "days", "last"),
    [
        pytest.param("2026-01", 31, "2026-01-31", id="31d"),
        pytest.param("2026-02", 28, "2026-02-28", id="28d"),
        pytest.param("2028-02", 29, "2028-02-29", id="29d-leap"),
        pytest.param("2100-02", 28, "2100-02-28", id="century-not-leap"),
        pytest.param("2000-02", 29, "2000-02-29", id="400-years-leap"),
        pytest.param("2026-04", 30, "2026-04-30", id="30d"),
        pytest.param("2026-12", 31, "2026-12-31", id="december"),
    ],
)
def test_month_days_first_and_last(month: str, days: int, last: str) -> None:
    m = M(month)
    assert m.days == days
    assert m.first == D(f"{month}-01")
    assert m.last == D(last)
    assert str(m) == month


def test_month_next_order_and_membership() -> None:
    assert M("2026-12").next() == Month(year=2027, month=1)
    assert M("2026-01").next() == Month(year=2026, month=2)
    assert M("2026-12") < M("2027-01") < M("2027-02")
    assert sorted([M("2027-01"), M("2026-12"), M("2026-02")]) == [
        M("2026-02"),
        M("2026-12"),
        M("2027-01"),
    ]
    assert Month.of(D("2028-02-29")) == Month(year=2028, month=2)
    assert D("2028-02-29") in M("2028-02")
    assert D("2028-03-01") not in M("2028-02")
    assert str(Month(year=987, month=3)) == "0987-03"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-13", "month must be a whole number from 1 to 12, not 13"),
        ("2026-00", "month must be a whole number from 1 to 12, not 0"),
        ("0000-01", "year must be a whole number from 1 to 9999, not 0"),
        ("2026-1", "a month is written YYYY-MM, not '2026-1'"),
        ("26-01", "a month is written YYYY-MM, not '26-01'"),
        ("2026-01-01", "a month is written YYYY-MM, not '2026-01-01'"),
        ("", "a month is written YYYY-MM, not ''"),
        ("2026/01", "a month is written YYYY-MM, not '2026/01'"),
        (" 2026-01", "a month is written YYYY-MM, not ' 2026-01'"),
    ],
)
def test_month_parse_refuses_other_forms(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Month.parse(text)


def test_month_refuses_out_of_range_fields() -> None:
    with pytest.raises(ValueError, match="month must be a whole number from 1 to 12"):
        Month(year=2026, month=13)
    with pytest.raises(ValueError, match="year must be a whole number from 1 to 9999"):
        Month(year=0, month=1)


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        pytest.param("2026-08-31", 6, "2027-02-28", id="clamp-to-28"),
        pytest.param("2027-08-31", 6, "2028-02-29", id="clamp-to-29-leap"),
        pytest.param("2026-01-31", 1, "2026-02-28", id="one-month-clamp"),
        pytest.param("2026-03-15", 24, "2028-03-15", id="two-years"),
        pytest.param("2026-03-31", -1, "2026-02-28", id="backwards"),
    ],
)
def test_add_months_clamps_to_month_end(day: str, months: int, expected: str) -> None:
    assert add_months(D(day), months) == D(expected)


# --- R4: the 24-month tariff term ----------------------------------------------------------


def test_term_is_24_months() -> None:
    assert TERM_MONTHS == 24


@pytest.mark.parametrize(
    ("started_on", "expected"),
    [
        # 2026-12-01 + 24 months = 2028-12-01; the term's last day is the day before
        pytest.param("2026-12-01", "2028-11-30", id="R4-from-1st"),
        pytest.param("2026-01-31", "2028-01-30", id="R4-from-31st"),
        # 2028-02-29 + 24 months = 2030-02-28 (clamped); last day 2030-02-27
        pytest.param("2028-02-29", "2030-02-27", id="R4-from-leap-day"),
    ],
)
def test_term_end(started_on: str, expected: str) -> None:
    assert term_end(D(started_on)) == D(expected)


@pytest.mark.parametrize(
    ("started_on", "today", "expected"),
    [
        pytest.param("2026-12-15", "2026-12-15", (1, "2026-12-15", "2028-12-14"), id="R4-day-one"),
        pytest.param("2026-12-15", "2028-12-14", (1, "2026-12-15", "2028-12-14"), id="R4-last-day"),
        pytest.param("2026-12-15", "2028-12-15", (2, "2028-12-15", "2030-12-14"), id="R4-renewed"),
        # 48 calendar months on, but the day is before the 15th: still the second term
        pytest.param("2026-12-15", "2030-12-14", (2, "2028-12-15", "2030-12-14"), id="R4-2nd-end"),
        pytest.param("2026-12-15", "2031-01-01", (3, "2030-12-15", "2032-12-14"), id="R4-third"),
        pytest.param("2028-02-29", "2030-02-27", (1, "2028-02-29", "2030-02-27"), id="R4-leap-1"),
        # each term anchored on the order day: 28 Feb 2030, then 29 Feb 2032 again
        pytest.param("2028-02-29", "2030-02-28", (2, "2030-02-28", "2032-02-28"), id="R4-leap-2"),
        pytest.param("2028-02-29", "2032-02-29", (3, "2032-02-29", "2034-02-27"), id="R4-leap-3"),
    ],
)
def test_current_term(started_on: str, today: str, expected: tuple[int, str, str]) -> None:
    number, start, end = expected
    assert current_term(D(started_on), D(today)) == Term(number=number, start=D(start), end=D(end))


def test_current_term_refuses_a_day_before_the_start() -> None:
    with pytest.raises(ValueError, match="before the subscription started"):
        current_term(D("2026-12-15"), D("2026-12-14"))


# --- R5: purge six months after unsubscription ----------------------------------------------


@pytest.mark.parametrize(
    ("ended_at", "expected"),
    [
        # 31 Aug 10:00 CST → 28 Feb 10:00 CST = 02:00Z
        pytest.param(
            datetime(2026, 8, 31, 10, tzinfo=CST),
            datetime(2027, 2, 28, 2, tzinfo=UTC),
            id="R5-clamp-feb-28",
        ),
        # 31 Aug 2027 02:00Z = 10:00 CST → 29 Feb 2028 10:00 CST = 02:00Z
        pytest.param(
            datetime(2027, 8, 31, 2, tzinfo=UTC),
            datetime(2028, 2, 29, 2, tzinfo=UTC),
            id="R5-clamp-feb-29",
        ),
        # 15 Mar 12:00Z = 20:00 CST → 15 Sep 20:00 CST = 12:00Z
        pytest.param(
            datetime(2026, 3, 15, 12, tzinfo=UTC),
            datetime(2026, 9, 15, 12, tzinfo=UTC),
            id="R5-plain",
        ),
        # 30 Aug 17:00Z = 31 Aug 01:00 CST → 28 Feb 2027 01:00 CST = 27 Feb 17:00Z
        pytest.param(
            datetime(2026, 8, 30, 17, tzinfo=UTC),
            datetime(2027, 2, 27, 17, tzinfo=UTC),
            id="R5-shanghai-month-end",
        ),
        # 30 Sep 23:30Z = 1 Oct 07:30 CST → 1 Apr 07:30 CST = 31 Mar 23:30Z
        pytest.param(
            datetime(2026, 9, 30, 23, 30, tzinfo=UTC),
            datetime(2027, 3, 31, 23, 30, tzinfo=UTC),
            id="R5-shanghai-next-month",
        ),
        # 31 Dec 12:00Z = 20:00 CST → 30 Jun 20:00 CST = 12:00Z
        pytest.param(
            datetime(2026, 12, 31, 12, tzinfo=UTC),
            datetime(2027, 6, 30, 12, tzinfo=UTC),
            id="R5-clamp-june-30",
        ),
    ],
)
def test_purge_due_six_months_later(ended_at: datetime, expected: datetime) -> None:
    assert PURGE_AFTER_MONTHS == 6
    due = purge_due(ended_at)
    assert due == expected
    assert due.tzinfo is UTC


def test_purge_due_refuses_naive_instants() -> None:
    with pytest.raises(ValueError, match="timezone"):
        purge_due(datetime(2026, 8, 31, 10))  # noqa: DTZ001 - the point of the test


# --- the property: the monthly charges are the formula applied month by month ---------------


def _days_in_month(year: int, month: int) -> int:
    first = date(year, month, 1)
    following = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    return (following - first).days


def _half_up_cents(value: Fraction) -> int:
    """``value`` (in cents, non-negative) rounded to a whole cent, halves upwards."""
    return (2 * value.numerator + value.denominator) // (2 * value.denominator)


@settings(max_examples=200, deadline=None)
@given(
    ordered_on=st.dates(min_value=date(2025, 1, 1), max_value=date(2030, 12, 31)),
    length=st.none() | st.integers(min_value=0, max_value=3 * 366),
    horizon=st.integers(min_value=0, max_value=3 * 366),
    fee_cents=st.integers(min_value=0, max_value=1_000_000),
)
def test_charges_are_the_formula_month_by_month(
    ordered_on: date, length: int | None, horizon: int, fee_cents: int
) -> None:
    """R3/R4/R5: Σ charges = Σ over months of round_half_up(fee × active days / month days)."""
    fee = Decimal(fee_cents).scaleb(-2)
    ended_on = None if length is None else ordered_on + timedelta(days=length)
    through_day = ordered_on + timedelta(days=horizon)
    through = Month(year=through_day.year, month=through_day.month)

    # Independently: walk the active days one by one and count them per (year, month).
    last_month_day = _days_in_month(through.year, through.month)
    last_day = date(through.year, through.month, last_month_day)
    if ended_on is not None:
        last_day = min(last_day, ended_on)
    active: dict[tuple[int, int], int] = {}
    day = ordered_on
    while day <= last_day:
        active[day.year, day.month] = active.get((day.year, day.month), 0) + 1
        day += timedelta(days=1)
    expected = [
        (f"{y:04d}-{m:02d}", n, _half_up_cents(Fraction(fee_cents * n, _days_in_month(y, m))))
        for (y, m), n in active.items()
    ]

    charges = charges_between(fee, ordered_on, ended_on, through)

    got = [(str(c.month), c.days, int(c.amount * 100)) for c in charges]
    assert got == expected
    assert sum(c.amount for c in charges) == Decimal(sum(cents for _, _, cents in expected)) / 100
    assert sum(c.days for c in charges) == sum(active.values()) == (last_day - ordered_on).days + 1
    for c in charges:
        assert Decimal(0) <= c.amount <= fee
        assert monthly_charge(fee, c.month, ordered_on, ended_on) == c
