"""Retention: the sweeper and the reconcile job (R5).

The sweeper deletes expired segments from the store in batches, then their index rows;
a segment is never served after its expiry even when the sweeper is late, because the
read path checks the cut-off itself. Reconcile lists the recording prefixes and removes
objects that no index row or pending upload owns, reports index rows whose object is
missing, and refuses to delete more than half of one device's objects in a run unless
told to (``allow_mass_delete``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from devices import broadband_periods, presence
from devices.models import PresenceChange
from gateway.services import Services
from replay import index_store
from replay.object_keys import RECORDING_PREFIXES, recording_prefix
from replay.reconcile import UPLOAD_GRACE, GrantFate, ReconcilePlan, grant_fate, reconcile_plan

log = logging.getLogger(__name__)

SWEEP_BATCH = 1000
_LONG_AGO = datetime(1970, 1, 1, tzinfo=UTC)


async def sweep_expired(services: Services, *, batch: int = SWEEP_BATCH) -> int:
    """Delete every segment whose retention has run out; return how many."""
    now = services.clock.now()
    swept = 0
    while True:
        async with services.db.session() as session:
            rows = await index_store.expired_segments(session, now, batch)
        if not rows:
            async with services.db.writing() as session:
                await index_store.drop_expired_ranges(session, now)
                await session.commit()
            return swept
        # Objects first: an index row without its object is reported by reconcile,
        # an object without its row would be an orphan until reconcile finds it.
        await services.store.delete_many([key for _, key in rows])
        async with services.db.writing() as session:
            await index_store.delete_segments(session, [sid for sid, _ in rows])
            await session.commit()
        swept += len(rows)
        services.metrics.segments_swept.inc(len(rows))


async def prune_histories(services: Services) -> int:
    """Forget presence changes and broadband inactive periods older than the longest
    retention of the catalog and a day (the timeline's gaps never look further back), each
    device's last change kept; return how many."""
    days = max(plan.retention_days for plan in services.catalog) + 1
    before = services.clock.now() - timedelta(days=days)

    async def prune(session: AsyncSession) -> int:
        pruned = 0
        table = PresenceChange.__table__  # type: ignore[attr-defined]
        pruned += await presence.prune_changes(session, table, "device_id", before)
        pruned += await broadband_periods.prune_before(session, before)
        await session.commit()
        return pruned

    return await services.db.write(prune, name="history prune")


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    plan: ReconcilePlan
    deleted: int


async def reconcile(services: Services, *, allow_mass_delete: bool = False) -> ReconcileResult:
    # Known keys are read before listing: an upload in flight is owned by its grant, and
    # a grant becomes a segment row in one transaction, so no live object looks orphaned.
    async with services.db.session() as session:
        known = await index_store.owned_object_keys(session)
        classes = await index_store.retention_classes(session)
    prefixes = set(RECORDING_PREFIXES) | {
        recording_prefix(int(c.rstrip("d"))) for c in classes if c.rstrip("d").isdigit()
    }
    # Age is decided by ownership, not by the store's modification times: those are on
    # the store's wall clock, not the service's (which may be manual or accelerated), and
    # an upload in flight is already owned by its grant. Stale grants are dropped by
    # :func:`drop_stale_grants`, which is what lets their objects become orphans.
    listed = []
    for prefix in sorted(prefixes):
        async for info in services.store.list(prefix):
            listed.append((info.key, info.size, _LONG_AGO))
    plan = reconcile_plan(
        listed, known, now=services.clock.now(), grace_s=0, allow_mass_delete=allow_mass_delete
    )
    doomed = list(plan.delete)
    if doomed:
        # An upload granted after the keys were read may have landed before the listing:
        # look again, and spare every key that is owned now.
        async with services.db.session() as session:
            owned = await index_store.owned_object_keys(session, among=doomed)
        doomed = [key for key in doomed if key not in owned]
        for i in range(0, len(doomed), 1000):
            await services.store.delete_many(doomed[i : i + 1000])
    for refused in plan.refused_devices:
        log.warning(
            "reconcile kept %d orphan(s) of %s: %s",
            len(refused.orphans),
            refused.device_id,
            refused.reason,
        )
    if plan.missing:
        log.warning("reconcile: %d indexed segment(s) have no object", len(plan.missing))
    return ReconcileResult(plan=plan, deleted=len(doomed))


async def drop_stale_grants(services: Services) -> int:
    """Forget the upload grants that will never be indexed (:func:`replay.reconcile.grant_fate`):
    those whose upload never landed, long after their URL expired. A grant whose object
    landed is kept, so its late notice is still indexed and reconcile never deletes it."""
    ttl = timedelta(seconds=services.settings.upload_url_ttl_seconds)
    now = services.clock.now()
    async with services.db.session() as session:
        candidates = await index_store.grants_before(session, now - ttl - UPLOAD_GRACE)
    landed = await _landed(services, [grant.object_key for grant in candidates])
    doomed = [
        grant.object_key
        for grant in candidates
        if grant_fate(
            granted_at=grant.granted_at,
            url_ttl=ttl,
            landed=grant.object_key in landed,
            expires_at=grant.expires_at,
            now=now,
        )
        is GrantFate.DROP
    ]
    async with services.db.writing() as session:
        dropped = await index_store.delete_grants(session, doomed)
        await session.commit()
    return dropped


async def _landed(services: Services, keys: list[str], *, at_once: int = 16) -> set[str]:
    """The keys among ``keys`` that have an object in the store."""
    gate = asyncio.Semaphore(at_once)

    async def exists(key: str) -> bool:
        async with gate:
            return await services.store.head(key) is not None

    found = await asyncio.gather(*(exists(key) for key in keys))
    return {key for key, there in zip(keys, found, strict=True) if there}
