"""The companion app of the fleet's families: timelines and playlists of their cameras, now
and then a WiFi tuning of their router against their home-network product (R16, R17), and a
recent range saved to (or the list of) the family cloud against its quota (R14, R15, R18)."""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

import aiohttp

from devices.clock import Clock
from simulators.fleet.households import HouseholdSpec
from simulators.fleet.metrics import percentile_ms
from simulators.fleet.platform import Platform

AppVerdict = Literal["ok", "refused", "error"]

#: The share of app requests that ask for a tuning of the household's router.
TUNE_SHARE = 0.2
#: The states that refuse a tuning, whatever the household holds (R12; a fleet router has
#: no SSH access provisioned, so an entitled tuning ends there).
_TUNE_STATES = ("router_not_provisioned", "broadband_inactive", "router_busy")
#: The share of app requests that save a range to the family cloud, and that list it.
SAVE_SHARE = 0.15
LIST_SHARE = 0.05
#: A saved range: this long, ending this long ago (in the clock's seconds), so that the
#: camera has had the time to upload it.
SAVE_SECONDS = 20.0
SAVE_LAG_SECONDS = 60.0
#: The states of the family cloud that refuse a save (R14 full, R15 closed, R18 read-only).
_SAVE_STATES = ("quota_exceeded", "family_cloud_closed", "family_cloud_read_only")


def app_verdict(status: int, code: str | None) -> AppVerdict:
    """How the runner counts a companion-app answer: the rules refusing is not an error."""
    if status in (200, 201):
        return "ok"
    if status == 403 and code is not None:
        # not entitled (R1), unsubscribed (R5), broadband inactive (R8), no tuning (R16, R17)
        return "refused"
    if status == 409 and code in _TUNE_STATES:
        return "refused"
    if status == 409 and code in _SAVE_STATES:
        return "refused"
    if status == 404 and code in ("no_recording", "family_cloud_deleted"):  # R15 deleted
        return "refused"
    return "error"


class CompanionApp:
    """A family asks for a day's timeline or an hour's playlist of one of its cameras, and
    plays the first segment of a playlist, tunes its router, saves a recent range of a
    camera to its family cloud or lists it; ``tokens`` come from provisioning."""

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
        router = home.router
        draw = self.rng.random()
        if router is not None and draw < TUNE_SHARE:
            await self._tune(home.account_id, router.device_id)
            return
        camera = self.rng.choice(home.cameras)
        now = self.clock.now()
        if draw > 1 - LIST_SHARE:
            await self._call(home.account_id, "family-cloud list", "GET", "/app/v1/family-cloud")
            return
        if draw > 1 - LIST_SHARE - SAVE_SHARE:
            await self._save(home.account_id, camera.device_id, now)
            return
        if self.rng.random() < 0.5:
            what, path, span = "timeline", "timeline", timedelta(days=1)
        else:
            what, path, span = "playlist", "playlist.m3u8", timedelta(hours=1)
        params = {"start": (now - span).isoformat(), "end": now.isoformat()}
        path = f"/app/v1/devices/{camera.device_id}/{path}"
        done = await self._call(home.account_id, what, "GET", path, params=params)
        if what == "playlist" and done is not None and done[0] == 200:
            await self._fetch_first_segment(done[1])

    async def _tune(self, account_id: str, router_id: str) -> None:
        """The family asks for a tuning of its router (R13), paid by its product (R16, R17)."""
        path = f"/app/v1/devices/{router_id}/tune"
        await self._call(account_id, "tune", "POST", path, json={"telemetry_timeout_seconds": 5})

    async def _save(self, account_id: str, camera_id: str, now: datetime) -> None:
        """The family keeps a recent range of a camera in its family cloud (R14), against
        the quota of its membership (R18) or the base one."""
        end = now - timedelta(seconds=SAVE_LAG_SECONDS)
        body = {
            "device_id": camera_id,
            "start": (end - timedelta(seconds=SAVE_SECONDS)).isoformat(),
            "end": end.isoformat(),
        }
        await self._call(account_id, "family-cloud save", "POST", "/app/v1/family-cloud", json=body)

    async def _call(
        self, account_id: str, what: str, method: str, path: str, **kwargs: Any
    ) -> tuple[int, str] | None:
        """One app request with the account's token: its latency, its outcome (``"what
        status code"``) and, where :func:`app_verdict` says so, an error counted; the
        status and body, or None when it never got an answer."""
        headers = {"Authorization": f"Bearer {self.tokens[account_id]}"}
        began = time.monotonic()
        try:
            async with self.platform.http.request(
                method, f"{self.platform.url}{path}", headers=headers, **kwargs
            ) as response:
                status = response.status
                text = await response.text()
        except aiohttp.ClientError as exc:
            self.errors[f"app:{type(exc).__name__}"] += 1
            return None
        self.latency.append(time.monotonic() - began)
        code = None
        if status not in (200, 201):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                code = json.loads(text)["error"]["code"]
        self.outcomes[f"{what} {status}{' ' + code if code else ''}"] += 1
        if app_verdict(status, code) == "error":
            self.errors[f"app:{what}_{status}"] += 1
        return status, text

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
