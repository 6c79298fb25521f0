"""Tables of accounts, devices, bindings and app tokens (dialect-neutral SQLModel)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index
from sqlmodel import Field, SQLModel

from storage.db import UTCDateTime


class DeviceKind(StrEnum):
    CAMERA = "camera"
    ROUTER = "router"


class Account(SQLModel, table=True):
    """A broadband account (宽带账号): the unit of ownership, billing and stop/resume."""

    __tablename__ = "accounts"

    account_id: str = Field(primary_key=True, max_length=64)
    owner_id: str = Field(max_length=64)
    star_level: int = Field(ge=0, le=7)
    name: str | None = Field(default=None, max_length=200)
    #: active | stopped | torn_down (R8-R10); kept by the broadband service.
    broadband_state: str = Field(default="active", max_length=16)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class Device(SQLModel, table=True):
    """A camera or router bound to one account, with its presence."""

    __tablename__ = "devices"

    device_id: str = Field(primary_key=True, max_length=64)
    account_id: str = Field(foreign_key="accounts.account_id", index=True, max_length=64)
    kind: str = Field(max_length=16)
    name: str | None = Field(default=None, max_length=200)
    online: bool = False
    last_seen: datetime | None = Field(default=None, sa_type=UTCDateTime)
    online_changed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    firmware: str | None = Field(default=None, max_length=64)
    telemetry: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    bound_at: datetime = Field(sa_type=UTCDateTime)


class PresenceChange(SQLModel, table=True):
    """A device going online or offline, kept so that the timeline can say a gap is the
    camera's being offline (issue 15). Written with the presence it records
    (:mod:`devices.presence`); ``at`` is when it happened as the service knows it: the
    first message after silence, the Will or ``state`` received, or the last message
    before a silence the sweep noticed."""

    __tablename__ = "presence_changes"
    __table_args__ = (Index("presence_changes_by_device_time", "device_id", "at"),)

    change_id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(max_length=64)
    at: datetime = Field(sa_type=UTCDateTime)
    online: bool


class AppToken(SQLModel, table=True):
    """A companion-app user's bearer token for one account (only its hash is stored)."""

    __tablename__ = "app_tokens"

    token_hash: str = Field(primary_key=True, max_length=64)
    account_id: str = Field(foreign_key="accounts.account_id", index=True, max_length=64)
    user_id: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UTCDateTime)
    #: What the platform names the token by to revoke it (never the secret itself).
    token_id: str | None = Field(default=None, index=True, max_length=40)
    #: When it stops working; tokens issued before schema 4 run out ``ttl`` after creation.
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class PlatformOrder(SQLModel, table=True):
    """One platform command by its ``order_id``: a repeat returns the first answer."""

    __tablename__ = "platform_orders"

    order_id: str = Field(primary_key=True, max_length=128)
    action: str = Field(max_length=32)
    fingerprint: str = Field(max_length=64)
    status_code: int
    response: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(sa_type=UTCDateTime)
    #: The account the order concerns, when known (schema 6; older rows from their answer).
    account_id: str | None = Field(default=None, index=True, max_length=64)
    #: What the order names besides the account: a subscription or a device id.
    target: str | None = Field(default=None, max_length=128)


class CallbackReport(SQLModel, table=True):
    """A completion report (报竣) owed to the platform, kept until it is acknowledged."""

    __tablename__ = "callback_reports"

    id: int | None = Field(default=None, primary_key=True)
    order_id: str = Field(max_length=128, index=True)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_type=UTCDateTime, index=True)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(sa_type=UTCDateTime)


class DesiredState(SQLModel, table=True):
    """The retained, versioned ``desired`` document of one device and its convergence.

    ``version`` grows by one whenever the document changes; ``published_version`` is the
    last version handed to the broker (retained), ``reported_version`` the last one the
    device said it applied. A device offline during a change converges when it returns,
    because the broker keeps the retained document for it.
    """

    __tablename__ = "desired_states"

    device_id: str = Field(primary_key=True, max_length=64)
    account_id: str = Field(index=True, max_length=64)
    version: int = 0
    document: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    published_version: int = 0
    reported_version: int = 0
    changed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    reported_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
