"""The companion app of the fleet's families: timelines and playlists of their cameras."""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Literal

import aiohttp

from devices.clock import Clock
from simulators.fleet.households import HouseholdSpec
from simulators.fleet.metrics import percentile_ms
from simulators.fleet.platform import Platform

AppVerdict = Literal["ok", "refused", "error"]


def app_verdict(status: int, code: str | None) -> AppVerdict:
    """How the runner counts a companion-app answer: the rules refusing is not an error."""
    if status == 200:
        return "ok"
    if status == 403 and code is not None:
        return "refused"  # not entitled (R1), unsubscribed (R5), broadband inactive (R8)
    if status == 404 and code == "no_recording":
        return "refused"
    return "error"


class CompanionApp:
    """A family asks for a day's timeline or an hour's playlist of one of its cameras, and
    plays the first segment of a playlist; ``tokens`` come from provisioning."""

    def __init__(
        self,
        *,
        platform: Platform,
        clock: Clock,
        households: Sequence[HouseholdSpec],
        rng: random.Random,
        errors: Counter[str],
    ) -> None:
        self.platform = platform
        self.clock = clock
        self.rng = rng
        self.errors = errors
        #: The app token of each account.
        self.tokens: dict[str, str] = {}
        #: ``"timeline 200"``, ``"playlist 403 not_entitled"``, ``"segment GET 200"``...
        self.outcomes: Counter[str] = Counter()
        self.latency: list[float] = []
        self._homes = [h for h in households if h.cameras]

    async def request(self) -> None:
        home = self.rng.choice(self._homes)
        camera = self.rng.choice(home.cameras)
        now = self.clock.now()
        if self.rng.random() < 0.5:
            what, path, span = "timeline", "timeline", timedelta(days=1)
        else:
            what, path, span = "playlist", "playlist.m3u8", timedelta(hours=1)
        params = {"start": (now - span).isoformat(), "end": now.isoformat()}
        headers = {"Authorization": f"Bearer {self.tokens[home.account_id]}"}
        url = f"{self.platform.url}/app/v1/devices/{camera.device_id}/{path}"
        began = time.monotonic()
        try:
            async with self.platform.http.get(url, params=params, headers=headers) as response:
                status = response.status
                text = await response.text()
        except aiohttp.ClientError as exc:
            self.errors[f"app:{type(exc).__name__}"] += 1
            return
        self.latency.append(time.monotonic() - began)
        code = None
        if status != 200:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                code = json.loads(text)["error"]["code"]
        verdict = app_verdict(status, code)
        self.outcomes[f"{what} {status}{' ' + code if code else ''}"] += 1
        if verdict == "error":
            self.errors[f"app:{what}_{status}"] += 1
        elif what == "playlist" and status == 200:
            await self._fetch_first_segment(text)

    async def _fetch_first_segment(self, playlist: str) -> None:
        url = next((ln for ln in playlist.splitlines() if ln.startswith("http")), None)
        if url is None:
            self.errors["app:empty_playlist"] += 1
            return
        try:
            async with self.platform.http.get(url) as response:
                await response.read()
                ok = response.status == 200
        except aiohttp.ClientError:
            ok = False
        self.outcomes["segment GET " + ("200" if ok else "failed")] += 1
        if not ok:
            self.errors["app:segment_get"] += 1

    def summary(self) -> dict[str, Any]:
        """The report's ``app``."""
        outcomes = self.outcomes
        return {
            "requests": sum(v for k, v in outcomes.items() if not k.startswith("segment")),
            "outcomes": dict(sorted(outcomes.items())),
            "latency_p50_ms": percentile_ms(self.latency, 50),
            "latency_p99_ms": percentile_ms(self.latency, 99),
        }
