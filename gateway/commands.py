"""Device commands (``rpc/req``): create, list, send, retry, time out, settle.

- :func:`create_command` queues a command for a device; :func:`order_command` does it
  exactly once under the platform's ``order_id`` (:func:`gateway.orders.execute_order`),
  whose stored answer is the command as :class:`CommandOut`.
- The job (:data:`JOBS`, Clock-driven) sends queued commands to online devices and retries
  or times out unanswered ones; creating a command wakes it.
- :func:`on_rpc_result` settles a command from the device's ``rpc/res``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from devices import commands as cmd
from devices.errors import NotFound
from devices.models import Device
from devices.orders import Answer
from gateway.answers import Out
from gateway.jobs import JobSpec
from gateway.mqtt.messages import RpcRequest, RpcResult
from gateway.mqtt.session import NotConnected
from gateway.orders import execute_order
from gateway.services import Services

log = logging.getLogger(__name__)

COMMANDS_JOB = "device_commands"

#: How many commands one job turn takes at most.
COMMAND_BATCH = 500


class CommandOut(Out):
    command_id: str
    device_id: str
    order_id: str | None = None
    method: str
    params: dict[str, Any]
    status: cmd.CommandStatus
    attempts: int
    max_attempts: int
    deadline: datetime
    created_at: datetime
    sent_at: datetime | None = None
    finished_at: datetime | None = None
    result: Any = None
    error: dict[str, Any] | None = None

    @classmethod
    def of(cls, row: cmd.DeviceCommand) -> CommandOut:
        return cls.model_validate(row, from_attributes=True)


# --- create and list ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandRequest:
    device_id: str
    method: str
    params: dict[str, Any]
    deadline_seconds: float
    max_attempts: int

    def request_body(self) -> dict[str, Any]:
        """What the command asks, for its order's fingerprint (the body without the id)."""
        return {
            "method": self.method,
            "params": self.params,
            "deadline_seconds": self.deadline_seconds,
            "max_attempts": self.max_attempts,
        }


async def _stage(
    services: Services, session: AsyncSession, request: CommandRequest, order_id: str | None
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
        order_id=order_id,
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


async def create_command(services: Services, request: CommandRequest) -> cmd.DeviceCommand:
    """Queue a command for an existing device (404 otherwise); the job sends it."""
    async with services.db.writing() as session:
        row = await _stage(services, session, request, None)
        await session.commit()
    services.jobs.trigger(COMMANDS_JOB)
    return row


async def _account_of(services: Services, device_id: str) -> str | None:
    """The device's account, to record its command order under (None: unknown device)."""
    async with services.db.session() as session:
        device = await session.get(Device, device_id)
    return None if device is None else device.account_id


async def order_command(services: Services, request: CommandRequest, order_id: str) -> Answer:
    """Queue a command exactly once for the platform's ``order_id``; a repeat answers the
    first time's :class:`CommandOut` (201)."""

    async def effect(session: AsyncSession) -> tuple[Answer, dict[str, Any] | None]:
        row = await _stage(services, session, request, order_id)
        out: dict[str, Any] = CommandOut.of(row).model_dump(mode="json", exclude_none=True)
        return Answer(201, out), None

    answer = await execute_order(
        services,
        order_id=order_id,
        action="device.command",
        target=request.device_id,
        request_body=request.request_body(),
        effect=effect,
        account_id=await _account_of(services, request.device_id),
    )
    services.jobs.trigger(COMMANDS_JOB)
    return answer


async def list_commands(services: Services, device_id: str) -> list[cmd.DeviceCommand]:
    """The device's commands, newest first (404 for an unknown device)."""
    async with services.db.session() as session:
        if await session.get(Device, device_id) is None:
            raise NotFound("device", device_id)
        return await cmd.device_commands(session, device_id)


# --- the job ------------------------------------------------------------------------------


def rpc_request(row: cmd.DeviceCommand) -> RpcRequest:
    """The ``rpc/req`` of a command."""
    return RpcRequest(
        device_id=row.device_id,
        id=row.command_id,
        method=row.method,
        params=row.params,
        deadline=row.deadline,
    )


async def run_commands(services: Services) -> int:
    """Send queued commands to online devices; retry or time out unanswered ones."""
    now = services.clock.now()
    mqtt = services.mqtt
    connected = mqtt is not None and mqtt.connected.is_set()
    async with services.db.session() as session:
        due = await cmd.due_commands(session, now, COMMAND_BATCH)
    sent = 0
    for row, online in due:
        step = cmd.tick(cmd.state_of(row), now=now, reachable=online and connected)
        if step.send:
            assert mqtt is not None
            try:
                await mqtt.send(rpc_request(row))
            except NotConnected:
                log.info("MQTT down: commands wait for the next turn")
                break
            sent += 1
        if step.state != cmd.state_of(row):
            async with services.db.writing() as session:
                await cmd.compare_and_set(session, row, step.state, now)
                await session.commit()
    return sent


#: The clock-driven job of device commands.
JOBS: tuple[JobSpec, ...] = (JobSpec(COMMANDS_JOB, 1.0, run_commands),)


# --- answers from devices -----------------------------------------------------------------


def _device_error(raw: object) -> dict[str, Any]:
    if isinstance(raw, dict) and isinstance(raw.get("message"), str):
        return dict(raw)
    if isinstance(raw, str) and raw:
        return {"message": raw}
    return {"message": "the device reported a failure", "detail": raw}


async def on_rpc_result(services: Services, msg: RpcResult) -> None:
    """An ``rpc/res`` from a device: settle its command."""
    command_id = msg.id
    now = services.clock.now()
    for _ in range(3):
        async with services.db.writing() as session:
            row = await session.get(cmd.DeviceCommand, command_id, populate_existing=True)
            if row is None or row.device_id != msg.device_id:
                # Another device cannot settle this one's command; an unknown id is noise.
                log.warning("rpc/res from %s for unknown command %s", msg.device_id, command_id)
                return
            before = cmd.state_of(row)
            after = cmd.answer(
                before,
                ok=msg.ok,
                result=msg.result,
                error=None if msg.ok else _device_error(msg.error),
            )
            if after == before:
                return  # finished already: a late or repeated answer changes nothing
            if await cmd.compare_and_set(session, row, after, now):
                await session.commit()
                return
        # The job changed the command meanwhile (a retry went out): read it again.
    log.warning("rpc/res for %s could not be recorded", command_id)
