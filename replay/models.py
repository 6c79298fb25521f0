"""Tables of cloud-replay subscriptions (dialect-neutral SQLModel)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Index, text
from sqlmodel import Field, SQLModel

from storage.db import UTCDateTime


class Subscription(SQLModel, table=True):
    """One camera's cloud-replay product (云回看销售品) from order to unsubscription.

    ``start_date``/``end_date`` are business dates in Asia/Shanghai (billing days, R3/R5);
    the fee is the plan's monthly fee when ordered, as a decimal string (never a float).
    """

    __tablename__ = "subscriptions"
    __table_args__ = (
        # R2: at most one active product per camera, even under racing orders.
        Index(
            "one_active_subscription_per_device",
            "device_id",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
    )

    subscription_id: str = Field(primary_key=True, max_length=40)
    order_id: str = Field(max_length=128, unique=True)
    account_id: str = Field(foreign_key="accounts.account_id", index=True, max_length=64)
    device_id: str = Field(index=True, max_length=64)
    plan_id: str = Field(max_length=64)
    family: str = Field(max_length=16)
    retention_days: int
    monthly_fee: str = Field(max_length=16)
    orderer_id: str = Field(max_length=64)
    channel: str = Field(max_length=16)
    status: str = Field(max_length=16, index=True)
    started_at: datetime = Field(sa_type=UTCDateTime)
    start_date: date
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    end_date: date | None = None
    unsubscribe_order_id: str | None = Field(default=None, max_length=128)
    #: R4: the 24-month tariff term in force, rolled over by a clock-driven job.
    term_number: int = 1
    term_end: date
    #: R5: when the record is purged (six months after unsubscription).
    purge_after: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
