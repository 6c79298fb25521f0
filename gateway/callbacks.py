"""Delivering completion reports (报竣) to the platform's callback URL.

Reports are rows written with their orders; this job POSTs each due one and marks it
delivered on the first 2xx. Any other answer, or no answer, schedules another attempt
with backoff (on the injected clock). Because the rows are in the database, a report
still owed when the service stops is sent after it restarts; one acknowledged is never
sent again.
"""

from __future__ import annotations

import logging

import aiohttp

from devices.orders import due_reports, next_attempt
from gateway.services import Services

log = logging.getLogger(__name__)


class CallbackSender:
    def __init__(self, *, services: Services, url: str, batch: int = 100) -> None:
        self._services = services
        self._url = url
        self._batch = batch
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> CallbackSender:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """The component ends: its HTTP client closes."""
        if self._http is not None:
            await self._http.close()

    async def deliver_due(self) -> int:
        """Attempt every due report once; return how many were acknowledged."""
        services = self._services
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        acknowledged = 0
        async with services.db.session() as session:
            reports = await due_reports(session, services.clock.now(), self._batch)
        # The posts go out with no transaction open, each outcome written as it comes.
        for report in reports:
            error = None
            try:
                async with self._http.post(self._url, json=report.payload) as response:
                    if 200 <= response.status < 300:
                        report.delivered_at = services.clock.now()
                        acknowledged += 1
                    else:
                        error = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            report.attempts += 1
            if error is not None:
                report.last_error = error[:500]
                report.next_attempt_at = next_attempt(services.clock.now(), report.attempts)
                log.warning(
                    "completion report of %s not acknowledged (%s), attempt %d",
                    report.order_id,
                    error,
                    report.attempts,
                )
            async with services.db.writing() as session:
                await session.merge(report)
                await session.commit()
        return acknowledged
