"""The HTTP contract's plumbing: error shape, auth, validation, OpenAPI, ops (issue 2, #5)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from openapi_spec_validator import validate

from devices.clock import ManualClock
from gateway.service import Gateway
from tests.conftest import PLATFORM_TOKEN, StartGateway, platform_headers


def assert_error(body: dict[str, Any], code: str) -> None:
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]


async def put_account(gw: Gateway, http: aiohttp.ClientSession, account_id: str) -> None:
    r = await http.put(
        f"{gw.url}/platform/v1/accounts/{account_id}",
        json={"owner_id": "o", "star_level": 4},
        headers=platform_headers(),
    )
    assert r.status in (200, 201)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        pytest.param(b"{not json", "invalid_json", id="malformed-json"),
        pytest.param(
            b'{"owner_id": "o", "star_level": 1, "colour": "red"}',
            "invalid_body",
            id="unknown-field",
        ),
        pytest.param(b'{"owner_id": "o", "star_level": 9}', "invalid_body", id="star-level-8"),
        pytest.param(b'{"star_level": 1}', "invalid_body", id="missing-owner"),
        pytest.param(b"[]", "invalid_body", id="not-an-object"),
        pytest.param(b"", "invalid_body", id="empty"),
    ],
)
async def test_bad_bodies_are_400_with_the_error_shape(
    start_gateway: StartGateway, clock: ManualClock, raw: bytes, code: str
) -> None:
    async with start_gateway(clock=clock, mqtt=False) as gw, aiohttp.ClientSession() as http:
        r = await http.put(
            f"{gw.url}/platform/v1/accounts/a1",
            data=raw,
            headers={**platform_headers(), "Content-Type": "application/json"},
        )
        assert r.status == 400
        assert_error(await r.json(), code)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-token"),
        pytest.param({"Authorization": "Bearer wrong"}, id="wrong-token"),
        pytest.param({"Authorization": f"Basic {PLATFORM_TOKEN}"}, id="not-bearer"),
    ],
)
async def test_platform_routes_refuse_a_wrong_token(
    start_gateway: StartGateway, clock: ManualClock, headers: dict[str, str]
) -> None:
    async with start_gateway(clock=clock, mqtt=False) as gw, aiohttp.ClientSession() as http:
        r = await http.put(
            f"{gw.url}/platform/v1/accounts/a1",
            json={"owner_id": "o", "star_level": 1},
            headers=headers,
        )
        assert r.status == 401
        assert_error(await r.json(), "unauthorized")


async def test_app_routes_refuse_the_platform_token_and_unknown_tokens(
    start_gateway: StartGateway, clock: ManualClock
) -> None:
    async with start_gateway(clock=clock, mqtt=False) as gw, aiohttp.ClientSession() as http:
        for token in (PLATFORM_TOKEN, "kja_nope"):
            r = await http.get(
                f"{gw.url}/app/v1/devices", headers={"Authorization": f"Bearer {token}"}
            )
            assert r.status == 401
            assert_error(await r.json(), "unauthorized")


async def test_accounts_devices_and_the_app_view(
    start_gateway: StartGateway, clock: ManualClock
) -> None:
    async with start_gateway(clock=clock, mqtt=False) as gw, aiohttp.ClientSession() as http:
        url = f"{gw.url}/platform/v1/accounts/a1"
        r = await http.put(
            url,
            json={"owner_id": "o1", "star_level": 3, "name": "Home"},
            headers=platform_headers(),
        )
        assert r.status == 201
        r = await http.put(
            url, json={"owner_id": "o1", "star_level": 5}, headers=platform_headers()
        )
        assert r.status == 200
        assert (await r.json())["star_level"] == 5
        await put_account(gw, http, "a2")

        bind = f"{url}/devices"
        r = await http.post(
            bind, json={"device_id": "cam-1", "kind": "camera"}, headers=platform_headers()
        )
        assert r.status == 201
        r = await http.post(
            bind, json={"device_id": "cam-1", "kind": "camera"}, headers=platform_headers()
        )
        assert r.status == 200, "binding again to the same account is idempotent"
        r = await http.post(
            f"{gw.url}/platform/v1/accounts/a2/devices",
            json={"device_id": "cam-1", "kind": "camera"},
            headers=platform_headers(),
        )
        assert r.status == 409
        assert_error(await r.json(), "device_bound_elsewhere")
        r = await http.post(
            bind, json={"device_id": "bad/id", "kind": "camera"}, headers=platform_headers()
        )
        assert r.status == 400, "an MQTT topic separator is not a valid device id"
        r = await http.post(
            bind, json={"device_id": "x", "kind": "toaster"}, headers=platform_headers()
        )
        assert r.status == 400
        r = await http.post(
            f"{gw.url}/platform/v1/accounts/nobody/devices",
            json={"device_id": "cam-9", "kind": "camera"},
            headers=platform_headers(),
        )
        assert r.status == 404
        assert_error(await r.json(), "not_found")

        r = await http.post(
            f"{gw.url}/platform/v1/app-tokens",
            json={"account_id": "a2", "user_id": "u"},
            headers=platform_headers(),
        )
        token = (await r.json())["token"]
        r = await http.get(f"{gw.url}/app/v1/devices", headers={"Authorization": f"Bearer {token}"})
        assert (await r.json()) == {"devices": []}, "a2 sees none of a1's devices"


async def test_unknown_routes_and_methods_use_the_error_shape(
    start_gateway: StartGateway, clock: ManualClock
) -> None:
    async with start_gateway(clock=clock, mqtt=False) as gw, aiohttp.ClientSession() as http:
        r = await http.get(f"{gw.url}/nothing/here")
        assert r.status == 404
        assert_error(await r.json(), "not_found")
        r = await http.delete(f"{gw.url}/healthz")
        assert r.status == 405
        assert_error(await r.json(), "method_not_allowed")


async def test_openapi_document_is_valid_and_lists_the_routes(
    start_gateway: StartGateway, clock: ManualClock
) -> None:
    async with start_gateway(clock=clock, mqtt=False) as gw, aiohttp.ClientSession() as http:
        r = await http.get(f"{gw.url}/openapi.json")
        doc = await r.json()
        validate(doc)
        assert "put" in doc["paths"]["/platform/v1/accounts/{account_id}"]
        assert "get" in doc["paths"]["/app/v1/devices"]
        assert "post" in doc["paths"]["/ops/v1/clock"]
        # What the wire answers is what the document lists (issue 15 item 7).
        get_account = doc["paths"]["/platform/v1/accounts/{account_id}"]["get"]
        assert get_account["description"]
        r = await http.get(f"{gw.url}/platform/v1/accounts/nobody", headers=platform_headers())
        assert r.status == 404
        assert (await r.json())["error"]["code"] in get_account["responses"]["404"]["x-error-codes"]
        r = await http.get(f"{gw.url}/platform/v1/accounts/nobody")
        assert r.status == 401
        assert (await r.json())["error"]["code"] in get_account["responses"]["401"]["x-error-codes"]


async def test_clock_endpoint_moves_a_manual_clock(
    start_gateway: StartGateway, clock: ManualClock
) -> None:
    async with start_gateway(clock=clock, mqtt=False) as gw, aiohttp.ClientSession() as http:
        before = clock.now()
        r = await http.post(
            f"{gw.url}/ops/v1/clock", json={"advance_seconds": 3600}, headers=platform_headers()
        )
        assert r.status == 200
        body = await r.json()
        assert (clock.now() - before).total_seconds() == 3600
        assert body["now"] == clock.now().isoformat()
        r = await http.post(
            f"{gw.url}/ops/v1/clock", json={"advance_seconds": -1}, headers=platform_headers()
        )
        assert r.status == 400


async def test_clock_endpoint_is_404_on_the_wall_clock(start_gateway: StartGateway) -> None:
    async with start_gateway(mqtt=False) as gw, aiohttp.ClientSession() as http:
        r = await http.post(
            f"{gw.url}/ops/v1/clock", json={"advance_seconds": 1}, headers=platform_headers()
        )
        assert r.status == 404
        assert_error(await r.json(), "not_found")


async def test_healthz_and_metrics(start_gateway: StartGateway, clock: ManualClock) -> None:
    async with start_gateway(clock=clock, mqtt=False) as gw, aiohttp.ClientSession() as http:
        r = await http.get(f"{gw.url}/healthz")
        assert r.status == 200
        assert (await r.json())["database"] is True
        r = await http.get(f"{gw.url}/metrics")
        text = await r.text()
        assert "kanjia_http_requests_total" in text
        assert 'route="/healthz"' in text


async def test_the_console_page_and_its_files_are_served(
    start_gateway: StartGateway, clock: ManualClock
) -> None:
    """The console's page loads its modules and style sheet from the gateway itself (no
    third-party code); an unknown file is the JSON 404; the page forbids other origins'
    scripts and sends no referrer (a token never leaves in one)."""
    async with start_gateway(clock=clock, mqtt=False) as gw, aiohttp.ClientSession() as http:
        r = await http.get(f"{gw.url}/console")
        assert r.status == 200
        assert r.content_type == "text/html"
        page = await r.text()
        assert '<script type="module" src="/console/main.js">' in page
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]
        assert r.headers["Referrer-Policy"] == "no-referrer"
        for name, kind in (("main.js", "text/javascript"), ("console.css", "text/css")):
            r = await http.get(f"{gw.url}/console/{name}")
            assert (r.status, r.content_type) == (200, kind)
        r = await http.get(f"{gw.url}/console/api.js")
        assert "/app/v1/devices" in await r.text()
        r = await http.get(f"{gw.url}/console/nothing.js")
        assert r.status == 404
        assert_error(await r.json(), "not_found")
