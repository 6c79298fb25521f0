"""The web console in a real browser (issue 15 items 5 and 6).

Debian's ``chromium`` (installed by ``scripts/test``), driven by Playwright, against a
real gateway: a private Mosquitto, a simulated camera that uploads real H.264 through the
MQTT handshake and reports events, a simulated router on MQTT and SSH. The family's view
lists the devices, draws the day with its events and thumbnails, plays a playback
session (Chromium plays HLS natively) and exports a clip; the operator's view shows the
accounts, an account's devices, subscriptions and orders, and the fleet's health.

``KANJIA_CONSOLE_SCREENSHOTS=docs`` also writes the screenshots of both views there
(``docs/console-family.png``, ``docs/console-operator.png``).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from devices.clock import ManualClock
from gateway.service import Gateway
from simulators.camera import CameraSimulator
from simulators.radio import Client, Home
from simulators.router import RouterSimulator
from simulators.router_device import RouterDevice
from tests.conftest import PLATFORM_TOKEN, T0, eventually, platform_headers
from tests.conftest import test_settings as settings_in
from tests.services import Broker
from tests.test_presence import running

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = "KANJIA_CONSOLE_SCREENSHOTS"
H = platform_headers()
ROUTER_PASSWORD = "router-admin-pw"
#: Seconds of video the camera uploads: three 10-s segments, one range.
RECORDED = 30


@dataclass
class Household:
    gw: Gateway
    app_token: str
    account_id: str
    camera_id: str
    quiet_camera_id: str
    router_id: str
    #: Events reported inside the recording, by id.
    events: dict[str, str]


async def _post(http: aiohttp.ClientSession, url: str, body: Any, status: int = 201) -> Any:
    r = await http.post(url, json=body, headers=H)
    assert r.status == status, await r.text()
    return await r.json()


async def _provision(gw: Gateway, http: aiohttp.ClientSession, suffix: str) -> dict[str, str]:
    """Two households (the operator pages through them), one with a camera on a plan, a
    camera without one and a router with a whole-home WiFi package; an app token for it."""
    base = gw.url
    ids = {
        "account": f"lin-{suffix}",
        "camera": f"cam-door-{suffix}",
        "quiet": f"cam-garden-{suffix}",
        "router": f"rt-{suffix}",
    }
    for account_id, name in ((ids["account"], "The Lin family"), (f"wang-{suffix}", "Wang")):
        r = await http.put(
            f"{base}/platform/v1/accounts/{account_id}",
            json={"owner_id": f"owner-{account_id}", "star_level": 5, "name": name},
            headers=H,
        )
        assert r.status == 201
    for device_id, kind, name in (
        (ids["camera"], "camera", "Front door"),
        (ids["quiet"], "camera", "Garden"),
        (ids["router"], "router", "Home router"),
    ):
        await _post(
            http,
            f"{base}/platform/v1/accounts/{ids['account']}/devices",
            {"device_id": device_id, "kind": kind, "name": name},
        )
    # A whole-home WiFi package for the router (R16), before the subscription (the newest
    # order the operator sees is the subscription).
    await _post(
        http,
        f"{base}/platform/v1/home-network/orders",
        {
            "order_id": f"hn-{suffix}",
            "account_id": ids["account"],
            "product": "wifi-gift-299",
            "orderer_id": f"owner-{ids['account']}",
            "channel": "physical",
            "devices": [ids["router"]],
        },
    )
    await _post(
        http,
        f"{base}/platform/v1/subscriptions",
        {
            "order_id": f"order-{suffix}",
            "account_id": ids["account"],
            "device_id": ids["camera"],
            "plan": "continuous-7d",
            "orderer_id": f"owner-{ids['account']}",
            "channel": "electronic",
        },
    )
    await _post(
        http,
        f"{base}/platform/v1/family-cloud/memberships",
        {
            "order_id": f"membership-{suffix}",
            "account_id": ids["account"],
            "tier": "gold",
            "orderer_id": f"owner-{ids['account']}",
            "channel": "physical",
        },
    )
    token = await _post(
        http, f"{base}/platform/v1/app-tokens", {"account_id": ids["account"], "user_id": "mum"}
    )
    ids["token"] = token["token"]
    return ids


async def _record(gw: Gateway, http: aiohttp.ClientSession, cam: CameraSimulator) -> None:
    """Three 10-s segments of real H.264 and two events inside them, indexed."""
    start = gw.services.clock.now() - timedelta(seconds=RECORDED)
    for i in range(RECORDED // 10):
        outcome = await cam.upload(http, start=start + timedelta(seconds=10 * i), seconds=10)
        assert outcome.ok, outcome.code
    await cam.report_event(
        event_id="ev-person", kind="person", at=start + timedelta(seconds=6), score=0.9
    )
    await cam.report_event(
        event_id="ev-pet", kind="pet", at=start + timedelta(seconds=22), score=0.8
    )
    stats = gw.services.metrics

    async def indexed() -> bool:
        got = {s.name: s.samples for s in stats.registry.collect()}
        seg = [x.value for x in got["kanjia_segments_indexed"] if x.name.endswith("_total")]
        ev = [x.value for x in got["kanjia_events_indexed"] if x.name.endswith("_total")]
        return seg == [RECORDED // 10] and ev == [2]

    await eventually(indexed, timeout=20)


@pytest.fixture(scope="module")
async def household(
    broker: Broker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Household]:
    """A gateway on a manual clock with the household recorded, its devices online."""
    clock = ManualClock(T0)
    suffix = secrets.token_hex(3)  # the session's broker keeps retained messages
    settings = settings_in(tmp_path_factory.mktemp("console"), mqtt_url=broker.url)
    async with (
        Gateway(settings=settings, clock=clock) as gw,
        aiohttp.ClientSession() as http,
        RouterSimulator(password=ROUTER_PASSWORD, home=_home()) as router,
    ):
        ids = await _provision(gw, http, suffix)
        clock.advance(120)  # video recorded before the order is not the plan's (R6)
        cam = CameraSimulator(
            device_id=ids["camera"],
            mqtt_url=broker.url,
            clock=clock,
            telemetry_interval=None,
            record=False,
        )
        device = RouterDevice(
            device_id=ids["router"], mqtt_url=broker.url, router=router, telemetry_interval=0.5
        )
        async with running(cam), running(device):
            await _record(gw, http, cam)
            r = await http.put(
                f"{gw.url}/platform/v1/devices/{ids['router']}/router/access",
                json={
                    "host": router.host,
                    "port": router.port,
                    "username": "root",
                    "password": ROUTER_PASSWORD,
                },
                headers=H,
            )
            assert r.status in (200, 201), await r.text()
            yield Household(
                gw=gw,
                app_token=ids["token"],
                account_id=ids["account"],
                camera_id=ids["camera"],
                quiet_camera_id=ids["quiet"],
                router_id=ids["router"],
                events={"ev-person": "person", "ev-pet": "pet"},
            )


def _home() -> Home:
    clients = (
        Client(mac="02:aa:00:00:00:01", band="2g", signal_dbm=-55),
        Client(mac="02:aa:00:00:00:02", band="5g", signal_dbm=-60, node="sat1"),
    )
    return Home(satellites=("sat1",), clients=clients, channel_2g=6, channel_5g=36)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless (Playwright cannot download its own browser here)."""
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 (once, before any loop work)
        pytest.fail(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--autoplay-policy=no-user-gesture-required"],
        )
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh tab in the operator's zone (the day is drawn in local time)."""
    context = await browser.new_context(
        timezone_id="Asia/Shanghai",
        viewport={"width": 1360, "height": 1000},
        accept_downloads=True,
    )
    tab = await context.new_page()
    yield tab
    await context.close()


async def _family(page: Page, home: Household) -> None:
    """Open the console with the app token handed over in the fragment."""
    await page.goto(f"{home.gw.url}/console#token={home.app_token}")
    await expect(page.locator("#family")).to_be_visible()


async def _screenshot(page: Page, tmp_path: Path, name: str) -> None:
    shot = tmp_path / name
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    target = os.environ.get(SCREENSHOTS)
    if target:
        shutil.copy(shot, Path(target) / name)


async def test_the_console_lists_the_familys_devices_and_keeps_the_token_out_of_the_url(
    page: Page, household: Household
) -> None:
    await _family(page, household)
    devices = page.locator("#device-list button.device")
    await expect(devices).to_have_count(3)
    door = page.locator(f'button.device[data-device-id="{household.camera_id}"]')
    await expect(door).to_contain_text("Front door")
    await expect(door.locator(".badge")).to_have_text("online")
    garden = page.locator(f'button.device[data-device-id="{household.quiet_camera_id}"]')
    await expect(garden.locator(".badge")).to_have_text("offline")
    # The token was read from the fragment, then taken out of the address (and history).
    assert "token" not in page.url
    assert household.app_token not in page.url
    kept = await page.evaluate("sessionStorage.getItem('kanjia.console')")
    assert household.app_token in kept
    # A reload signs in again from the tab's session storage.
    await page.reload()
    await expect(devices).to_have_count(3)

    # The camera without a plan: its day says why there is nothing to show.
    await garden.click()
    await expect(page.locator("#timeline-state")).to_contain_text("not_entitled")
    # The router's WiFi, read over SSH and from its telemetry.
    await page.locator(f'button.device[data-device-id="{household.router_id}"]').click()
    body = page.locator("#router-body")
    await expect(body.locator("h3").first).to_have_text("Radios")
    await expect(body).to_contain_text("OpenWrt")
    await expect(body.locator("table").first.locator("tbody tr")).to_have_count(2)


async def test_the_family_tunes_its_router_once_with_its_package(
    page: Page, household: Household
) -> None:
    """Issue 18: the router's WiFi package (R16) with its tuning left; the family's tuning
    uses it, and the next one is refused citing R17."""
    await _family(page, household)
    await page.locator(f'button.device[data-device-id="{household.router_id}"]').click()
    packages = page.locator("#packages-of-router")
    await expect(packages.locator("tbody tr")).to_have_count(1)
    await expect(packages.locator("tbody tr")).to_contain_text("wifi-gift-299")
    await expect(packages.locator("tbody tr")).to_contain_text("1 of 1")
    await packages.locator("#tune").click()
    await expect(page.locator("#tune-result")).to_contain_text("Tuned", timeout=20000)
    await expect(packages.locator("tbody tr")).to_contain_text("0 of 1")
    await packages.locator("#tune").click()
    await expect(page.locator("#tune-result")).to_contain_text("tunings_used_up")
    await expect(page.locator("#tune-result")).to_contain_text("(R17)")


async def test_the_console_draws_a_day_with_its_events_and_thumbnails(
    page: Page, household: Household, tmp_path: Path
) -> None:
    await _family(page, household)
    status = page.locator("#timeline-state")
    await expect(status).to_have_text("30 s recorded in 1 range(s), 2 event(s)")
    # 10:02 in Shanghai on 20 November 2026: the device's last day, drawn in local time.
    await expect(page.locator("#day")).to_have_value("2026-11-20")
    for strip in ("#day-strip", "#hour-strip"):
        await expect(page.locator(f"{strip} rect.rec")).to_have_count(1)
        marks = page.locator(f"{strip} g.ev")
        await expect(marks).to_have_count(2)
    ids = await page.locator("#day-strip g.ev").evaluate_all(
        "marks => marks.map(m => m.dataset.eventId)"
    )
    assert sorted(ids) == sorted(household.events)
    await expect(page.locator("#event-list button.event")).to_have_count(2)
    await expect(page.locator("#legend")).to_contain_text("camera offline")

    # Hovering an event mark shows its thumbnail (fetched with the token, a JPEG).
    await page.locator('#hour-strip g.ev[data-event-id="ev-person"]').hover()
    popover = page.locator("#popover")
    await expect(popover).to_be_visible()
    await expect(popover).to_contain_text("person")
    thumb = popover.locator("img.thumb")
    await expect(thumb).to_have_attribute("src", _blob())
    await page.wait_for_function(
        "() => { const i = document.querySelector('#popover img.thumb');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    await _screenshot(page, tmp_path, "console-family.png")


def _blob() -> re.Pattern[str]:
    return re.compile(r"^blob:")


async def test_the_console_plays_a_playback_session_in_the_browser(
    page: Page, household: Household
) -> None:
    """Play from an event: a playback session's HLS URL in ``<video src>``, played by
    Chromium itself until ``currentTime`` passes 2 s."""
    await _family(page, household)
    await expect(page.locator("#hour-strip g.ev")).to_have_count(2)
    await page.locator('#event-list button.event[data-event-id="ev-person"]').click()
    async with page.expect_response("**/playback") as answered:
        await page.locator("#popover button.primary").click()
    response = await answered.value
    assert response.status == 201, await response.text()
    session = await response.json()
    await expect(page.locator("#player-state")).to_contain_text("Playing")
    assert await page.locator("#player").get_attribute("src") == session["url"]
    await page.wait_for_function(
        "() => document.querySelector('#player').currentTime > 2", timeout=20000
    )
    assert await page.evaluate("document.querySelector('#player').error") is None


async def test_the_console_exports_a_range_as_mp4(
    page: Page, household: Household, tmp_path: Path
) -> None:
    """Select a range (drag on the hour strip), export it: the MP4 the API cut, downloaded
    through a blob link (the API wants the bearer header, which a plain link cannot send)."""
    await _family(page, household)
    strip = page.locator("#hour-strip")
    await expect(strip.locator("rect.rec")).to_have_count(1)
    box = await strip.locator("rect.rec").bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    await page.mouse.move(box["x"] + 1, y)
    await page.mouse.down()
    await page.mouse.move(box["x"] + box["width"] / 2, y, steps=5)
    await page.mouse.move(box["x"] + box["width"] - 1, y, steps=5)
    await page.mouse.up()
    await expect(page.locator("#range-state")).to_contain_text("Selected")
    await expect(strip.locator("rect.sel")).to_have_count(1)
    async with page.expect_download(timeout=15000) as waiting:
        await page.locator("#export").click()
        await expect(page.locator("#range-state")).to_contain_text("Exported")
    download = await waiting.value
    assert download.suggested_filename.startswith(household.camera_id)
    saved = tmp_path / download.suggested_filename
    await download.save_as(saved)
    data = saved.read_bytes()
    assert data[4:8] == b"ftyp", "an MP4 file"
    await expect(page.locator("#range-state a.download")).to_be_visible()


async def test_the_console_saves_a_range_lists_it_and_deletes_it(
    page: Page, household: Household
) -> None:
    """Save a range to the family cloud (R14): it is listed with its camera and size and
    the quota used; deleted (a second click confirms), the list is empty again."""
    await _family(page, household)
    await expect(page.locator("#hour-strip rect.rec")).to_have_count(1)
    await page.locator("#range-start").fill("10:01:31")
    await page.locator("#range-end").fill("10:01:49")
    await page.locator("#save").click()
    await expect(page.locator("#range-state")).to_contain_text("Saved to the family cloud")
    item = page.locator("#saved-list tbody tr")
    await expect(item).to_have_count(1)
    await expect(item).to_contain_text(household.camera_id)
    await expect(page.locator("#quota")).not_to_contain_text("0 B used")
    await expect(page.locator("#quota")).to_contain_text("(gold membership)")  # R18's quota
    delete = item.locator("button.danger")
    await delete.click()
    await expect(delete).to_have_text("Really delete?")
    await delete.click()
    await expect(page.locator("#saved-list")).to_contain_text("No saved clips yet")


async def test_the_operator_view_shows_accounts_devices_orders_and_health(
    page: Page, household: Household, tmp_path: Path
) -> None:
    """Signed in with the platform token through the form: the accounts with their counts;
    one account's broadband, devices with presence and convergence, subscription,
    home-network package, charges and orders; the fleet's health read from /metrics."""
    await page.goto(f"{household.gw.url}/console")
    await page.locator("#token").fill(PLATFORM_TOKEN)
    await page.locator("#login-form button[type=submit]").click()
    await expect(page.locator("#operator")).to_be_visible()
    await expect(page.locator("#whoami")).to_contain_text("Operator")

    row = page.locator(f'#accounts-body tr[data-account-id="{household.account_id}"]')
    await expect(row).to_contain_text("The Lin family")
    await expect(row.locator("td.num")).to_have_text("2 / 3")
    # Filtered by the start of the id: the other household is not listed.
    await page.locator("#account-q").fill(household.account_id[:8])
    await page.locator("#account-filter button[type=submit]").click()
    await expect(page.locator("#accounts-body tr[data-account-id]")).to_have_count(1)

    await row.click()
    await expect(page.locator("#account-title")).to_contain_text(household.account_id)
    await expect(page.locator("#broadband-body")).to_contain_text("broadband active")
    camera = page.locator(f'#devices-body tr[data-device-id="{household.camera_id}"]')
    await expect(camera).to_contain_text("online")
    await expect(camera).to_contain_text("converged")
    await expect(page.locator("#devices-body tbody tr")).to_have_count(3)
    await expect(page.locator("#subscriptions-body")).to_contain_text("continuous-7d")
    packages = page.locator("#packages-body")
    await expect(packages).to_contain_text("wifi-gift-299")
    await expect(packages).to_contain_text(household.router_id)
    await expect(page.locator('#charges-body tr[data-kind="home_network"]')).to_contain_text(
        "¥299.00"
    )
    await expect(page.locator("#charges-body")).to_contain_text("Total 2026-11")
    await expect(page.locator("#membership-body")).to_contain_text("gold")  # R18
    await expect(page.locator("#membership-body")).to_contain_text("active")
    await expect(page.locator("#charges-body")).to_contain_text("family-cloud membership")
    orders = page.locator("#orders-body tr[data-order-id]")
    await expect(orders.first).to_contain_text("subscribe")
    await expect(page.locator("#orders-scope")).to_contain_text(household.account_id)
    health = page.locator("#health-body")
    await expect(health).to_contain_text("database up")
    await expect(health).to_contain_text("segments indexed")
    assert PLATFORM_TOKEN not in page.url
    await _screenshot(page, tmp_path, "console-operator.png")


async def test_a_wrong_token_is_refused_with_a_message(page: Page, household: Household) -> None:
    await page.goto(f"{household.gw.url}/console?token=not-a-token")
    await expect(page.locator("#login-state")).to_contain_text("neither an app token")
    await expect(page.locator("#login")).to_be_visible()
    assert "not-a-token" not in page.url


# --- the console's own modules, run in the browser on fixed inputs ---------------------------


async def _module(page: Page, home: Household, script: str, arg: Any) -> Any:
    """Run ``script`` (the body of an async function of ``m``, the console's modules by
    name, and ``arg``) in a page of the console."""
    await page.goto(f"{home.gw.url}/console")
    return await page.evaluate(
        "async (arg) => {"
        " const m = {strip: await import('/console/strip.js'),"
        f" metrics: await import('/console/metrics.js')}}; {script} }}",
        arg,
    )


async def test_the_strip_colours_each_gap_by_its_cause(page: Page, household: Household) -> None:
    """One hour, 02:00-03:00 UTC: a recording, one gap of each cause (an unknown cause is
    drawn as ``unknown``), two events; widths in the strip's 1000 units per hour."""
    view = {
        "start": "2026-11-20T02:00:00Z",
        "end": "2026-11-20T03:00:00Z",
        "ranges": [{"start": "2026-11-20T02:00:00Z", "end": "2026-11-20T02:06:00Z"}],
        "gaps": [
            {"start": "2026-11-20T02:06:00Z", "end": "2026-11-20T02:12:00Z", "cause": "offline"},
            {
                "start": "2026-11-20T02:12:00Z",
                "end": "2026-11-20T02:30:00Z",
                "cause": "broadband_stopped",
            },
            {
                "start": "2026-11-20T02:30:00Z",
                "end": "2026-11-20T02:36:00Z",
                "cause": "not_entitled",
            },
            {"start": "2026-11-20T02:36:00Z", "end": "2026-11-20T02:42:00Z", "cause": "solar"},
        ],
        "events": [
            {"event_id": "e1", "type": "person", "at": "2026-11-20T02:03:00Z"},
            {"event_id": "e2", "type": "door", "at": "2026-11-20T02:45:00Z"},
        ],
    }
    drawn = await _module(
        page,
        household,
        """
        const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
        document.body.append(svg);
        const v = {...arg, start: new Date(arg.start), end: new Date(arg.end)};
        m.strip.drawStrip(svg, v, {play() {}, select() {}, event() {}});
        const rects = [...svg.querySelectorAll('rect.rec, rect.gap')];
        return {
          rects: rects.map(r => [r.getAttribute('class'), Math.round(+r.getAttribute('x')),
                                 Math.round(+r.getAttribute('width'))]),
          events: [...svg.querySelectorAll('g.ev')].map(g => [
          g.dataset.eventId, g.getAttribute('class'),
          Math.round(+g.querySelector('circle').getAttribute('cx'))]),
        };
        """,
        view,
    )
    assert sorted(drawn["rects"], key=lambda r: r[1]) == [
        ["rec", 0, 100],  # 6 min of 60: 100 units
        ["gap gap-offline", 100, 100],
        ["gap gap-broadband_stopped", 200, 300],
        ["gap gap-not_entitled", 500, 100],
        ["gap gap-unknown", 600, 100],  # a cause the console does not know
    ]
    assert drawn["events"] == [["e1", "ev ev-person", 50], ["e2", "ev ev-door", 750]]


METRICS_TEXT = """\
# HELP kanjia_dependency_up 1 while the dependency answers
# TYPE kanjia_dependency_up gauge
kanjia_dependency_up{dependency="database"} 1.0
kanjia_dependency_up{dependency="object_store"} 0.0
kanjia_mqtt_connected 1.0
kanjia_http_requests_total{route="/a",status="200"} 7.0
kanjia_http_requests_total{route="/b",status="201"} 3.0
kanjia_http_requests_total{route="/a",status="503"} 2.0 1700000000000
kanjia_segments_rejected_total{reason="say \\"no\\", twice"} 4.0
kanjia_job_runs_total{job="sweep",outcome="ok"} 5.0
kanjia_job_runs_total{job="sweep",outcome="error"} 1.0
kanjia_http_request_seconds_bucket{route="/a",le="+Inf"} 9.0
"""


async def test_the_health_panel_reads_prometheus_text(page: Page, household: Household) -> None:
    """Comments skipped, labels with escaped quotes and commas, and timestamps read;
    requests summed by status class, failed job runs counted."""
    summary = await _module(
        page,
        household,
        """
        const samples = m.metrics.parseMetrics(arg);
        const s = m.metrics.health(samples);
        const bucket = samples.find(x => x.name.endsWith('_bucket'));
        return {count: samples.length, deps: s.dependencies, mqtt: s.mqttConnected,
                http: s.http, rejected: s.segmentsRejected, jobs: s.jobs,
                bucket: [bucket.labels.le, bucket.value]};
        """,
        METRICS_TEXT,
    )
    assert summary == {
        "count": 10,
        "deps": {"database": 1, "object_store": 0},
        "mqtt": True,
        "http": {"2xx": 10, "5xx": 2},
        "rejected": {'say "no", twice': 4},
        "jobs": {"sweep": {"runs": 6, "failed": 1}},
        "bucket": ["+Inf", 9],
    }


async def test_signing_out_forgets_the_token(page: Page, household: Household) -> None:
    """Sign out of the family's view: the tab forgets the token (a reload asks for one);
    the platform token then opens the operator's view in the same tab."""
    await _family(page, household)
    await expect(page.locator("#device-list button.device")).to_have_count(3)
    await page.locator("#logout").click()
    await expect(page.locator("#login")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('kanjia.console')") is None
    await page.reload()
    await expect(page.locator("#login")).to_be_visible()
    await expect(page.locator("#family")).to_be_hidden()
    await page.locator("#token").fill(PLATFORM_TOKEN)
    await page.locator("#token").press("Enter")
    await expect(page.locator("#accounts-body tr[data-account-id]").first).to_be_visible()
    await expect(page.locator("#family")).to_be_hidden()
