"""Family-cloud memberships on the service clock (R18): renewals, unsubscriptions taking
effect, and the cleanup of an overflow after its three read-only months.

:func:`run_memberships` is one clock-driven job (``gateway.schedule``); each step is decided
from the stored records and the clock, so it is idempotent and, after downtime, catches up
in one run: a membership a year behind is renewed through today, an unsubscription that
took effect while the service was down is ended then (its read-only months counted from
the effective instant), and a read-only period over by then is cleaned up in the same run.

The cleanup deletes objects first, outside any transaction, then the items: a cleanup cut
short between the two is redone whole at the next run (deleting a missing object is no
error), and no object is left that no item counts.
"""

from __future__ import annotations

import logging

from sqlmodel import col, delete

from gateway.services import Services
from replay import family_cloud_store
from replay import membership as rules
from replay import membership_store as store
from replay.billing import business_date
from replay.models import FamilyCloudItem

__all__ = ["JOB", "run_memberships"]

log = logging.getLogger(__name__)

#: The job's name in ``gateway.schedule``.
JOB = "family_cloud_memberships"
_BATCH = 200


async def renew(services: Services) -> int:
    """R18: memberships past their year are renewed for another (through today)."""
    today = business_date(services.clock.now())
    renewed = 0
    while True:
        async with services.db.writing() as session:
            due = await store.renewal_due(session, today, _BATCH)
            for membership in due:
                start, months = membership.start_date, membership.validity_months
                membership.period = rules.periods_elapsed(start, months, today)
                membership.valid_until = rules.valid_until(start, months, membership.period)
                session.add(membership)
            await session.commit()
        renewed += len(due)
        if len(due) < _BATCH:
            return renewed


async def end_unsubscribed(services: Services) -> int:
    """R18: unsubscriptions whose first day of the next month has come end; an overflow
    makes the family cloud read-only for three months."""
    now = services.clock.now()
    base = services.settings.family_cloud_quota_bytes
    ended = 0
    while True:
        async with services.db.writing() as session:
            due = await store.ending_due(session, now, _BATCH)
            for membership in due:
                await family_cloud_store.lock_account(session, membership.account_id)
                await store.finish(session, membership, base)
                if membership.overflow == "read_only":
                    log.info("R18: the family cloud of %s is read-only", membership.account_id)
            await session.commit()
        ended += len(due)
        if len(due) < _BATCH:
            return ended


async def _clean(services: Services, membership_id: str) -> int:
    """Delete the account's items, oldest first, until they fit its quota now (R18)."""
    now = services.clock.now()
    base = services.settings.family_cloud_quota_bytes
    async with services.db.session() as session:
        membership = await store.get(session, membership_id)
        account_id = membership.account_id
        items = await store.saved_items(session, account_id)
        quota = await store.quota_at(session, account_id, now, base)
    by_id = {item.item_id: item for item in items if item.item_id is not None}
    doomed = rules.cleanup_order(
        (rules.Saved(key, item.saved_at, item.bytes) for key, item in by_id.items()), quota
    )
    if doomed:
        await services.store.delete_many([by_id[key].object_key for key in doomed])
    async with services.db.writing() as session:
        await family_cloud_store.lock_account(session, account_id)
        if doomed:
            await session.exec(
                delete(FamilyCloudItem).where(col(FamilyCloudItem.item_id).in_(doomed))
            )
        membership = await store.get(session, membership_id)
        membership.overflow = "cleaned"
        membership.cleaned_at = now
        membership.cleaned_items = len(doomed)
        session.add(membership)
        await session.commit()
    log.info("R18: cleaned up the family cloud of %s: %d items deleted", account_id, len(doomed))
    return len(doomed)


async def clean_overflows(services: Services) -> int:
    """R18: after the three read-only months, saved items are deleted oldest first until
    the content fits the quota (a membership ordered since counts)."""
    async with services.db.session() as session:
        due = await store.cleanup_due(session, services.clock.now(), _BATCH)
    deleted = 0
    for membership in due:
        try:
            deleted += await _clean(services, membership.membership_id)
        except Exception:
            log.exception("the R18 cleanup of %s failed", membership.membership_id)
    return deleted


async def run_memberships(services: Services) -> None:
    """The R18 job: renewals, unsubscriptions taking effect, then overflow cleanups."""
    await renew(services)
    await end_unsubscribed(services)
    await clean_overflows(services)
