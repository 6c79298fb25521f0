"""Broadband orders against the stored state, their jobs, and device commands (R8–R12, R15).

- :func:`run_order` applies one platform order (stop, resume, teardown, emergency
  resume) exactly once through :func:`gateway.orders.execute_order`: in one transaction it
  locks the account, applies :func:`devices.broadband.apply`, saves ``Outcome.state``
  (always, applied or not), keeps ``Account.broadband_state`` in step, recomputes the
  desired documents of all the account's devices when that changed (R8 cameras, R12
  routers), and stores the answer with its completion report (报竣) when applied. The
  publish job then hands the new documents to the broker, retained.
- Jobs (Clock-driven, :func:`install`): the end of emergency resumes (R11), the family
  cloud's closure and deletion after long stops (R15), and device commands (send, retry,
  time out).
- :func:`on_rpc_result` settles a command from the device's ``rpc/res``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeAlias

from aiohttp import web
from sqlmodel import col, delete
from sqlmodel.ext.asyncio.session import AsyncSession

from devices import accounts
from devices import broadband as bb
from devices import broadband_store as store
from devices import commands as cmd
from devices.desired import account_convergence
from devices.errors import NotFound
from devices.models import Device
from devices.orders import Answer
from gateway.desired import PUBLISH_JOB, refresh_desired
from gateway.http.api import Out, error_body
from gateway.mqtt.messages import DeviceMessage, Malformed, topic
from gateway.mqtt.session import NotConnected
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
COMMANDS_JOB = "device_commands"

#: How many accounts or commands one job turn takes at most.
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
    states = {s.device_id: s for s in await account_convergence(session, account_id)}
    out = []
    for device in devices:
        desired = states.get(device.device_id)
        desired_v = desired.version if desired else 0
        reported_v = desired.reported_version if desired else 0
        out.append(
            DeviceConvergenceOut(
                device_id=device.device_id,
                kind=device.kind,
                online=device.online,
                desired_version=desired_v,
                reported_version=reported_v,
                converged=reported_v >= desired_v,
            )
        )
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

    def request_body(self) -> dict[str, Any]:
        """What the order asks, for its fingerprint: the same from a batch or alone."""
        body: dict[str, Any] = {}
        if self.stop_type is not None:
            body["stop_type"] = self.stop_type.value
        if self.issued_at is not None:
            body["issued_at"] = self.issued_at.isoformat()
        return body

    def domain(self, now: datetime) -> bb.Order:
        """The domain order; business time is ``issued_at``, else the service clock."""
        at = self.issued_at or now
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
) -> tuple[bool, list[Device]]:
    """Save ``state``; when the account's state moved, recompute its devices' desired state.

    Returns whether it moved, and the account's devices.
    """
    changed = store.save(session, locked, state, now, last=last)
    devices = await accounts.list_devices(session, locked.account.account_id)
    if changed:
        await refresh_desired(services, session, [d.device_id for d in devices])
    return changed, devices


def _completion_report(
    order: BroadbandOrder, at: datetime, view: BroadbandViewOut
) -> dict[str, Any]:
    """What the platform's callback receives for an applied order (报竣)."""
    return {
        "order_id": order.order_id,
        "action": f"broadband.{order.action}",
        "status": "completed",
        "completed_at": at.isoformat(),
        "result": view.model_dump(mode="json", exclude_none=True),
    }


async def run_order(services: Services, order: BroadbandOrder) -> web.Response:
    """Apply one order exactly once; the answer is the view, or a 404/409 error."""

    async def effect(session: AsyncSession) -> tuple[Answer, dict[str, Any] | None]:
        now = services.clock.now()
        locked = await store.lock(session, order.account_id, now)
        domain = order.domain(now)
        subscribed = isinstance(domain, bb.Teardown) and await has_active_subscription(
            session, order.account_id
        )
        outcome = bb.apply(
            locked.state,
            domain,
            now=now,
            star_level=locked.account.star_level,
            has_active_subscription=subscribed,
        )
        refusal = outcome.refusal
        last = None
        if refusal is None:
            last = store.LastOrder(
                order_id=order.order_id, applied=outcome.applied, reason=outcome.reason
            )
        # Outcome.state is saved even when not applied: issued_at bookkeeping, lapses.
        _, devices = await persist(services, session, locked, outcome.state, now, last=last)
        if refusal is not None:
            return Answer(409, error_body(refusal.code, refusal.message, refusal.rule)), None
        view = await broadband_view(
            session, order.account_id, outcome.state, now, last=last, devices=devices
        )
        body: dict[str, Any] = view.model_dump(mode="json", exclude_none=True)
        report = _completion_report(order, now, view) if outcome.applied else None
        return Answer(200, body), report

    response = await execute_order(
        services,
        order_id=order.order_id,
        action=f"broadband.{order.action}",
        target=order.account_id,
        request_body=order.request_body(),
        effect=effect,
    )
    # Not every change comes with a report (an emergency that lapsed under a refusal).
    services.jobs.trigger(PUBLISH_JOB)
    return response


def response_json(response: web.Response) -> dict[str, Any]:
    """The JSON body of an answer made by :func:`run_order`."""
    body = response.body
    if not isinstance(body, bytes):
        raise TypeError("the answer has no JSON body")
    data: dict[str, Any] = json.loads(body)
    return data


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
                async with services.db.session() as session:
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
    async with services.db.session() as session:
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


def rpc_request(row: cmd.DeviceCommand) -> bytes:
    """The ``rpc/req`` payload: ``{"id", "method", "params", "deadline"}``."""
    return json.dumps(
        {
            "id": row.command_id,
            "method": row.method,
            "params": row.params,
            "deadline": row.deadline.isoformat(),
        }
    ).encode()


async def run_commands(services: Services) -> int:
    """Send queued commands to online devices; retry or time out unanswered ones."""
    now = services.clock.now()
    mqtt = services.mqtt
    connected = mqtt is not None and mqtt.connected.is_set()
    async with services.db.session() as session:
        due = await cmd.due_commands(session, now, JOB_BATCH)
    sent = 0
    for row, online in due:
        step = cmd.tick(cmd.state_of(row), now=now, reachable=online and connected)
        if step.send:
            assert mqtt is not None
            try:
                await mqtt.publish(topic(row.device_id, "rpc/req"), rpc_request(row), qos=1)
            except NotConnected:
                log.info("MQTT down: commands wait for the next turn")
                break
            sent += 1
        if step.state != cmd.state_of(row):
            async with services.db.session() as session:
                await cmd.compare_and_set(session, row, step.state, now)
                await session.commit()
    return sent


def install(services: Services) -> None:
    """Add the clock-driven jobs of broadband orders to ``services.jobs``."""
    services.jobs.add(EXPIRY_JOB, 60, lambda: expire_emergencies(services))
    services.jobs.add(FAMILY_CLOUD_JOB, 3600, lambda: run_family_cloud(services))
    services.jobs.add(COMMANDS_JOB, 1.0, lambda: run_commands(services))

    async def family_cloud_open(session: AsyncSession, account_id: str) -> bool:
        return await store.family_cloud_open(session, account_id, services.clock.now())

    services.family_cloud_open = family_cloud_open


# --- device commands ----------------------------------------------------------------------


def _device_error(raw: object) -> dict[str, Any]:
    if isinstance(raw, dict) and isinstance(raw.get("message"), str):
        return dict(raw)
    if isinstance(raw, str) and raw:
        return {"message": raw}
    return {"message": "the device reported a failure", "detail": raw}


async def on_rpc_result(services: Services, msg: DeviceMessage) -> None:
    """An ``rpc/res`` from a device: settle its command."""
    command_id = msg.payload.get("id")
    ok = msg.payload.get("ok")
    if not isinstance(command_id, str) or not command_id:
        raise Malformed(msg.kind, "'id' must be a non-empty string")
    if not isinstance(ok, bool):
        raise Malformed(msg.kind, "'ok' must be true or false")
    now = services.clock.now()
    for _ in range(3):
        async with services.db.session() as session:
            row = await session.get(cmd.DeviceCommand, command_id, populate_existing=True)
            if row is None or row.device_id != msg.device_id:
                # Another device cannot settle this one's command; an unknown id is noise.
                log.warning("rpc/res from %s for unknown command %s", msg.device_id, command_id)
                return
            before = cmd.state_of(row)
            after = cmd.answer(
                before,
                ok=ok,
                result=msg.payload.get("result"),
                error=None if ok else _device_error(msg.payload.get("error")),
            )
            if after == before:
                return  # finished already: a late or repeated answer changes nothing
            if await cmd.compare_and_set(session, row, after, now):
                await session.commit()
                return
        # The job changed the command meanwhile (a retry went out): read it again.
    log.warning("rpc/res for %s could not be recorded", command_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandRequest:
    device_id: str
    method: str
    params: dict[str, Any]
    deadline_seconds: float
    max_attempts: int
    order_id: str | None = None


async def create_command(
    services: Services, session: AsyncSession, request: CommandRequest
) -> cmd.DeviceCommand:
    """Stage a queued command for an existing device (404 otherwise)."""
    device = await session.get(Device, request.device_id)
    if device is None:
        raise NotFound("device", request.device_id)
    now = services.clock.now()
    state = cmd.new_command(
        now=now, deadline_seconds=request.deadline_seconds, max_attempts=request.max_attempts
    )
    row = cmd.DeviceCommand(
        command_id=cmd.new_command_id(),
        device_id=device.device_id,
        account_id=device.account_id,
        order_id=request.order_id,
        method=request.method,
        params=request.params,
        status=state.status.value,
        max_attempts=state.max_attempts,
        attempt_timeout_ms=0,
        deadline=state.deadline,
        created_at=now,
    )
    cmd.record_state(row, state, now)
    session.add(row)
    return row
