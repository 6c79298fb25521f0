"""Ending the background tasks of a simulator, which has its own helpers for it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def cancel_all(tasks: Iterable[asyncio.Task[Any]], *, again_after: float = 0.2) -> None:
    """Cancel ``tasks`` and return once every one of them has ended.

    aiomqtt swallows a cancellation while it connects: a task still running
    ``again_after`` seconds later is cancelled once more.
    """
    running = {task for task in tasks if not task.done()}
    while running:
        for task in running:
            task.cancel()
        running = (await asyncio.wait(running, timeout=again_after))[1]
