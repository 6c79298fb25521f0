"""Broadband stop, resume, teardown and emergency resume: the pure state machine (R8–R12, R15).

The provisioning system pushes broadband orders through the platform; this module decides
what each order does to one account's broadband state. It does no I/O: the caller loads a
:class:`BroadbandState`, calls :func:`apply` (or :func:`expire` from the Clock-driven job),
persists ``Outcome.state`` and turns a :class:`Refusal` into its HTTP error.

Rules and the choices made where they leave room (RULES.md, "Conventions chosen here"):

- **Stop set (R10).** Stops of different types are held at once, each with the instant it
  started; the account is active only when none is in force. A resume lifts exactly its
  own type. Stopping a type already stopped is not applied (``already_stopped``) and keeps
  the original start, so the stop stays one continuous stop for R11 and R15; resuming a
  type that is not stopped is not applied (``not_stopped``).
- **Business time.** Decisions use the order's ``issued_at`` (the caller fills it from the
  service clock when the platform omits it); ``now`` is the service clock and only lets an
  emergency window that has run out lapse before and after the order.
- **Staleness.** An order issued before the last order of the same account and key (stop
  type; ``"teardown"``; ``"emergency"``) is ``stale``: nothing changes. The convention
  speaks of the last *applied* order; here a stop or resume that was a no-op
  (``already_stopped``/``not_stopped``) also records its ``issued_at``, because it is the
  platform's newest word on that type: a resume overtaken in transit by its own stop would
  otherwise be lost and leave the account stopped for good. Only ``Outcome.state``'s
  bookkeeping changes then; always persist it.
- **Teardown (R9).** Refused (``active_subscriptions``) while a replay product is active;
  after teardown every order is refused (``torn_down``). Stops in force are kept as history.
- **Emergency resume (R11, 宽带紧急复机).** Granted when the account is stopped, the star
  level is 3–7, every stop in force is an arrears type, the request falls within 7 natural
  days (Asia/Shanghai calendar) counting the stop day, and no emergency resume was granted
  in the request's calendar month (Asia/Shanghai). The stop day is that of the *earliest*
  arrears stop in force: escalating 欠费单停 to 欠费双停 does not restart the customer's
  grace. The grant suspends those arrears stops for 7 days from the request; a regular
  resume of one of them in the window lifts it for good; at the end (:func:`expire`) the
  others are in force again. A stop of a type already suspended is ``already_stopped``
  (the arrears stop was never lifted); a new stop of another type is in force at once.
- **R12.** Managed networking and replay are suspended whenever the account is not active.
- **R15.** ``inactive_since`` is the instant the account last stopped being active (an
  emergency resume makes it active, so its end starts a new count); the family cloud
  closes 3 calendar months after it and is deleted 6 calendar months after it, months
  counted on the Asia/Shanghai wall clock (day clamped to the month's last day: a stop on
  30 November closes on 28/29 February). A torn-down account keeps counting.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal, TypeAlias, TypeVar

from devices.clock import OPERATOR_TZ, aware_utc, operator_date
from devices.errors import Conflict

__all__ = [
    "ARREARS_TYPES",
    "EMERGENCY_DAYS",
    "EMERGENCY_KEY",
    "EMERGENCY_STAR_LEVELS",
    "TEARDOWN_KEY",
    "AccountState",
    "BroadbandState",
    "EmergencyCondition",
    "EmergencyResume",
    "FamilyCloudStatus",
    "Order",
    "Outcome",
    "Refusal",
    "Resume",
    "Stop",
    "StopType",
    "Teardown",
    "apply",
    "emergency_window",
    "expire",
    "family_cloud_status",
    "managed_networking_suspended",
    "replay_suspended",
]


class StopType(StrEnum):
    """The stop types of R10."""

    REQUESTED = "requested"  # 申请停机
    LOST = "lost"  # 挂失停机
    KEEP_NUMBER = "keep_number"  # 停机保号
    ARREARS = "arrears"  # 欠费停机
    ARREARS_ONEWAY = "arrears_oneway"  # 欠费单停
    ARREARS_TWOWAY = "arrears_twoway"  # 欠费双停
    PRE_TEARDOWN = "pre_teardown"  # 预拆机停机
    VIOLATION = "violation"  # 违章停机


#: The stops an emergency resume may lift (R11).
ARREARS_TYPES: frozenset[StopType] = frozenset(
    {StopType.ARREARS, StopType.ARREARS_ONEWAY, StopType.ARREARS_TWOWAY}
)
#: Star levels that may ask for an emergency resume (R11); star levels run from 0 to 7.
EMERGENCY_STAR_LEVELS = range(3, 8)
#: Natural days counting the stop day in which the request is allowed, and the grant's length.
EMERGENCY_DAYS = 7
#: ``last_issued`` keys of the orders that carry no stop type.
TEARDOWN_KEY = "teardown"
EMERGENCY_KEY = "emergency"

AccountState: TypeAlias = Literal["active", "stopped", "torn_down"]
ACCOUNT_STATES: tuple[AccountState, ...] = ("active", "stopped", "torn_down")


def account_state(value: str) -> AccountState:
    """A stored ``Account.broadband_state`` as its typed value (refuses anything else)."""
    for state in ACCOUNT_STATES:
        if value == state:
            return state
    raise ValueError(f"unknown broadband state {value!r}")


FamilyCloudStatus: TypeAlias = Literal["open", "closed", "deleted"]
EmergencyCondition: TypeAlias = Literal[
    "not_stopped", "star_level", "stop_types", "window", "monthly_limit"
]

_MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
_RULE = re.compile(r"R\d+")

_K = TypeVar("_K", bound=str)


def _check_star_level(star_level: int) -> None:
    if not 0 <= star_level <= 7:
        raise ValueError(f"star_level must be from 0 to 7, not {star_level}")


class _FrozenTimes(Mapping[_K, datetime]):
    """An immutable, hashable mapping to instants, so that states compare and hash by value."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[_K, datetime] | Iterable[tuple[_K, datetime]] = ()) -> None:
        self._items: dict[_K, datetime] = dict(items)

    def __getitem__(self, key: _K) -> datetime:
        return self._items[key]

    def __iter__(self) -> Iterator[_K]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return repr(self._items)


def _month_key(at: datetime) -> str:
    return operator_date(at).strftime("%Y-%m")


def _add_months(at: datetime, months: int) -> datetime:
    """``at`` plus calendar months on the Asia/Shanghai wall clock, the day clamped (R15)."""
    local = operator_date(at)
    index = local.year * 12 + local.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    day = min(local.day, calendar.monthrange(year, month)[1])
    return local.replace(year=year, month=month, day=day, tzinfo=OPERATOR_TZ).astimezone(UTC)


def _start_of_day(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=OPERATOR_TZ).astimezone(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class BroadbandState:
    """One account's broadband state. The initial state, ``BroadbandState()``, is active.

    ``stopped_since`` holds every stop recorded (type -> start); during an emergency resume
    the arrears stops in ``emergency_suspended`` stay recorded but are not in force until
    ``emergency_until``. ``last_issued`` maps a stop type, ``"teardown"`` or
    ``"emergency"`` to the ``issued_at`` of the newest order seen for it (staleness).
    ``inactive_since`` is set exactly when the account is not active (R15).
    """

    stopped_since: Mapping[StopType, datetime] = field(default_factory=_FrozenTimes)
    torn_down: bool = False
    emergency_until: datetime | None = None
    emergency_suspended: frozenset[StopType] = frozenset()
    last_emergency_month: str | None = None
    last_issued: Mapping[str, datetime] = field(default_factory=_FrozenTimes)
    inactive_since: datetime | None = None

    def __post_init__(self) -> None:
        stops = _FrozenTimes(
            {
                StopType(kind): aware_utc(at, f"the start of the {kind} stop")
                for kind, at in self.stopped_since.items()
            }
        )
        object.__setattr__(self, "stopped_since", stops)
        keys = {*StopType, TEARDOWN_KEY, EMERGENCY_KEY}
        issued: dict[str, datetime] = {}
        for key, at in self.last_issued.items():
            if key not in keys:
                raise ValueError(f"last_issued has an unknown key {key!r}")
            issued[key] = aware_utc(at, f"last_issued[{key!r}]")
        object.__setattr__(self, "last_issued", _FrozenTimes(issued))
        suspended = frozenset(StopType(kind) for kind in self.emergency_suspended)
        object.__setattr__(self, "emergency_suspended", suspended)
        if not suspended <= ARREARS_TYPES:
            raise ValueError("an emergency resume suspends arrears stops only")
        if not suspended <= stops.keys():
            raise ValueError("an emergency resume suspends only stops that are recorded")
        if self.emergency_until is not None:
            object.__setattr__(
                self, "emergency_until", aware_utc(self.emergency_until, "emergency_until")
            )
        if (self.emergency_until is None) != (not suspended):
            raise ValueError("emergency_until is set exactly when stops are suspended")
        if self.torn_down and self.emergency_until is not None:
            raise ValueError("a torn-down account has no emergency resume running")
        month = self.last_emergency_month
        if month is not None and not _MONTH.fullmatch(month):
            raise ValueError(f"last_emergency_month must be 'YYYY-MM', not {month!r}")
        if self.inactive_since is not None:
            object.__setattr__(
                self, "inactive_since", aware_utc(self.inactive_since, "inactive_since")
            )
        if (self.inactive_since is None) != (self.state == "active"):
            raise ValueError("inactive_since is set exactly when the account is not active")

    @property
    def stops(self) -> frozenset[StopType]:
        """Every stop recorded, including those an emergency resume suspends."""
        return frozenset(self.stopped_since)

    @property
    def in_force(self) -> frozenset[StopType]:
        """The stops in force: recorded and not suspended by a running emergency resume."""
        return self.stops - self.emergency_suspended

    @property
    def state(self) -> AccountState:
        if self.torn_down:
            return "torn_down"
        return "stopped" if self.in_force else "active"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Order:
    issued_at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "issued_at", aware_utc(self.issued_at, "issued_at"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Stop(_Order):
    """Stop the account's broadband for one reason (R8, R10)."""

    stop_type: StopType

    def __post_init__(self) -> None:
        _Order.__post_init__(self)
        object.__setattr__(self, "stop_type", StopType(self.stop_type))


@dataclass(frozen=True, slots=True, kw_only=True)
class Resume(_Order):
    """Lift the stop of one type (R8, R10)."""

    stop_type: StopType

    def __post_init__(self) -> None:
        _Order.__post_init__(self)
        object.__setattr__(self, "stop_type", StopType(self.stop_type))


@dataclass(frozen=True, slots=True, kw_only=True)
class Teardown(_Order):
    """Tear the broadband account down (拆机, R9)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EmergencyResume(_Order):
    """Restore service for 7 days during an arrears stop (宽带紧急复机, R11)."""


Order: TypeAlias = Stop | Resume | Teardown | EmergencyResume


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """Why an order was refused: a stable ``code``, a sentence, and the rule cited.

    ``failed`` names the emergency-resume conditions that failed (R11), in a fixed order.
    """

    code: str
    message: str
    rule: str
    failed: tuple[EmergencyCondition, ...] = ()

    def __post_init__(self) -> None:
        if not self.code or not self.message:
            raise ValueError("a refusal needs a code and a message")
        if not _RULE.fullmatch(self.rule):
            raise ValueError(f"rule must look like 'R9', not {self.rule!r}")

    def error(self) -> Conflict:
        """The refusal as a domain error: the account's state refuses the order."""
        return Conflict(self.message, code=self.code, rule=self.rule)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """The state after the order, whether it was applied, and why not.

    ``reason`` is ``already_stopped``, ``not_stopped``, ``stale`` or the refusal's code.
    """

    state: BroadbandState
    applied: bool
    reason: str | None = None
    refusal: Refusal | None = None

    def __post_init__(self) -> None:
        if self.applied and (self.reason is not None or self.refusal is not None):
            raise ValueError("an applied order has no reason and no refusal")
        if not self.applied and self.reason is None:
            raise ValueError("an order that was not applied needs a reason")
        if self.refusal is not None and self.reason != self.refusal.code:
            raise ValueError("the reason of a refused order is the refusal's code")


def _transition(before: BroadbandState, at: datetime, **changes: Any) -> BroadbandState:
    """``before`` with ``changes``, keeping ``inactive_since`` right for R15."""
    stops: Mapping[StopType, datetime] = changes.get("stopped_since", before.stopped_since)
    suspended: frozenset[StopType] = changes.get("emergency_suspended", before.emergency_suspended)
    torn_down: bool = changes.get("torn_down", before.torn_down)
    active = not torn_down and not (stops.keys() - suspended)
    inactive_since: datetime | None
    if active:
        inactive_since = None
    elif before.state == "active":
        inactive_since = at
    else:
        inactive_since = before.inactive_since
    return replace(before, inactive_since=inactive_since, **changes)


def _issued(state: BroadbandState, key: str, at: datetime) -> Mapping[str, datetime]:
    return _FrozenTimes({**state.last_issued, key: at})


def _issue_key(order: Order) -> str:
    """Staleness is judged per account and key: the stop type, or the order's kind."""
    if isinstance(order, Stop | Resume):
        return order.stop_type
    return TEARDOWN_KEY if isinstance(order, Teardown) else EMERGENCY_KEY


def _not_applied(state: BroadbandState, reason: str) -> Outcome:
    return Outcome(state=state, applied=False, reason=reason)


def _refused(state: BroadbandState, refusal: Refusal) -> Outcome:
    return Outcome(state=state, applied=False, reason=refusal.code, refusal=refusal)


def expire(state: BroadbandState, now: datetime) -> BroadbandState:
    """End an emergency resume whose 7 days have run out by ``now`` (R11, the Clock job).

    The arrears stops it suspended are in force again from ``emergency_until``; those
    resumed meanwhile were already removed. Before the end, the state is returned as is.
    """
    now = aware_utc(now, "now")
    until = state.emergency_until
    if until is None or now < until:
        return state
    return _transition(state, until, emergency_until=None, emergency_suspended=frozenset())


def emergency_window(state: BroadbandState) -> tuple[datetime, datetime] | None:
    """When an emergency resume may be asked for (R11), or None without an arrears stop.

    From the start of the stop day (the earliest arrears stop in force, Asia/Shanghai) to
    the start of the eighth natural day: the end is exclusive.
    """
    arrears = state.in_force & ARREARS_TYPES
    starts = [at for kind, at in state.stopped_since.items() if kind in arrears]
    if not starts:
        return None
    stop_day = operator_date(min(starts)).date()
    return _start_of_day(stop_day), _start_of_day(stop_day + timedelta(days=EMERGENCY_DAYS))


def _emergency_refusal(state: BroadbandState, at: datetime, star_level: int) -> Refusal | None:
    in_force = state.in_force
    if not in_force:
        running = state.emergency_until
        extra = f" (an emergency resume runs until {running.isoformat()})" if running else ""
        return Refusal(
            code="emergency_not_allowed",
            message=f"not stopped: no stop is in force{extra}",
            rule="R11",
            failed=("not_stopped",),
        )
    failed: list[EmergencyCondition] = []
    reasons: list[str] = []
    if star_level not in EMERGENCY_STAR_LEVELS:
        failed.append("star_level")
        reasons.append(f"star level {star_level} is not from 3 to 7")
    others = in_force - ARREARS_TYPES
    if others:
        failed.append("stop_types")
        names = ", ".join(sorted(others))
        reasons.append(f"stop types: only arrears stops may be in force, not {names}")
    window = emergency_window(state)
    if window is not None and not window[0] <= at < window[1]:
        failed.append("window")
        first = operator_date(window[0]).date()
        last = first + timedelta(days=EMERGENCY_DAYS - 1)
        asked = operator_date(at).date()
        reasons.append(
            f"window: asked on {asked}, outside the {EMERGENCY_DAYS} natural days "
            f"from the stop day {first} to {last}"
        )
    month = _month_key(at)
    if state.last_emergency_month == month:
        failed.append("monthly_limit")
        reasons.append(f"monthly limit: an emergency resume was already granted in {month}")
    if not failed:
        return None
    return Refusal(
        code="emergency_not_allowed",
        message="; ".join(reasons),
        rule="R11",
        failed=tuple(failed),
    )


def _stop(current: BroadbandState, order: Stop, issued: Mapping[str, datetime]) -> Outcome:
    if order.stop_type in current.stops:
        return _not_applied(replace(current, last_issued=issued), "already_stopped")
    stops = _FrozenTimes({**current.stopped_since, order.stop_type: order.issued_at})
    new = _transition(current, order.issued_at, stopped_since=stops, last_issued=issued)
    return Outcome(state=new, applied=True)


def _resume(current: BroadbandState, order: Resume, issued: Mapping[str, datetime]) -> Outcome:
    if order.stop_type not in current.stops:
        return _not_applied(replace(current, last_issued=issued), "not_stopped")
    stops = _FrozenTimes(
        {kind: since for kind, since in current.stopped_since.items() if kind != order.stop_type}
    )
    suspended = current.emergency_suspended - {order.stop_type}
    new = _transition(
        current,
        order.issued_at,
        stopped_since=stops,
        emergency_suspended=suspended,
        emergency_until=current.emergency_until if suspended else None,
        last_issued=issued,
    )
    return Outcome(state=new, applied=True)


def _teardown(
    current: BroadbandState, order: Teardown, issued: Mapping[str, datetime], subscribed: bool
) -> Outcome:
    if subscribed:
        return _refused(
            current,
            Refusal(
                code="active_subscriptions",
                message="a cloud-replay product is active on this account; "
                "unsubscribe it before the teardown",
                rule="R9",
            ),
        )
    new = _transition(
        current,
        order.issued_at,
        torn_down=True,
        emergency_until=None,
        emergency_suspended=frozenset(),
        last_issued=issued,
    )
    return Outcome(state=new, applied=True)


def _emergency(
    current: BroadbandState,
    order: EmergencyResume,
    issued: Mapping[str, datetime],
    star_level: int,
) -> Outcome:
    at = order.issued_at
    refusal = _emergency_refusal(current, at, star_level)
    if refusal is not None:
        return _refused(current, refusal)
    new = _transition(
        current,
        at,
        emergency_until=at + timedelta(days=EMERGENCY_DAYS),
        emergency_suspended=current.emergency_suspended | current.in_force,
        last_emergency_month=_month_key(at),
        last_issued=issued,
    )
    return Outcome(state=new, applied=True)


def apply(
    state: BroadbandState,
    order: Order,
    *,
    now: datetime,
    star_level: int,
    has_active_subscription: bool,
) -> Outcome:
    """Apply one platform order to an account's broadband state (R8–R11).

    ``now`` is the service clock (an emergency resume that has run out lapses first);
    ``star_level`` (0–7) and ``has_active_subscription`` are the account's, at this moment.
    """
    _check_star_level(star_level)
    current = expire(state, now)
    if current.torn_down:
        return _refused(
            current,
            Refusal(
                code="torn_down",
                message="the broadband account is torn down; it takes no more orders",
                rule="R9",
            ),
        )
    key = _issue_key(order)
    last = current.last_issued.get(key)
    if last is not None and order.issued_at < last:
        return _not_applied(current, "stale")
    issued = _issued(current, key, order.issued_at)
    if isinstance(order, Stop):
        outcome = _stop(current, order, issued)
    elif isinstance(order, Resume):
        outcome = _resume(current, order, issued)
    elif isinstance(order, Teardown):
        outcome = _teardown(current, order, issued, has_active_subscription)
    else:
        outcome = _emergency(current, order, issued, star_level)
    if not outcome.applied:
        return outcome
    return Outcome(state=expire(outcome.state, now), applied=True)


def managed_networking_suspended(state: AccountState) -> bool:
    """R12: the operator's managed networking is suspended while the account is not active."""
    return state != "active"


def replay_suspended(state: AccountState) -> bool:
    """R8: no recording accepted and no video served while the account is not active."""
    return state != "active"


def family_cloud_status(state: BroadbandState, now: datetime) -> FamilyCloudStatus:
    """R15: closed after 3, deleted after 6 calendar months not active without a break.

    Months are Asia/Shanghai calendar months from ``inactive_since``, the day clamped to
    the month's end; an emergency resume that has run out by ``now`` is taken as ended.
    """
    now = aware_utc(now, "now")
    since = expire(state, now).inactive_since  # an emergency resume that has ended counts
    if since is None:
        return "open"
    if now >= _add_months(since, 6):
        return "deleted"
    if now >= _add_months(since, 3):
        return "closed"
    return "open"
