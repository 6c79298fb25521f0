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

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from devices.models import Device


@dataclass(slots=True)
class _Pending:
    seen: datetime
    online: bool
    firmware: str | None = None
    telemetry: dict[str, object] | None = None


_DEVICES = Device.__table__  # type: ignore[attr-defined]
_FLUSH = (
    update(_DEVICES)
    .where(_DEVICES.c.device_id == bindparam("key"))
    .values(
        last_seen=bindparam("new_last_seen", type_=_DEVICES.c.last_seen.type),
        online=bindparam("new_online", type_=_DEVICES.c.online.type),
        online_changed_at=bindparam("new_changed_at", type_=_DEVICES.c.online_changed_at.type),
        firmware=bindparam("new_firmware", type_=_DEVICES.c.firmware.type),
        telemetry=bindparam("new_telemetry", type_=_DEVICES.c.telemetry.type),
    )
)


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
        if not self._pending:
            return FlushResult(0, frozenset(), frozenset(), frozenset())
        batch, self._pending = self._pending, {}
        rows = await session.exec(select(Device).where(col(Device.device_id).in_(list(batch))))
        known: set[str] = set()
        went_online: set[str] = set()
        went_offline: set[str] = set()
        changes: list[dict[str, object]] = []
        for device in rows.all():
            known.add(device.device_id)
            pending = batch[device.device_id]
            last_seen, online, changed_at = (
                device.last_seen,
                device.online,
                device.online_changed_at,
            )
            if pending.online and (last_seen is None or pending.seen > last_seen):
                last_seen = pending.seen
            if online != pending.online:
                online, changed_at = pending.online, pending.seen
                (went_online if online else went_offline).add(device.device_id)
            changes.append(
                {
                    "key": device.device_id,
                    "new_last_seen": last_seen,
                    "new_online": online,
                    "new_changed_at": changed_at,
                    "new_firmware": device.firmware
                    if pending.firmware is None
                    else pending.firmware,
                    "new_telemetry": device.telemetry
                    if pending.telemetry is None
                    else pending.telemetry,
                }
            )
        if changes:
            # One executemany, not one UPDATE round trip per device: on SQLite the write
            # lock is held from the first statement to the commit, and each round trip
            # waits its turn on a busy event loop.
            connection = await session.connection()
            await connection.execute(_FLUSH, changes)
        await session.commit()
        return FlushResult(
            updated=len(known),
            unknown=frozenset(set(batch) - known),
            went_online=frozenset(went_online),
            went_offline=frozenset(went_offline),
        )

    async def sweep(self, session: AsyncSession, now: datetime) -> int:
        """Mark offline every online device silent past the timeout; return how many."""
        cutoff = now - self.timeout
        result = await session.exec(
            update(Device)
            .where(col(Device.online).is_(True), col(Device.last_seen) < cutoff)
            .values(online=False, online_changed_at=now)
        )
        await session.commit()
        return int(result.rowcount)
