"""How a run is going: the status line, the samples of the report, the gateway's intake."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any, TextIO

import aiohttp

from simulators.fleet.metrics import metric_total
from simulators.fleet.platform import Platform

Metrics = dict[str, dict[str, float]]

#: Device messages the gateway has taken in, per kind.
MESSAGES = "kanjia_mqtt_messages_total"


class StatusLine:
    def __init__(self, out: TextIO | None) -> None:
        self.out = out
        self.tty = bool(out is not None and out.isatty())
        self._last_plain = 0.0

    def show(self, text: str, *, force: bool = False) -> None:
        if self.out is None:
            return
        if self.tty:
            self.out.write("\r\x1b[2K" + text)
            self.out.flush()
        elif force or time.monotonic() - self._last_plain >= 10:
            self._last_plain = time.monotonic()
            print(text, file=self.out, flush=True)

    def done(self) -> None:
        if self.out is not None and self.tty:
            self.out.write("\n")
            self.out.flush()


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
            "backlog": totals["published"] - processed,
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
        while (backlog := published - await self.read()) > 0:
            if time.monotonic() > until:
                self.errors["gateway:backlog_not_drained"] += int(backlog)
                return
            status.show(f"gateway backlog {backlog:.0f} message(s)...")
            await asyncio.sleep(0.25)
