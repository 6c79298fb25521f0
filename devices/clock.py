"""The injected clock: the only source of "now" in Kanjia.

Every rule depends on time (retention, month ends, 7-day windows, 6-month purges), so no
module reads the system time directly. Production uses :class:`WallClock`; tests use
:class:`ManualClock`, moved only by :meth:`ManualClock.advance`; simulated fleets use
:class:`SimClock`, which runs ``speed`` times faster than the wall clock from ``start``.

``sleep`` is in *clock* seconds, so a job that sleeps an hour on a 3600x clock wakes
after one real second, and on a manual clock wakes when someone advances past its hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from devices.errors import DomainError

#: The operator's zone: month boundaries and "natural days" are taken here (RULES.md).
OPERATOR_TZ = ZoneInfo("Asia/Shanghai")


class Clock(Protocol):
    """What the service asks of time."""

    @property
    def adjustable(self) -> bool:
        """True when ``POST /ops/v1/clock`` may move this clock."""
        ...

    def now(self) -> datetime:
        """The current instant, timezone-aware, in UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait until ``seconds`` of this clock's time have passed."""
        ...

    def advance(self, seconds: float) -> datetime:
        """Move an adjustable clock forward; raise ``ClockNotAdjustable`` otherwise."""
        ...


class ClockNotAdjustable(DomainError, RuntimeError):
    """The wall clock cannot be moved."""

    code = "clock_not_adjustable"


def aware_utc(at: object, name: str) -> datetime:
    """``at`` in UTC, or an error naming ``name``: every rule takes instants this way.

    A naive time is refused (``ValueError``: "now must carry a timezone offset"), never
    guessed to be UTC or local; something other than a datetime is a ``TypeError``.
    """
    if not isinstance(at, datetime):
        raise TypeError(f"{name} must be a datetime, not {at!r}")
    if at.utcoffset() is None:
        raise ValueError(f"{name} must carry a timezone offset")
    return at.astimezone(UTC)


class WallClock:
    """The real time."""

    adjustable = False

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def advance(self, seconds: float) -> datetime:
        raise ClockNotAdjustable("the wall clock cannot be moved")


class _Waiters:
    """Sleepers woken when an adjustable clock jumps."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, timeout: float | None) -> None:
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)


class ManualClock:
    """A clock that stands still until :meth:`advance` moves it (tests, ``manual:`` mode)."""

    adjustable = True

    def __init__(self, start: datetime) -> None:
        self._now = aware_utc(start, "clock times")
        self._waiters = _Waiters()

    def now(self) -> datetime:
        return self._now

    def set(self, at: datetime) -> None:
        at = aware_utc(at, "clock times")
        if at < self._now:
            raise ValueError("a manual clock never goes back")
        self._now = at
        self._waiters.notify()

    def advance(self, seconds: float) -> datetime:
        if seconds < 0:
            raise ValueError("advance_seconds must not be negative")
        self.set(self._now + timedelta(seconds=seconds))
        return self._now

    async def sleep(self, seconds: float) -> None:
        target = self._now + timedelta(seconds=seconds)
        while self._now < target:
            await self._waiters.wait(None)


class SimClock:
    """An accelerated clock: ``start`` at creation, then ``speed`` clock seconds per real second.

    It can also be advanced (jumps add to the offset), so fleets can skip idle nights.
    """

    adjustable = True

    def __init__(self, start: datetime, speed: float) -> None:
        if speed <= 0:
            raise ValueError("clock speed must be positive")
        self._start = aware_utc(start, "clock times")
        self._speed = speed
        self._t0 = time.monotonic()
        self._offset = 0.0
        self._waiters = _Waiters()

    @property
    def speed(self) -> float:
        return self._speed

    def now(self) -> datetime:
        elapsed = (time.monotonic() - self._t0) * self._speed + self._offset
        return self._start + timedelta(seconds=elapsed)

    def advance(self, seconds: float) -> datetime:
        if seconds < 0:
            raise ValueError("advance_seconds must not be negative")
        self._offset += seconds
        self._waiters.notify()
        return self.now()

    async def sleep(self, seconds: float) -> None:
        target = self.now() + timedelta(seconds=seconds)
        while (left := (target - self.now()).total_seconds()) > 0:
            await self._waiters.wait(left / self._speed)


def parse_clock(spec: str) -> Clock:
    """Build a clock from ``KANJIA_CLOCK``: ``wall``, ``manual:<ISO>``, ``sim:<ISO>@<speed>``."""
    kind, _, rest = spec.partition(":")
    try:
        if kind == "wall" and not rest:
            return WallClock()
        if kind == "manual" and rest:
            return ManualClock(datetime.fromisoformat(rest))
        if kind == "sim" and "@" in rest:
            start, _, speed = rest.rpartition("@")
            return SimClock(datetime.fromisoformat(start), float(speed))
    except ValueError as exc:
        raise ValueError(f"KANJIA_CLOCK={spec!r}: {exc}") from exc
    raise ValueError(
        f"KANJIA_CLOCK={spec!r} is not one of 'wall', 'manual:<ISO time>', 'sim:<ISO time>@<speed>'"
    )


def operator_date(at: datetime) -> datetime:
    """``at`` seen in the operator's zone (for month ends and natural days)."""
    return aware_utc(at, "clock times").astimezone(OPERATOR_TZ)
