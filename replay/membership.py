"""Family-cloud membership (家庭云会员, R18): the tier catalog and the pure rules.

No I/O except :func:`load_tiers` (the plans file); the SQL is :mod:`replay.membership_store`,
the orchestration ``gateway.memberships``.

- **Tiers.** ``ordinary``, ``gold`` and ``platinum`` (普通/黄金/铂金会员), each with a monthly
  fee (CNY, Decimal), a family-cloud quota in bytes and a validity in months (12). The
  seed prices no tier: :data:`DEFAULT_TIERS` are this service's placeholders, replaced by a
  ``memberships`` list in the plans file (``KANJIA_PLANS_FILE``)::

      {"plans": [...], "memberships": [{"id": "gold", "monthly_fee": "20.00",
                                        "quota_bytes": 2199023255552, "validity_months": 12}]}

- **One per account (no stacking).** A membership is *held* from its order until its
  unsubscription takes effect; while one is held a second order, of any tier, is refused
  (:class:`MembershipHeld`, R18).
- **Validity and renewal.** Effective at once; valid one year, through the day before the
  same date a year later (Asia/Shanghai; 29 February → 28 February), then renewed for
  another year without objection (:func:`valid_until`, :func:`periods_elapsed`).
- **Charges.** R3's formula: the order month by day from the order day; each later month
  the full fee; the unsubscription month in full (it takes effect on the next month's first
  day), so the last active day is that month's last (:func:`last_active_day`).
- **Unsubscription** takes effect on the first day of the next month, 00:00 Asia/Shanghai
  (:func:`takes_effect`). Statuses: ``active``, ``unsubscribed`` (ordered, still in force
  until then), ``ended`` (no longer in force) — :func:`status_at`, exact whatever the job.
- **Overflow.** If, when it takes effect, the saved content exceeds the quota left (the
  base quota without a membership), the family cloud is read-only for three months
  (:func:`read_only_until`: browse, download and delete yes; save and upload no), then the
  saved items are deleted oldest first until the content fits (:func:`cleanup_order`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Literal, TypeAlias

from devices.clock import OPERATOR_TZ, aware_utc
from devices.errors import Conflict, Forbidden, Invalid
from replay.billing import CENT, Month, add_months, business_date
from replay.plans import PlansFileError, read_plans_document

__all__ = [
    "DEFAULT_TIERS",
    "READ_ONLY_MONTHS",
    "MembershipHeld",
    "MembershipNotActive",
    "MembershipStatus",
    "ReadOnly",
    "Tier",
    "TierCatalog",
    "UnknownTier",
    "cleanup_order",
    "last_active_day",
    "load_tiers",
    "periods_elapsed",
    "read_only_until",
    "status_at",
    "takes_effect",
    "valid_until",
]

#: How long an overflowing family cloud stays read-only before its cleanup (R18).
READ_ONLY_MONTHS = 3

MembershipStatus: TypeAlias = Literal["active", "unsubscribed", "ended"]

_TIER_KEYS = ("id", "monthly_fee", "quota_bytes", "validity_months")
_FEE_TEXT = re.compile(r"\d+(\.\d{1,2})?")


class UnknownTier(Invalid):
    code = "unknown_tier"
    rule = "R18"

    def __init__(self, tier: str, *, known: Sequence[str]) -> None:
        super().__init__(f"unknown membership tier {tier!r}; the catalog has {', '.join(known)}")
        self.tier = tier


class MembershipHeld(Conflict):
    code = "membership_held"
    rule = "R18"

    def __init__(self, account_id: str, *, held: str, tier: str) -> None:
        super().__init__(
            f"account {account_id} holds a {tier} family-cloud membership already ({held}): "
            "one membership per account, no stacking"
        )
        self.held = held


class MembershipNotActive(Conflict):
    code = "membership_not_active"
    rule = "R18"

    def __init__(self, membership_id: str, status: str) -> None:
        super().__init__(f"membership {membership_id} is {status}: nothing to unsubscribe")


class ReadOnly(Conflict):
    code = "family_cloud_read_only"
    rule = "R18"

    def __init__(self, until: datetime) -> None:
        super().__init__(
            "the family cloud holds more than its quota since the membership ended: it is "
            f"read-only until {until.isoformat()} (browse and download only), then cleaned up"
        )


class NotOwner(Forbidden):
    code = "not_account_owner"
    rule = "R7"

    def __init__(self) -> None:
        super().__init__("only the broadband account's owner may order a family-cloud membership")


@dataclass(frozen=True, slots=True, kw_only=True)
class Tier:
    """One membership tier: its monthly fee (CNY), quota (bytes) and validity (months)."""

    id: str
    monthly_fee: Decimal
    quota_bytes: int
    validity_months: int = 12

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id or any(c.isspace() for c in self.id):
            raise ValueError(f"id must be a non-empty word, not {self.id!r}")
        fee = self.monthly_fee
        if not isinstance(fee, Decimal):
            raise TypeError(f"monthly_fee must be a Decimal, not {type(fee).__name__}")
        if not fee.is_finite() or fee < 0 or fee != fee.quantize(CENT):
            raise ValueError(f"monthly_fee must be whole cents, not negative: not {fee}")
        object.__setattr__(self, "monthly_fee", fee.quantize(CENT))
        for name in ("quota_bytes", "validity_months"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive whole number, not {value!r}")


_GIB = 1024**3

#: Placeholders (the seed prices no tier): 10 / 20 / 30 CNY a month for 500 GiB, 2 TiB, 4 TiB.
DEFAULT_TIERS: tuple[Tier, ...] = (
    Tier(id="ordinary", monthly_fee=Decimal("10.00"), quota_bytes=500 * _GIB),
    Tier(id="gold", monthly_fee=Decimal("20.00"), quota_bytes=2048 * _GIB),
    Tier(id="platinum", monthly_fee=Decimal("30.00"), quota_bytes=4096 * _GIB),
)


class TierCatalog:
    """The membership tiers on sale, by id, in the order given."""

    __slots__ = ("_by_id",)

    def __init__(self, tiers: Iterable[Tier] = DEFAULT_TIERS) -> None:
        by_id: dict[str, Tier] = {}
        for tier in tiers:
            if tier.id in by_id:
                raise ValueError(f"tier id {tier.id!r} appears twice")
            by_id[tier.id] = tier
        if not by_id:
            raise ValueError("a tier catalog needs at least one tier")
        self._by_id = MappingProxyType(by_id)

    def get(self, tier_id: str) -> Tier:
        """The tier with this id; :class:`UnknownTier` (R18) when there is none."""
        try:
            return self._by_id[tier_id]
        except KeyError as exc:
            raise UnknownTier(tier_id, known=tuple(self._by_id)) from exc

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._by_id)

    def __iter__(self) -> Iterator[Tier]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)


def load_tiers(path: Path) -> TierCatalog:
    """The ``memberships`` list of a plans file, or the defaults when it has none."""
    document = read_plans_document(path)
    entries = document.get("memberships") if isinstance(document, dict) else None
    if entries is None:
        return TierCatalog()
    if not isinstance(entries, list) or not entries:
        raise PlansFileError(path=path, problem="'memberships' must be a non-empty list")
    tiers = []
    for index, entry in enumerate(entries):
        tiers.append(_tier_of(path, index, entry))
    try:
        return TierCatalog(tiers)
    except ValueError as exc:
        raise PlansFileError(path=path, problem=f"memberships: {exc}") from exc


def _tier_of(path: Path, index: int, entry: object) -> Tier:
    def bad(problem: str) -> PlansFileError:
        return PlansFileError(path=path, problem=f"memberships[{index}]: {problem}")

    if not isinstance(entry, dict):
        raise bad(f"must be a table with the keys {', '.join(_TIER_KEYS)}")
    unknown = sorted(set(entry) - set(_TIER_KEYS))
    missing = [key for key in _TIER_KEYS[:3] if key not in entry]
    if unknown or missing:
        raise bad(f"unknown keys {unknown}, missing keys {missing}")
    fee = entry["monthly_fee"]
    if not isinstance(fee, str) or not _FEE_TEXT.fullmatch(fee):
        raise bad(f'monthly_fee must be a decimal string such as "20.00", not {fee!r}')
    try:
        return Tier(
            id=entry["id"],
            monthly_fee=Decimal(fee),
            quota_bytes=entry["quota_bytes"],
            validity_months=entry.get("validity_months", 12),
        )
    except (TypeError, ValueError) as exc:
        raise bad(str(exc)) from exc


# --- dates -------------------------------------------------------------------------------


def valid_until(start: date, months: int, periods: int = 1) -> date:
    """The last valid day after ``periods`` validity periods of ``months`` from ``start``:
    the day before the same date ``months × periods`` later or, where that month has no such
    date, its last day (29 February → 28 February, as R16 reads it)."""
    same = add_months(start, months * periods)
    return same if same.day != start.day else same - timedelta(days=1)


def periods_elapsed(start: date, months: int, today: date) -> int:
    """How many validity periods have begun by ``today`` (1 in the first year): the
    membership renewed without objection is valid through ``valid_until(start, months, n)``."""
    if today < start:
        raise ValueError(f"{today} is before the membership started on {start}")
    n = ((today.year - start.year) * 12 + today.month - start.month) // months + 1
    while valid_until(start, months, n) < today:
        n += 1
    while n > 1 and valid_until(start, months, n - 1) >= today:
        n -= 1
    return n


def _shanghai_midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=OPERATOR_TZ).astimezone(UTC)


def last_active_day(at: datetime) -> date:
    """R18: an unsubscription at ``at`` leaves the membership in force, and charged in full,
    through the last day of that month (Asia/Shanghai)."""
    return Month.of(business_date(at)).last


def takes_effect(at: datetime) -> datetime:
    """R18: the instant an unsubscription at ``at`` takes effect: the next month's first day,
    00:00 Asia/Shanghai (in UTC)."""
    return _shanghai_midnight(last_active_day(at) + timedelta(days=1))


def read_only_until(effective: datetime) -> datetime:
    """R18: the end of the three read-only months that begin at ``effective`` (the same
    Shanghai wall time three calendar months later)."""
    local = aware_utc(effective, "effective").astimezone(OPERATOR_TZ)
    day = add_months(local.date(), READ_ONLY_MONTHS)
    return local.replace(year=day.year, month=day.month, day=day.day).astimezone(UTC)


def status_at(status: str, ends_at: datetime | None, now: datetime) -> MembershipStatus:
    """The status at ``now`` whether or not the job has run: an unsubscription whose
    effective instant has passed is ``ended``."""
    if status == "active":
        return "active"
    if status == "unsubscribed" and (ends_at is None or now < ends_at):
        return "unsubscribed"
    return "ended"


# --- overflow ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Saved:
    """What the cleanup needs of one saved item."""

    key: int
    saved_at: datetime
    bytes: int


def cleanup_order(items: Iterable[Saved], quota: int) -> list[int]:
    """R18: the items to delete, oldest saved first (ties by key), until what is left fits
    ``quota``; empty when it fits already."""
    ordered = sorted(items, key=lambda item: (item.saved_at, item.key))
    used = sum(item.bytes for item in ordered)
    doomed: list[int] = []
    for item in ordered:
        if used <= quota:
            break
        doomed.append(item.key)
        used -= item.bytes
    return doomed
