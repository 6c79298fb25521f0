"""Group commit: messages queued by the receive loop, written a batch per transaction.

One transaction per device message costs a session, several round trips and a commit
each, which caps a gateway at a few hundred messages a second (``bench/ingest.py``).
A :class:`GroupCommit` takes items from the receive loop without waiting for the
database and hands them to its handler in batches: while one batch is being written the
next accumulates, so a quiet gateway writes each item at once and a busy one writes
hundreds per commit. The queue is bounded: when it is full, :meth:`GroupCommit.submit`
waits, the receive loop stops reading and the broker holds the backlog.

An item may carry a ``done`` callback, called once the item is handled (its batch
committed, or the item given up alone): the MQTT session acknowledges a message only
then, so what a crash loses was never acknowledged and the broker sends it again.

A batch whose handler fails is retried item by item, so one bad item costs only itself;
an item that fails alone is counted and logged. Handlers must be idempotent (they are:
segments and events are keyed by their ids): an item of a failed batch is handled again.
Cancelling :meth:`GroupCommit.run` never cuts a batch in the middle of its transaction;
:meth:`GroupCommit.drain` then finishes it and writes the rest of the queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from gateway.lifecycle import Uncut
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

BatchHandler = Callable[[Sequence[T]], Awaitable[None]]
#: Called once an item is handled (e.g. the MQTT acknowledgement of its message).
Done = Callable[[], None]


class GroupCommit(Generic[T]):
    def __init__(
        self,
        name: str,
        handler: BatchHandler[T],
        *,
        metrics: Metrics,
        max_batch: int = 500,
        max_pending: int = 10_000,
    ) -> None:
        if max_batch < 1 or max_pending < max_batch:
            raise ValueError("need 1 <= max_batch <= max_pending")
        self.name = name
        self._handler = handler
        self._metrics = metrics
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[T, Done | None]] = asyncio.Queue(maxsize=max_pending)
        self._writing = Uncut()
        self._in_flight = 0
        metrics.queue_depth.labels(name).set_function(self._queue.qsize)

    @property
    def pending(self) -> int:
        """Items queued or in the batch being written."""
        return self._queue.qsize() + self._in_flight

    async def submit(self, item: T, done: Done | None = None) -> None:
        """Queue one item; waits only while the queue is full (back-pressure). ``done`` is
        called once the item is handled."""
        await self._queue.put((item, done))

    def _take(self, batch: list[tuple[T, Done | None]]) -> list[tuple[T, Done | None]]:
        """Fill ``batch`` from the queue, up to the batch size, without waiting."""
        while len(batch) < self._max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def run(self) -> None:
        """Write batches until cancelled. A batch being written when the cancellation
        comes is finished, not cut: cancelling a transaction midway can leave its
        connection holding the database's write lock (SQLite)."""
        while True:
            first = await self._queue.get()
            await self._writing.run(self._write(self._take([first])))

    async def settle(self) -> None:
        """Wait for the batch being written (after :meth:`run` was cancelled)."""
        await self._writing.settle()

    async def drain(self) -> None:
        """Finish the batch being written, then write what is left (shutdown)."""
        await self.settle()
        while batch := self._take([]):
            await self._write(batch)

    async def _write(self, batch: list[tuple[T, Done | None]]) -> None:
        self._metrics.batch_size.labels(self.name).observe(len(batch))
        self._in_flight = len(batch)
        try:
            await self._write_or_split([item for item, _ in batch])
        finally:
            self._in_flight = 0
        for _, done in batch:
            if done is not None:
                done()

    async def _write_or_split(self, batch: list[T]) -> None:
        try:
            await self._handler(batch)
            return
        except Exception:
            if len(batch) == 1:
                self._failed()
                return
            log.warning("%s: a batch of %d failed; writing one by one", self.name, len(batch))
        for item in batch:
            try:
                await self._handler([item])
            except Exception:
                self._failed()

    def _failed(self) -> None:
        self._metrics.mqtt_handler_errors.labels(self.name).inc()
        log.exception("%s: an item could not be written", self.name)
