"""When each account was not active: the history R8's boundary rule is judged against.

:mod:`devices.broadband_store` keeps the account's state *now*; a segment or clip is judged
by the moment it *started* recording (RULES.md, "Boundaries of a state change"), which may
lie before the last stop or resume. This module keeps one row per period in which the
account was not active (:class:`InactivePeriod`: stopped or torn down, from ``since`` to
``until``; ``until`` is ``None`` while it lasts) and answers, purely, what the state was at
an instant (:func:`state_at`).

Periods are half-open, ``[since, until)``: the stop's instant is inside the stop, the
resume's instant is active again. An account with no period recorded (never stopped, or
stopped before this table existed) falls back to its current state.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Field, SQLModel, col, delete, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from devices.broadband import AccountState, account_state
from devices.clock import aware_utc
from storage.db import UTCDateTime

__all__ = [
    "InactivePeriod",
    "PeriodRow",
    "Transition",
    "periods_since",
    "prune_before",
    "record_transition",
    "record_transitions",
    "state_at",
]


class PeriodRow(SQLModel, table=True):
    """One period in which an account was not active (R8, R9)."""

    __tablename__ = "broadband_inactive_periods"

    period_id: int | None = Field(default=None, primary_key=True)
    account_id: str = Field(max_length=64, index=True)
    #: ``stopped`` or ``torn_down`` (the latest state of the period).
    state: str = Field(max_length=16)
    since: datetime = Field(sa_type=UTCDateTime)
    until: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)


@dataclass(frozen=True, slots=True)
class InactivePeriod:
    """``[since, until)`` in which the account was ``state`` (``until`` None: still is)."""

    state: AccountState
    since: datetime
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.state == "active":
            raise ValueError("an inactive period is stopped or torn down, not active")
        object.__setattr__(self, "since", aware_utc(self.since, "since"))
        if self.until is not None:
            until = aware_utc(self.until, "until")
            if until < self.since:
                raise ValueError("a period cannot end before it began")
            object.__setattr__(self, "until", until)

    def holds(self, at: datetime) -> bool:
        return self.since <= at and (self.until is None or at < self.until)


def state_at(
    current: AccountState, periods: Iterable[InactivePeriod], at: datetime
) -> AccountState:
    """The account's state at ``at``: that of the period holding it, else active.

    Without any open period, a ``current`` state that is not active (stopped before the
    history was kept) is answered as is: the history cannot say when it began.
    """
    at = aware_utc(at, "at")
    periods = list(periods)
    for period in periods:
        if period.holds(at):
            return period.state
    if current != "active" and not any(period.until is None for period in periods):
        return current
    return "active"


@dataclass(frozen=True, slots=True)
class Transition:
    """An account's state moved to ``state`` (``inactive_since``: when its stop began;
    ``at``: the order's business time, the instant a resume takes effect)."""

    account_id: str
    state: AccountState
    inactive_since: datetime | None
    at: datetime


async def record_transition(
    session: AsyncSession,
    account_id: str,
    state: AccountState,
    *,
    inactive_since: datetime | None,
    at: datetime,
) -> None:
    """Keep the history after the account's state changed to ``state``
    (:func:`record_transitions` of one)."""
    await record_transitions(session, [Transition(account_id, state, inactive_since, at)])


async def record_transitions(session: AsyncSession, moves: Sequence[Transition]) -> None:
    """Keep the history after each move, in order, with one read of the open periods.

    Not active: an open period is opened at ``inactive_since`` (or kept, taking the new
    state: a stopped account torn down). Active: the open period ends at ``at`` (the
    resume's business time, never before the period began). Staged in ``session``.
    """
    if not moves:
        return
    rows = await session.exec(
        select(PeriodRow).where(
            col(PeriodRow.account_id).in_({move.account_id for move in moves}),
            col(PeriodRow.until).is_(None),
        )
    )
    open_rows: dict[str, PeriodRow] = {row.account_id: row for row in rows.all()}
    for move in moves:
        open_row = open_rows.get(move.account_id)
        if move.state == "active":
            if open_row is not None:
                open_row.until = max(aware_utc(move.at, "at"), open_row.since)
                session.add(open_row)
                del open_rows[move.account_id]
            continue
        if open_row is not None:
            open_row.state = move.state
        else:
            since = move.at if move.inactive_since is None else move.inactive_since
            open_row = PeriodRow(account_id=move.account_id, state=move.state, since=since)
            open_rows[move.account_id] = open_row
        session.add(open_row)


async def periods_since(
    session: AsyncSession, account_ids: Collection[str], since: datetime
) -> dict[str, list[InactivePeriod]]:
    """The periods of ``account_ids`` that lasted past ``since``, per account."""
    if not account_ids:
        return {}
    rows: Sequence[PeriodRow] = (
        await session.exec(
            select(PeriodRow).where(
                col(PeriodRow.account_id).in_(list(account_ids)),
                or_(col(PeriodRow.until).is_(None), col(PeriodRow.until) > since),
            )
        )
    ).all()
    found: dict[str, list[InactivePeriod]] = {}
    for row in rows:
        found.setdefault(row.account_id, []).append(
            InactivePeriod(account_state(row.state), row.since, row.until)
        )
    return found


async def prune_before(session: AsyncSession, before: datetime) -> int:
    """Forget the periods that ended before ``before`` (nothing judged or shown from then on
    falls in them); return how many. The caller commits."""
    result = await (await session.connection()).execute(
        delete(PeriodRow).where(col(PeriodRow.until) < before)
    )
    return int(result.rowcount)
