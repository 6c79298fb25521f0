"""Starting and stopping a process's parts: loops as components, tasks stopped for good."""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from typing import Any

#: A named loop of a component: its task's name and the coroutine function it runs.
Loop = tuple[str, Callable[[], Coroutine[Any, Any, object]]]


def freeze_heap() -> None:
    """Take what is alive after start-up (modules, the app, the schema, the clients) out of
    the cyclic collector's reach, once per process (:func:`gc.freeze`).

    The collector's full passes otherwise walk those objects again and again, each time a
    busy loop has made enough garbage: `bench/` measured events indexed 30 % faster.
    Called by ``kanjia serve`` and by the benchmarks that stand for it, never by the
    gateway itself: tests start many gateways in one process.
    """
    gc.collect()
    gc.freeze()


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


@asynccontextmanager
async def running(*loops: Loop) -> AsyncIterator[None]:
    """Run the loops in one TaskGroup for the block's lifetime; leaving it cancels them
    (:func:`cancel_all`) and waits until all have ended."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(run(), name=name) for name, run in loops]
        try:
            yield
        finally:
            await cancel_all(tasks)


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free on ``host`` now (for the demo's
    embedded broker, the tests' services)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``0``: a port the kernel picks) and listening.

    Bound when the port is chosen, so nothing else (an outgoing connection's ephemeral
    port, another server) can take it before the server serves on it: choosing a free
    port and binding it later lost that race once in CI.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
