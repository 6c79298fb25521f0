"""The cloud-replay plan catalog (R1): two families, each in three retentions, with monthly fees.

R1 names six plans: *continuous* (全天云回看, 24-hour recording) and *event* (事件云回看,
one-minute clips when something happens), each with 1-, 7- or 30-day retention.
:data:`DEFAULT_PLANS` holds them with the operator's monthly fees in CNY. ``KANJIA_PLANS_FILE``
may name a JSON or TOML file that replaces the catalog (:func:`load_plans`; the same file may
also hold the home-network products and membership tiers, :mod:`replay.catalog`)::

    {"plans": [{"id": "continuous-7d", "family": "continuous", "retention_days": 7,
                "monthly_fee": "10.00"}, ...]}

Fees are decimal *strings* with at most two decimal places: a JSON or TOML number is refused,
because a float is not money. A malformed file raises :class:`PlansFileError`, whose message
names the file, the entry (index and id) and what is wrong, so that start-up stops with a
sentence the operator can act on.

Nothing here does I/O except :func:`load_plans`, which reads the one file it is given.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType

from devices.errors import DomainError

__all__ = [
    "DEFAULT_CATALOG",
    "DEFAULT_PLANS",
    "TOP_LEVEL_KEYS",
    "Family",
    "Plan",
    "PlanCatalog",
    "PlansError",
    "PlansFileError",
    "UnknownPlan",
    "load_plans",
    "read_plans_document",
]

_CENT = Decimal("0.01")
#: The top-level keys of a plans file: the cloud-replay plans, and the other products'
#: catalogs (:mod:`replay.catalog`).
TOP_LEVEL_KEYS = ("plans", "home_network", "memberships")
#: The keys of one plan entry in a plans file, in the order messages list them.
_ENTRY_KEYS = ("id", "family", "retention_days", "monthly_fee")
#: The shape of a fee string: digits, optionally a point and digits (sign checked by Plan).
_FEE_TEXT = re.compile(r"-?\d+(\.\d+)?")


class PlansError(DomainError):
    """Root of the errors of the plan catalog."""

    code = "plans_error"


class UnknownPlan(PlansError):
    """No plan with this id is in the catalog."""

    code = "unknown_plan"

    def __init__(self, plan_id: str, *, known: tuple[str, ...]) -> None:
        super().__init__(f"unknown plan {plan_id!r}; the catalog has {', '.join(known)}")
        self.plan_id = plan_id
        self.known = known


class PlansFileError(PlansError):
    """A plans file that cannot be used; ``index`` and ``plan_id`` locate the bad entry."""

    code = "plans_file"

    def __init__(
        self,
        *,
        path: Path,
        problem: str,
        index: int | None = None,
        plan_id: str | None = None,
    ) -> None:
        where = ""
        if index is not None:
            where = f"plans[{index}]"
            if plan_id is not None:
                where += f" (id {plan_id!r})"
            where += ": "
        super().__init__(f"plans file {path}: {where}{problem}")
        self.path = path
        self.problem = problem
        self.index = index
        self.plan_id = plan_id


class Family(StrEnum):
    """The two product families of R1."""

    CONTINUOUS = "continuous"  # 全天云回看: uninterrupted 24-hour recording
    EVENT = "event"  # 事件云回看: one-minute clips when an event happens


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """One cloud-replay product: its family, how long video is kept, and its monthly fee (CNY).

    ``monthly_fee`` is a :class:`~decimal.Decimal` of whole cents, kept quantized to two places
    (``Decimal("10")`` is stored as ``Decimal("10.00")``).
    """

    id: str
    family: Family
    retention_days: int
    monthly_fee: Decimal

    def __post_init__(self) -> None:
        if not isinstance(self.id, str):
            raise TypeError(f"id must be a string, not {self.id!r}")
        if not self.id or self.id != self.id.strip() or any(c.isspace() for c in self.id):
            raise ValueError(f"id must be a non-empty word without spaces, not {self.id!r}")
        if not isinstance(self.family, Family):
            raise TypeError(f"family must be a Family, not {self.family!r}")
        if (
            isinstance(self.retention_days, bool)
            or not isinstance(self.retention_days, int)
            or self.retention_days <= 0
        ):
            raise ValueError(
                f"retention_days must be a positive whole number of days, "
                f"not {self.retention_days!r}"
            )
        fee = self.monthly_fee
        if not isinstance(fee, Decimal):
            raise TypeError(
                f"monthly_fee must be a Decimal, not {type(fee).__name__} (floats are not money)"
            )
        if not fee.is_finite():
            raise ValueError(f"monthly_fee must be a finite amount, not {fee}")
        if fee < 0:
            raise ValueError(f"monthly_fee must not be negative, not {fee}")
        if fee != fee.quantize(_CENT):
            raise ValueError(f"monthly_fee {fee} has more than 2 decimal places (whole cents)")
        object.__setattr__(self, "monthly_fee", fee.quantize(_CENT))


#: The six plans of R1 with the operator's monthly fees (CNY).
DEFAULT_PLANS: tuple[Plan, ...] = tuple(
    Plan(id=f"{family}-{days}d", family=family, retention_days=days, monthly_fee=Decimal(fee))
    for family, fees in (
        (Family.CONTINUOUS, ("5.00", "10.00", "30.00")),
        (Family.EVENT, ("3.00", "6.00", "15.00")),
    )
    for days, fee in zip((1, 7, 30), fees, strict=True)
)


class PlanCatalog:
    """The plans on sale, by id, in the order they were given."""

    __slots__ = ("_by_id",)

    def __init__(self, *, plans: Iterable[Plan]) -> None:
        by_id: dict[str, Plan] = {}
        for plan in plans:
            if not isinstance(plan, Plan):
                raise TypeError(f"a plan catalog holds Plan values, not {plan!r}")
            if plan.id in by_id:
                raise ValueError(f"plan id {plan.id!r} appears twice in the catalog")
            by_id[plan.id] = plan
        if not by_id:
            raise ValueError("a plan catalog needs at least one plan")
        self._by_id = MappingProxyType(by_id)

    def get(self, plan_id: str) -> Plan:
        """The plan with this id; :class:`UnknownPlan` when there is none."""
        try:
            return self._by_id[plan_id]
        except KeyError as exc:
            raise UnknownPlan(plan_id, known=self.ids) from exc

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._by_id)

    def __iter__(self) -> Iterator[Plan]:
        return iter(self._by_id.values())

    def __contains__(self, plan_id: object) -> bool:
        return isinstance(plan_id, str) and plan_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def __repr__(self) -> str:
        return f"PlanCatalog({', '.join(self._by_id)})"


#: The catalog used when no plans file is configured.
DEFAULT_CATALOG = PlanCatalog(plans=DEFAULT_PLANS)


class _JsonObject(dict[str, object]):
    """A JSON object that remembers keys given twice (``json`` keeps the last silently)."""

    __slots__ = ("duplicate_keys",)

    def __init__(self, pairs: list[tuple[str, object]]) -> None:
        super().__init__(pairs)
        seen: set[str] = set()
        twice: set[str] = set()
        for key, _ in pairs:
            (twice if key in seen else seen).add(key)
        self.duplicate_keys = sorted(twice)


def load_plans(path: Path) -> PlanCatalog:
    """Read a plans file (``.json`` or ``.toml``) into a catalog; :class:`PlansFileError` if bad."""
    entries = _plan_entries(path, _read_document(path))
    plans: list[Plan] = []
    first_index: dict[str, int] = {}
    for index, entry in enumerate(entries):
        plan = _plan_from_entry(path, index, entry)
        if plan.id in first_index:
            raise PlansFileError(
                path=path,
                index=index,
                plan_id=plan.id,
                problem=f"duplicate id, already used by plans[{first_index[plan.id]}]",
            )
        first_index[plan.id] = index
        plans.append(plan)
    return PlanCatalog(plans=plans)


def read_plans_document(path: Path) -> object:
    """The parsed plans file (JSON or TOML), for the catalogs that share it; a
    :class:`PlansFileError` when it cannot be read or parsed."""
    return _read_document(path)


def _read_document(path: Path) -> object:
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise PlansFileError(path=path, problem="the name must end in .json or .toml")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PlansFileError(path=path, problem="is not UTF-8 text") from exc
    except OSError as exc:
        raise PlansFileError(path=path, problem=f"cannot be read: {exc.strerror}") from exc
    if suffix == ".json":
        try:
            document: object = json.loads(text, object_pairs_hook=_JsonObject)
        except json.JSONDecodeError as exc:
            raise PlansFileError(
                path=path,
                problem=f"is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            ) from exc
        return document
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlansFileError(path=path, problem=f"is not valid TOML: {exc}") from exc


def _plan_entries(path: Path, document: object) -> list[object]:
    if not isinstance(document, dict) or "plans" not in document:
        raise PlansFileError(path=path, problem="must hold a 'plans' list at the top level")
    if isinstance(document, _JsonObject) and document.duplicate_keys:
        raise PlansFileError(
            path=path, problem=f"top-level key {document.duplicate_keys[0]!r} is given twice"
        )
    extra = sorted(set(document) - set(TOP_LEVEL_KEYS))
    if extra:
        raise PlansFileError(
            path=path,
            problem=f"unknown top-level key {extra[0]!r} "
            f"(allowed: {', '.join(map(repr, TOP_LEVEL_KEYS))})",
        )
    entries = document["plans"]
    if not isinstance(entries, list):
        raise PlansFileError(path=path, problem="'plans' must be a list of plan entries")
    if not entries:
        raise PlansFileError(path=path, problem="defines no plans")
    return entries


def _plan_from_entry(path: Path, index: int, entry: object) -> Plan:
    if not isinstance(entry, dict):
        raise PlansFileError(
            path=path,
            index=index,
            problem=f"must be a table with the keys {', '.join(_ENTRY_KEYS)}",
        )
    raw_id = entry.get("id")
    plan_id = raw_id if isinstance(raw_id, str) else None

    def bad(problem: str) -> PlansFileError:
        return PlansFileError(path=path, index=index, plan_id=plan_id, problem=problem)

    if isinstance(entry, _JsonObject) and entry.duplicate_keys:
        raise bad(f"key {entry.duplicate_keys[0]!r} is given twice")
    unknown = sorted(set(entry) - set(_ENTRY_KEYS))
    if unknown:
        raise bad(
            f"unknown key {', '.join(map(repr, unknown))} (expected {', '.join(_ENTRY_KEYS)})"
        )
    missing = [key for key in _ENTRY_KEYS if key not in entry]
    if missing:
        raise bad(f"missing key {', '.join(map(repr, missing))}")

    raw_family = entry["family"]
    try:
        family = Family(raw_family)
    except ValueError as exc:
        expected = " or ".join(repr(str(f)) for f in Family)
        raise bad(f"unknown family {raw_family!r} (expected {expected})") from exc

    raw_fee = entry["monthly_fee"]
    if isinstance(raw_fee, int | float) and not isinstance(raw_fee, bool):
        raise bad(
            f'monthly_fee must be a decimal string such as "10.00", not the number {raw_fee!r}: '
            "floats are not money"
        )
    if not isinstance(raw_fee, str):
        raise bad(f'monthly_fee must be a decimal string such as "10.00", not {raw_fee!r}')
    if not _FEE_TEXT.fullmatch(raw_fee):
        raise bad(f'monthly_fee {raw_fee!r} is not a decimal string such as "10.00"')

    try:
        return Plan(
            id=entry["id"],  # Plan checks the types of id and retention_days and says so
            family=family,
            retention_days=entry["retention_days"],
            monthly_fee=Decimal(raw_fee),
        )
    except (TypeError, ValueError) as exc:
        raise bad(str(exc)) from exc
