"""Desired state: what each device should be doing, versioned, converging by retain.

The document is derived, never edited by hand: :mod:`replay.desired` composes it from the
rules (R1, R8, R12), since it reads both domains. This module keeps the documents:
:func:`refresh` recomputes those of some devices with the compose function it is given
and bumps the version of each one that changed; the gateway then publishes them retained
on ``kj/v1/dev/{id}/desired``, and devices report back the version they applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

from sqlalchemy import bindparam
from sqlalchemy import select as sa_select
from sqlmodel import col, or_, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from devices.models import Account, DesiredState, Device
from storage.db import insert_many, update_many

#: What a device should be doing (the document without its version), from it and its account.
Compose: TypeAlias = Callable[[Device, Account], dict[str, Any]]


async def refresh(
    session: AsyncSession,
    device_ids: Iterable[str],
    *,
    now: datetime,
    compose: Compose,
) -> list[DesiredState]:
    """Recompute the devices' documents; return those whose version moved (not committed)."""
    ids = sorted(set(device_ids))
    if not ids:
        return []
    rows = await session.exec(
        select(Device, Account)
        .join(Account, col(Account.account_id) == col(Device.account_id))
        .where(col(Device.device_id).in_(ids))
    )
    existing = {
        s.device_id: s
        for s in (
            await session.exec(select(DesiredState).where(col(DesiredState.device_id).in_(ids)))
        ).all()
    }
    changed = []
    for device, account in rows.all():
        state = restage(device, account, existing.get(device.device_id), now=now, compose=compose)
        if state is not None:
            session.add(state)
            changed.append(state)
    return changed


def restage(
    device: Device, account: Account, state: DesiredState | None, *, now: datetime, compose: Compose
) -> DesiredState | None:
    """The device's document recomputed in memory: ``state`` (a new one if None) with its
    version bumped when the document changed, else None. The caller stages it."""
    document = compose(device, account)
    if state is None:
        state = DesiredState(device_id=device.device_id, account_id=device.account_id)
    if state.version and state.document == document and state.account_id == device.account_id:
        return None
    state.account_id = device.account_id  # a device bound again to another account
    state.version += 1
    state.document = document
    state.changed_at = now
    return state


#: The ``account_id`` of the desired state of a device bound to no account.
UNBOUND = ""


async def release(
    session: AsyncSession, device_id: str, document: dict[str, Any], *, now: datetime
) -> DesiredState | None:
    """The device left its account: its desired document becomes ``document`` (that of an
    unbound device), as a new version, so a device still online converges to it."""
    state = await session.get(DesiredState, device_id)
    if state is None:
        return None
    state.version += 1
    state.document = document
    state.account_id = UNBOUND
    state.changed_at = now
    session.add(state)
    return state


async def documents_of(
    session: AsyncSession, *, account_ids: Iterable[str], device_ids: Iterable[str]
) -> list[DesiredState]:
    """The documents of ``device_ids`` and those filed under ``account_ids`` (one
    statement): what :func:`refresh` and :func:`account_convergence` read, for many."""
    accounts, devices = sorted(set(account_ids)), sorted(set(device_ids))
    if not accounts and not devices:
        return []
    result = await session.exec(
        select(DesiredState)
        .where(
            or_(
                col(DesiredState.account_id).in_(accounts),
                col(DesiredState.device_id).in_(devices),
            )
        )
        .execution_options(populate_existing=True)
    )
    return list(result.all())


async def write_documents(
    session: AsyncSession, states: Iterable[DesiredState], *, new: set[str]
) -> None:
    """Write documents :func:`restage` changed, set-based (``new``: devices without one
    before); the published and reported versions of existing rows are left alone."""
    table = DesiredState.__table__  # type: ignore[attr-defined]
    fresh, moved = [], []
    for state in states:
        row = {
            "device_id": state.device_id,
            "account_id": state.account_id,
            "version": state.version,
            "document": state.document,
            "changed_at": state.changed_at,
        }
        if state.device_id in new:
            fresh.append(
                {
                    **row,
                    "published_version": 0,
                    "reported_version": 0,
                }
            )
        else:
            moved.append(row)
    await insert_many(session, table, fresh)
    await update_many(session, table, "device_id", moved)


@dataclass(frozen=True, slots=True)
class Pending:
    """A desired version not yet handed to the broker."""

    device_id: str
    version: int
    document: dict[str, Any]


async def unpublished(session: AsyncSession, limit: int = 1000) -> list[Pending]:
    """Versions the broker has not received yet, oldest change first (read afresh: plain
    rows, no ORM copies, so a version bumped meanwhile is never hidden by an identity map)."""
    table = DesiredState.__table__  # type: ignore[attr-defined]
    connection = await session.connection()
    result = await connection.execute(
        sa_select(table.c.device_id, table.c.version, table.c.document)
        .where(table.c.published_version < table.c.version)
        # Oldest change first: a big batch's documents go out in the order they committed.
        .order_by(table.c.changed_at, table.c.device_id)
        .limit(limit)
    )
    return [Pending(device_id, version, document) for device_id, version, document in result]


async def mark_published(session: AsyncSession, sent: Iterable[tuple[str, int]]) -> None:
    """Record that each ``(device_id, version)`` was handed to the broker (never lowering
    what a later publish recorded; a version bumped meanwhile stays unpublished)."""
    rows = [{"d": device_id, "v": version} for device_id, version in sent]
    if not rows:
        return
    table = DesiredState.__table__  # type: ignore[attr-defined]
    connection = await session.connection()  # Core executemany: one statement for all
    await connection.execute(
        update(table)
        .where(table.c.device_id == bindparam("d"), table.c.published_version < bindparam("v"))
        .values(published_version=bindparam("v")),
        rows,
    )


@dataclass(frozen=True, slots=True)
class Convergence:
    """How far a device has applied its desired state (version 0: none made yet)."""

    device: Device
    desired_version: int
    reported_version: int

    @property
    def converged(self) -> bool:
        return self.reported_version >= self.desired_version


async def mark_all_unpublished(session: AsyncSession) -> int:
    """Every document is to be published again (the broker lost what it retained)."""
    result = await session.exec(
        update(DesiredState).where(col(DesiredState.version) > 0).values(published_version=0)
    )
    return int(result.rowcount)


async def account_convergence(
    session: AsyncSession, account_id: str, devices: Iterable[Device]
) -> list[Convergence]:
    """The convergence of each of ``devices`` (the account's), in their order."""
    result = await session.exec(select(DesiredState).where(DesiredState.account_id == account_id))
    return convergence(devices, {state.device_id: state for state in result.all()})


def convergence(devices: Iterable[Device], states: Mapping[str, DesiredState]) -> list[Convergence]:
    """The convergence of each of ``devices``, in their order, from the account's documents
    by device id (those whose ``account_id`` is the account's)."""
    out = []
    for device in devices:
        state = states.get(device.device_id)
        desired, reported = (state.version, state.reported_version) if state else (0, 0)
        out.append(Convergence(device, desired, reported))
    return out


class ReportedVersions:
    """Coalesces ``reported`` messages; one UPDATE per device per flush."""

    def __init__(self) -> None:
        self._pending: dict[str, tuple[int, datetime]] = {}

    def note(self, device_id: str, version: int, at: datetime) -> None:
        previous = self._pending.get(device_id)
        if previous is None or version > previous[0]:
            self._pending[device_id] = (version, at)

    async def flush(self, session: AsyncSession) -> int:
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        try:
            return await self._write(session, batch)
        except BaseException:
            for device_id, (version, at) in batch.items():  # kept for the next flush
                self.note(device_id, version, at)
            raise

    async def _write(self, session: AsyncSession, batch: dict[str, tuple[int, datetime]]) -> int:
        """One executemany; returns the rows moved where the driver counts them (else 0)."""
        table = DesiredState.__table__  # type: ignore[attr-defined]
        connection = await session.connection()
        result = await connection.execute(
            update(table)
            .where(
                table.c.device_id == bindparam("d"),
                table.c.reported_version < bindparam("v"),
                # A device cannot have applied a version the service never made.
                table.c.version >= bindparam("v"),
            )
            .values(
                reported_version=bindparam("v"),
                reported_at=bindparam("at", type_=table.c.reported_at.type),
            ),
            [{"d": device, "v": version, "at": at} for device, (version, at) in batch.items()],
        )
        await session.commit()
        return max(int(result.rowcount), 0)
