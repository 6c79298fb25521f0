"""One gateway's in-flight router work: telemetry waiters and routers being changed (R13).

Tuning's ``read_telemetry`` waits for the router's *next* telemetry message after the call:
:meth:`RouterHub.notify` (called for every router telemetry message this process receives)
resolves the waiters of this process; a message that reaches another gateway (shared
subscriptions) is found in the database row the presence flush writes. Messages arriving
within :data:`TELEMETRY_SETTLE_SECONDS` of the call are not taken: they were already on
their way before a change and describe the old channels.

The hub is a field of :class:`gateway.services.Services`, so one per gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from devices.errors import Conflict
from devices.tuning import RadioTelemetry

log = logging.getLogger(__name__)

#: Telemetry arriving this soon after a wait began is taken as sent before it (seconds).
TELEMETRY_SETTLE_SECONDS: Final = 0.3
#: How often a waiter looks for telemetry that reached another gateway (seconds).
TELEMETRY_POLL_SECONDS: Final = 0.5


class TelemetryTimeout(Exception):
    """No telemetry from the router within the time allowed."""

    def __init__(self, device_id: str, seconds: float) -> None:
        super().__init__(f"no telemetry from router {device_id} within {seconds:g} s")
        self.device_id = device_id
        self.seconds = seconds


class RouterBusy(Conflict):
    """Another management change of this router is running in this gateway."""

    code = "router_busy"

    def __init__(self, device_id: str) -> None:
        super().__init__(f"router {device_id} is being changed; try again shortly")
        self.device_id = device_id


def parse_radios(payload: Mapping[str, Any]) -> tuple[RadioTelemetry, ...] | None:
    """A router ``telemetry`` payload's radios; None when it is not in that shape."""
    radios = payload.get("radios")
    if not isinstance(radios, list) or not radios:
        return None
    try:
        return tuple(RadioTelemetry.from_dict(r) for r in radios)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


@dataclass(slots=True)
class _Waiter:
    not_before: float
    future: asyncio.Future[tuple[RadioTelemetry, ...]]


@dataclass(slots=True)
class RouterHub:
    """One gateway's in-flight router work: telemetry waiters and routers being changed."""

    waiters: dict[str, list[_Waiter]] = field(default_factory=dict)
    busy: set[str] = field(default_factory=set)

    def notify(self, device_id: str, payload: Mapping[str, Any]) -> None:
        """A router's telemetry arrived: resolve the waiters it is new enough for."""
        waiting = self.waiters.get(device_id)
        if not waiting:
            return
        now = asyncio.get_running_loop().time()
        ready = [w for w in waiting if now >= w.not_before and not w.future.done()]
        if not ready:
            return
        radios = parse_radios(payload)
        if radios is None:
            log.info("router %s: telemetry without radios; still waiting", device_id)
            return
        for waiter in ready:
            waiter.future.set_result(radios)

    @contextlib.contextmanager
    def _waiting(self, device_id: str, waiter: _Waiter) -> Iterator[None]:
        self.waiters.setdefault(device_id, []).append(waiter)
        try:
            yield
        finally:
            waiting = self.waiters.get(device_id, [])
            if waiter in waiting:
                waiting.remove(waiter)
            if not waiting:
                self.waiters.pop(device_id, None)

    async def next_telemetry(
        self,
        device_id: str,
        *,
        timeout: float,
        from_database: Callable[[], Awaitable[tuple[Any, ...]]],
    ) -> tuple[RadioTelemetry, ...]:
        """The radios of the device's next telemetry message (see the module docstring).

        ``from_database`` reads ``(last_seen, telemetry)`` of the device's row: a change
        after the settle time means a message that another gateway received.
        """
        loop = asyncio.get_running_loop()
        waiter = _Waiter(
            not_before=loop.time() + TELEMETRY_SETTLE_SECONDS, future=loop.create_future()
        )
        with self._waiting(device_id, waiter):
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.sleep(TELEMETRY_SETTLE_SECONDS)
                    seen = await from_database()
                    while True:
                        done, _ = await asyncio.wait(
                            {waiter.future}, timeout=TELEMETRY_POLL_SECONDS
                        )
                        if done:
                            return waiter.future.result()
                        row = await from_database()
                        if row != seen:
                            seen = row
                            radios = parse_radios(row[1] or {})
                            if radios is not None:
                                return radios
            except TimeoutError as exc:
                raise TelemetryTimeout(device_id, timeout) from exc

    @contextlib.asynccontextmanager
    async def changing(self, device_id: str) -> AsyncIterator[None]:
        """One management change at a time per router (in this gateway); 409 otherwise."""
        if device_id in self.busy:
            raise RouterBusy(device_id)
        self.busy.add(device_id)
        try:
            yield
        finally:
            self.busy.discard(device_id)
