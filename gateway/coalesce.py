"""Requests that arrive together, handled together: concurrent callers' items in batches.

A :class:`Coalescer` takes one item per caller and hands the items waiting at that moment to
a batch function in one call (in arrival order, at most ``limit`` at a time); each caller
gets its own item's result. The first caller of an idle coalescer starts a task that
drains the queue; while one batch runs the next accumulates, so a lone caller is handled at
once and a burst of callers shares transactions. Broadband orders sent one by one go
through it (:func:`gateway.broadband_batch.run_single`).

A batch that raises fails its own callers only; the task goes on with the next batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: What a coalescer hands its items to: one result per item, in order.
Batch = Callable[[Sequence[T]], Awaitable[Sequence[R]]]


class Coalescer(Generic[T, R]):
    def __init__(self, limit: int = 250) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T, batch: Batch[T, R]) -> R:
        """``item``'s result from ``batch``, handled with the items queued beside it."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(batch), name="coalesce")
        return await asyncio.shield(future)

    async def _drain(self, batch: Batch[T, R]) -> None:
        while self._queue:
            taken = self._queue[: self.limit]
            del self._queue[: self.limit]
            try:
                results = await batch([item for item, _ in taken])
                if len(results) != len(taken):
                    raise RuntimeError(f"{len(results)} results for {len(taken)} items")
            except Exception as exc:
                for _, future in taken:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except BaseException:  # cancelled: so are its callers; the rest waits
                for _, future in taken:
                    future.cancel()
                raise
            for (_, future), result in zip(taken, results, strict=True):
                if not future.done():
                    future.set_result(result)
