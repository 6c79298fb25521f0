"""Stopping tasks for good."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


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
