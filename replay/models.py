"""Tables of cloud-replay subscriptions (dialect-neutral SQLModel)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Index, text
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


class UploadGrant(SQLModel, table=True):
    """An upload the service allowed (``upload/res`` ok); the ``segment`` notice settles it."""

    __tablename__ = "upload_grants"

    segment_id: str = Field(primary_key=True, max_length=80)
    device_id: str = Field(max_length=64)
    account_id: str = Field(max_length=64)
    subscription_id: str = Field(max_length=40)
    kind: str = Field(max_length=16)
    start: datetime = Field(sa_type=UTCDateTime)
    end: datetime = Field(sa_type=UTCDateTime)
    bytes: int
    sha256: str = Field(max_length=64)
    event_id: str | None = Field(default=None, max_length=80)
    object_key: str = Field(max_length=512)
    retention_class: str = Field(max_length=8)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    granted_at: datetime = Field(sa_type=UTCDateTime, index=True)


class Segment(SQLModel, table=True):
    """An indexed recording: a continuous segment or a one-minute event clip (R1)."""

    __tablename__ = "segments"
    # (``segments_by_event`` was dropped by schema step 12: no read used it, and each
    # index is paid by every insert of the ingest path, issue 16.)
    __table_args__ = (Index("segments_by_device_time", "device_id", "start"),)

    segment_id: str = Field(primary_key=True, max_length=80)
    device_id: str = Field(max_length=64)
    account_id: str = Field(max_length=64, index=True)
    subscription_id: str = Field(max_length=40, index=True)
    kind: str = Field(max_length=16)
    start: datetime = Field(sa_type=UTCDateTime)
    end: datetime = Field(sa_type=UTCDateTime)
    bytes: int
    sha256: str = Field(max_length=64)
    event_id: str | None = Field(default=None, max_length=80)
    object_key: str = Field(max_length=512, unique=True)
    retention_class: str = Field(max_length=8)
    #: R5: recorded video is kept for the plan's retention after recording, then swept.
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)
    indexed_at: datetime = Field(sa_type=UTCDateTime)


class RecordedRange(SQLModel, table=True):
    """Merged recorded time of one device under one subscription: what the timeline reads
    (a few rows a day instead of 8,640 segments). Kept by ``replay.index_store`` as segments
    are indexed and swept; it expires with its last segment (R5)."""

    __tablename__ = "recorded_ranges"
    __table_args__ = (Index("ranges_by_device_end", "device_id", "end"),)

    range_id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(max_length=64)
    subscription_id: str = Field(max_length=40)
    start: datetime = Field(sa_type=UTCDateTime)
    end: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)


class CameraEvent(SQLModel, table=True):
    """A detection the camera reported (person, pet, door, motion). Its ``event_id`` is the
    camera's own: the key is (device, event id), so no camera can take another's (schema 6).
    Its video is derived, never stored: the segment whose time holds its instant
    (:func:`replay.events.link_event`)."""

    __tablename__ = "camera_events"
    __table_args__ = (Index("events_by_device_time", "device_id", "at"),)

    device_id: str = Field(primary_key=True, max_length=64)
    event_id: str = Field(primary_key=True, max_length=80)
    type: str = Field(max_length=16)
    at: datetime = Field(sa_type=UTCDateTime)
    score: float = 0.0


class FamilyCloudItem(SQLModel, table=True):
    """A clip saved to the account's family cloud (一键转存, R14): outside retention.

    Either one segment copied as it is (``segment_id`` set, a ``.ts`` object) or a range of
    a camera's recording exported as one MP4 (``segment_id`` ``None``, issue 15). ``start``
    and ``end`` are the recorded range it holds; ``None`` only for a segment saved before
    schema 8 whose segment had already expired when the schema was upgraded.
    """

    __tablename__ = "family_cloud_items"

    item_id: int | None = Field(default=None, primary_key=True)
    account_id: str = Field(max_length=64, index=True)
    segment_id: str | None = Field(default=None, max_length=80)
    device_id: str = Field(max_length=64)
    start: datetime | None = Field(default=None, sa_type=UTCDateTime)
    end: datetime | None = Field(default=None, sa_type=UTCDateTime)
    object_key: str = Field(max_length=512, unique=True)
    bytes: int
    saved_at: datetime = Field(sa_type=UTCDateTime)


class ChargeLine(SQLModel, table=True):
    """A statement line of the charge ledger (issue 17, R7): one subscription's charge for a
    closed month, or a correction of it. Kept for the ledger's retention whatever becomes
    of the subscription record (R5's purge); never edited, corrections are new lines.

    ``kind`` (schema 11, issue 18): ``cloud_replay`` (a subscription), ``family_cloud_membership``
    (R18: ``subscription_id`` holds the membership id, ``plan`` its tier, ``device_id`` ""),
    ``home_network`` or ``home_network_refund`` (R16, R17: the package id and its product,
    ``days`` 0, ``day`` the order's or the unsubscription's business date; a refund is
    line 1 of its package and month, the fee line 0)."""

    __tablename__ = "charge_lines"
    __table_args__ = (
        Index(
            "charge_lines_one_per_subscription", "month", "subscription_id", "line_no", unique=True
        ),
        Index("charge_lines_by_account", "account_id", "month"),
    )

    line_id: int | None = Field(default=None, primary_key=True)
    #: The Asia/Shanghai month, ``YYYY-MM``.
    month: str = Field(max_length=7)
    account_id: str = Field(max_length=64)
    subscription_id: str = Field(max_length=40)
    device_id: str = Field(max_length=64)
    plan: str = Field(max_length=64)
    #: 0: the month's charge as closed; 1, 2...: corrections, in order.
    line_no: int = 0
    days: int
    #: The amount in cents (fen): exact sums in SQL on every dialect; negative corrections.
    amount_cents: int
    reason: str | None = Field(default=None, max_length=200)
    recorded_at: datetime = Field(sa_type=UTCDateTime)
    kind: str = Field(
        default="cloud_replay", max_length=32, sa_column_kwargs={"server_default": "cloud_replay"}
    )
    #: A one-time line's business date (home-network packages); None for monthly lines.
    day: date | None = None


class ClosedMonth(SQLModel, table=True):
    """A month the ledger has closed (its lines written once; the job's bookmark)."""

    __tablename__ = "ledger_months"

    month: str = Field(primary_key=True, max_length=7)
    lines: int
    closed_at: datetime = Field(sa_type=UTCDateTime)


class FamilyCloudMembership(SQLModel, table=True):
    """An account's family-cloud membership (家庭云会员, R18) from order to its end.

    ``start_date``/``end_date`` are business dates (Asia/Shanghai); ``end_date`` is the last
    day in force (the unsubscription month's last). ``valid_until`` is the last day of the
    yearly validity in force (renewed without objection). ``overflow``: ``""`` until the
    ending job decided, then ``none``, ``read_only`` (until ``read_only_until``) or
    ``cleaned``.
    """

    __tablename__ = "family_cloud_memberships"
    __table_args__ = (
        # R18: one membership held per account (ordered, not yet ended), even under races.
        Index(
            "one_membership_per_account",
            "account_id",
            unique=True,
            sqlite_where=text("status <> 'ended'"),
            postgresql_where=text("status <> 'ended'"),
        ),
    )

    membership_id: str = Field(primary_key=True, max_length=40)
    order_id: str = Field(max_length=128, unique=True)
    account_id: str = Field(foreign_key="accounts.account_id", index=True, max_length=64)
    tier: str = Field(max_length=32)
    quota_bytes: int = Field(sa_type=BigInteger)
    monthly_fee: str = Field(max_length=16)
    validity_months: int
    orderer_id: str = Field(max_length=64)
    channel: str = Field(max_length=16)
    status: str = Field(max_length=16, index=True)
    started_at: datetime = Field(sa_type=UTCDateTime)
    start_date: date
    valid_until: date = Field(index=True)
    #: How many validity periods have begun (1: the first year; renewals add one each).
    period: int = 1
    unsubscribe_order_id: str | None = Field(default=None, max_length=128)
    unsubscribed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    end_date: date | None = None
    ends_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    overflow: str = Field(default="", max_length=16)
    read_only_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    cleaned_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    cleaned_items: int = 0
