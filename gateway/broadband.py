"""Broadband orders against the stored state, and their jobs (R8–R12, R15).

- :func:`run_order` applies one platform order (stop, resume, teardown, emergency
  resume) exactly once through :func:`gateway.orders.execute_order`: in one transaction it
  locks the account, applies :func:`devices.broadband.apply`, saves ``Outcome.state``
  (always, applied or not), keeps ``Account.broadband_state`` in step, recomputes the
  desired documents of all the account's devices when that changed (R8 cameras, R12
  routers), and stores the answer with its completion report (报竣) when applied. The
  publish job then hands the new documents to the broker, retained. The routes' orders,
  batches and single ones, go through :mod:`gateway.broadband_batch` (chunks of orders in
  one transaction each, with the same :func:`decide` and :func:`answer_of`); a chunk that
  fails falls back to :func:`run_order`, order by order.
- Jobs (Clock-driven, :data:`JOBS`): the end of emergency resumes (R11), and the family
  cloud's closure and deletion after long stops (R15); device commands have theirs in
  :mod:`gateway.commands`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeAlias

from sqlmodel import col, delete
from sqlmodel.ext.asyncio.session import AsyncSession

from devices import accounts
from devices import broadband as bb
from devices import broadband_periods as periods
from devices import broadband_store as store
from devices.desired import Convergence, account_convergence
from devices.models import Device
from devices.orders import Answer
from gateway.answers import Out, error_body
from gateway.desired import PUBLISH_JOB, refresh_desired
from gateway.errors import http_status
from gateway.jobs import JobSpec
from gateway.orders import execute_order
from gateway.services import Services
from replay.models import FamilyCloudItem
from replay.subscriptions import has_active_subscription

log = logging.getLogger(__name__)

Action: TypeAlias = Literal["stop", "resume", "teardown", "emergency-resume"]
ACTIONS: tuple[Action, ...] = ("stop", "resume", "teardown", "emergency-resume")
#: Actions that name the stop type they act on (R10).
TYPED_ACTIONS: frozenset[str] = frozenset({"stop", "resume"})

EXPIRY_JOB = "broadband_emergency_expiry"
FAMILY_CLOUD_JOB = "broadband_family_cloud"

#: How many accounts one job turn takes at most.
JOB_BATCH = 500
#: Keys deleted per object-store call (the S3 DeleteObjects limit).
DELETE_CHUNK = 1000


# --- the view ----------------------------------------------------------------------------


class DeviceConvergenceOut(Out):
    device_id: str
    kind: str
    online: bool
    desired_version: int
    reported_version: int
    converged: bool


class BroadbandViewOut(Out):
    """The account's broadband view: state, stops in force, and the devices' convergence.

    ``applied``/``reason``/``order_id`` describe the order answered (for ``GET``, the last
    order answered with a view; absent before the first).
    """

    account_id: str
    state: bb.AccountState
    stops: list[bb.StopType]
    emergency_until: datetime | None = None
    order_id: str | None = None
    applied: bool | None = None
    reason: str | None = None
    family_cloud: bb.FamilyCloudStatus
    devices: list[DeviceConvergenceOut]


async def broadband_view(
    session: AsyncSession,
    account_id: str,
    state: bb.BroadbandState,
    now: datetime,
    *,
    last: store.LastOrder | None,
    devices: list[Device] | None = None,
) -> BroadbandViewOut:
    if devices is None:
        devices = await accounts.list_devices(session, account_id)
    converged = await account_convergence(session, account_id, devices)
    return view_of(account_id, state, now, last=last, convergence=converged)


def view_of(
    account_id: str,
    state: bb.BroadbandState,
    now: datetime,
    *,
    last: store.LastOrder | None,
    convergence: list[Convergence],
) -> BroadbandViewOut:
    """The view from what was read: the account's state and its devices' convergence."""
    out = [
        DeviceConvergenceOut(
            device_id=c.device.device_id,
            kind=c.device.kind,
            online=c.device.online,
            desired_version=c.desired_version,
            reported_version=c.reported_version,
            converged=c.converged,
        )
        for c in convergence
    ]
    return BroadbandViewOut(
        account_id=account_id,
        state=state.state,
        stops=sorted(state.in_force),
        emergency_until=state.emergency_until,
        order_id=last.order_id if last else None,
        applied=last.applied if last else None,
        reason=last.reason if last else None,
        family_cloud=bb.family_cloud_status(state, now),
        devices=out,
    )


async def current_view(services: Services, account_id: str) -> BroadbandViewOut:
    """``GET``: the stored state as of now (an emergency that has run out shown as ended)."""
    now = services.clock.now()
    async with services.db.session() as session:
        await accounts.get_account(session, account_id)
        record = await store.load_record(session, account_id)
        state = bb.expire(store.state_of(record), now)
        last = None
        if record is not None and record.last_order_id and record.last_applied is not None:
            last = store.LastOrder(
                order_id=record.last_order_id,
                applied=record.last_applied,
                reason=None if record.last_applied else record.last_reason,
            )
        return await broadband_view(session, account_id, state, now, last=last)


# --- orders ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class BroadbandOrder:
    """One platform order as received (validated at the HTTP edge)."""

    action: Action
    account_id: str
    order_id: str
    stop_type: bb.StopType | None = None
    issued_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}")
        if self.stop_type is not None:
            object.__setattr__(self, "stop_type", bb.StopType(self.stop_type))
        if (self.action in TYPED_ACTIONS) != (self.stop_type is not None):
            raise ValueError(
                f"stop_type is given exactly for {' and '.join(sorted(TYPED_ACTIONS))}"
            )
        if self.issued_at is not None and self.issued_at.utcoffset() is None:
            raise ValueError("issued_at must carry a timezone offset")

    @property
    def action_name(self) -> str:
        """The action as the order's idempotency record names it."""
        return f"broadband.{self.action}"

    def request_body(self) -> dict[str, Any]:
        """What the order asks, for its fingerprint: the same from a batch or alone."""
        body: dict[str, Any] = {}
        if self.stop_type is not None:
            body["stop_type"] = self.stop_type.value
        if self.issued_at is not None:
            body["issued_at"] = self.issued_at.isoformat()
        return body

    def business_time(self, now: datetime) -> datetime:
        """When the order takes effect: its ``issued_at``, else the service clock's ``now``."""
        return self.issued_at or now

    def domain(self, now: datetime) -> bb.Order:
        """The domain order, at its :meth:`business_time`."""
        at = self.business_time(now)
        if self.action == "stop":
            assert self.stop_type is not None
            return bb.Stop(stop_type=self.stop_type, issued_at=at)
        if self.action == "resume":
            assert self.stop_type is not None
            return bb.Resume(stop_type=self.stop_type, issued_at=at)
        if self.action == "teardown":
            return bb.Teardown(issued_at=at)
        return bb.EmergencyResume(issued_at=at)


async def persist(
    services: Services,
    session: AsyncSession,
    locked: store.Locked,
    state: bb.BroadbandState,
    now: datetime,
    *,
    last: store.LastOrder | None = None,
    at: datetime | None = None,
) -> tuple[bool, list[Device]]:
    """Save ``state``; when the account's state moved, recompute its devices' desired state
    and keep the history the boundary rule reads (:mod:`devices.broadband_periods`; ``at``
    is the order's business time, the instant a resume takes effect; default ``now``).

    Returns whether it moved, and the account's devices.
    """
    changed = store.save(session, locked, state, now, last=last)
    devices = await accounts.list_devices(session, locked.account.account_id)
    if changed:
        await periods.record_transition(
            session,
            locked.account.account_id,
            state.state,
            inactive_since=state.inactive_since,
            at=now if at is None else at,
        )
        await refresh_desired(services, session, [d.device_id for d in devices])
    return changed, devices


def _completion_report(order: BroadbandOrder, at: datetime, body: dict[str, Any]) -> dict[str, Any]:
    """What the platform's callback receives for an applied order (报竣): ``body`` is the
    view answered."""
    return {
        "order_id": order.order_id,
        "action": order.action_name,
        "status": "completed",
        "completed_at": at.isoformat(),
        "result": body,
    }


def decide(
    locked: store.Locked, order: BroadbandOrder, now: datetime, *, subscribed: bool
) -> tuple[bb.Outcome, store.LastOrder | None]:
    """What the order does to the locked account (R8–R11), and the order the view will
    name (None for a refusal: ``GET`` keeps showing the last order answered with a view).
    ``subscribed``: whether the account holds an active replay product (R9; read for a
    teardown only)."""
    outcome = bb.apply(
        locked.state,
        order.domain(now),
        now=now,
        star_level=locked.account.star_level,
        has_active_subscription=subscribed,
    )
    last = None
    if outcome.refusal is None:
        last = store.LastOrder(
            order_id=order.order_id, applied=outcome.applied, reason=outcome.reason
        )
    return outcome, last


def answer_of(
    order: BroadbandOrder, outcome: bb.Outcome, now: datetime, view: BroadbandViewOut | None
) -> tuple[Answer, dict[str, Any] | None]:
    """The order's answer (the view, or the refusal answered, not raised: the refusal's
    bookkeeping is committed with it) and the completion report it owes (applied only)."""
    if outcome.refusal is not None or view is None:
        assert outcome.refusal is not None
        error = outcome.refusal.error()
        return Answer(http_status(error), error_body(error.code, error.message, error.rule)), None
    body: dict[str, Any] = view.model_dump(mode="json", exclude_none=True)
    report = _completion_report(order, now, body) if outcome.applied else None
    return Answer(200, body), report


async def run_order(services: Services, order: BroadbandOrder) -> Answer:
    """Apply one order exactly once; the answer is the view, or a refusal (404, 409)."""

    async def effect(session: AsyncSession) -> tuple[Answer, dict[str, Any] | None]:
        now = services.clock.now()
        locked = await store.lock(session, order.account_id, now)
        subscribed = order.action == "teardown" and await has_active_subscription(
            session, order.account_id
        )
        outcome, last = decide(locked, order, now, subscribed=subscribed)
        # Outcome.state is saved even when not applied: issued_at bookkeeping, lapses.
        _, devices = await persist(
            services, session, locked, outcome.state, now, last=last, at=order.business_time(now)
        )
        view = None
        if outcome.refusal is None:
            view = await broadband_view(
                session, order.account_id, outcome.state, now, last=last, devices=devices
            )
        return answer_of(order, outcome, now, view)

    answer = await execute_order(
        services,
        order_id=order.order_id,
        action=order.action_name,
        target=order.account_id,
        request_body=order.request_body(),
        effect=effect,
        account_id=order.account_id,
    )
    # Not every change comes with a report (an emergency that lapsed under a refusal).
    services.jobs.trigger(PUBLISH_JOB)
    return answer


# --- jobs --------------------------------------------------------------------------------


async def expire_emergencies(services: Services) -> int:
    """R11: arrears stops are in force again where the 7 days of service ended."""
    changed = 0
    failed: set[str] = set()
    while True:
        now = services.clock.now()
        async with services.db.session() as session:
            due = await store.expiring_emergencies(session, now, JOB_BATCH)
        todo = [account_id for account_id in due if account_id not in failed]
        for account_id in todo:
            try:
                async with services.db.writing() as session:
                    locked = await store.lock(session, account_id, now)
                    moved, _ = await persist(
                        services, session, locked, bb.expire(locked.state, now), now
                    )
                    changed += moved
                    await session.commit()
            except Exception:
                failed.add(account_id)
                log.exception("ending the emergency resume of %s failed", account_id)
        if len(due) < JOB_BATCH or not todo:
            break
    if changed:
        services.jobs.trigger(PUBLISH_JOB)
    return changed


async def _delete_family_cloud(services: Services, account_id: str) -> int:
    """Every object under ``family/{account_id}/``; returns how many were deleted."""
    keys = [info.key async for info in services.store.list(f"family/{account_id}/")]
    for start in range(0, len(keys), DELETE_CHUNK):
        await services.store.delete_many(keys[start : start + DELETE_CHUNK])
    return len(keys)


async def _family_cloud_step(services: Services, account_id: str, now: datetime) -> None:
    async with services.db.session() as session:
        record = await store.load_record(session, account_id)
        if record is None:
            return
        status = bb.family_cloud_status(store.state_of(record), now)
        action = store.family_cloud_action(record.family_cloud, status)
    if action is None:
        return
    if action == "delete":
        # The deletion was due when decided (6 months without a break, R15); the objects
        # go first, outside any transaction, and the record last, so a deletion cut short
        # is redone at the next turn.
        deleted = await _delete_family_cloud(services, account_id)
        log.info("R15: deleted the family cloud of %s (%d objects)", account_id, deleted)
    async with services.db.writing() as session:
        record = (await store.lock(session, account_id, now)).record
        if store.family_cloud_action(
            record.family_cloud, bb.family_cloud_status(store.state_of(record), now)
        ):
            if action == "delete":
                await session.exec(
                    delete(FamilyCloudItem).where(col(FamilyCloudItem.account_id) == account_id)
                )
            record.family_cloud = "deleted" if action == "delete" else "closed"
            record.family_cloud_changed_at = now
            session.add(record)
        await session.commit()


async def run_family_cloud(services: Services) -> int:
    """R15: close the family cloud after 3 months stopped, delete it after 6."""
    now = services.clock.now()
    after = ""
    seen = 0
    while True:
        async with services.db.session() as session:
            batch = await store.family_cloud_candidates(session, now, after=after, limit=JOB_BATCH)
        for account_id in batch:
            try:
                await _family_cloud_step(services, account_id, now)
            except Exception:
                log.exception("the family-cloud step of %s failed", account_id)
        seen += len(batch)
        if len(batch) < JOB_BATCH:
            return seen
        after = batch[-1]


#: The clock-driven jobs of broadband orders.
JOBS: tuple[JobSpec, ...] = (
    JobSpec(EXPIRY_JOB, 60, expire_emergencies),
    JobSpec(FAMILY_CLOUD_JOB, 3600, run_family_cloud),
)
