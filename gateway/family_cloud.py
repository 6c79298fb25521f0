"""The family cloud (一键转存, R14; closures, R15): saves, the list, downloads, deletes.

Orchestration between the database (:mod:`replay.family_cloud_store`), the rules
(:mod:`replay.clips`) and the object store; it returns data, the routes answer.

- **Saving a range** (issue 15): the range is exported as one MP4 (:mod:`gateway.exports`)
  and stored under a key of its own (:func:`replay.object_keys.family_clip_key`) *before*
  the account's turn is taken, so no transaction waits on the remux or the store; then, the
  account locked, R15, the quota (R14, with the MP4's exact size) and an earlier save of
  the same range are checked again and the item is written. A save refused at that point,
  or beaten by an identical one, deletes its own object; a save of a range saved before
  answers that item (200), as a save of a segment saved before does.
- **Deleting** removes the object first, then the item: a failure in between leaves an
  item whose download fails and whose delete, asked again, completes; never an object
  that no item counts.
- **R15** (:func:`replay.clips.family_cloud_refusal`): closed, nothing is saved, while
  the list, downloads and deletes go on; deleted, there is nothing left (404).
- **R18**: the quota is the held membership's, else the base quota
  (``family_cloud_quota_bytes``); after a membership ended with more saved than the base
  quota, saves are refused for three months (``family_cloud_read_only``) while the list,
  downloads and deletes go on (``gateway.memberships`` then cleans up).
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from devices.broadband import FamilyCloudStatus
from devices.errors import DomainError
from gateway.exports import exported
from gateway.services import Services
from replay import family_cloud_store as store
from replay import membership_store as memberships
from replay.clips import FamilyCloudUse, family_cloud_refusal, quota_refusal
from replay.membership import ReadOnly
from replay.models import FamilyCloudItem, Segment, Subscription
from replay.object_keys import family_clip_key, family_key

__all__ = [
    "Listing",
    "Quota",
    "Saved",
    "download",
    "listing",
    "remove",
    "save_range",
    "save_segment",
]


@dataclass(frozen=True, slots=True)
class Quota:
    """R14: what the account's items use of its family-cloud quota."""

    used: int
    quota: int

    @property
    def left(self) -> int:
        return max(0, self.quota - self.used)


@dataclass(frozen=True, slots=True)
class Saved:
    """A save's answer: the item, the quota after it, and whether it is new (201) or the
    item saved before (200)."""

    item: FamilyCloudItem
    quota: Quota
    created: bool


@dataclass(frozen=True, slots=True)
class Listing:
    items: list[FamilyCloudItem]
    quota: Quota
    status: FamilyCloudStatus
    #: R18: until when no save is taken after a membership ended in overflow, or ``None``.
    read_only_until: datetime | None = None
    #: R18: the tier of the membership held, or ``None`` (the base quota).
    tier: str | None = None


def _refuse(status: FamilyCloudStatus, use: FamilyCloudUse) -> None:
    refusal = family_cloud_refusal(status, use)
    if refusal is not None:
        raise refusal


async def _quota(services: Services, session: AsyncSession, account_id: str) -> int:
    """R14 with R18: the held membership's quota, else the base quota."""
    base = services.settings.family_cloud_quota_bytes
    return await memberships.quota_at(session, account_id, services.clock.now(), base)


async def _open_for_saves(services: Services, session: AsyncSession, account_id: str) -> int:
    """The quota a save is charged against, once R15 and R18 let the family save at all."""
    now = services.clock.now()
    _refuse(await store.status(session, account_id, now), "save")
    read_only = await memberships.read_only_at(session, account_id, now)
    if read_only is not None:
        raise ReadOnly(read_only)
    return await _quota(services, session, account_id)


async def _checked(services: Services, account_id: str, use: FamilyCloudUse) -> FamilyCloudStatus:
    async with services.db.session() as session:
        status = await store.status(session, account_id, services.clock.now())
    _refuse(status, use)
    return status


async def save_segment(services: Services, account_id: str, segment: Segment) -> Saved:
    """Copy one viewable segment into the account's family cloud, as it is (R14); the same
    segment saved again answers the item saved before. The copy is made with the account
    locked: the store's server-side copy is quick, and the quota is charged with it."""
    key = family_key(account_id, segment.segment_id, segment.start)
    async with services.db.writing() as session:
        await store.lock_account(session, account_id)
        quota = await _open_for_saves(services, session, account_id)
        used = await store.used_bytes(session, account_id)
        before = await store.by_object_key(session, key)
        if before is not None:
            return Saved(before, Quota(used, quota), created=False)
        _raise(quota_refusal(used, segment.bytes, quota))
        await services.store.copy(segment.object_key, key)
        item = FamilyCloudItem(
            account_id=account_id,
            segment_id=segment.segment_id,
            device_id=segment.device_id,
            start=segment.start,
            end=segment.end,
            object_key=key,
            bytes=segment.bytes,
            saved_at=services.clock.now(),
        )
        session.add(item)
        await session.commit()
    return Saved(item, Quota(used + segment.bytes, quota), created=True)


async def save_range(
    services: Services,
    account_id: str,
    subscription: Subscription,
    start: datetime,
    end: datetime,
) -> Saved:
    """Save what the device recorded in ``[start, end)`` (viewable, at most an hour) as one
    MP4 in the account's family cloud; ``subscription`` is the device's current one, the
    family allowed to watch it (R5, R6, R8)."""
    device_id = subscription.device_id
    async with services.db.session() as session:
        quota = await _open_for_saves(services, session, account_id)
        before = await store.saved_range(session, account_id, device_id, start, end)
        used = await store.used_bytes(session, account_id)
    if before is not None:
        return Saved(before, Quota(used, quota), created=False)
    _raise(quota_refusal(used, 1, quota))  # full already: no export for nothing
    key = family_clip_key(account_id, device_id, start, end, secrets.token_hex(4))
    async with exported(services, subscription, start, end) as export:
        data = await asyncio.to_thread(export.path.read_bytes)
    await services.store.put(key, data, content_type="video/mp4")
    try:
        saved = await _record(services, account_id, device_id, start, end, key, len(data))
    except BaseException:
        await asyncio.shield(services.store.delete_many([key]))
        raise
    if not saved.created:
        await services.store.delete_many([key])  # an identical save came first
    return saved


def _raise(refusal: DomainError | None) -> None:
    if refusal is not None:
        raise refusal


async def _record(
    services: Services,
    account_id: str,
    device_id: str,
    start: datetime,
    end: datetime,
    key: str,
    size: int,
) -> Saved:
    """The item of a stored MP4, written with the account locked (R14, R15 checked again)."""
    async with services.db.writing() as session:
        await store.lock_account(session, account_id)
        quota = await _open_for_saves(services, session, account_id)
        used = await store.used_bytes(session, account_id)
        before = await store.saved_range(session, account_id, device_id, start, end)
        if before is not None:
            return Saved(before, Quota(used, quota), created=False)
        _raise(quota_refusal(used, size, quota))
        item = FamilyCloudItem(
            account_id=account_id,
            device_id=device_id,
            start=start,
            end=end,
            object_key=key,
            bytes=size,
            saved_at=services.clock.now(),
        )
        session.add(item)
        await session.commit()
    return Saved(item, Quota(used + size, quota), created=True)


async def listing(services: Services, account_id: str) -> Listing:
    """The account's saved items, its quota (R14: the membership's, R18) and whether it is
    read-only after a membership ended (R18); refused once deleted (R15)."""
    now = services.clock.now()
    async with services.db.session() as session:
        status = await store.status(session, account_id, now)
        _refuse(status, "list")
        items = await store.items_of(session, account_id)
        quota = await _quota(services, session, account_id)
        read_only = await memberships.read_only_at(session, account_id, now)
        held = await memberships.held(session, account_id, now)
    used = sum(item.bytes for item in items)
    tier = None if held is None else held.tier
    return Listing(items, Quota(used, quota), status, read_only, tier)


async def download(
    services: Services, account_id: str, item_id: int
) -> tuple[FamilyCloudItem, str]:
    """The item and a short-lived URL that downloads it (``url_ttl_seconds``)."""
    await _checked(services, account_id, "download")
    async with services.db.session() as session:
        item = await store.item_of(session, account_id, item_id)
    ttl = services.settings.url_ttl_seconds
    return item, await services.store.presign_get(item.object_key, expires_in=ttl)


async def remove(services: Services, account_id: str, item_id: int) -> Quota:
    """Delete the item, its object first; the quota it used is free again (R14)."""
    await _checked(services, account_id, "delete")
    async with services.db.session() as session:
        item = await store.item_of(session, account_id, item_id)
    await services.store.delete_many([item.object_key])
    async with services.db.writing() as session:
        await store.lock_account(session, account_id)
        found = await session.get(FamilyCloudItem, item_id)
        if found is not None:
            await session.delete(found)
        await session.commit()
        used = await store.used_bytes(session, account_id)
        quota = await _quota(services, session, account_id)
    return Quota(used, quota)
