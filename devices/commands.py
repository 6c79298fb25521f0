"""Imperative device commands (reboot, snapshot, WiFi scan) with acknowledgement.

Desired state converges by retain; an imperative action cannot (a reboot must happen once,
now, not whenever the device next connects), so it gets the state machine of persistent
RPC systems::

    queued ──send──▶ sent ──answer ok──▶ succeeded
      ▲  │             │ └──answer error──▶ failed
      │  │             │
      │  └─deadline─▶ timed_out ◀──deadline, or no answer after the last attempt
      └── no answer and the device is offline: wait for it again

A command is *queued* until the device is reachable (online), then *sent* as ``rpc/req``
with its id. Each attempt waits ``attempt_timeout`` for the ``rpc/res``; without an
answer it is sent again under the same id (the device must treat a repeated id as one
command), at most ``max_attempts`` times and never after the overall ``deadline``, which
the request also carries so the device can drop a request that arrives too late. A
device's answer is final: an error is *failed*, not retried. Terminal states never change
again: a late answer to a timed-out command is ignored.

:func:`tick` (time passes) and :func:`answer` (the device replied) are pure and
table-tested; the gateway's job and ``rpc/res`` handler apply them to
:class:`DeviceCommand` rows.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, update
from sqlmodel import Field, SQLModel, col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from devices.clock import aware_utc
from devices.models import Device
from storage.db import UTCDateTime

__all__ = [
    "MAX_ATTEMPTS_LIMIT",
    "MAX_DEADLINE_SECONDS",
    "TERMINAL",
    "CommandState",
    "CommandStatus",
    "DeviceCommand",
    "Tick",
    "answer",
    "compare_and_set",
    "device_commands",
    "due_commands",
    "new_command",
    "new_command_id",
    "record_state",
    "state_of",
    "tick",
]

#: Bounds of what a caller may ask for.
MAX_DEADLINE_SECONDS = 86_400
MAX_ATTEMPTS_LIMIT = 10


class CommandStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


TERMINAL = frozenset({CommandStatus.SUCCEEDED, CommandStatus.FAILED, CommandStatus.TIMED_OUT})


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandState:
    """Where one command stands.

    ``attempts`` counts the ``rpc/req`` sent; ``check_at`` is when time next matters (the
    end of the current attempt while sent; the deadline while queued); it is None once
    the command is terminal. ``result`` is the device's answer, ``error`` an object with
    at least a ``message``.
    """

    status: CommandStatus
    attempts: int
    max_attempts: int
    attempt_timeout: timedelta
    deadline: datetime
    check_at: datetime | None
    result: Any = None
    error: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", CommandStatus(self.status))
        aware_utc(self.deadline, "deadline")
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS_LIMIT:
            raise ValueError(f"max_attempts must be from 1 to {MAX_ATTEMPTS_LIMIT}")
        if not 0 <= self.attempts <= self.max_attempts:
            raise ValueError("attempts must be from 0 to max_attempts")
        if self.attempt_timeout <= timedelta(0):
            raise ValueError("attempt_timeout must be positive")
        terminal = self.status in TERMINAL
        if terminal != (self.check_at is None):
            raise ValueError("check_at is set exactly while the command is not finished")
        if self.check_at is not None:
            aware_utc(self.check_at, "check_at")
        if self.status == CommandStatus.SENT and self.attempts == 0:
            raise ValueError("a sent command has at least one attempt")
        if self.error is not None and "message" not in self.error:
            raise ValueError("an error needs a message")

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


def new_command(*, now: datetime, deadline_seconds: float, max_attempts: int = 3) -> CommandState:
    """A queued command; each attempt gets an equal share of the deadline."""
    aware_utc(now, "now")
    if not 0 < deadline_seconds <= MAX_DEADLINE_SECONDS:
        raise ValueError(f"deadline_seconds must be above 0 and at most {MAX_DEADLINE_SECONDS}")
    if not 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT:
        raise ValueError(f"max_attempts must be from 1 to {MAX_ATTEMPTS_LIMIT}")
    deadline = now + timedelta(seconds=deadline_seconds)
    return CommandState(
        status=CommandStatus.QUEUED,
        attempts=0,
        max_attempts=max_attempts,
        attempt_timeout=timedelta(seconds=deadline_seconds / max_attempts),
        deadline=deadline,
        check_at=now,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Tick:
    """The state after time passed, and whether to publish an ``rpc/req`` now."""

    state: CommandState
    send: bool


def _timed_out(state: CommandState, message: str) -> CommandState:
    return replace(
        state,
        status=CommandStatus.TIMED_OUT,
        check_at=None,
        error={"code": "timed_out", "message": message},
    )


def tick(state: CommandState, *, now: datetime, reachable: bool) -> Tick:
    """Time has reached ``now``; ``reachable`` says whether the device is online.

    Publish only when the result says ``send``, and keep the new state only once the
    broker took the request: a request the broker refused leaves the old state, to be
    tried at the next tick.
    """
    aware_utc(now, "now")
    if state.finished:
        return Tick(state=state, send=False)
    if now >= state.deadline:
        if state.attempts:
            message = f"no answer by the deadline after {state.attempts} attempt(s)"
        else:
            message = "the device was not reachable before the deadline"
        return Tick(state=_timed_out(state, message), send=False)
    assert state.check_at is not None
    if state.status == CommandStatus.SENT:
        if now < state.check_at:
            return Tick(state=state, send=False)  # the attempt is still waiting
        if state.attempts >= state.max_attempts:
            message = f"no answer after {state.attempts} attempt(s)"
            return Tick(state=_timed_out(state, message), send=False)
        if not reachable:
            # The device went away mid-command: wait for it, as if never sent.
            return Tick(
                state=replace(state, status=CommandStatus.QUEUED, check_at=state.deadline),
                send=False,
            )
    elif not reachable:
        return Tick(state=replace(state, check_at=state.deadline), send=False)
    sent = replace(
        state,
        status=CommandStatus.SENT,
        attempts=state.attempts + 1,
        check_at=min(now + state.attempt_timeout, state.deadline),
    )
    return Tick(state=sent, send=True)


def answer(
    state: CommandState, *, ok: bool, result: Any = None, error: dict[str, Any] | None = None
) -> CommandState:
    """The device answered: succeeded or failed, once. A late or repeated answer changes nothing.

    An answer to a command still marked queued is taken too: it was sent, and the service
    lost track of it (a crash between the publish and the commit).
    """
    if state.finished:
        return state
    if ok:
        return replace(state, status=CommandStatus.SUCCEEDED, check_at=None, result=result)
    failure = error if error is not None else {"message": "the device reported a failure"}
    return replace(state, status=CommandStatus.FAILED, check_at=None, error=failure)


# --- storage ------------------------------------------------------------------------------


class DeviceCommand(SQLModel, table=True):
    """One imperative command to one device, with its state and the device's answer."""

    __tablename__ = "device_commands"

    command_id: str = Field(primary_key=True, max_length=40)
    device_id: str = Field(index=True, max_length=64)
    account_id: str = Field(max_length=64)
    order_id: str | None = Field(default=None, max_length=128)
    method: str = Field(max_length=64)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(max_length=16)
    attempts: int = 0
    max_attempts: int
    attempt_timeout_ms: int
    deadline: datetime = Field(sa_type=UTCDateTime)
    #: When the job must look at it next; None once finished (indexed for the job).
    check_at: datetime | None = Field(default=None, index=True, sa_type=UTCDateTime)
    result: Any = Field(default=None, sa_column=Column(JSON, nullable=True))
    error: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = Field(sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


def new_command_id() -> str:
    return "cmd_" + secrets.token_hex(12)


def state_of(row: DeviceCommand) -> CommandState:
    return CommandState(
        status=CommandStatus(row.status),
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        attempt_timeout=timedelta(milliseconds=row.attempt_timeout_ms),
        deadline=row.deadline,
        check_at=row.check_at,
        result=row.result,
        error=row.error,
    )


def _columns(row: DeviceCommand, state: CommandState, now: datetime) -> dict[str, Any]:
    """The column values of ``state``, stamping when it was sent and when it finished."""
    values: dict[str, Any] = {
        "status": state.status.value,
        "attempts": state.attempts,
        "max_attempts": state.max_attempts,
        "attempt_timeout_ms": round(state.attempt_timeout / timedelta(milliseconds=1)),
        "deadline": state.deadline,
        "check_at": state.check_at,
        "result": state.result,
        "error": state.error,
    }
    if state.attempts > row.attempts:
        values["sent_at"] = now
    if state.finished and row.finished_at is None:
        values["finished_at"] = now
    return values


def record_state(row: DeviceCommand, state: CommandState, now: datetime) -> None:
    """Copy ``state`` onto a new ``row`` (one not yet stored)."""
    for name, value in _columns(row, state, now).items():
        setattr(row, name, value)


async def compare_and_set(
    session: AsyncSession, row: DeviceCommand, after: CommandState, now: datetime
) -> bool:
    """Store ``after`` if the stored command is still as ``row`` was read; False otherwise.

    The job and the ``rpc/res`` handler may change one command at once (an answer arriving
    as a retry goes out): the status and attempts read are the condition of the write, so
    neither overwrites the other; the loser reads again.
    """
    values = _columns(row, after, now)
    result = await session.exec(
        update(DeviceCommand)
        .where(
            col(DeviceCommand.command_id) == row.command_id,
            col(DeviceCommand.status) == row.status,
            col(DeviceCommand.attempts) == row.attempts,
        )
        .values(**values)
    )
    return bool(result.rowcount == 1)


async def due_commands(
    session: AsyncSession, now: datetime, limit: int
) -> list[tuple[DeviceCommand, bool]]:
    """Unfinished commands that need a look, each with whether its device is online.

    Due are those whose ``check_at`` has come, and queued ones whose device is online now
    (a queued command waits for its device with ``check_at`` at its deadline).
    """
    result = await session.exec(
        select(DeviceCommand, Device.online)
        .join(Device, col(Device.device_id) == col(DeviceCommand.device_id))
        .where(
            or_(
                col(DeviceCommand.check_at) <= now,
                (col(DeviceCommand.status) == CommandStatus.QUEUED.value)
                & col(Device.online).is_(True),
            )
        )
        .order_by(col(DeviceCommand.check_at), col(DeviceCommand.command_id))
        .limit(limit)
    )
    return [(row, bool(online)) for row, online in result.all()]


async def device_commands(
    session: AsyncSession, device_id: str, limit: int = 100
) -> list[DeviceCommand]:
    """The device's commands, newest first."""
    result = await session.exec(
        select(DeviceCommand)
        .where(DeviceCommand.device_id == device_id)
        .order_by(col(DeviceCommand.created_at).desc(), col(DeviceCommand.command_id))
        .limit(limit)
    )
    return list(result.all())


async def abandon_pending(session: AsyncSession, device_id: str, now: datetime) -> int:
    """The device left its account: its unfinished commands fail (``device_unbound``) and
    are never sent to it under a later account (the caller commits); how many."""
    result = await session.exec(
        update(DeviceCommand)
        .where(
            col(DeviceCommand.device_id) == device_id,
            col(DeviceCommand.status).in_([CommandStatus.QUEUED, CommandStatus.SENT]),
        )
        .values(
            status=CommandStatus.FAILED,
            check_at=None,
            finished_at=now,
            error={"code": "device_unbound", "message": "the device left its account"},
        )
    )
    return int(result.rowcount)
