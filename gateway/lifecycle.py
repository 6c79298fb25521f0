"""Stopping tasks for good."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Iterable


def freeze_heap() -> None:
    """Take what is alive after start-up (modules, the app, the schema, the clients) out of
    the cyclic collector's reach, once per process (:func:`gc.freeze`).

    The collector's full passes otherwise walk those objects again and again, each time a
    busy loop has made enough garbage: `bench/` measured events indexed 30 % faster.
    Called by ``kanjia serve`` and by the benchmarks that stand for it, never by the
    gateway itself: tests start many gateways in one process.
    """
    gc.collect()
    gc.freeze()


async def cancel_all(tasks: Iterable[asyncio.Task[object]], *, every: float = 0.2) -> None:
    """Cancel the tasks and wait until all have ended.

    A library may swallow one cancellation (aiomqtt does while connecting), so the tasks
    still running after ``every`` seconds are cancelled again.
    """
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=every)


class Uncut:
    """One write at a time that cancelling its caller does not cut in the middle.

    Cancelling a task inside a database transaction can leave its connection holding
    the write lock (SQLite), so a writer loop runs each write through :meth:`run`: the
    write goes on when the loop is cancelled, and shutdown awaits :meth:`settle`.
    """

    def __init__(self) -> None:
        self._current: asyncio.Future[None] | None = None

    async def run(self, write: Awaitable[None]) -> None:
        self._current = asyncio.ensure_future(write)
        await asyncio.shield(self._current)
        self._current = None

    async def settle(self) -> None:
        """Wait for the write in flight, if any."""
        if self._current is not None:
            await self._current
            self._current = None
