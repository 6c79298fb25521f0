"""Every clock-driven job of a gateway, in one typed list, in the order they run.

:meth:`gateway.jobs.JobRunner.run_all` (the ops clock endpoint, after a manual clock
moved) runs them in this order: presence first, so that what happened before the jump
is written; publishing desired documents and completion reports last, so that what the
earlier jobs changed goes out in the same turn.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from gateway import broadband, commands, home_network, memberships, presence, retention
from gateway.desired import PUBLISH_JOB, publish_pending
from gateway.jobs import JobSpec
from gateway.services import Services
from replay import ledger, subscriptions
from replay.billing import Month, business_date


async def close_months(services: Services, now: datetime | None = None) -> int:
    """Issue 17: every month the Asia/Shanghai calendar has left (at ``now``, default the
    clock's) is closed into the charge ledger, oldest first, one transaction a month
    (idempotent; catches up after downtime)."""
    now = services.clock.now() if now is None else now
    async with services.db.session() as session:
        due = await ledger.months_to_close(session, now)
    for month in due:
        await services.db.write(_closing(month, now), name=f"ledger close {month}")
    return len(due)


def _closing(month: Month, now: datetime) -> Callable[[AsyncSession], Awaitable[int]]:
    async def work(session: AsyncSession) -> int:
        return await ledger.close_month(session, month, now)

    return work


async def purge_ledger(services: Services) -> None:
    """Issue 17: ledger lines older than ``KANJIA_LEDGER_RETENTION_YEARS`` are deleted."""
    now, years = services.clock.now(), services.settings.ledger_retention_years
    await services.db.write(
        lambda session: ledger.purge_expired(session, now, years), name="ledger purge"
    )


async def purge_subscriptions(services: Services) -> None:
    """R5: unsubscribed records are purged six months on, once their months are in the
    charge ledger (closed first, so no record takes a month's charges with it)."""
    now = services.clock.now()  # one instant for both: the clock may move in between
    await close_months(services, now)
    await services.db.write(
        lambda session: subscriptions.purge_unsubscribed(session, now), name="subscription purge"
    )


async def roll_terms(services: Services) -> None:
    """R4: the 24-month tariff term of active subscriptions renews when it ends."""
    today = business_date(services.clock.now())
    await services.db.write(
        lambda session: subscriptions.roll_terms(session, today), name="tariff terms"
    )


JOBS: tuple[JobSpec, ...] = (
    JobSpec("presence_sweep", presence.SWEEP_SECONDS, presence.sweep),
    JobSpec("ledger_close", 3600, close_months),
    JobSpec("subscription_purge", 3600, purge_subscriptions),
    JobSpec("ledger_purge", 86400, purge_ledger),
    JobSpec("home_network_expiry", 600, home_network.expire),
    *broadband.JOBS,
    *commands.JOBS,
    JobSpec("retention_sweep", 60, retention.sweep_expired),
    JobSpec("stale_grants", 600, retention.drop_stale_grants),
    JobSpec("reconcile", 86400, retention.reconcile),
    JobSpec("history_prune", 3600, retention.prune_histories),
    JobSpec(PUBLISH_JOB, 2.0, publish_pending),
    JobSpec("tariff_terms", 3600, roll_terms),
    JobSpec(memberships.JOB, 3600, memberships.run_memberships),
)
