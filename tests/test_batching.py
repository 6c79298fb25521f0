"""Group commit (gateway.batching): batches form while a write is in flight, a failing
batch costs only its bad item, back-pressure holds the receive loop, and shutdown loses
nothing already received. The handler here is an in-memory recorder: GroupCommit has
no I/O of its own."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Sequence

import pytest
from sqlalchemy.exc import OperationalError

from gateway.batching import GroupCommit, HeldAcks
from gateway.metrics import Metrics
from storage.transient import Backoff


class Recorder:
    def __init__(self, *, bad: frozenset[int] = frozenset()) -> None:
        self.batches: list[list[int]] = []
        self.written: list[int] = []
        self.bad = bad
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()
        self.cancelled = False

    async def __call__(self, batch: Sequence[int]) -> None:
        self.batches.append(list(batch))
        self.entered.set()
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.bad & set(batch):
            raise RuntimeError("constraint violated")
        self.written.extend(batch)


def errors(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value("kanjia_mqtt_handler_errors_total", {"kind": name})
    return value or 0.0


async def settle(group: GroupCommit[int]) -> None:
    for _ in range(200):
        if group.pending == 0:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{group.pending} items still pending")


async def test_items_arriving_during_a_write_form_the_next_batch() -> None:
    recorder = Recorder()
    group = GroupCommit("t", recorder, metrics=Metrics(), max_batch=3, max_pending=10)
    recorder.gate.clear()
    task = asyncio.create_task(group.run())
    try:
        await group.submit(0)
        await recorder.entered.wait()
        for item in range(1, 6):
            await group.submit(item)
        recorder.gate.set()
        await settle(group)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert recorder.batches == [[0], [1, 2, 3], [4, 5]]
    assert recorder.written == [0, 1, 2, 3, 4, 5]


async def test_a_lingering_batch_gathers_the_items_that_come_meanwhile() -> None:
    recorder = Recorder()
    group = GroupCommit("t", recorder, metrics=Metrics(), max_batch=3, linger=0.2)
    task = asyncio.create_task(group.run())
    try:
        await group.submit(0)
        await asyncio.sleep(0.05)  # within the linger: no batch yet
        assert recorder.batches == []
        for item in range(1, 5):
            await group.submit(item)
        await settle(group)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # The first batch waited and took what came meanwhile, up to its size; the rest, not
    # a full batch, lingered in turn.
    assert recorder.batches == [[0, 1, 2], [3, 4]]


async def test_a_full_batch_does_not_linger() -> None:
    """(The linger is 30 s: settle() would give up long before a batch had waited it out.)"""
    recorder = Recorder()
    group = GroupCommit("t", recorder, metrics=Metrics(), max_batch=2, linger=30.0)
    recorder.gate.clear()
    task = asyncio.create_task(group.run())
    try:
        await group.submit(0)
        await group.submit(1)
        await recorder.entered.wait()
        await group.submit(2)
        await group.submit(3)  # came during the write, and fill the next batch
        recorder.gate.set()
        await settle(group)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert recorder.batches == [[0, 1], [2, 3]]


async def test_items_waiting_out_a_linger_are_written_by_the_drain() -> None:
    recorder = Recorder()
    group = GroupCommit("t", recorder, metrics=Metrics(), max_batch=10, linger=30.0)
    task = asyncio.create_task(group.run())
    acked: list[int] = []
    for item in range(3):
        await group.submit(item, functools.partial(acked.append, item))
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert recorder.batches == []
    await group.drain()
    assert recorder.batches == [[0, 1, 2]]
    assert acked == [0, 1, 2]


def test_a_negative_linger_is_refused() -> None:
    with pytest.raises(ValueError, match="linger"):
        GroupCommit("t", Recorder(), metrics=Metrics(), linger=-1.0)


async def test_a_failing_batch_is_retried_item_by_item_and_only_the_bad_item_is_lost() -> None:
    metrics = Metrics()
    recorder = Recorder(bad=frozenset({2}))
    group = GroupCommit("t", recorder, metrics=metrics, max_batch=10, max_pending=10)
    for item in range(4):
        await group.submit(item)
    task = asyncio.create_task(group.run())
    try:
        await settle(group)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert recorder.batches[0] == [0, 1, 2, 3]
    assert recorder.written == [0, 1, 3]
    assert errors(metrics, "t") == 1


async def test_submit_waits_while_the_queue_is_full() -> None:
    recorder = Recorder()
    group = GroupCommit("t", recorder, metrics=Metrics(), max_batch=2, max_pending=2)
    await group.submit(0)
    await group.submit(1)
    blocked = asyncio.create_task(group.submit(2))
    await asyncio.sleep(0.02)
    assert not blocked.done()
    task = asyncio.create_task(group.run())
    try:
        await asyncio.wait_for(blocked, 1)
        await settle(group)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert recorder.written == [0, 1, 2]


async def test_cancelling_finishes_the_batch_in_flight_and_drain_writes_the_rest() -> None:
    """A transaction cut midway can leave SQLite's write lock held: run() never cuts one."""
    recorder = Recorder()
    group = GroupCommit("t", recorder, metrics=Metrics(), max_batch=2, max_pending=10)
    recorder.gate.clear()
    task = asyncio.create_task(group.run())
    await group.submit(0)
    await recorder.entered.wait()  # the batch [0] is being written when shutdown comes
    for item in range(1, 4):
        await group.submit(item)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert recorder.written == []
    assert group.pending == 4
    recorder.gate.set()
    await group.drain()
    assert not recorder.cancelled
    assert recorder.batches == [[0], [1, 2], [3]]
    assert recorder.written == [0, 1, 2, 3]
    assert group.pending == 0


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        GroupCommit("t", Recorder(), metrics=Metrics(), max_batch=5, max_pending=4)


class Outage:
    """A handler whose dependency is down for the first ``failures`` calls (issue 14 item 2):
    it raises what SQLAlchemy raises for SQLite's "database is locked"."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.written: list[int] = []
        self.third_call = asyncio.Event()

    async def __call__(self, batch: Sequence[int]) -> None:
        self.calls += 1
        if self.calls == 3:
            self.third_call.set()
        if self.calls <= self.failures:
            raise OperationalError(
                "UPDATE devices", {}, sqlite3.OperationalError("database is locked")
            )
        self.written.extend(batch)


FAST = Backoff(first=0.001, cap=0.002)


async def test_a_transiently_failing_batch_is_tried_again_and_acknowledged_once_written() -> None:
    metrics = Metrics()
    outage = Outage(failures=3)
    group = GroupCommit("t", outage, metrics=metrics, backoff=FAST)
    acked: list[int] = []
    task = asyncio.create_task(group.run())
    try:
        for i in range(3):
            await group.submit(i, functools.partial(acked.append, i))
        await settle(group)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert outage.written == [0, 1, 2]  # whole: never split, never dropped
    assert acked == [0, 1, 2]
    assert errors(metrics, "t") == 0
    retries = metrics.registry.get_sample_value("kanjia_write_retries_total", {"queue": "t"})
    assert retries == 3


async def test_a_stop_during_an_outage_leaves_the_items_unacknowledged_for_the_broker() -> None:
    outage = Outage(failures=10**9)
    group = GroupCommit("t", outage, metrics=Metrics(), backoff=FAST)
    acked: list[int] = []
    task = asyncio.create_task(group.run())
    await group.submit(1, lambda: acked.append(1))
    await outage.third_call.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    async with asyncio.timeout(2):  # the stop does not wait the outage out
        await group.drain()
    assert (outage.written, acked) == ([], [])


async def test_held_acknowledgements_make_the_write_due_at_the_threshold() -> None:
    """Held acknowledgements count in the broker's in-flight window: at ``early`` held, the
    presence flush is due at once (not at its interval); taking them for a write clears it,
    and none is sent before that write commits."""
    acks = HeldAcks(early=3)
    sent: list[int] = []
    acks.hold(functools.partial(sent.append, 1))
    acks.hold(functools.partial(sent.append, 2))
    assert not acks.due.is_set()
    acks.hold(functools.partial(sent.append, 3))
    assert acks.due.is_set()
    acks.take()
    assert not acks.due.is_set()
    assert sent == []
    acks.written()
    assert sent == [1, 2, 3]
