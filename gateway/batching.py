"""Group commit: messages queued by the receive loop, written a batch per transaction.

One transaction per device message costs a session, several round trips and a commit
each, which caps a gateway at a few hundred messages a second (``bench/ingest.py``).
A :class:`GroupCommit` takes items from the receive loop without waiting for the
database and hands them to its handler in batches: while one batch is being written the
next accumulates, so a quiet gateway writes each item at once and a busy one writes
hundreds per commit. A ``linger`` (a few milliseconds) lets a batch that would be small
wait for company: at a few hundred messages a second, batches of one or two cost their
queries and commit each (issue 16, item 3). The queue is bounded: when it is full,
:meth:`GroupCommit.submit` waits, the receive loop stops reading and the broker holds the
backlog.

An item may carry a ``done`` callback, called once the item is handled (its batch
committed, or the item given up alone): the MQTT session acknowledges a message only
then, so what a crash loses was never acknowledged and the broker sends it again.

A batch that fails for a transient reason (:func:`storage.transient.is_transient`: the
database or the object store down or busy) is tried again, whole, with backoff capped at a
few seconds, for as long as the component runs: nothing is acknowledged meanwhile, the
queue fills and the broker holds the backlog until the dependency is back. A batch that
fails otherwise is retried item by item, so one bad item costs only itself; an item that
fails alone is counted, logged and acknowledged (sending it again would fail again).
Handlers must be idempotent (they are: segments and events are keyed by their ids): an
item of a failed batch is handled again.
Cancelling :meth:`GroupCommit.run` never cuts a batch in the middle of its transaction;
:meth:`GroupCommit.drain` then finishes it and writes the rest of the queue. Once
stopping, a transient failure is not waited out: the items are left unacknowledged, so
the broker sends them again to the next session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from gateway.lifecycle import Uncut
from gateway.metrics import Metrics
from storage.transient import Backoff, is_transient

log = logging.getLogger(__name__)

T = TypeVar("T")

BatchHandler = Callable[[Sequence[T]], Awaitable[None]]
#: Waits between tries of a batch while a dependency is down.
WRITE_BACKOFF = Backoff(first=0.1, cap=5.0)
#: Called once an item is handled (e.g. the MQTT acknowledgement of its message).
Done = Callable[[], None]


#: Held acknowledgements that make a write due at once (:attr:`HeldAcks.due`).
EARLY_WRITE_ACKS = 200


class HeldAcks:
    """Acknowledgements held until the write that covers their messages commits (what is
    coalesced in memory, like presence, is acknowledged only once it is written).

    Held acknowledgements are messages the broker counts in flight: once it has its window
    of them out (Mosquitto's ``max_inflight_messages``) it sends no more until they come.
    So :attr:`due` is set when ``early`` are held, for the writer not to wait out its
    interval with the session stalled (BENCHMARKS.md, ingest)."""

    def __init__(self, early: int = EARLY_WRITE_ACKS) -> None:
        self._held: list[Done] = []
        self._writing: list[Done] = []
        self._early = early
        #: Set when ``early`` acknowledgements are held: the write should not wait.
        self.due = asyncio.Event()

    def hold(self, done: Done) -> None:
        self._held.append(done)
        if len(self._held) >= self._early:
            self.due.set()

    def take(self) -> None:
        """The acknowledgements held so far wait for a write that starts now."""
        self._writing, self._held = self._writing + self._held, []
        self.due.clear()

    def written(self) -> None:
        """The write committed: its acknowledgements are sent."""
        taken, self._writing = self._writing, []
        for done in taken:
            done()

    def give_back(self) -> None:
        """The write failed: its acknowledgements wait for the next one."""
        self._held[:0], self._writing = self._writing, []

    def __len__(self) -> int:
        """Acknowledgements not sent yet (held, or waiting for a write in progress)."""
        return len(self._held) + len(self._writing)


class GroupCommit(Generic[T]):
    def __init__(
        self,
        name: str,
        handler: BatchHandler[T],
        *,
        metrics: Metrics,
        max_batch: int = 500,
        max_pending: int = 10_000,
        backoff: Backoff = WRITE_BACKOFF,
        linger: float = 0.0,
    ) -> None:
        if max_batch < 1 or max_pending < max_batch:
            raise ValueError("need 1 <= max_batch <= max_pending")
        if not linger >= 0:
            raise ValueError(f"linger must not be negative, not {linger!r}")
        self.name = name
        self._handler = handler
        self._metrics = metrics
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[T, Done | None]] = asyncio.Queue(maxsize=max_pending)
        self._writing = Uncut()
        self._in_flight = 0
        self._backoff = backoff
        self._stopping = asyncio.Event()
        self._linger = linger
        self._arrived = asyncio.Event()
        metrics.queue_depth.labels(name).set_function(self._queue.qsize)

    @property
    def pending(self) -> int:
        """Items queued or in the batch being written."""
        return self._queue.qsize() + self._in_flight

    async def submit(self, item: T, done: Done | None = None) -> None:
        """Queue one item; waits only while the queue is full (back-pressure). ``done`` is
        called once the item is handled."""
        await self._queue.put((item, done))
        self._arrived.set()

    def _take(self, batch: list[tuple[T, Done | None]]) -> list[tuple[T, Done | None]]:
        """Fill ``batch`` from the queue, up to the batch size, without waiting."""
        while len(batch) < self._max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def run(self) -> None:
        """Write batches until cancelled. A batch being written when the cancellation
        comes is finished, not cut: cancelling a transaction midway can leave its
        connection holding the database's write lock (SQLite).

        With a ``linger``, a batch that would not be full waits that long for company
        before it is written, also when its first items came during the last write (what
        a batch costs is mostly per batch, not per item: a few queries and a commit; at
        1,000 cameras, lingering only when idle made the batches half as large and the
        gateway's CPU a fifth higher, BENCHMARKS.md). A full batch goes at once. The
        items stay queued meanwhile, so a cancellation then leaves them to :meth:`drain`."""
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            if self._linger and self._queue.qsize() < self._max_batch:
                await asyncio.sleep(self._linger)
            if batch := self._take([]):
                self._arrived.set()  # what is left, or comes during the write, is next
                await self._writing.run(self._write(batch))

    async def settle(self) -> None:
        """Wait for the batch being written (after :meth:`run` was cancelled); it is not
        retried any more (its items stay unacknowledged if it cannot be written now)."""
        self._stopping.set()
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
            handled = await self._write_or_split([item for item, _ in batch])
        finally:
            self._in_flight = 0
        for position, (_, done) in enumerate(batch):
            if done is not None and position in handled:
                done()

    async def _write_or_split(self, batch: list[T]) -> set[int]:
        """The positions of the items handled (written, or failed for good)."""
        try:
            return set(range(len(batch))) if await self._attempt(batch) else set()
        except Exception:
            if len(batch) == 1:
                self._failed()
                return {0}
            log.warning("%s: a batch of %d failed; writing one by one", self.name, len(batch))
        handled: set[int] = set()
        for position, item in enumerate(batch):
            try:
                if await self._attempt([item]):
                    handled.add(position)
            except Exception:
                self._failed()
                handled.add(position)
        return handled

    async def _attempt(self, items: list[T]) -> bool:
        """Hand ``items`` to the handler, again while it fails for a transient reason;
        ``False`` if stopping came first (nothing written, nothing to acknowledge)."""
        delays = self._backoff.delays()
        while True:
            try:
                await self._handler(items)
                return True
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self._metrics.write_retries.labels(self.name).inc()
                log.warning("%s: %d item(s) wait for a dependency: %s", self.name, len(items), exc)
            if self._stopping.is_set():
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), next(delays))

    def _failed(self) -> None:
        self._metrics.mqtt_handler_errors.labels(self.name).inc()
        log.exception("%s: an item could not be written", self.name)
