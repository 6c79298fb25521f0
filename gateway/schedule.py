"""Every clock-driven job of a gateway, in one typed list, in the order they run.

:meth:`gateway.jobs.JobRunner.run_all` (the ops clock endpoint, after a manual clock
moved) runs them in this order: presence first, so that what happened before the jump
is written; publishing desired documents and completion reports last, so that what the
earlier jobs changed goes out in the same turn.
"""

from __future__ import annotations

from gateway import broadband, commands, memberships, presence, retention
from gateway.desired import PUBLISH_JOB, publish_pending
from gateway.jobs import JobSpec
from gateway.services import Services
from replay import subscriptions
from replay.billing import business_date


async def purge_subscriptions(services: Services) -> None:
    """R5: unsubscribed records are purged six months on."""
    now = services.clock.now()
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
    JobSpec("subscription_purge", 3600, purge_subscriptions),
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
