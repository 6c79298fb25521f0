"""What the broker's HTTP hooks know of device credentials, kept in this process (issue 13).

A broker that calls out asks on every connect and, with its own authorization cache off,
on every publish and subscribe: hundreds of calls a second for a fleet. Answered each from
a database session, the hooks fell behind at 500 calls/s (``bench/broker_hooks.py``,
``BENCHMARKS.md``). So they read a device's stored password hash, or that it has no current
credentials, from a :class:`CredentialCache`:

- what is not known yet is read by one loader task: every device asked for meanwhile in
  one query, on one connection held in autocommit (no session, no transaction to end), so a
  reconnect storm after a broker restart costs a few queries, not one per device;
- every ``ttl`` seconds (``KANJIA_BROKER_HOOK_CACHE_SECONDS``) the loader reads again, in
  batches, the devices asked about in the last :data:`KEEP_IDLE` seconds, and forgets the
  others: a fleet's devices cost a few queries per period, not one per call;
- this process forgets a device the moment it has issued, rotated or revoked its
  credentials (:mod:`gateway.credentials`, after the commit), so on the gateway that took the
  order the change bites at the device's next connect or publish;
- another gateway process of a scaled-out deployment learns of the change at its next
  refresh: there a revoked or rotated password keeps working, and newly issued credentials
  are refused, for at most ``ttl`` seconds (plus the time of one read). That is the staleness
  accepted; ``ttl`` 0 keeps nothing, every call is read (still batched);
- a refresh that fails empties the cache (lookups then read, and fail while the database
  does), so no answer older than the bound is ever given;
- at most ``max_entries`` devices; the one remembered first goes first.

The stored hash is a fast keyed hash (HMAC-SHA256 of a generated password), so checking a
password against it on each connect is cheap: no verified result is kept, and nothing in
here is a password. The period is real (monotonic) time, not the service clock: how stale
another process's answer may be is a matter of real seconds, whatever the service clock says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection

from devices.credentials import current_hashes
from gateway.lifecycle import running
from gateway.metrics import Metrics
from storage.db import Database

log = logging.getLogger(__name__)

#: Devices read in one query at most.
MAX_BATCH = 500
#: A device not asked about for this long (real seconds) is forgotten at the next refresh:
#: a camera publishes every 10-30 s, so a fleet's devices stay known between calls.
KEEP_IDLE = 60.0

#: A device's stored password hash (``None``: no current credentials).
Stored = str | None
Asked = tuple[str, "asyncio.Future[Stored]"]


class CacheNotRunning(RuntimeError):
    """A lookup outside :meth:`CredentialCache.running`: nothing would read the database."""


class CredentialCache:
    def __init__(
        self, *, db: Database, ttl: float, metrics: Metrics, max_entries: int = 200_000
    ) -> None:
        if ttl < 0:
            raise ValueError("ttl must be 0 or more seconds")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._db, self._ttl, self._max = db, ttl, max_entries
        #: device id -> what is stored, as read at the last refresh at most ``ttl`` ago
        self._known: dict[str, Stored] = {}
        #: device id -> the refresh round it was last asked about in
        self._used: dict[str, int] = {}
        self._round = 0
        self._keep_rounds = max(1, math.ceil(KEEP_IDLE / ttl)) if ttl > 0 else 0
        #: device id -> its read, queued or in flight, that a new lookup may join
        self._asked: dict[str, asyncio.Future[Stored]] = {}
        self._queue: list[Asked] = []
        #: devices forgotten while the last read was in flight: what it found is not kept
        self._changed: set[str] = set()
        self._reading = False
        self._wake = asyncio.Event()
        self._conn: AsyncConnection | None = None
        self._running = False
        self._from_cache = metrics.broker_hook_lookups.labels("cache")
        self._from_database = metrics.broker_hook_lookups.labels("database")
        self._reads = metrics.broker_hook_reads

    async def stored_hash(self, device_id: str) -> Stored:
        """The device's stored password hash, ``None`` if it has no current credentials."""
        if device_id in self._known:
            self._used[device_id] = self._round
            self._from_cache.inc()
            return self._known[device_id]
        if not self._running:
            raise CacheNotRunning("the credential cache is not running")
        self._from_database.inc()
        future = self._asked.get(device_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._asked[device_id] = future
            self._queue.append((device_id, future))
            self._wake.set()
        # Shielded: a caller that gives up must not cancel the read the others wait for.
        return await asyncio.shield(future)

    def forget(self, device_id: str) -> None:
        """The device's credentials changed (committed): its next lookup reads them again,
        and what a read begun before finds of it is not kept."""
        self._known.pop(device_id, None)
        self._asked.pop(device_id, None)
        if self._reading:
            self._changed.add(device_id)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The component: the loader runs for the block's lifetime."""
        self._running = True
        try:
            async with running(("gateway[hooks].credentials", self._load_forever)):
                yield
        finally:
            self._running = False
            for future in [*self._asked.values(), *(future for _, future in self._queue)]:
                future.cancel()  # queued or cut short in flight: no answer will come
            self._queue.clear()
            self._asked.clear()
            await self._close()

    async def _load_forever(self) -> None:
        loop = asyncio.get_running_loop()
        refresh_at = loop.time() + self._ttl
        while True:
            if self._ttl > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(0.0, refresh_at - loop.time()))
            else:
                await self._wake.wait()
            self._wake.clear()
            await self._answer_queue()
            if self._ttl > 0 and loop.time() >= refresh_at:
                await self._refresh()
                refresh_at = loop.time() + self._ttl

    async def _answer_queue(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            await self._load(batch)

    async def _load(self, batch: Sequence[Asked]) -> None:
        """Read the devices asked for and answer their lookups."""
        try:
            found = await self._read([device_id for device_id, _ in batch])
        except Exception as exc:
            log.warning("reading %d devices' credentials failed: %s", len(batch), exc)
            for device_id, future in batch:
                self._done_asking(device_id, future)
                if not future.done():
                    future.set_exception(exc)
            return
        for device_id, future in batch:
            stored = found.get(device_id)
            if self._done_asking(device_id, future) and device_id not in self._changed:
                self._remember(device_id, stored)
            if not future.done():
                future.set_result(stored)

    async def _refresh(self) -> None:
        """Read again the devices asked about lately; forget the others. Lookups that missed
        meanwhile are answered between batches."""
        since = self._round - self._keep_rounds
        self._round += 1
        keep = [d for d in self._known if self._used.get(d, since) > since]
        self._known = {device_id: self._known[device_id] for device_id in keep}
        self._used = {device_id: self._used[device_id] for device_id in keep}
        for start in range(0, len(keep), MAX_BATCH):
            ids = keep[start : start + MAX_BATCH]
            try:
                found = await self._read(ids)
            except Exception as exc:
                log.warning("refreshing the hooks' credentials failed: %s", exc)
                self._known.clear()
                return
            for device_id in ids:
                if device_id in self._known and device_id not in self._changed:
                    self._known[device_id] = found.get(device_id)
            await self._answer_queue()

    def _done_asking(self, device_id: str, future: asyncio.Future[Stored]) -> bool:
        """Take ``future`` out of the reads a lookup may join; False if it was forgotten."""
        if self._asked.get(device_id) is not future:
            return False
        del self._asked[device_id]
        return True

    def _remember(self, device_id: str, stored: Stored) -> None:
        if self._ttl <= 0:
            return
        if device_id not in self._known and len(self._known) >= self._max:
            del self._known[next(iter(self._known))]
        self._known[device_id] = stored
        self._used[device_id] = self._round

    async def _read(self, device_ids: list[str]) -> dict[str, str]:
        """One query; on an error, once more on a new connection (the database may have
        dropped the held one). :attr:`_changed` then names the devices forgotten meanwhile."""
        self._changed.clear()
        self._reading = True
        try:
            return await self._query(device_ids)
        finally:
            self._reading = False

    async def _query(self, device_ids: list[str]) -> dict[str, str]:
        for attempt in (1, 2):
            try:
                if self._conn is None:
                    conn = await self._db.engine.connect()
                    self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                found = await current_hashes(self._conn, device_ids)
                self._reads.inc()
                return found
            except Exception:
                await self._close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception as exc:  # it is being given up anyway
                log.debug("closing the credential reader's connection: %s", exc)
