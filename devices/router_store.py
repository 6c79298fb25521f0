"""Per-router SSH access, stored, and router management recorded as device commands (R12, R13).

:class:`RouterAccess` keeps, per bound router, how the service logs in (host, port, user,
password) and the host key pinned at provisioning (trust on first use, see
:meth:`devices.router.RouterManager.provision_host_key`). The password is kept as given
because the service must present it to the router; it is never returned by the API and
never logged.

Each management operation (``router.set_ssid``, ``router.set_channels``, ``router.tune``,
``router.reboot`` ...) is recorded as a :class:`devices.commands.DeviceCommand`, so the
platform sees it with the device's other commands. Its states follow the command state
machine (queued → sent → succeeded | failed | timed_out) with one attempt, but the row is
written once, when the operation has finished: an SSH operation is bounded by the
manager's real-time timeouts, and a row left *sent* meanwhile would be settled by the RPC
job against the service clock (accelerated in simulated fleets) while it is still
running. A WiFi passphrase is never stored: its parameter is recorded as ``***``.

R12: while the account's broadband is stopped, changes are refused here
(:class:`BroadbandInactive`) before any SSH session opens; reading the status still works.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, Final

import asyncssh
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from devices.commands import (
    CommandStatus,
    DeviceCommand,
    answer,
    new_command,
    new_command_id,
    record_state,
    tick,
)
from devices.errors import Conflict, NotFound
from devices.models import Account, Device, DeviceKind
from devices.router import CommandResult, ResultCode, RouterCredentials, RouterManager
from devices.uci import MASK
from storage.db import UTCDateTime

__all__ = [
    "COMMAND_TIMEOUT_SECONDS",
    "CONNECT_TIMEOUT_SECONDS",
    "MAX_SESSIONS",
    "OPERATION_DEADLINE_SECONDS",
    "BroadbandInactive",
    "NotProvisioned",
    "RouterAccess",
    "credentials",
    "fingerprint",
    "get_access",
    "new_router_manager",
    "record_operation",
    "require_managed",
    "result_fields",
    "router_of",
    "save_access",
]

#: SSH sessions one gateway holds at once, over all routers (``bench/router_tuning.py``).
MAX_SESSIONS: Final = 32
#: Bound on TCP connect, key exchange and login to one router.
CONNECT_TIMEOUT_SECONDS: Final = 10.0
#: Bound on each command run on a router.
COMMAND_TIMEOUT_SECONDS: Final = 15.0
#: The deadline recorded on a management command (one attempt; see the module docstring).
OPERATION_DEADLINE_SECONDS: Final = 120.0


def new_router_manager() -> RouterManager:
    """The gateway's one pool of router SSH sessions."""
    return RouterManager(
        max_sessions=MAX_SESSIONS,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        command_timeout=COMMAND_TIMEOUT_SECONDS,
    )


# --- errors -------------------------------------------------------------------------------


class BroadbandInactive(Conflict):
    """R12: the managed networking service is suspended while broadband is stopped."""

    code = "broadband_inactive"
    rule = "R12"

    def __init__(self, account_id: str, state: str) -> None:
        super().__init__(
            f"the broadband account {account_id} is {state}: managed networking is suspended "
            "and the router cannot be changed until it is resumed"
        )
        self.account_id = account_id
        self.state = state


class NotProvisioned(Conflict):
    """The router's SSH access has not been provisioned yet."""

    code = "router_not_provisioned"

    def __init__(self, device_id: str) -> None:
        super().__init__(
            f"router {device_id} has no SSH access yet; "
            f"PUT /platform/v1/devices/{device_id}/router/access first"
        )
        self.device_id = device_id


# --- access -------------------------------------------------------------------------------


class RouterAccess(SQLModel, table=True):
    """How the service reaches one router, with the host key pinned at provisioning."""

    __tablename__ = "router_access"

    device_id: str = Field(primary_key=True, foreign_key="devices.device_id", max_length=64)
    host: str = Field(max_length=255)
    port: int
    username: str = Field(max_length=64)
    #: Presented to the router at every login; never returned, never logged.
    password: str = Field(max_length=128, repr=False)
    #: The OpenSSH public key line recorded at provisioning (trust on first use).
    host_key: str = Field(max_length=2000)
    fingerprint: str = Field(max_length=128)
    provisioned_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


async def release_access(session: AsyncSession, device_id: str) -> bool:
    """Forget how the service logs in to the router (it left its account); True if it had
    access recorded. Staged and flushed, before the device row goes (the foreign key)."""
    access = await get_access(session, device_id)
    if access is None:
        return False
    await session.delete(access)
    await session.flush()
    return True


def fingerprint(host_key: str) -> str:
    """The SHA-256 fingerprint of an OpenSSH public key line (as ``ssh-keygen -l`` shows)."""
    value: str = asyncssh.import_public_key(host_key).get_fingerprint("sha256")
    return value


def credentials(access: RouterAccess) -> RouterCredentials:
    return RouterCredentials(
        host=access.host,
        port=access.port,
        username=access.username,
        password=access.password,
        pinned_host_key=access.host_key,
    )


async def router_of(session: AsyncSession, device_id: str) -> tuple[Device, Account]:
    """A bound router and its account; anything else (unknown, a camera) is not found."""
    device = await session.get(Device, device_id)
    if device is None or device.kind != DeviceKind.ROUTER:
        raise NotFound("router", device_id)
    account = await session.get(Account, device.account_id)
    if account is None:
        raise NotFound("router", device_id)
    return device, account


def require_managed(account: Account) -> None:
    """R12: refuse management changes unless the account's broadband is active."""
    if account.broadband_state != "active":
        raise BroadbandInactive(account.account_id, account.broadband_state)


async def get_access(session: AsyncSession, device_id: str) -> RouterAccess | None:
    return await session.get(RouterAccess, device_id)


async def save_access(
    session: AsyncSession, *, device_id: str, creds: RouterCredentials, host_key: str, now: datetime
) -> RouterAccess:
    """Record (or replace) the router's access and pinned key; the caller commits.

    ``provisioned_at`` is when the current key was first pinned: it stays when the same
    key is confirmed again (a new password, say) and moves when a new key is trusted.
    """
    access = await session.get(RouterAccess, device_id)
    if access is None:
        access = RouterAccess(
            device_id=device_id,
            host=creds.host,
            port=creds.port,
            username=creds.username,
            password=creds.password,
            host_key=host_key,
            fingerprint=fingerprint(host_key),
            provisioned_at=now,
            updated_at=now,
        )
    else:
        if access.host_key != host_key:
            access.provisioned_at = now
        access.host = creds.host
        access.port = creds.port
        access.username = creds.username
        access.password = creds.password
        access.host_key = host_key
        access.fingerprint = fingerprint(host_key)
        access.updated_at = now
    session.add(access)
    return access


# --- operations as commands ---------------------------------------------------------------


def _masked(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (MASK if k == "passphrase" else v) for k, v in params.items()}


def record_operation(
    session: AsyncSession,
    *,
    device_id: str,
    account_id: str,
    method: str,
    params: Mapping[str, Any],
    ok: bool,
    code: ResultCode | str,
    message: str | None,
    result: Any,
    started_at: datetime,
    finished_at: datetime,
) -> DeviceCommand:
    """Add the finished operation to ``session`` as a one-attempt command (not committed).

    ``ok``: succeeded with ``result``; ``code == "timed_out"``: timed out; anything else:
    failed, with ``{"code", "message"}`` as the error. A ``passphrase`` parameter is masked.
    """
    if not ok and not message:
        raise ValueError("a failed operation must say what failed")
    queued = new_command(
        now=started_at, deadline_seconds=OPERATION_DEADLINE_SECONDS, max_attempts=1
    )
    sent = tick(queued, now=started_at, reachable=True).state
    error = None if ok else {"code": code, "message": message}
    if ok:
        done = answer(sent, ok=True, result=result)
    elif code == "timed_out":
        done = replace(sent, status=CommandStatus.TIMED_OUT, check_at=None, error=error)
    else:
        done = answer(sent, ok=False, error=error)
    if result is not None and not ok:
        done = replace(done, result=result)
    row = DeviceCommand(
        command_id=new_command_id(),
        device_id=device_id,
        account_id=account_id,
        method=method,
        params=_masked(params),
        status=queued.status.value,
        max_attempts=queued.max_attempts,
        attempt_timeout_ms=0,
        deadline=queued.deadline,
        check_at=queued.check_at,
        created_at=started_at,
    )
    record_state(row, sent, started_at)
    record_state(row, done, finished_at)
    session.add(row)
    return row


def result_fields(result: CommandResult) -> dict[str, Any]:
    """What a :class:`CommandResult` contributes to :func:`record_operation`."""
    return {"ok": result.ok, "code": result.code, "message": result.error}
