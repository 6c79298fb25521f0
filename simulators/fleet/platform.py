"""The platform's HTTP calls to the service under test."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import aiohttp

from simulators.credentials import Credentials
from simulators.fleet.errors import ProvisioningError
from simulators.fleet.households import HouseholdSpec
from simulators.fleet.metrics import parse_metrics
from simulators.fleet.target import Target


class Platform:
    """The platform's and the app's HTTP calls."""

    def __init__(self, *, http: aiohttp.ClientSession, target: Target) -> None:
        self.http = http
        self.url = target.http_url
        self.headers = {"Authorization": f"Bearer {target.platform_token}"}
        #: Every gateway whose ``/metrics`` count: the target, and any further ones.
        self.metrics_urls = (self.url, *target.metrics_urls)

    async def call(
        self, method: str, path: str, body: Any = None, ok: Iterable[int] = (200, 201)
    ) -> Any:
        async with self.http.request(
            method, f"{self.url}{path}", json=body, headers=self.headers
        ) as response:
            text = await response.text()
            if response.status not in tuple(ok):
                raise ProvisioningError(f"{method} {path}", response.status, text)
            return json.loads(text) if text else None

    async def provision(
        self,
        home: HouseholdSpec,
        prefix: str,
        *,
        home_network: bool = False,
        memberships: bool = False,
    ) -> str:
        """The account, its devices, their plans, and where the service sells them the
        router's home-network product (``home_network``) and the account's family-cloud
        membership (``memberships``, R18); returns an app token for the family."""
        await self.call(
            "PUT",
            f"/platform/v1/accounts/{home.account_id}",
            {"owner_id": home.owner_id, "star_level": home.star_level, "name": "simulated"},
        )
        for device in home.devices:
            await self.call(
                "POST",
                f"/platform/v1/accounts/{home.account_id}/devices",
                {"device_id": device.device_id, "kind": device.kind, "name": device.role},
            )
        for camera in home.cameras:
            if camera.plan is not None:
                await self.call(
                    "POST",
                    "/platform/v1/subscriptions",
                    {
                        "order_id": f"{prefix}-sub-{camera.device_id}",
                        "account_id": home.account_id,
                        "device_id": camera.device_id,
                        "plan": camera.plan,
                        "orderer_id": home.owner_id,
                        "channel": "electronic",
                    },
                )
        router = home.router
        if home_network and home.home_product is not None and router is not None:
            await self.call(
                "POST",
                "/platform/v1/home-network/orders",
                {
                    "order_id": f"{prefix}-hn-{home.account_id}",
                    "account_id": home.account_id,
                    "product": home.home_product,
                    "orderer_id": home.owner_id,
                    "channel": "physical",
                    "devices": [router.device_id],
                },
            )
        if memberships and home.membership is not None:
            await self.call(
                "POST",
                "/platform/v1/family-cloud/memberships",
                {
                    "order_id": f"{prefix}-fc-{home.account_id}",
                    "account_id": home.account_id,
                    "tier": home.membership,
                    "orderer_id": home.owner_id,
                    "channel": "electronic",
                },
            )
        token = await self.call(
            "POST", "/platform/v1/app-tokens", {"account_id": home.account_id, "user_id": "family"}
        )
        return str(token["token"])

    async def _has_path(self, path: str) -> bool:
        document = await self.call("GET", "/openapi.json")
        paths = document.get("paths", {}) if isinstance(document, dict) else {}
        return path in paths

    async def has_broadband_routes(self) -> bool:
        return await self._has_path("/platform/v1/broadband/{account_id}/stop")

    async def has_home_network_routes(self) -> bool:
        return await self._has_path("/platform/v1/home-network/orders")

    async def has_membership_routes(self) -> bool:
        return await self._has_path("/platform/v1/family-cloud/memberships")

    async def has_credentials_route(self) -> bool:
        return await self._has_path("/platform/v1/devices/{device_id}/credentials")

    async def issue_credentials(self, home: HouseholdSpec) -> dict[str, Credentials]:
        """A broker identity for each of the household's devices (issue 13)."""
        issued = {}
        for device in home.devices:
            body = await self.call(
                "POST", f"/platform/v1/devices/{device.device_id}/credentials", ok=(201,)
            )
            issued[device.device_id] = Credentials.from_answer(body)
        return issued

    async def metrics(self) -> dict[str, dict[str, float]]:
        """The gateways' metrics, summed sample by sample (one gateway: its own)."""
        summed: dict[str, dict[str, float]] = {}
        for url in self.metrics_urls:
            async with self.http.get(f"{url}/metrics") as response:
                metrics = parse_metrics(await response.text())
            for name, samples in metrics.items():
                into = summed.setdefault(name, {})
                for labels, value in samples.items():
                    into[labels] = into.get(labels, 0.0) + value
        return summed
