"""Stopping tasks for good."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable


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
