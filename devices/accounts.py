"""Accounts, device bindings and app tokens: the rules, over an open database session."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import case
from sqlmodel import col, delete, func, or_, select
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
class AccountSummary:
    """An account as the operator lists it, with how many devices it has and how many are
    online now."""

    account: Account
    devices: int
    online: int


async def list_accounts(
    session: AsyncSession,
    *,
    prefix: str | None,
    broadband_state: str | None,
    after: str | None,
    limit: int,
) -> list[AccountSummary]:
    """Accounts in ``account_id`` order after ``after``, at most ``limit``; ``prefix``
    matches the start of the account id or of the owner's id, ``broadband_state`` the state
    (active, stopped, torn_down)."""
    query = select(Account)
    if prefix:
        query = query.where(
            or_(
                col(Account.account_id).startswith(prefix, autoescape=True),
                col(Account.owner_id).startswith(prefix, autoescape=True),
            )
        )
    if broadband_state is not None:
        query = query.where(Account.broadband_state == broadband_state)
    if after is not None:
        query = query.where(col(Account.account_id) > after)
    found = list((await session.exec(query.order_by(col(Account.account_id)).limit(limit))).all())
    counts: dict[str, tuple[int, int]] = {}
    if found:
        online = func.sum(case((col(Device.online), 1), else_=0))
        rows = await session.exec(
            select(Device.account_id, func.count(), online)
            .where(col(Device.account_id).in_([a.account_id for a in found]))
            .group_by(col(Device.account_id))
        )
        counts = {account_id: (int(n), int(up or 0)) for account_id, n, up in rows.all()}
    return [AccountSummary(a, *counts.get(a.account_id, (0, 0))) for a in found]


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


async def unbind_device(session: AsyncSession, device: Device) -> None:
    """Stage the device's removal from its account (the caller commits): it is unbound,
    free to be bound to any account, starting clean. What else it leaves (credentials,
    router access, desired state, video) is released by the caller first."""
    await session.exec(delete(Device).where(col(Device.device_id) == device.device_id))


async def list_devices(session: AsyncSession, account_id: str) -> list[Device]:
    result = await session.exec(
        select(Device).where(Device.account_id == account_id).order_by(col(Device.device_id))
    )
    return list(result.all())


async def devices_of_accounts(
    session: AsyncSession, account_ids: Iterable[str]
) -> dict[str, list[Device]]:
    """:func:`list_devices` of many accounts in one statement, by account (each by id)."""
    ids = sorted(set(account_ids))
    out: dict[str, list[Device]] = {account_id: [] for account_id in ids}
    if not ids:
        return out
    result = await session.exec(
        select(Device).where(col(Device.account_id).in_(ids)).order_by(col(Device.device_id))
    )
    for device in result.all():
        out[device.account_id].append(device)
    return out


async def device_of_account(session: AsyncSession, account_id: str, device_id: str) -> Device:
    """The device if it belongs to ``account_id``; otherwise not found, never forbidden
    (no probing)."""
    device = await session.get(Device, device_id)
    if device is None or device.account_id != account_id:
        raise NotFound("device", device_id)
    return device


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """An app token as handed out once: the secret, and what names and bounds it."""

    token: str = field(repr=False)
    token_id: str
    expires_at: datetime


async def issue_app_token(
    session: AsyncSession, *, account_id: str, user_id: str, now: datetime, ttl: timedelta
) -> IssuedToken:
    await get_account(session, account_id)
    issued = IssuedToken(
        token="kja_" + secrets.token_urlsafe(32),
        token_id="tok_" + secrets.token_hex(8),
        expires_at=now + ttl,
    )
    session.add(
        AppToken(
            token_hash=_hash_token(issued.token),
            account_id=account_id,
            user_id=user_id,
            created_at=now,
            token_id=issued.token_id,
            expires_at=issued.expires_at,
        )
    )
    await session.commit()
    return issued


async def resolve_app_token(
    session: AsyncSession, token: str, *, now: datetime, ttl: timedelta
) -> AppToken | None:
    """The token's record while it is valid; ``None`` once it expired or was revoked."""
    found = await session.get(AppToken, _hash_token(token))
    if found is None:
        return None
    expires_at = found.expires_at or found.created_at + ttl
    return found if now < expires_at else None


async def revoke_app_token(session: AsyncSession, token_id: str) -> None:
    """The token stops working at once (the caller commits)."""
    result = await session.exec(select(AppToken).where(AppToken.token_id == token_id))
    found = result.first()
    if found is None:
        raise NotFound("app token", token_id)
    await session.delete(found)


async def revoke_account_tokens(session: AsyncSession, account_id: str) -> int:
    """Every app token of the account stops working (the caller commits)."""
    await get_account(session, account_id)
    result = await session.exec(select(AppToken).where(AppToken.account_id == account_id))
    tokens = list(result.all())
    for found in tokens:
        await session.delete(found)
    return len(tokens)
