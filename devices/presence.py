"""Presence: who is online, from retained ``state``, Last Will and an inactivity timeout.

A device is online from any message it sends, offline when its ``state`` says so (its
Last Will publishes ``{"online": false}`` when the broker loses it without DISCONNECT),
and offline when it stays silent longer than the timeout, Will or not: a half-open TCP
connection can keep the broker from noticing for a long time.

Sightings are coalesced in memory and written in one batch per flush, so a busy fleet
costs one UPDATE per device per flush, not one per message. Presence is derived data
(the next message restores it), so a sighting lost in a crash is not acknowledged data.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Table, Update, and_, bindparam, delete, exists, insert, or_
from sqlalchemy import select as sa_select
from sqlalchemy import update as sa_update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from devices.models import Device, PresenceChange
from storage.transient import is_transient

log = logging.getLogger(__name__)

_CHANGES: Table = PresenceChange.__table__  # type: ignore[attr-defined]


_DEVICES: Table = Device.__table__  # type: ignore[attr-defined]
_READ = sa_select(_DEVICES.c.device_id, _DEVICES.c.online, _DEVICES.c.last_seen).where(
    _DEVICES.c.device_id.in_(bindparam("ids", expanding=True))
)


@cache
def _update(columns: tuple[str, ...]) -> Update:
    """UPDATE of these device columns, for an executemany (``id`` and a value per column)."""
    values = {name: bindparam(name, type_=_DEVICES.c[name].type) for name in columns}
    return sa_update(_DEVICES).where(_DEVICES.c.device_id == bindparam("id")).values(values)


@dataclass(slots=True)
class _Pending:
    seen: datetime
    online: bool
    firmware: str | None = None
    telemetry: dict[str, object] | None = None


def timed_out(last_seen: datetime | None, now: datetime, timeout: timedelta) -> bool:
    """Silent for longer than ``timeout`` (a device never seen is not 'timed out')."""
    return last_seen is not None and now - last_seen > timeout


@dataclass(frozen=True, slots=True)
class FlushResult:
    updated: int
    unknown: frozenset[str]
    went_online: frozenset[str]
    went_offline: frozenset[str]


class PresenceTracker:
    def __init__(self, *, timeout: timedelta) -> None:
        if timeout <= timedelta(0):
            raise ValueError("the presence timeout must be positive")
        self.timeout = timeout
        self._pending: dict[str, _Pending] = {}

    def seen(self, device_id: str, at: datetime) -> None:
        """Any message from the device: it is online now."""
        pending = self._pending.get(device_id)
        if pending is None:
            self._pending[device_id] = _Pending(seen=at, online=True)
        else:
            pending.seen = max(pending.seen, at)
            pending.online = True

    def state(self, device_id: str, *, online: bool, at: datetime, firmware: str | None) -> None:
        """The device's retained ``state`` (or its Will)."""
        pending = self._pending.setdefault(device_id, _Pending(seen=at, online=online))
        pending.online = online
        if online:
            pending.seen = max(pending.seen, at)
        if firmware is not None:
            pending.firmware = firmware

    def telemetry(self, device_id: str, at: datetime, values: dict[str, object]) -> None:
        self.seen(device_id, at)
        self._pending[device_id].telemetry = values

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self, session: AsyncSession) -> FlushResult:
        """Write the pending sightings and commit. If the database is out of reach
        (:func:`storage.transient.is_transient`), they stay pending, merged with those
        received meanwhile, for the next flush; if one device's row refuses its values,
        the others are written one by one and only that device's sighting is lost."""
        if not self._pending:
            return FlushResult(0, frozenset(), frozenset(), frozenset())
        batch, self._pending = self._pending, {}
        try:
            return await self._write(session, batch)
        except Exception as exc:
            if is_transient(exc):
                self._restore(batch)
                raise
            if len(batch) == 1:
                raise
            await session.rollback()
        return await self._one_by_one(session, batch)

    async def _one_by_one(self, session: AsyncSession, batch: dict[str, _Pending]) -> FlushResult:
        results: list[FlushResult] = []
        refused: list[str] = []
        for position, (device_id, pending) in enumerate(batch.items()):
            try:
                results.append(await self._write(session, {device_id: pending}))
            except Exception as exc:
                if is_transient(exc):  # the rest waits for the next flush
                    self._restore(dict(list(batch.items())[position:]))
                    raise
                await session.rollback()
                refused.append(device_id)
        if refused:
            log.warning("presence of %d device(s) refused by the database", len(refused))
        return FlushResult(
            updated=sum(result.updated for result in results),
            unknown=frozenset().union(*(result.unknown for result in results)),
            went_online=frozenset().union(*(result.went_online for result in results)),
            went_offline=frozenset().union(*(result.went_offline for result in results)),
        )

    def _restore(self, batch: dict[str, _Pending]) -> None:
        """Put an unwritten batch back; what was received since it was taken is newer."""
        for device_id, older in batch.items():
            newer = self._pending.get(device_id)
            if newer is None:
                self._pending[device_id] = older
                continue
            newer.seen = max(newer.seen, older.seen)
            if newer.firmware is None:
                newer.firmware = older.firmware
            if newer.telemetry is None:
                newer.telemetry = older.telemetry

    async def _write(self, session: AsyncSession, batch: dict[str, _Pending]) -> FlushResult:
        # Core statements, no ORM object per device: a flush covers every device heard
        # from (1,000 cameras: ~10 % of the gateway's ingest CPU as ORM loads and updates).
        connection = await session.connection()
        rows = await connection.execute(_READ, {"ids": list(batch)})
        known: set[str] = set()
        went_online: set[str] = set()
        went_offline: set[str] = set()
        #: The rows to update, by the columns each sets (one executemany per shape).
        updates: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        changes: list[dict[str, object]] = []
        for device_id, online, last_seen in rows:
            known.add(device_id)
            pending = batch[device_id]
            values: dict[str, Any] = {}
            if pending.online and (last_seen is None or pending.seen > last_seen):
                values["last_seen"] = pending.seen
            if online != pending.online:
                values["online"] = pending.online
                values["online_changed_at"] = pending.seen
                (went_online if pending.online else went_offline).add(device_id)
                changes.append(
                    {"device_id": device_id, "at": pending.seen, "online": pending.online}
                )
            if pending.firmware is not None:
                values["firmware"] = pending.firmware
            if pending.telemetry is not None:
                values["telemetry"] = pending.telemetry
            if values:
                updates[tuple(values)].append({"id": device_id, **values})
        for columns, params in updates.items():
            await connection.execute(_update(columns), params)
        if changes:
            await connection.execute(insert(_CHANGES), changes)
        await session.commit()
        return FlushResult(
            updated=len(known),
            unknown=frozenset(set(batch) - known),
            went_online=frozenset(went_online),
            went_offline=frozenset(went_offline),
        )

    async def sweep(self, session: AsyncSession, now: datetime) -> int:
        """Mark offline every online device silent past the timeout; return how many. Each
        change is kept (:class:`~devices.models.PresenceChange`) at the device's last
        message: it has been silent since."""
        cutoff = now - self.timeout
        connection = await session.connection()
        result = await connection.execute(
            sa_update(Device)
            .where(col(Device.online).is_(True), col(Device.last_seen) < cutoff)
            .values(online=False, online_changed_at=now)
            .returning(col(Device.device_id), col(Device.last_seen))
        )
        silent = [
            {"device_id": device_id, "at": last_seen, "online": False}
            for device_id, last_seen in result.all()
        ]
        if silent:
            await connection.execute(insert(_CHANGES), silent)
        await session.commit()
        return len(silent)


async def presence_changes(
    session: AsyncSession, device_id: str, start: datetime, end: datetime
) -> list[tuple[datetime, bool]]:
    """The device's presence changes ``(at, online)`` in time order that tell its presence
    over ``[start, end)``: the last one at or before ``start``, then those up to ``end``."""
    before = (
        await session.exec(
            select(PresenceChange.at, PresenceChange.online)
            .where(PresenceChange.device_id == device_id, col(PresenceChange.at) <= start)
            .order_by(col(PresenceChange.at).desc(), col(PresenceChange.change_id).desc())
            .limit(1)
        )
    ).all()
    during = (
        await session.exec(
            select(PresenceChange.at, PresenceChange.online)
            .where(
                PresenceChange.device_id == device_id,
                col(PresenceChange.at) > start,
                col(PresenceChange.at) < end,
            )
            .order_by(col(PresenceChange.at), col(PresenceChange.change_id))
        )
    ).all()
    return [(at, online) for at, online in (*before, *during)]


async def prune_changes(session: AsyncSession, table: Table, key: str, before: datetime) -> int:
    """Forget the changes of a history (``table``: presence or broadband, one row per
    change, ``change_id``, ``at`` and the ``key`` column naming whose) that happened before
    ``before``, except each one's last: it still says the state from then on. Return how
    many; the caller commits."""
    newer = table.alias("newer")
    statement = delete(table).where(
        table.c.at < before,
        exists().where(
            newer.c[key] == table.c[key],
            newer.c.at <= before,
            or_(
                newer.c.at > table.c.at,
                and_(newer.c.at == table.c.at, newer.c.change_id > table.c.change_id),
            ),
        ),
    )
    result = await (await session.connection()).execute(statement)
    return int(result.rowcount)
