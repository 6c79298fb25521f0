"""Accounts, device bindings and app tokens: the rules, over an open database session."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from devices.errors import Conflict, NotFound
from devices.models import Account, AppToken, Device, DeviceKind


class DeviceBoundElsewhere(Conflict):
    code = "device_bound_elsewhere"

    def __init__(self, device_id: str) -> None:
        super().__init__(f"device {device_id} is bound to another account")
        self.device_id = device_id


class KindMismatch(Conflict):
    code = "device_kind_mismatch"

    def __init__(self, device_id: str, kind: str, asked: str) -> None:
        super().__init__(f"device {device_id} is a {kind}, not a {asked}")
        self.device_id = device_id
        self.kind = kind
        self.asked = asked


@dataclass(frozen=True, slots=True)
class Upserted:
    created: bool
    account: Account


async def upsert_account(
    session: AsyncSession,
    *,
    account_id: str,
    owner_id: str,
    star_level: int,
    name: str | None,
    now: datetime,
) -> Upserted:
    if not 0 <= star_level <= 7:
        raise ValueError("star_level must be from 0 to 7")
    account = await session.get(Account, account_id)
    created = account is None
    if account is None:
        account = Account(
            account_id=account_id,
            owner_id=owner_id,
            star_level=star_level,
            name=name,
            created_at=now,
            updated_at=now,
        )
    else:
        account.owner_id = owner_id
        account.star_level = star_level
        account.name = name
        account.updated_at = now
    session.add(account)
    await session.commit()
    return Upserted(created=created, account=account)


async def get_account(session: AsyncSession, account_id: str) -> Account:
    account = await session.get(Account, account_id)
    if account is None:
        raise NotFound("account", account_id)
    return account


@dataclass(frozen=True, slots=True)
class Bound:
    created: bool
    device: Device


async def bind_device(
    session: AsyncSession,
    *,
    account_id: str,
    device_id: str,
    kind: DeviceKind,
    name: str | None,
    now: datetime,
) -> Bound:
    """Bind a device to an account; binding again to the same account is idempotent."""
    await get_account(session, account_id)
    device = await session.get(Device, device_id)
    if device is not None:
        if device.account_id != account_id:
            raise DeviceBoundElsewhere(device_id)
        if device.kind != kind:
            raise KindMismatch(device_id, device.kind, kind)
        if name is not None and device.name != name:
            device.name = name
            session.add(device)
            await session.commit()
        return Bound(created=False, device=device)
    device = Device(device_id=device_id, account_id=account_id, kind=kind, name=name, bound_at=now)
    session.add(device)
    await session.commit()
    return Bound(created=True, device=device)


async def list_devices(session: AsyncSession, account_id: str) -> list[Device]:
    result = await session.exec(
        select(Device).where(Device.account_id == account_id).order_by(col(Device.device_id))
    )
    return list(result.all())


async def device_of_account(session: AsyncSession, account_id: str, device_id: str) -> Device:
    """The device if it belongs to ``account_id``; otherwise not found, never forbidden
    (no probing)."""
    device = await session.get(Device, device_id)
    if device is None or device.account_id != account_id:
        raise NotFound("device", device_id)
    return device


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def issue_app_token(
    session: AsyncSession, *, account_id: str, user_id: str, now: datetime
) -> str:
    await get_account(session, account_id)
    token = "kja_" + secrets.token_urlsafe(32)
    session.add(
        AppToken(
            token_hash=_hash_token(token), account_id=account_id, user_id=user_id, created_at=now
        )
    )
    await session.commit()
    return token


async def resolve_app_token(session: AsyncSession, token: str) -> AppToken | None:
    return await session.get(AppToken, _hash_token(token))
