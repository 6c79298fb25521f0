"""Broadband stop/resume orders, sent as the platform does, and their convergence.

An order converges when every device whose desired state it changed has reported that
version; the workers' snapshots say when each device applied which version.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from devices.broadband import StopType
from simulators.fleet.errors import ProvisioningError
from simulators.fleet.households import HouseholdSpec
from simulators.fleet.metrics import percentile, percentile_ms
from simulators.fleet.platform import Platform
from simulators.fleet.progress import StatusLine

log = logging.getLogger(__name__)

#: An order whose devices have not all reported its version by then is an error.
CONVERGENCE_TIMEOUT = 30.0
STOP_TYPES = tuple(StopType)


@dataclass(slots=True)
class PendingOrder:
    account_id: str
    action: str
    sent: float
    accepted: float | None = None
    targets: dict[str, int] = field(default_factory=dict)
    reached: dict[str, float] = field(default_factory=dict)


class BroadbandOrders:
    """Stop and resume orders on random accounts, one pending order per account."""

    def __init__(
        self,
        *,
        platform: Platform,
        households: Sequence[HouseholdSpec],
        prefix: str,
        errors: Counter[str],
        rng: random.Random,
    ) -> None:
        self.platform = platform
        self.prefix = prefix
        self.errors = errors
        self.rng = rng
        #: Whether the service has the broadband routes at all (read by ``find_routes``).
        self.routes = False
        self.counts: Counter[str] = Counter()
        self.pending: dict[str, PendingOrder] = {}
        self.latency_sent: list[float] = []
        self.latency_accepted: list[float] = []
        self.device_latency: list[float] = []
        self._accounts = [h.account_id for h in households]
        self._account_of = {d.device_id: h.account_id for h in households for d in h.devices}
        self._history: dict[str, deque[tuple[int, float]]] = {}
        self._stopped: dict[str, str] = {}
        self._seq = 0

    async def find_routes(self) -> None:
        self.routes = await self.platform.has_broadband_routes()

    def applied(self, device_id: str, version: int, at: float) -> None:
        """A device applied ``version`` at monotonic time ``at`` (from a snapshot)."""
        history = self._history.setdefault(device_id, deque(maxlen=8))
        history.append((version, at))
        account = self._account_of.get(device_id)
        order = self.pending.get(account) if account else None
        if order is not None:
            self._check_device(order, device_id)

    async def place_next(self) -> None:
        """An order on an account that has none pending (if there is one)."""
        free = [account for account in self._accounts if account not in self.pending]
        if free:
            await self.place(self.rng.choice(free))

    async def place(self, account_id: str) -> None:
        """Stop the account's broadband, or resume it when this run stopped it."""
        stop_type = self._stopped.get(account_id)
        action = "resume" if stop_type is not None else "stop"
        if stop_type is None:
            stop_type = self.rng.choice(STOP_TYPES).value
        self._seq += 1
        order_id = f"{self.prefix}-bb-{self._seq}-{secrets.token_hex(3)}"
        order = PendingOrder(account_id=account_id, action=action, sent=time.monotonic())
        self.pending[account_id] = order
        self.counts[action] += 1
        try:
            body = await self.platform.call(
                "POST",
                f"/platform/v1/broadband/{account_id}/{action}",
                {"order_id": order_id, "stop_type": stop_type},
                ok=(200,),
            )
        except (ProvisioningError, aiohttp.ClientError) as exc:
            self.errors[f"order:{action}"] += 1
            log.warning("order %s on %s failed: %s", action, account_id, exc)
            self.pending.pop(account_id, None)
            return
        order.accepted = time.monotonic()
        self._follow(order, stop_type, body)

    def _follow(self, order: PendingOrder, stop_type: str, body: dict[str, Any]) -> None:
        """The service accepted ``order``: wait for the devices it changed."""
        if not body.get("applied"):
            self.counts[f"not_applied:{body.get('reason')}"] += 1
            self.pending.pop(order.account_id, None)
            return
        self.counts["applied"] += 1
        if order.action == "stop":
            self._stopped[order.account_id] = stop_type
        else:
            self._stopped.pop(order.account_id, None)
        for device in body.get("devices", []):
            order.targets[str(device["device_id"])] = int(device["desired_version"])
        for device_id in list(order.targets):
            self._check_device(order, device_id)
        if not order.targets:
            self._converged(order)

    def _check_device(self, order: PendingOrder, device_id: str) -> None:
        target = order.targets.get(device_id)
        if target is None or device_id in order.reached:
            return
        for version, at in self._history.get(device_id, ()):
            if version >= target:
                order.reached[device_id] = at
                break
        if order.accepted is not None and len(order.reached) == len(order.targets):
            self._converged(order)

    def _converged(self, order: PendingOrder) -> None:
        assert order.accepted is not None
        last = max(order.reached.values(), default=order.accepted)
        self.latency_sent.append(last - order.sent)
        self.latency_accepted.append(max(0.0, last - order.accepted))
        self.device_latency.extend(max(0.0, at - order.accepted) for at in order.reached.values())
        self.counts["converged"] += 1
        self.pending.pop(order.account_id, None)

    def expire(self, *, final: bool = False) -> None:
        """Accepted orders not converged in time (or at all, when ``final``) are errors."""
        now = time.monotonic()
        for order in list(self.pending.values()):
            if order.accepted is None:
                continue
            if final or now - order.accepted > CONVERGENCE_TIMEOUT:
                missing = len(order.targets) - len(order.reached)
                self.errors["order:not_converged"] += 1
                log.warning(
                    "order %s on %s: %d device(s) never reported its version",
                    order.action,
                    order.account_id,
                    missing,
                )
                self.pending.pop(order.account_id, None)

    async def settle(self, *, within: float, status: StatusLine) -> None:
        """Outstanding orders converge while the devices are still up (or count as errors)."""
        until = time.monotonic() + within
        while self.pending and time.monotonic() < until:
            status.show("settling", f"{len(self.pending)} order(s) to converge")
            await asyncio.sleep(0.25)
        self.expire(final=True)

    def status(self) -> str:
        if not self.routes:
            return "orders skipped"
        text = f"orders {self.counts['applied']} conv {self.counts['converged']}"
        if self.latency_accepted:
            text += f" p99 {percentile(self.latency_accepted, 99):.2f}s"
        return text

    def summary(self) -> dict[str, Any]:
        """The report's ``orders``."""
        if not self.routes:
            return {"skipped": "the service has no broadband stop/resume routes"}
        return {
            "counts": dict(sorted(self.counts.items())),
            "convergence_from_accepted_p50_ms": percentile_ms(self.latency_accepted, 50),
            "convergence_from_accepted_p99_ms": percentile_ms(self.latency_accepted, 99),
            "convergence_from_sent_p99_ms": percentile_ms(self.latency_sent, 99),
            "device_p99_ms": percentile_ms(self.device_latency, 99),
        }
