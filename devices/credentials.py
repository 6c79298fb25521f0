"""Per-device MQTT credentials and the topic rule a broker enforces (issue 13).

A device connects with client id = username = its device id and a password the service
generated (:func:`new_password`, 192 random bits), shown once and kept only as a keyed
hash (HMAC-SHA256 with the server's key: sound for generated, high-entropy secrets, and
fast enough to verify on every broker call). Issuing again rotates the password;
revoking keeps the row, marked, so the platform still sees when it was revoked.

:func:`may_access` is the topic rule of ``ARCHITECTURE.md``'s MQTT contract, pure: a device
publishes only its own ``state``, ``telemetry``, ``event``, ``upload/req``, ``segment``,
``reported`` and ``rpc/res``, and subscribes only to its own ``desired``, ``upload/res``
and ``rpc/req``, without wildcards. The gateway is no device: it authenticates with the
broker's own service identity, never through these rules.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from devices.errors import NotFound
from devices.models import Device
from storage.db import UTCDateTime

__all__ = [
    "DEVICE_PUBLISH",
    "DEVICE_SUBSCRIBE",
    "TOPIC_PREFIX",
    "DeviceCredential",
    "Issued",
    "credentialed_devices",
    "current_credential",
    "current_hashes",
    "hash_password",
    "is_device_id",
    "issue",
    "issued_at_of",
    "may_access",
    "may_connect",
    "new_password",
    "revoke",
]

#: Every device topic starts with this, then the device id (ARCHITECTURE.md, MQTT contract).
TOPIC_PREFIX: Final = "kj/v1/dev/"
#: What a device may publish under its own prefix (device → service).
DEVICE_PUBLISH: Final = frozenset(
    {"state", "telemetry", "event", "upload/req", "segment", "reported", "rpc/res"}
)
#: What a device may subscribe to under its own prefix (service → device).
DEVICE_SUBSCRIBE: Final = frozenset({"desired", "upload/res", "rpc/req"})

#: A device id as the platform binds it: no topic separator, no wildcard.
_DEVICE_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: Random bytes of a generated password (192 bits; the issue asks for at least 128).
_PASSWORD_BYTES: Final = 24


class DeviceCredential(SQLModel, table=True):
    """A device's broker password, as a keyed hash; ``revoked_at`` set once revoked."""

    __tablename__ = "device_credentials"

    device_id: str = Field(primary_key=True, max_length=64)
    #: HMAC-SHA256 of the password under the server's credential key, hex.
    password_hash: str = Field(max_length=64)
    issued_at: datetime = Field(sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    @property
    def current(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class Issued:
    """Credentials just issued: the only time the password is seen (never log it)."""

    device_id: str
    username: str
    password: str
    issued_at: datetime

    def __repr__(self) -> str:
        return f"Issued(device_id={self.device_id!r}, issued_at={self.issued_at!r})"


# --- pure rules ------------------------------------------------------------------------


def new_password() -> str:
    """A fresh password from the system's CSPRNG (URL-safe, 32 characters)."""
    return secrets.token_urlsafe(_PASSWORD_BYTES)


def hash_password(key: bytes, password: str) -> str:
    """The keyed hash that is stored instead of ``password``."""
    return hmac.new(key, password.encode(), hashlib.sha256).hexdigest()


def is_device_id(name: str) -> bool:
    """Whether ``name`` can be a device id (what a broker's username must be)."""
    return _DEVICE_ID.fullmatch(name) is not None


def may_connect(
    stored_hash: str | None,
    *,
    key: bytes,
    client_id: str | None,
    username: str | None,
    password: str | None,
) -> bool:
    """A client may connect only as a device with current credentials, its client id
    its username (so no one takes another device's client id), and its password right.

    ``stored_hash`` is the stored hash of the current password of the device named
    ``username`` (``None``: it has no current credentials).
    """
    if stored_hash is None or not password or not username or client_id != username:
        return False
    return hmac.compare_digest(hash_password(key, password), stored_hash)


def may_access(device_id: str, topic: str, action: str) -> bool:
    """Whether device ``device_id`` may ``action`` (``publish`` or ``subscribe``) ``topic``.

    Only the exact topics of the device's own prefix pass: another device's topics, the
    gateway's, wildcards (``#``, ``+``) and shared subscriptions (``$share/...``) are denied.
    """
    if not is_device_id(device_id):
        return False
    allowed = {"publish": DEVICE_PUBLISH, "subscribe": DEVICE_SUBSCRIBE}.get(action)
    prefix = f"{TOPIC_PREFIX}{device_id}/"
    if allowed is None or not topic.startswith(prefix) or "+" in topic or "#" in topic:
        return False
    return topic[len(prefix) :] in allowed


# --- over an open session (the caller commits) -------------------------------------------


async def current_credential(session: AsyncSession, device_id: str) -> DeviceCredential | None:
    """The device's credentials if they are current (one read by primary key)."""
    credential = await session.get(DeviceCredential, device_id)
    return credential if credential is not None and credential.current else None


#: The current hashes of the devices bound to ``ids`` (built once: the broker's hooks run it
#: at their rate).
_CURRENT_HASHES: Final = sa.select(
    col(DeviceCredential.device_id), col(DeviceCredential.password_hash)
).where(
    col(DeviceCredential.device_id).in_(sa.bindparam("ids", expanding=True)),
    col(DeviceCredential.revoked_at).is_(None),
)


async def current_hashes(conn: AsyncConnection, device_ids: Collection[str]) -> dict[str, str]:
    """The stored hash of each of ``device_ids`` that has current credentials: one read on
    a bare connection (no session, no ORM objects), for the broker's hooks."""
    if not device_ids:
        return {}
    rows = await conn.execute(_CURRENT_HASHES, {"ids": list(device_ids)})
    return {str(row[0]): str(row[1]) for row in rows}


async def issue(session: AsyncSession, *, device_id: str, key: bytes, now: datetime) -> Issued:
    """New credentials for a bound device; any previous password stops verifying."""
    if await session.get(Device, device_id) is None:
        raise NotFound("device", device_id)
    password = new_password()
    credential = await session.get(DeviceCredential, device_id)
    if credential is None:
        credential = DeviceCredential(device_id=device_id, password_hash="", issued_at=now)
    credential.password_hash = hash_password(key, password)
    credential.issued_at = now
    credential.revoked_at = None
    session.add(credential)
    return Issued(device_id=device_id, username=device_id, password=password, issued_at=now)


async def revoke(session: AsyncSession, *, device_id: str, now: datetime) -> None:
    """Revoke the device's current credentials; none current: not found."""
    credential = await current_credential(session, device_id)
    if credential is None:
        raise NotFound("credentials", device_id)
    credential.revoked_at = now
    session.add(credential)


async def issued_at_of(session: AsyncSession, device_ids: Iterable[str]) -> Mapping[str, datetime]:
    """When each of ``device_ids`` that has current credentials got them."""
    ids = list(device_ids)
    if not ids:
        return {}
    rows = await session.exec(
        select(DeviceCredential).where(
            col(DeviceCredential.device_id).in_(ids), col(DeviceCredential.revoked_at).is_(None)
        )
    )
    return {row.device_id: row.issued_at for row in rows.all()}


async def credentialed_devices(session: AsyncSession) -> set[str]:
    """Every device with current credentials (what the broker should admit)."""
    rows = await session.exec(
        select(DeviceCredential.device_id).where(col(DeviceCredential.revoked_at).is_(None))
    )
    return set(rows.all())
