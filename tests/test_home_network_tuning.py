"""The household's own WiFi tuning against its packages, end to end (issue 18; R13, R16,
R17): a real Mosquitto, a gateway and a router on MQTT and SSH
(:func:`tests.test_router_api.house`).

The app's ``POST /app/v1/devices/{router_id}/tune`` is refused without a package covering the
router, allowed once per covered router and package, refused once used; the platform's own
tuning works throughout and never uses one; a run that fails gives its tuning back.
"""

from __future__ import annotations

from typing import Any

from devices.clock import ManualClock
from tests.conftest import StartGateway, platform_headers
from tests.services import Broker
from tests.test_router_api import BUSY_HOME, House, house

H = platform_headers()


async def app_token(h: House, account_id: str) -> str:
    r = await h.http.post(
        f"{h.gw.url}/platform/v1/app-tokens",
        json={"account_id": account_id, "user_id": "family-1"},
        headers=H,
    )
    assert r.status == 201, await r.text()
    token: str = (await r.json())["token"]
    return token


async def app_tune(h: House, token: str, **body: Any) -> tuple[int, Any]:
    r = await h.http.post(
        f"{h.gw.url}/app/v1/devices/{h.router_id}/tune",
        json=body or None,
        headers={"Authorization": f"Bearer {token}"},
    )
    return r.status, await r.json()


async def order(h: House, order_id: str, product: str) -> dict[str, Any]:
    r = await h.http.post(
        f"{h.gw.url}/platform/v1/home-network/orders",
        json={
            "order_id": order_id,
            "account_id": h.account_id,
            "product": product,
            "orderer_id": "owner-1",
            "channel": "electronic",
            "devices": [h.router_id],
        },
        headers=H,
    )
    assert r.status == 201, await r.text()
    found: dict[str, Any] = await r.json()
    return found


async def used(h: House, package_id: str) -> int:
    r = await h.http.get(f"{h.gw.url}/platform/v1/home-network/orders/{package_id}", headers=H)
    assert r.status == 200
    (device,) = (await r.json())["devices"]
    count: int = device["used"]
    return count


async def test_the_app_tunes_only_with_a_package_tuning_left(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    async with house(broker, start_gateway, clock, home=BUSY_HOME) as h:
        assert (await h.provision()).status == 200
        token = await app_token(h, h.account_id)

        status, body = await app_tune(h, token)
        assert (status, body["error"]["code"], body["error"]["rule"]) == (
            403,
            "tuning_not_covered",
            "R16",
        )
        pack = await order(h, "o-1", "wifi-tuning-70")

        # The operator's tuning from the platform never uses the household's (R16).
        r = await h.http.post(h.url("/tune"), headers=H)
        assert r.status == 200, await r.text()
        assert "package_id" not in await r.json()
        assert await used(h, pack["id"]) == 0

        status, body = await app_tune(h, token)
        assert status == 200, body
        assert body["ok"] is True
        assert body["package_id"] == pack["id"]
        assert await used(h, pack["id"]) == 1

        status, body = await app_tune(h, token)
        assert (status, body["error"]["code"], body["error"]["rule"]) == (
            403,
            "tunings_used_up",
            "R17",
        )
        # An add-on pack gives the router one more tuning (R17).
        addon = await order(h, "o-2", "wifi-addon-30")
        status, body = await app_tune(h, token)
        assert (status, body.get("package_id")) == (200, addon["id"])
        assert (await app_tune(h, token))[0] == 403

        # Another family's token does not see the router at all.
        r = await h.http.put(
            f"{h.gw.url}/platform/v1/accounts/acc-other",
            json={"owner_id": "o", "star_level": 1},
            headers=H,
        )
        assert r.status == 201
        status, body = await app_tune(h, await app_token(h, "acc-other"))
        assert (status, body["error"]["code"]) == (404, "not_found")


async def test_a_tuning_the_router_could_not_run_is_given_back(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    async with house(broker, start_gateway, clock, home=BUSY_HOME, telemetry_interval=None) as h:
        assert (await h.provision()).status == 200
        token = await app_token(h, h.account_id)
        gift = await order(h, "o-1", "wifi-gift-299")
        status, body = await app_tune(h, token, telemetry_timeout_seconds=0.5)
        assert (status, body["error"]["code"]) == (504, "telemetry_timeout")
        assert "package_id" not in body
        assert await used(h, gift["id"]) == 0
