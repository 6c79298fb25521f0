"""The service's database schema, handed to :meth:`storage.db.Database.open`.

Every module that declares tables is imported here, in this one place, so that
:data:`METADATA` holds them all whoever opens the database. :data:`MIGRATIONS` are the
schema steps after version 1 (the first release's tables), in order; a fresh database
gets every table at once and is stamped with :data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager

from sqlalchemy import Connection, Table, bindparam, insert, inspect, update
from sqlalchemy import select as sa_select
from sqlmodel import SQLModel

# Every module that declares tables, imported for them (they join SQLModel.metadata).
import devices.broadband_periods
import devices.broadband_store
import devices.commands
import devices.credentials
import devices.home_network_store
import devices.models
import devices.router_store
from devices.broadband_periods import PeriodRow
from devices.models import PresenceChange
from replay.index_store import range_row
from replay.models import (
    CameraEvent,
    FamilyCloudItem,
    FamilyCloudMembership,
    RecordedRange,
    Segment,
    UploadGrant,
)
from replay.object_keys import service_segment_id
from replay.playback import Recorded, fold_ranges
from storage.db import Database, Migration, schema_version

log = logging.getLogger(__name__)

#: Every table of the service.
METADATA = SQLModel.metadata

SEGMENTS: Table = Segment.__table__  # type: ignore[attr-defined]
RANGES: Table = RecordedRange.__table__  # type: ignore[attr-defined]
GRANTS: Table = UploadGrant.__table__  # type: ignore[attr-defined]
EVENTS: Table = CameraEvent.__table__  # type: ignore[attr-defined]
PRESENCE: Table = PresenceChange.__table__  # type: ignore[attr-defined]
PERIODS: Table = PeriodRow.__table__  # type: ignore[attr-defined]
FAMILY_ITEMS: Table = FamilyCloudItem.__table__  # type: ignore[attr-defined]


def backfill_ranges(connection: Connection) -> int:
    """Build the ranges of every segment already indexed (the schema step that added the
    table); one device/subscription at a time. Return how many ranges were written."""
    pairs = connection.execute(
        sa_select(SEGMENTS.c.device_id, SEGMENTS.c.subscription_id).distinct()
    ).all()
    written = 0
    for device_id, subscription_id in pairs:
        segments = connection.execute(
            sa_select(SEGMENTS.c.start, SEGMENTS.c.end, SEGMENTS.c.expires_at).where(
                SEGMENTS.c.device_id == device_id,
                SEGMENTS.c.subscription_id == subscription_id,
            )
        )
        change = fold_ranges([], [Recorded(*row) for row in segments])
        if change.inserts:
            connection.execute(
                insert(RANGES), [range_row((device_id, subscription_id), r) for r in change.inserts]
            )
        written += len(change.inserts)
    return written


def rekey_grants(connection: Connection) -> int:
    """Give the pending upload grants the service's id of their camera's segment (the
    schema step that scoped segment ids to their camera), so that their notices, arriving
    after the upgrade, find them; return how many. Indexed segments keep their ids."""
    rows = connection.execute(sa_select(GRANTS.c.segment_id, GRANTS.c.device_id)).all()
    if rows:
        rekey = update(GRANTS).where(GRANTS.c.segment_id == bindparam("old"))
        connection.execute(
            rekey.values(segment_id=bindparam("new")),
            [{"old": s, "new": service_segment_id(device, s)} for s, device in rows],
        )
    return len(rows)


def _add_recorded_ranges(conn: Connection) -> None:
    RecordedRange.__table__.create(conn)  # type: ignore[attr-defined]
    log.info("recorded ranges built from the indexed segments: %d", backfill_ranges(conn))


def _add_columns(
    conn: Connection, table: Table, names: tuple[str, ...], *, index: str | None = None
) -> None:
    """Add ``table``'s columns ``names`` that the database lacks (nullable, as the model
    types them in this dialect), and its index named ``index`` if missing."""
    present = {column["name"] for column in inspect(conn).get_columns(table.name)}
    for name in names:
        if name not in present:
            kind = table.c[name].type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {name} {kind}")
    for found in table.indexes:
        if found.name == index:
            found.create(conn, checkfirst=True)


def _add_device_credentials(conn: Connection) -> None:
    table = devices.credentials.DeviceCredential.__table__  # type: ignore[attr-defined]
    table.create(conn, checkfirst=True)


def _add_app_token_expiry(conn: Connection) -> None:
    """App tokens get an id to revoke them by and an expiry (issue 14); the tokens issued
    before keep working until ``created_at`` plus the configured lifetime."""
    table = devices.models.AppToken.__table__  # type: ignore[attr-defined]
    _add_columns(conn, table, ("token_id", "expires_at"), index="ix_app_tokens_token_id")
    conn.exec_driver_sql(
        "UPDATE app_tokens SET token_id = 'tok_' || substr(token_hash, 1, 16) "
        "WHERE token_id IS NULL"
    )


def _scope_segment_ids(conn: Connection) -> None:
    """A camera's ``segment_id`` is its own; the service indexes it under an id derived from
    the device and the camera's id (issue 14, :func:`replay.object_keys.service_segment_id`).
    Indexed segments keep their ids, so the URLs handed out keep their meaning; the pending
    upload grants take the new ids, so that the notices settling them find them."""
    log.info("upload grants re-keyed by camera: %d", rekey_grants(conn))


ORDERS: Table = devices.models.PlatformOrder.__table__  # type: ignore[attr-defined]


def backfill_order_accounts(connection: Connection) -> int:
    """Give the orders recorded before schema 7 the account their answer names (a
    subscription's or a broadband view's ``account_id``); the others stay unassigned.
    Return how many were given one."""
    rows = connection.execute(
        sa_select(ORDERS.c.order_id, ORDERS.c.response).where(ORDERS.c.account_id.is_(None))
    ).all()
    named = [
        {"key": order_id, "account": response["account_id"]}
        for order_id, response in rows
        if isinstance(response, dict) and isinstance(response.get("account_id"), str)
    ]
    if named:
        connection.execute(
            update(ORDERS)
            .where(ORDERS.c.order_id == bindparam("key"))
            .values(account_id=bindparam("account")),
            named,
        )
    return len(named)


def _add_order_accounts(conn: Connection) -> None:
    """Orders name their account and target (issue 15: the operator lists them by
    account); the orders recorded before are given the account their answer names."""
    _add_columns(conn, ORDERS, ("account_id", "target"), index="ix_platform_orders_account_id")
    log.info("orders given their account: %d", backfill_order_accounts(conn))


def _rekey_events(conn: Connection) -> None:
    """``camera_events`` keyed by (device, event id): SQLite cannot change a primary key,
    so the table is rebuilt there; PostgreSQL swaps the constraint."""
    key = inspect(conn).get_pk_constraint("camera_events")
    if key["constrained_columns"] == ["device_id", "event_id"]:
        return
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f'ALTER TABLE camera_events DROP CONSTRAINT "{key["name"]}"')
        conn.exec_driver_sql("ALTER TABLE camera_events ADD PRIMARY KEY (device_id, event_id)")
        return
    columns = "device_id, event_id, type, at, score"
    conn.exec_driver_sql("DROP INDEX IF EXISTS events_by_device_time")
    conn.exec_driver_sql("ALTER TABLE camera_events RENAME TO camera_events_v5")
    EVENTS.create(conn)
    conn.exec_driver_sql(
        f"INSERT INTO camera_events ({columns}) SELECT {columns} FROM camera_events_v5"  # noqa: S608
    )
    conn.exec_driver_sql("DROP TABLE camera_events_v5")


def _events_and_gap_causes(conn: Connection) -> None:
    """Issue 15: an event's id is its camera's own, and the timeline says why a gap is
    there. The presence and broadband histories start from what is known now: a device
    offline since ``online_changed_at``, an account stopped since ``inactive_since``
    (an open inactive period)."""
    _rekey_events(conn)
    tables = set(inspect(conn).get_table_names())
    if "presence_changes" not in tables:
        PRESENCE.create(conn)
        conn.exec_driver_sql(
            "INSERT INTO presence_changes (device_id, at, online) "
            "SELECT device_id, online_changed_at, online FROM devices "
            "WHERE online_changed_at IS NOT NULL"
        )
    if "broadband_inactive_periods" not in tables:
        PERIODS.create(conn)
    # An account stopped now is stopped since its inactive_since (the boundary rule's and
    # the gaps' history, issue 17 and 15), unless a period is open already.
    conn.exec_driver_sql(
        "INSERT INTO broadband_inactive_periods (account_id, state, since) "
        "SELECT a.account_id, a.broadband_state, b.inactive_since "
        "FROM accounts a JOIN broadband_states b ON b.account_id = a.account_id "
        "WHERE b.inactive_since IS NOT NULL AND a.broadband_state <> 'active' "
        "AND NOT EXISTS (SELECT 1 FROM broadband_inactive_periods p "
        "WHERE p.account_id = a.account_id AND p.until IS NULL)"
    )


def _family_cloud_ranges(conn: Connection) -> None:
    """Family-cloud items hold a recorded range, and may be a range's MP4 rather than one
    segment (issue 15): ``start`` and ``end`` are added, filled from the saved segments
    still indexed, and ``segment_id`` may be empty. SQLite cannot drop a NOT NULL: there
    the table is rebuilt, its rows (and their ids) copied. A table already so is kept."""
    name = FAMILY_ITEMS.name
    columns = {column["name"]: column for column in inspect(conn).get_columns(name)}
    if "start" in columns and columns["segment_id"]["nullable"]:
        pass
    elif conn.dialect.name == "sqlite":
        for index in inspect(conn).get_indexes(name):
            conn.exec_driver_sql(f'DROP INDEX "{index["name"]}"')
        conn.exec_driver_sql(f"ALTER TABLE {name} RENAME TO {name}_before_8")
        FAMILY_ITEMS.create(conn)
        kept = "item_id, account_id, segment_id, device_id, object_key, bytes, saved_at"
        conn.exec_driver_sql(
            f"INSERT INTO {name} ({kept}) SELECT {kept} FROM {name}_before_8"  # noqa: S608
        )
        conn.exec_driver_sql(f"DROP TABLE {name}_before_8")
    else:
        conn.exec_driver_sql(f"ALTER TABLE {name} ALTER COLUMN segment_id DROP NOT NULL")
        quote = conn.dialect.identifier_preparer.quote
        for column in ("start", "end"):
            kind = FAMILY_ITEMS.c[column].type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN {quote(column)} {kind}")
    saved = SEGMENTS.c.segment_id == FAMILY_ITEMS.c.segment_id
    filled = conn.execute(
        update(FAMILY_ITEMS)
        .where(sa_select(SEGMENTS.c.segment_id).where(saved).exists())
        .values(
            start=sa_select(SEGMENTS.c.start).where(saved).scalar_subquery(),
            end=sa_select(SEGMENTS.c.end).where(saved).scalar_subquery(),
        )
    ).rowcount
    log.info("family-cloud items given the range of their segment: %d", filled)


def _add_home_packages(conn: Connection) -> None:
    """Home-network packages and the routers they cover (issue 18: R16, R17)."""
    store = devices.home_network_store
    for table in (store.HomePackage.__table__, store.PackageDevice.__table__):  # type: ignore[attr-defined]
        table.create(conn, checkfirst=True)


def _add_memberships(conn: Connection) -> None:
    """Family-cloud memberships (R18, issue 18): a new table, with its indexes."""
    FamilyCloudMembership.__table__.create(conn, checkfirst=True)  # type: ignore[attr-defined]


def _ledger_kinds(conn: Connection) -> None:
    """The charge ledger holds every kind of line (issue 18): ``kind`` (the lines before are
    ``cloud_replay``) and a one-time line's ``day``."""
    present = {column["name"] for column in inspect(conn).get_columns("charge_lines")}
    if "kind" not in present:
        conn.exec_driver_sql(
            "ALTER TABLE charge_lines ADD COLUMN kind VARCHAR(32) NOT NULL DEFAULT 'cloud_replay'"
        )
    if "day" not in present:
        conn.exec_driver_sql("ALTER TABLE charge_lines ADD COLUMN day DATE")


def _drop_segments_by_event(conn: Connection) -> None:
    """No read looks segments up by event (the timeline links events to segments by time,
    ``replay.events``), and every index costs each insert of the ingest path (issue 16)."""
    conn.exec_driver_sql("DROP INDEX IF EXISTS segments_by_event")


#: Schema steps after version 1 (the first release's tables), in order.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(2, "recorded ranges and event clips for the timeline", _add_recorded_ranges),
    Migration(3, "per-device broker credentials (issue 13)", _add_device_credentials),
    Migration(4, "app tokens expire and can be revoked (issue 14)", _add_app_token_expiry),
    Migration(5, "segment ids belong to their camera (issue 14)", _scope_segment_ids),
    Migration(6, "event ids belong to their camera; gap causes (issue 15)", _events_and_gap_causes),
    Migration(7, "orders name their account and target (issue 15)", _add_order_accounts),
    Migration(8, "family-cloud items hold a range, an MP4 (issue 15)", _family_cloud_ranges),
    Migration(9, "home-network packages (issue 18: R16, R17)", _add_home_packages),
    Migration(10, "family-cloud memberships (R18, issue 18)", _add_memberships),
    Migration(11, "the charge ledger's kinds of line (issue 18)", _ledger_kinds),
    Migration(12, "segments lose an index no read used (issue 16)", _drop_segments_by_event),
)
SCHEMA_VERSION = schema_version(MIGRATIONS)


def open_database(url: str) -> AbstractAsyncContextManager[Database]:
    """``async with open_database(url) as db``: the service's database, brought up to
    :data:`SCHEMA_VERSION` (:meth:`storage.db.Database.open` with this schema)."""
    return Database.open(url, metadata=METADATA, migrations=MIGRATIONS)
