"""The family cloud's statements (R14, R15): the one home of the SQL on the saved items
(:class:`~replay.models.FamilyCloudItem`). The rules are :mod:`replay.clips`; the objects
are the gateway's (``gateway.family_cloud``).

An account's saves are charged one at a time: :func:`lock_account` takes the account's
row lock (PostgreSQL) or the database's write lock (SQLite) until the commit, so the quota
read by :func:`used_bytes` and the item added are one decision. Items of another account
are not found, never forbidden.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import col, func, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from devices import broadband_store
from devices.broadband import FamilyCloudStatus, family_cloud_status
from devices.errors import NotFound
from devices.models import Account
from replay.models import FamilyCloudItem

__all__ = [
    "by_object_key",
    "item_of",
    "items_of",
    "lock_account",
    "saved_range",
    "status",
    "used_bytes",
]


async def lock_account(session: AsyncSession, account_id: str) -> None:
    """Hold the account's saves until this transaction ends (a write takes the lock)."""
    await session.exec(
        update(Account)
        .where(col(Account.account_id) == account_id)
        .values(updated_at=Account.updated_at)
    )


async def status(session: AsyncSession, account_id: str, now: datetime) -> FamilyCloudStatus:
    """R15: the account's family cloud at ``now`` (exact to the second, whether or not the
    R15 job has run yet)."""
    return family_cloud_status(await broadband_store.load(session, account_id), now)


async def used_bytes(session: AsyncSession, account_id: str) -> int:
    """R14: what the account's saved items count against its quota."""
    total = await session.exec(
        select(func.coalesce(func.sum(FamilyCloudItem.bytes), 0)).where(
            FamilyCloudItem.account_id == account_id
        )
    )
    return int(total.one())


async def by_object_key(session: AsyncSession, object_key: str) -> FamilyCloudItem | None:
    """The item stored under ``object_key`` (a segment saved before), or ``None``."""
    found = await session.exec(
        select(FamilyCloudItem).where(FamilyCloudItem.object_key == object_key)
    )
    return found.first()


async def saved_range(
    session: AsyncSession, account_id: str, device_id: str, start: datetime, end: datetime
) -> FamilyCloudItem | None:
    """The account's MP4 of exactly this range of the device, saved before, or ``None``."""
    found = await session.exec(
        select(FamilyCloudItem)
        .where(
            col(FamilyCloudItem.account_id) == account_id,
            col(FamilyCloudItem.device_id) == device_id,
            col(FamilyCloudItem.segment_id).is_(None),
            col(FamilyCloudItem.start) == start,
            col(FamilyCloudItem.end) == end,
        )
        .order_by(col(FamilyCloudItem.item_id))
    )
    return found.first()


async def items_of(session: AsyncSession, account_id: str) -> list[FamilyCloudItem]:
    """The account's saved items, the latest saved first."""
    found = await session.exec(
        select(FamilyCloudItem)
        .where(FamilyCloudItem.account_id == account_id)
        .order_by(col(FamilyCloudItem.saved_at).desc(), col(FamilyCloudItem.item_id).desc())
    )
    return list(found.all())


async def item_of(session: AsyncSession, account_id: str, item_id: int) -> FamilyCloudItem:
    """The account's item ``item_id``; :class:`NotFound` if absent or another account's."""
    item = await session.get(FamilyCloudItem, item_id)
    if item is None or item.account_id != account_id:
        raise NotFound("family-cloud item", str(item_id))
    return item
