"""Which failures are worth trying again: a dependency down or busy, not a bad request.

A unit of work that failed for a *transient* reason (the database unreachable or busy, a
connection dropped, a serialization conflict, the object store unreachable or answering
5xx) can succeed unchanged later, so its caller retries it with backoff and acknowledges
nothing meanwhile. Anything else (a constraint violated, a value too long, an object that
is not there) fails the same way every time: retrying it would only hold up the rest.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from storage.s3wire import S3StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: PostgreSQL SQLSTATEs that a retry can clear: serialization failure, deadlock, lock not
#: available, admin shutdown, crash shutdown, cannot connect now; and class 08 (connection).
_PG_TRANSIENT = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03"})

#: S3 error codes that a retry can clear.
_S3_TRANSIENT = frozenset(
    {
        "unreachable",
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "500",
        "502",
        "503",
        "504",
    }
)

#: Socket errors of a peer that is down or unreachable.
_NET_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ETIMEDOUT,
        errno.EPIPE,
    }
)


def _sqlstate(exc: DBAPIError) -> str | None:
    original = exc.orig
    for name in ("sqlstate", "pgcode"):
        code = getattr(original, name, None)
        if isinstance(code, str):
            return code
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says a dependency is down or busy."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _transient_itself(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _transient_itself(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        code = _sqlstate(exc)
        if code is not None:
            return code in _PG_TRANSIENT or code.startswith("08")
        message = str(exc.orig).lower()
        if "locked" in message or "busy" in message:
            return True  # SQLite: another writer holds the database
        return isinstance(exc, InterfaceError) or (
            isinstance(exc, OperationalError) and "sqlite" not in type(exc.orig).__module__
        )
    if isinstance(exc, S3StoreError):
        return exc.code in _S3_TRANSIENT
    # Connection refused or reset, timeouts, a socket gone (asyncpg, aiohttp, botocore).
    if isinstance(exc, (ConnectionError, TimeoutError, asyncio.TimeoutError)):
        return True
    if isinstance(exc, OSError):
        # asyncpg's "Multiple exceptions: [Errno 111] Connect call failed ..."
        return exc.errno in _NET_ERRNOS or "connect call failed" in str(exc).lower()
    return type(exc).__name__ in {"ConnectionDoesNotExistError", "CannotConnectNowError"}


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between tries: doubling from ``first`` up to ``cap`` seconds, with jitter
    so that several retrying writers do not wake together."""

    first: float = 0.05
    cap: float = 5.0

    def delays(self) -> Iterator[float]:
        delay = self.first
        while True:
            yield delay * random.uniform(0.5, 1.0)  # jitter, not a secret
            delay = min(delay * 2, self.cap)


DEFAULT_BACKOFF = Backoff()


async def retrying(
    attempt: Callable[[], Awaitable[T]],
    *,
    name: str,
    attempts: int = 8,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> T:
    """``attempt()``, tried again with backoff while it fails for a transient reason, up to
    ``attempts`` tries in all (the defaults wait about 6 s in all before giving up). A
    failure that is not transient, or the last one, is raised. ``attempt`` must be safe to
    run again after a failure (a rolled-back transaction, an idempotent request)."""
    delays = backoff.delays()
    for tried in range(1, attempts):
        try:
            return await attempt()
        except Exception as exc:
            if not is_transient(exc):
                raise
            delay = next(delays)
            log.warning("%s failed (%s); try %d again in %.2fs", name, exc, tried, delay)
            await asyncio.sleep(delay)
    return await attempt()
