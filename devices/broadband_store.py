"""Each account's broadband state, stored (R8–R12, R15).

:mod:`devices.broadband` decides; this module keeps its :class:`BroadbandState` in one
row per account (:class:`BroadbandRecord`: the state as JSON, plus the instants the
Clock-driven jobs look for, indexed) and keeps ``Account.broadband_state`` — the column
the rest of the service reads for R8 — equal to the state's ``active``/``stopped``/
``torn_down``. ``Outcome.state`` is saved after every order, applied or not: a no-op
order still records its ``issued_at`` for staleness, and an emergency resume that has run
out lapses there.

Orders of one account are serialised by :func:`lock`, a no-op ``UPDATE`` of the
account row: a row lock on PostgreSQL, the write lock on SQLite, in both cases held until
the transaction ends, so two gateways cannot interleave a read and a write of one state.

R15: ``family_cloud`` records what the family-cloud job has done (``open``, ``closed``,
``deleted``); whether saves are allowed *now* is derived from the state by
:func:`family_cloud_open`, so a closure is exact to the second even before the job runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypeAlias

from sqlalchemy import JSON, Column, bindparam, update
from sqlmodel import Field, SQLModel, col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from devices.broadband import BroadbandState, FamilyCloudStatus, StopType, family_cloud_status
from devices.errors import DomainError, NotFound
from devices.models import Account
from storage.db import UTCDateTime, insert_many, update_many

__all__ = [
    "BroadbandRecord",
    "CorruptState",
    "FamilyCloudAction",
    "LastOrder",
    "Locked",
    "decode",
    "encode",
    "expiring_emergencies",
    "family_cloud_action",
    "family_cloud_candidates",
    "family_cloud_open",
    "load",
    "load_record",
    "lock",
    "lock_many",
    "save",
    "stage",
    "state_of",
    "write_staged",
]

#: Fewer days than any 3 (6) calendar months: a cheap index filter before the exact rule.
_CLOSE_PREFILTER = timedelta(days=88)
_DELETE_PREFILTER = timedelta(days=180)

FamilyCloudAction: TypeAlias = Literal["close", "delete"]


class CorruptState(DomainError):
    """A stored state that does not decode (hand-edited or from a newer version): a fault,
    not a refusal."""

    code = "corrupt_state"

    def __init__(self, account_id: str, reason: str) -> None:
        super().__init__(f"the broadband state of account {account_id} is unreadable: {reason}")
        self.account_id = account_id
        self.reason = reason


class BroadbandRecord(SQLModel, table=True):
    """One account's broadband state (JSON) and what the jobs need of it, indexed."""

    __tablename__ = "broadband_states"

    account_id: str = Field(primary_key=True, foreign_key="accounts.account_id", max_length=64)
    document: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    #: R11: when the running emergency resume ends (the expiry job's key).
    emergency_until: datetime | None = Field(default=None, index=True, sa_type=UTCDateTime)
    #: R15: since when the account has not been active (the family-cloud job's key).
    inactive_since: datetime | None = Field(default=None, index=True, sa_type=UTCDateTime)
    #: R15: what the family-cloud job has done since the account stopped: open|closed|deleted.
    family_cloud: str = Field(default="open", max_length=8)
    family_cloud_changed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: The last order answered with the view (applied or not): what GET shows as ``applied``.
    last_order_id: str | None = Field(default=None, max_length=128)
    last_applied: bool | None = None
    last_reason: str | None = Field(default=None, max_length=32)
    updated_at: datetime = Field(sa_type=UTCDateTime)


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _times(raw: object, what: str) -> dict[str, datetime]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{what} must be an object")
    return {str(key): datetime.fromisoformat(str(value)) for key, value in raw.items()}


def encode(state: BroadbandState) -> dict[str, Any]:
    """The state as JSON-ready data; :func:`decode` gives back an equal state."""
    return {
        "stopped_since": {kind.value: at.isoformat() for kind, at in state.stopped_since.items()},
        "torn_down": state.torn_down,
        "emergency_until": _iso(state.emergency_until),
        "emergency_suspended": sorted(kind.value for kind in state.emergency_suspended),
        "last_emergency_month": state.last_emergency_month,
        "last_issued": {key: at.isoformat() for key, at in state.last_issued.items()},
        "inactive_since": _iso(state.inactive_since),
    }


def decode(data: Mapping[str, Any]) -> BroadbandState:
    """The state from :func:`encode`'s data; ``ValueError`` if it does not fit the rules."""
    until = data.get("emergency_until")
    since = data.get("inactive_since")
    suspended = data.get("emergency_suspended", [])
    if not isinstance(suspended, list):
        raise ValueError("emergency_suspended must be a list")
    month = data.get("last_emergency_month")
    stops = _times(data.get("stopped_since", {}), "stopped_since")
    return BroadbandState(
        stopped_since={StopType(kind): at for kind, at in stops.items()},
        torn_down=bool(data.get("torn_down", False)),
        emergency_until=None if until is None else datetime.fromisoformat(str(until)),
        emergency_suspended=frozenset(StopType(str(kind)) for kind in suspended),
        last_emergency_month=None if month is None else str(month),
        last_issued=_times(data.get("last_issued", {}), "last_issued"),
        inactive_since=None if since is None else datetime.fromisoformat(str(since)),
    )


@dataclass(slots=True)
class Locked:
    """An account locked for an order, with its broadband record (new if it had none)."""

    account: Account
    record: BroadbandRecord
    #: Whether the record was read from the database (False: made for the account's first order).
    stored: bool = True

    @property
    def state(self) -> BroadbandState:
        return state_of(self.record)


async def lock(session: AsyncSession, account_id: str, now: datetime) -> Locked:
    """Lock the account against other orders until the transaction ends (:class:`NotFound`
    if unknown)."""
    result = await session.exec(
        update(Account)
        .where(col(Account.account_id) == account_id)
        .values(broadband_state=Account.broadband_state)
    )
    if result.rowcount == 0:
        raise NotFound("account", account_id)
    account = await session.get(Account, account_id, populate_existing=True)
    if account is None:  # pragma: no cover - the UPDATE just found it
        raise NotFound("account", account_id)
    record = await load_record(session, account_id)
    if record is None:
        return Locked(account=account, record=_first_record(account_id, now), stored=False)
    return Locked(account=account, record=record)


def _first_record(account_id: str, now: datetime) -> BroadbandRecord:
    return BroadbandRecord(account_id=account_id, document=encode(BroadbandState()), updated_at=now)


async def lock_many(
    session: AsyncSession, account_ids: Iterable[str], now: datetime
) -> dict[str, Locked]:
    """:func:`lock` for many accounts in a few statements: the known ones, locked by id.

    The no-op ``UPDATE`` runs once per account in one executemany, in id order, so two
    gateways locking overlapping sets wait for each other instead of deadlocking.
    """
    ids = sorted(set(account_ids))
    if not ids:
        return {}
    table = Account.__table__  # type: ignore[attr-defined]
    connection = await session.connection()
    await connection.execute(
        update(table)
        .where(table.c.account_id == bindparam("a"))
        .values(broadband_state=table.c.broadband_state),
        [{"a": account_id} for account_id in ids],
    )
    accounts = await session.exec(
        select(Account)
        .where(col(Account.account_id).in_(ids))
        .execution_options(populate_existing=True)
    )
    records = await session.exec(
        select(BroadbandRecord)
        .where(col(BroadbandRecord.account_id).in_(ids))
        .execution_options(populate_existing=True)
    )
    found = {record.account_id: record for record in records.all()}
    out = {}
    for account in accounts.all():
        record = found.get(account.account_id)
        out[account.account_id] = Locked(
            account=account,
            record=record or _first_record(account.account_id, now),
            stored=record is not None,
        )
    return out


async def load_record(session: AsyncSession, account_id: str) -> BroadbandRecord | None:
    return await session.get(BroadbandRecord, account_id, populate_existing=True)


def state_of(record: BroadbandRecord | None) -> BroadbandState:
    """The record's state; the initial (active) state for an account without one."""
    if record is None:
        return BroadbandState()
    try:
        return decode(record.document)
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptState(record.account_id, str(exc)) from exc


async def load(session: AsyncSession, account_id: str) -> BroadbandState:
    """The account's state, unlocked (for reading); active if it never had an order."""
    return state_of(await load_record(session, account_id))


@dataclass(frozen=True, slots=True, kw_only=True)
class LastOrder:
    """An order answered with the account's view, remembered for ``GET``."""

    order_id: str
    applied: bool
    reason: str | None = None

    def __post_init__(self) -> None:
        if not self.order_id:
            raise ValueError("order_id must not be empty")
        if self.applied == (self.reason is not None):
            raise ValueError("an order has a reason exactly when it was not applied")


def save(
    session: AsyncSession,
    locked: Locked,
    state: BroadbandState,
    now: datetime,
    *,
    last: LastOrder | None = None,
) -> bool:
    """Stage ``state`` and ``Account.broadband_state``; True when the latter changed.

    When the account is active again, R15's count is over: the family cloud is open.
    """
    changed = stage(locked, state, now, last=last)
    session.add(locked.record)
    if changed:
        session.add(locked.account)
    return changed


def stage(
    locked: Locked, state: BroadbandState, now: datetime, *, last: LastOrder | None = None
) -> bool:
    """:func:`save` in memory only (the caller writes the record and the account)."""
    record, account = locked.record, locked.account
    record.document = encode(state)
    record.emergency_until = state.emergency_until
    record.inactive_since = state.inactive_since
    if state.inactive_since is None and record.family_cloud != "open":
        record.family_cloud = "open"
        record.family_cloud_changed_at = now
    if last is not None:
        record.last_order_id = last.order_id
        record.last_applied = last.applied
        record.last_reason = last.reason
    record.updated_at = now
    changed = account.broadband_state != state.state
    if changed:
        account.broadband_state = state.state
        account.updated_at = now
    return changed


_RECORD_COLUMNS = (
    "account_id",
    "document",
    "emergency_until",
    "inactive_since",
    "family_cloud",
    "family_cloud_changed_at",
    "last_order_id",
    "last_applied",
    "last_reason",
    "updated_at",
)


async def write_staged(
    session: AsyncSession,
    staged: Iterable[Locked],
    *,
    new: set[str],
    moved: set[str],
) -> None:
    """Write what :func:`stage` changed, set-based: the records (``new``: account ids
    without one before) and ``Account.broadband_state`` of the ``moved`` accounts."""
    rows = [
        (locked.account.account_id, {c: getattr(locked.record, c) for c in _RECORD_COLUMNS})
        for locked in staged
    ]
    table = BroadbandRecord.__table__  # type: ignore[attr-defined]
    await insert_many(session, table, [row for account_id, row in rows if account_id in new])
    await update_many(
        session, table, "account_id", [row for account_id, row in rows if account_id not in new]
    )
    await update_many(
        session,
        Account.__table__,  # type: ignore[attr-defined]
        "account_id",
        [
            {
                "account_id": locked.account.account_id,
                "broadband_state": locked.account.broadband_state,
                "updated_at": locked.account.updated_at,
            }
            for locked in staged
            if locked.account.account_id in moved
        ],
    )


async def family_cloud_open(session: AsyncSession, account_id: str, now: datetime) -> bool:
    """R15: may the account's family cloud take saves at ``now``?"""
    return family_cloud_status(await load(session, account_id), now) == "open"


def family_cloud_action(recorded: str, status: FamilyCloudStatus) -> FamilyCloudAction | None:
    """What the R15 job still has to do, given what it did (``recorded``) and the rule's status.

    Closing is a flag; deleting removes the objects and records, then is recorded, so a
    deletion cut short is done again at the next run.
    """
    if status == "deleted" and recorded != "deleted":
        return "delete"
    if status == "closed" and recorded == "open":
        return "close"
    return None


async def expiring_emergencies(session: AsyncSession, now: datetime, limit: int) -> list[str]:
    """Accounts whose emergency resume has run out by ``now`` (R11), oldest end first."""
    result = await session.exec(
        select(BroadbandRecord.account_id)
        .where(col(BroadbandRecord.emergency_until) <= now)
        .order_by(col(BroadbandRecord.emergency_until))
        .limit(limit)
    )
    return list(result.all())


async def family_cloud_candidates(
    session: AsyncSession, now: datetime, *, after: str, limit: int
) -> list[str]:
    """Accounts that may be due a closure or a deletion (R15), by id after ``after``."""
    result = await session.exec(
        select(BroadbandRecord.account_id)
        .where(
            col(BroadbandRecord.account_id) > after,
            or_(
                (col(BroadbandRecord.family_cloud) == "open")
                & (col(BroadbandRecord.inactive_since) <= now - _CLOSE_PREFILTER),
                (col(BroadbandRecord.family_cloud) == "closed")
                & (col(BroadbandRecord.inactive_since) <= now - _DELETE_PREFILTER),
            ),
        )
        .order_by(col(BroadbandRecord.account_id))
        .limit(limit)
    )
    return list(result.all())
