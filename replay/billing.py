"""Cloud-replay billing: operator-zone months and the one proration formula (R3, R4, R5).

Pure functions over dates and amounts; no I/O and no clock (callers pass the instants).

- **Business dates.** Month boundaries are taken in the operator's zone, Asia/Shanghai
  (RULES.md, conventions): :func:`business_date` turns an aware instant into the Shanghai
  calendar date. An order at 2026-11-30T16:30Z is a 1 December order.
- **One formula (R3 = R5).** A month's charge = monthly fee × days active in that month /
  days in that month, rounded half-up to the cent. The active days run from the later of the
  month's first day and the order day to the earlier of the month's last day and the
  unsubscription day, both ends included (:func:`monthly_charge`). The first month (R3,
  :func:`first_charge`) and the final month (R5, :func:`final_charge`) are that formula with
  one end fixed; a renewed full month (R4) comes out as fee × n / n = the fee.
- **Rounding.** ``Decimal.quantize(CENT, ROUND_HALF_UP)``: an exact half cent goes up
  (0.225 → 0.23), where banker's rounding would give 0.22.
- **Tariff term (R4).** 24 months counted from the order day and renewed for 24 more at
  expiry, each term anchored on the order day (a term begun on 29 February 2028 is followed
  by one on 28 February 2030, then 29 February 2032). Choice made here: the term is a
  contract period only and changes no charge.
- **Purge (R5).** The subscription record is kept six calendar months after unsubscription:
  the same Shanghai wall time six months later, the day clamped to the month's end
  (31 August → 28/29 February).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import NamedTuple

from devices.clock import OPERATOR_TZ, aware_utc

__all__ = [
    "CENT",
    "PURGE_AFTER_MONTHS",
    "TERM_MONTHS",
    "Charge",
    "Month",
    "Term",
    "add_months",
    "business_date",
    "charges_between",
    "current_term",
    "final_charge",
    "first_charge",
    "monthly_charge",
    "purge_due",
    "term_end",
]

#: Money is quantized to this (CNY fen).
CENT = Decimal("0.01")
#: The tariff term of R4, renewed by the same length at expiry.
TERM_MONTHS = 24
#: How long an unsubscribed subscription's record is kept (R5).
PURGE_AFTER_MONTHS = 6

_MONTH_TEXT = re.compile(r"(\d{4})-(\d{2})")


def business_date(at: datetime) -> date:
    """The Asia/Shanghai calendar date of an aware instant (month ends and natural days)."""
    return aware_utc(at, "a business instant").astimezone(OPERATOR_TZ).date()


def _check_date(name: str, value: object) -> None:
    # datetime is a date subclass: a datetime here would bill its naive wall date.
    if isinstance(value, datetime) or not isinstance(value, date):
        raise TypeError(f"{name} must be a date (use business_date() on instants), not {value!r}")


@dataclass(frozen=True, slots=True, order=True, kw_only=True)
class Month:
    """A calendar month of the operator's zone; ordered, printed and parsed as ``YYYY-MM``."""

    year: int
    month: int

    def __post_init__(self) -> None:
        for name, value, low, high in (("year", self.year, 1, 9999), ("month", self.month, 1, 12)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(
                    f"{name} must be a whole number from {low} to {high}, not {value!r}"
                )

    @classmethod
    def of(cls, day: date) -> Month:
        """The month holding ``day`` (a business date, see :func:`business_date`)."""
        _check_date("day", day)
        return cls(year=day.year, month=day.month)

    @classmethod
    def parse(cls, text: str) -> Month:
        """Read ``YYYY-MM``; ``ValueError`` otherwise."""
        match = _MONTH_TEXT.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"a month is written YYYY-MM, not {text!r}")
        return cls(year=int(match[1]), month=int(match[2]))

    @property
    def days(self) -> int:
        """How many days the month has (28 to 31)."""
        return calendar.monthrange(self.year, self.month)[1]

    @property
    def first(self) -> date:
        return date(self.year, self.month, 1)

    @property
    def last(self) -> date:
        return date(self.year, self.month, self.days)

    def next(self) -> Month:
        if self.month == 12:
            return Month(year=self.year + 1, month=1)
        return Month(year=self.year, month=self.month + 1)

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and (day.year, day.month) == (self.year, self.month)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Charge:
    """One subscription's charge for one month: the active days and the amount (R3–R5)."""

    month: Month
    days: int
    amount: Decimal

    def __post_init__(self) -> None:
        if not isinstance(self.month, Month):
            raise TypeError(f"month must be a Month, not {self.month!r}")
        if isinstance(self.days, bool) or not isinstance(self.days, int):
            raise TypeError(f"days must be a whole number, not {self.days!r}")
        if not 1 <= self.days <= self.month.days:
            raise ValueError(
                f"{self.month} has 1 to {self.month.days} active days, not {self.days}"
            )
        if not isinstance(self.amount, Decimal):
            raise TypeError(f"amount must be a Decimal, not {type(self.amount).__name__}")
        if not self.amount.is_finite() or self.amount < 0:
            raise ValueError(f"amount must be a finite, non-negative sum, not {self.amount}")
        if self.amount.as_tuple().exponent != -2:
            raise ValueError(f"amount must be quantized to the cent, not {self.amount}")


def add_months(day: date, months: int) -> date:
    """``day`` moved by whole calendar months, the day clamped to the month's end."""
    _check_date("day", day)
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _check_fee(fee: Decimal) -> None:
    if not isinstance(fee, Decimal):
        raise TypeError(f"fee must be a Decimal, not {type(fee).__name__} (floats are not money)")
    if not fee.is_finite() or fee < 0:
        raise ValueError(f"fee must be a finite, non-negative amount, not {fee}")
    if fee != fee.quantize(CENT):
        raise ValueError(f"fee {fee} has more than 2 decimal places (whole cents)")


def _check_span(active_from: date, active_to: date | None) -> None:
    _check_date("active_from", active_from)
    if active_to is not None:
        _check_date("active_to", active_to)
        if active_to < active_from:
            raise ValueError(
                f"the unsubscription date {active_to} is before the order date {active_from}"
            )


def _charge(fee: Decimal, month: Month, start: date, end: date) -> Charge:
    """The one formula of R3/R5 for the active days ``start``..``end`` (both in ``month``)."""
    days = (end - start).days + 1
    with localcontext() as ctx:
        # An exact half cent is a terminating decimal and is computed exactly; any other
        # quotient lies at least 1/(200 × month.days) from a half cent, so a dozen digits past
        # the cent decide its rounding. Give the fee's whole digits room on top of those.
        ctx.prec = max(28, fee.adjusted() + 16)
        amount = (fee * days / month.days).quantize(CENT, rounding=ROUND_HALF_UP)
    return Charge(month=month, days=days, amount=amount)


def monthly_charge(
    fee: Decimal, month: Month, active_from: date, active_to: date | None
) -> Charge | None:
    """The charge for ``month`` of a subscription active ``active_from``..``active_to`` (R3–R5).

    Both dates are business dates and both are active days; ``active_to`` None means still
    active (renewed at each month end, R4). None when no day of ``month`` is active.
    """
    _check_fee(fee)
    _check_span(active_from, active_to)
    start = max(month.first, active_from)
    end = month.last if active_to is None else min(month.last, active_to)
    if start > end:
        return None
    return _charge(fee, month, start, end)


def first_charge(fee: Decimal, ordered_on: date) -> Charge:
    """R3: the order month, by day from the order day to the month's last day."""
    _check_fee(fee)
    _check_span(ordered_on, None)
    month = Month.of(ordered_on)
    return _charge(fee, month, ordered_on, month.last)


def final_charge(fee: Decimal, started_on: date, ended_on: date) -> Charge:
    """R5: the unsubscription month, from its first day (or the order day) to ``ended_on``."""
    _check_fee(fee)
    _check_span(started_on, ended_on)
    month = Month.of(ended_on)
    return _charge(fee, month, max(month.first, started_on), ended_on)


def charges_between(
    fee: Decimal, active_from: date, active_to: date | None, through: Month
) -> list[Charge]:
    """Every month's charge from the order month to ``through`` or the end month, if earlier."""
    _check_fee(fee)
    _check_span(active_from, active_to)
    last = through if active_to is None else min(through, Month.of(active_to))
    charges: list[Charge] = []
    month = Month.of(active_from)
    while month <= last:
        end = month.last if active_to is None else min(month.last, active_to)
        charges.append(_charge(fee, month, max(month.first, active_from), end))
        month = month.next()
    return charges


class Term(NamedTuple):
    """One tariff term of R4: its number (from 1) and its first and last days."""

    number: int
    start: date
    end: date


def _term_start(started_on: date, number: int) -> date:
    return add_months(started_on, (number - 1) * TERM_MONTHS)


def term_end(started_on: date) -> date:
    """The last day of the first 24-month term of a subscription ordered on ``started_on``."""
    return _term_start(started_on, 2) - timedelta(days=1)


def current_term(started_on: date, today: date) -> Term:
    """The tariff term (R4) in force on ``today``; terms roll over every 24 months."""
    _check_date("started_on", started_on)
    _check_date("today", today)
    if today < started_on:
        raise ValueError(f"{today} is before the subscription started on {started_on}")
    elapsed = (today.year - started_on.year) * 12 + today.month - started_on.month
    # Whole months elapsed by calendar month can overcount by one when today's day of the
    # month falls before the anniversary's.
    number = elapsed // TERM_MONTHS + 1
    if _term_start(started_on, number) > today:
        number -= 1
    return Term(
        number=number,
        start=_term_start(started_on, number),
        end=_term_start(started_on, number + 1) - timedelta(days=1),
    )


def purge_due(ended_at: datetime) -> datetime:
    """R5: when an unsubscribed record is purged, six calendar months on (Shanghai wall time).

    The day is clamped to the month's end (31 August → 28/29 February); returned in UTC.
    """
    local = aware_utc(ended_at, "ended_at").astimezone(OPERATOR_TZ)
    day = add_months(local.date(), PURGE_AFTER_MONTHS)
    return local.replace(year=day.year, month=day.month, day=day.day).astimezone(UTC)
