"""Broadband orders in bulk: a batch in chunks, one transaction per chunk (R8–R12, R15).

A chunk of orders is one unit of work:

1. read, set-based: the chunk's accounts locked (:func:`devices.broadband_store.lock_many`)
   with their stop sets, the idempotency records of its order ids, the accounts' devices
   and desired documents, the accounts holding an active product (R9, for teardowns) and
   the cameras' active families (for the documents);
2. decide each order in batch order, in memory, with what a single order uses
   (:func:`gateway.broadband.decide` → :func:`devices.broadband.apply`,
   :func:`devices.broadband_store.save`, :func:`devices.desired.restage`,
   :func:`gateway.broadband.answer_of`, :func:`devices.orders.record_order`): a later order
   of the chunk sees the earlier ones' effect, so every order gets the answer it would get
   sent alone after those before it (a repeated ``order_id`` its first answer, another
   request under it ``order_id_reused``, an unknown account 404, stale and no-op orders
   ``applied: false``, refusals 409);
3. one commit: the ORM writes each table's rows in a few set-based statements (multi-row
   inserts, executemany updates): the stop sets, ``Account.broadband_state``, the desired
   documents, the idempotency records and the completion reports;
4. after the commit the publish job is woken: the chunk's documents go out while the next
   chunk is decided.

A chunk that loses a race on an ``order_id`` to a concurrent request is read and decided
again (the winner's answer is then replayed); a chunk that fails otherwise falls back to
its orders one by one (:func:`gateway.broadband.run_order`), so one bad order does not fail
the others.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from devices import accounts
from devices import broadband_periods as periods
from devices import broadband_store as store
from devices.desired import Compose, convergence, documents_of, restage, write_documents
from devices.errors import DomainError, NotFound
from devices.models import DesiredState, Device, PlatformOrder
from devices.orders import (
    Answer,
    OrderIdReused,
    fingerprint,
    order_rows,
    replayed,
    stored_orders,
    write_orders,
)
from gateway.answers import error_body
from gateway.broadband import BroadbandOrder, answer_of, decide, run_order, view_of
from gateway.desired import PUBLISH_JOB
from gateway.errors import REFUSALS, http_status
from gateway.orders import CALLBACK_JOB
from gateway.services import Services
from replay.desired import composer
from replay.subscriptions import accounts_with_active_subscription, active_families

log = logging.getLogger(__name__)

#: Orders decided and committed together. Larger chunks pay fewer statements and commits;
#: smaller ones publish the first documents sooner (the devices apply them meanwhile).
CHUNK_SIZE = 250
#: Reads and decisions of a chunk again after losing an ``order_id`` race.
RACE_ATTEMPTS = 3


@dataclass(slots=True)
class _Chunk:
    """What a chunk's transaction read, updated in memory as its orders are decided."""

    now: datetime
    locked: dict[str, store.Locked]
    known: dict[str, PlatformOrder | Answer]
    prints: dict[str, str]
    devices: dict[str, list[Device]]
    desired: dict[str, DesiredState]
    by_account: dict[str, dict[str, DesiredState]]
    subscribed: set[str]
    compose: Compose
    #: What the chunk changed, written at its end: accounts decided, accounts whose state
    #: moved, documents restaged (and those new to the database), orders and reports.
    staged: dict[str, store.Locked] = field(default_factory=dict)
    moved: set[str] = field(default_factory=set)
    restaged: dict[str, DesiredState] = field(default_factory=dict)
    new_documents: set[str] = field(default_factory=set)
    #: The boundary rule's history (issue 17): each move, in order.
    moves: list[periods.Transition] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)


def _error(exc: DomainError) -> Answer:
    return Answer(http_status(exc), error_body(exc.code, exc.message, exc.rule))


async def _read(session: AsyncSession, orders: Sequence[BroadbandOrder], now: datetime) -> _Chunk:
    account_ids = {order.account_id for order in orders}
    locked = await store.lock_many(session, account_ids, now)
    known: dict[str, PlatformOrder | Answer] = dict(
        await stored_orders(session, (order.order_id for order in orders))
    )
    devices = await accounts.devices_of_accounts(session, locked)
    device_ids = [d.device_id for listed in devices.values() for d in listed]
    documents = await documents_of(session, account_ids=locked, device_ids=device_ids)
    by_account: dict[str, dict[str, DesiredState]] = {}
    for document in documents:
        by_account.setdefault(document.account_id, {})[document.device_id] = document
    teardowns = {o.account_id for o in orders if o.action == "teardown" and o.account_id in locked}
    return _Chunk(
        now=now,
        locked=locked,
        known=known,
        prints={},
        devices=devices,
        desired={document.device_id: document for document in documents},
        by_account=by_account,
        subscribed=await accounts_with_active_subscription(session, teardowns),
        compose=composer(await active_families(session, device_ids)),
    )


def _restage(chunk: _Chunk, locked: store.Locked) -> None:
    """The account's state moved: its devices' documents (R8 cameras, R12 routers)."""
    for device in chunk.devices.get(locked.account.account_id, []):
        state = restage(
            device,
            locked.account,
            chunk.desired.get(device.device_id),
            now=chunk.now,
            compose=chunk.compose,
        )
        if state is not None:
            if device.device_id not in chunk.desired:
                chunk.new_documents.add(device.device_id)
            chunk.desired[device.device_id] = state
            chunk.by_account.setdefault(state.account_id, {})[device.device_id] = state
            chunk.restaged[device.device_id] = state


def _effect(chunk: _Chunk, order: BroadbandOrder) -> tuple[Answer, dict[str, Any] | None]:
    """:func:`gateway.broadband.run_order`'s effect on what the chunk read."""
    locked = chunk.locked.get(order.account_id)
    if locked is None:
        return _error(NotFound("account", order.account_id)), None
    now = chunk.now
    outcome, last = decide(locked, order, now, subscribed=order.account_id in chunk.subscribed)
    # Outcome.state is saved even when not applied: issued_at bookkeeping, lapses.
    chunk.staged[order.account_id] = locked
    if store.stage(locked, outcome.state, now, last=last):
        chunk.moved.add(order.account_id)
        state = outcome.state
        at = order.business_time(now)
        chunk.moves.append(
            periods.Transition(order.account_id, state.state, state.inactive_since, at)
        )
        _restage(chunk, locked)
    view = None
    if outcome.refusal is None:
        states = chunk.by_account.get(order.account_id, {})
        view = view_of(
            order.account_id,
            outcome.state,
            now,
            last=last,
            convergence=convergence(chunk.devices.get(order.account_id, []), states),
        )
    return answer_of(order, outcome, now, view)


def _one(chunk: _Chunk, order: BroadbandOrder) -> Answer:
    """One order of the chunk: its first answer replayed, or decided and recorded."""
    print_ = fingerprint(order.action_name, order.account_id, order.request_body())
    known = chunk.known.get(order.order_id)
    if isinstance(known, Answer):  # answered earlier in this chunk
        if chunk.prints[order.order_id] != print_:
            return _error(OrderIdReused(order.order_id))
        return known
    try:
        stored = replayed(known, order.order_id, print_)
    except REFUSALS as exc:
        return _error(exc)
    if stored is not None:
        return stored
    try:
        answer, report = _effect(chunk, order)
    except REFUSALS as exc:
        answer, report = _error(exc), None
    row, report_row = order_rows(
        order_id=order.order_id,
        action=order.action_name,
        print_=print_,
        answer=answer,
        now=chunk.now,
        report=report,
        account_id=order.account_id,
        target=order.account_id,
    )
    chunk.orders.append(row)
    if report_row is not None:
        chunk.reports.append(report_row)
    chunk.known[order.order_id] = answer
    chunk.prints[order.order_id] = print_
    return answer


async def _write(session: AsyncSession, chunk: _Chunk) -> None:
    """The chunk's changes, set-based; the ORM copies it read are let go unwritten."""
    session.expunge_all()
    staged = chunk.staged.values()
    new_records = {a for a, locked in chunk.staged.items() if not locked.stored}
    await store.write_staged(session, staged, new=new_records, moved=chunk.moved)
    await periods.record_transitions(session, chunk.moves)
    await write_documents(session, chunk.restaged.values(), new=chunk.new_documents)
    await write_orders(session, chunk.orders, chunk.reports)


async def _decide_chunk(services: Services, orders: Sequence[BroadbandOrder]) -> _Chunk:
    """Read, decide and commit one chunk; its answers in order."""
    async with services.db.writing() as session:
        chunk = await _read(session, orders, services.clock.now())
        for order in orders:
            try:
                chunk.answers.append(_one(chunk, order))
            except Exception:
                log.exception("batch order %s failed", order.order_id)
                chunk.answers.append(Answer(500, error_body("internal", "internal error")))
        await _write(session, chunk)
        await session.commit()
    return chunk


async def _settled(services: Services, order: BroadbandOrder) -> Answer:
    """:func:`run_order`, a failure answered too: one bad order does not fail a batch."""
    try:
        return await run_order(services, order)
    except REFUSALS as exc:
        return _error(exc)
    except Exception:
        log.exception("batch order %s failed", order.order_id)
        return Answer(500, error_body("internal", "internal error"))


async def _run_chunk(services: Services, orders: Sequence[BroadbandOrder]) -> list[Answer]:
    for _ in range(RACE_ATTEMPTS):
        try:
            chunk = await _decide_chunk(services, orders)
        except IntegrityError:
            continue  # a concurrent request took one of the order ids: read again
        except Exception:
            log.exception("a chunk of %d broadband orders failed; one by one", len(orders))
            break
        services.jobs.trigger(PUBLISH_JOB)
        if chunk.reports and services.settings.platform_callback_url:
            services.jobs.trigger(CALLBACK_JOB)
        return chunk.answers
    return [await _settled(services, order) for order in orders]


async def run_single(services: Services, order: BroadbandOrder) -> Answer:
    """One order sent alone, decided in one chunk with the single orders that arrive
    beside it (:class:`gateway.coalesce.Coalescer`): under load they share a transaction;
    alone, it is a chunk of one. Its answer is the one :func:`run_order` gives."""
    answer: Answer = await services.broadband_orders.submit(
        order, lambda orders: run_batch(services, orders)
    )
    return answer


async def run_batch(services: Services, orders: Sequence[BroadbandOrder]) -> list[Answer]:
    """Apply the orders in chunks of :data:`CHUNK_SIZE`, in order; their answers, in order."""
    answers: list[Answer] = []
    for start in range(0, len(orders), CHUNK_SIZE):
        answers += await _run_chunk(services, orders[start : start + CHUNK_SIZE])
    return answers
