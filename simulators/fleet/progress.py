"""How a run is going: the status line, the samples of the report, the gateway's intake."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

import aiohttp
from rich.console import Console
from rich.live import Live
from rich.table import Table

from simulators.fleet.metrics import metric_total
from simulators.fleet.platform import Platform

Metrics = dict[str, dict[str, float]]

#: Device messages the gateway has taken in, per kind.
MESSAGES = "kanjia_mqtt_messages_total"


class StatusLine:
    """The run's live status on ``out``: on a terminal one block redrawn in place
    (:mod:`rich`), elsewhere (a pipe, a file, CI) plain lines: at once when the phase
    changes, else at most one per ``plain_every`` seconds.

    ``show(phase, *lines)``: the phase (``connecting``, ``running``, ``draining`` ...) and
    what to say of it, one fact a line (joined by `` | `` on a plain line).
    """

    def __init__(
        self,
        out: TextIO | None,
        *,
        plain_every: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = out
        self.tty = bool(out is not None and out.isatty())
        self.plain_every = plain_every
        self._monotonic = monotonic
        self._phase: str | None = None
        self._last_plain = -float("inf")
        self._live: Live | None = None

    def show(self, phase: str, *lines: str) -> None:
        if self.out is None:
            return
        if self.tty:
            self._redraw(phase, lines)
            return
        now = self._monotonic()
        if phase != self._phase or now - self._last_plain >= self.plain_every:
            self._last_plain = now
            print(" | ".join((phase, *lines)), file=self.out, flush=True)
        self._phase = phase

    def _redraw(self, phase: str, lines: Sequence[str]) -> None:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold cyan", no_wrap=True)
        grid.add_column()
        for i, line in enumerate(lines or ("",)):
            grid.add_row(phase if i == 0 else "", line)
        if self._live is None:
            console = Console(file=self.out, force_terminal=True, highlight=False)
            self._live = Live(grid, console=console, auto_refresh=False, transient=False)
            self._live.start()
        self._live.update(grid, refresh=True)
        self._phase = phase

    def done(self) -> None:
        """The last status stays on screen; what follows is printed below it."""
        if self._live is not None:
            self._live.stop()
            self._live = None


def backlog(published: float, processed: float) -> float:
    """Device messages sent that the gateway has not counted yet; never below zero.

    ``published`` must be read after ``processed`` (:meth:`WorkerPool.fresh_totals`). The
    gateway also counts messages no device counted: the broker's Last Will of a device
    whose connection dropped, a QoS 1 message delivered twice. Those can make the raw
    difference negative; that is no backlog, and it reads 0."""
    return max(0.0, published - processed)


class Samples:
    """One row of rates per status interval (the report's ``samples``), and the peak of
    connected devices."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self.connected_peak = 0
        self._begin = self._prev_t = self._prev_processed = 0.0
        self._prev: Mapping[str, Any] = {}

    def begin(self, at: float, totals: Mapping[str, Any], processed: float) -> None:
        self._begin, self._prev_t, self._prev, self._prev_processed = at, at, totals, processed

    def take(self, at: float, totals: Mapping[str, Any], processed: float) -> dict[str, float]:
        """The row from the last one (or ``begin``) to ``at``."""
        self.connected_peak = max(self.connected_peak, totals["connected"])
        span, prev = max(at - self._prev_t, 1e-6), self._prev
        row = {
            "t": round(at - self._begin, 2),
            "connected": totals["connected"],
            "msgs_per_s": round((totals["published"] - prev["published"]) / span, 1),
            "uploads_per_s": round((totals["uploads"] - prev["uploads"]) / span, 2),
            "processed_per_s": round((processed - self._prev_processed) / span, 1),
            "backlog": backlog(totals["published"], processed),
        }
        self.rows.append(row)
        self._prev_t, self._prev, self._prev_processed = at, totals, processed
        return row


class GatewayIntake:
    """What the gateway has taken in since the fleet started, from its ``/metrics``."""

    def __init__(self, *, platform: Platform, errors: Counter[str]) -> None:
        self.platform = platform
        self.errors = errors
        self.start: Metrics = {}
        #: Device messages processed since the start, as last read.
        self.processed = 0.0

    async def begin(self) -> None:
        self.start = await self.platform.metrics()

    def since_start(self, metrics: Metrics, name: str = MESSAGES) -> float:
        """How far the counter ``name`` has moved from the start to ``metrics``."""
        return metric_total(metrics, name) - metric_total(self.start, name)

    async def read(self) -> float:
        """Device messages processed since the start (the last figure if unreachable)."""
        try:
            metrics = await self.platform.metrics()
        except aiohttp.ClientError:
            self.errors["metrics:unreachable"] += 1
            return self.processed
        self.processed = self.since_start(metrics)
        return self.processed

    async def drain(self, published: int, *, within: float, status: StatusLine) -> None:
        """After the devices stopped: the gateway catches up with what they sent."""
        until = time.monotonic() + within
        while (left := published - await self.read()) > 0:
            if time.monotonic() > until:
                self.errors["gateway:backlog_not_drained"] += int(left)
                return
            status.show("draining", f"gateway backlog {left:.0f} message(s)")
            await asyncio.sleep(0.25)
