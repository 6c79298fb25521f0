"""Router management through the HTTP API, end to end (issue 6; R12, R13).

A real Mosquitto, a gateway, and a :class:`~simulators.router_device.RouterDevice`: the
router's MQTT client (state, telemetry, desired) and its real asyncssh server over one
radio model. The API provisions the access, reads the router, changes WiFi settings,
tunes channels from the router's next telemetry, and refuses changes while the broadband
account is stopped.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from devices.clock import ManualClock
from devices.models import Account, DesiredState
from devices.router_store import RouterAccess, credentials
from gateway.desired import PUBLISH_JOB, refresh_desired
from gateway.errors import failure_status
from gateway.service import Gateway
from gateway.telemetry_hub import parse_radios
from simulators.radio import Client, Home, NeighbourNetwork
from simulators.router import SUSPENDED_MESSAGE, RouterSimulator
from simulators.router_device import RouterDevice
from tests.conftest import StartGateway, eventually, platform_headers
from tests.services import Broker
from tests.test_presence import running

PASSWORD = "router-admin-pw"
PASSPHRASE = "family wifi 2026"

#: Neighbours crowd 2.4 GHz channel 6 and, less, channel 1; channel 11 is clear. By the
#: tuning rule (interference = overlap × dB above −100 dBm): channel 1 costs 20 (the
#: neighbour on 1; 6 is five channels away, no overlap), channel 6 costs 50 + 40 = 90,
#: channel 11 costs 0. So the best channel is 11.
NEIGHBOURS = (
    NeighbourNetwork(channel=6, signal_dbm=-50, ssid="ChinaNet-A", bssid="02:00:00:00:00:01"),
    NeighbourNetwork(channel=6, signal_dbm=-60, ssid="CMCC-B", bssid="02:00:00:00:00:02"),
    NeighbourNetwork(channel=1, signal_dbm=-80, ssid="Unicom-C", bssid="02:00:00:00:00:03"),
)
CLIENTS = (
    Client(mac="02:aa:00:00:00:01", band="2g", signal_dbm=-55),
    Client(mac="02:aa:00:00:00:02", band="5g", signal_dbm=-60, node="sat1"),
)
BUSY_HOME = Home(
    satellites=("sat1",), neighbours=NEIGHBOURS, clients=CLIENTS, channel_2g=6, channel_5g=36
)
BEST_HOME = Home(
    satellites=("sat1",), neighbours=NEIGHBOURS, clients=CLIENTS, channel_2g=11, channel_5g=36
)


@dataclass
class House:
    gw: Gateway
    http: aiohttp.ClientSession
    sim: RouterSimulator
    device: RouterDevice
    account_id: str

    @property
    def router_id(self) -> str:
        return self.device.device_id

    def url(self, suffix: str = "") -> str:
        return f"{self.gw.url}/platform/v1/devices/{self.router_id}/router{suffix}"

    async def provision(self, **overrides: Any) -> aiohttp.ClientResponse:
        body = {"host": self.sim.host, "port": self.sim.port, "username": "root"}
        body["password"] = PASSWORD
        body.update(overrides)
        return await self.http.put(self.url("/access"), json=body, headers=platform_headers())

    async def wifi(self, **body: Any) -> aiohttp.ClientResponse:
        return await self.http.post(self.url("/wifi"), json=body, headers=platform_headers())

    async def view(self) -> dict[str, Any]:
        r = await self.http.get(self.url(), headers=platform_headers())
        assert r.status == 200, await r.text()
        data: dict[str, Any] = await r.json()
        return data

    def uci(self) -> str:
        shown = self.sim.execute("uci show wireless")
        assert shown.status == 0
        return shown.stdout

    async def set_broadband(self, state: str) -> None:
        """Stand-in for the broadband routes: the account's state, then desired (R12)."""
        services = self.gw.services
        async with services.db.session() as session:
            account = await session.get(Account, self.account_id)
            assert account is not None
            account.broadband_state = state
            session.add(account)
            await refresh_desired(services, session, [self.router_id])
            await session.commit()
        services.jobs.trigger(PUBLISH_JOB)


@asynccontextmanager
async def house(
    broker: Broker,
    start_gateway: StartGateway,
    clock: ManualClock,
    *,
    home: Home,
    telemetry_interval: float | None = 0.2,
) -> AsyncIterator[House]:
    """A gateway, an account with a bound router (fresh ids: the broker keeps retained
    messages between tests) and the router running on MQTT and SSH."""
    suffix = secrets.token_hex(3)
    account_id, router_id = f"acc-{suffix}", f"rt-{suffix}"
    async with (
        start_gateway(clock=clock, mqtt_url=broker.url) as gw,
        aiohttp.ClientSession() as http,
        RouterSimulator(password=PASSWORD, passphrase=PASSPHRASE, home=home) as sim,
    ):
        r = await http.put(
            f"{gw.url}/platform/v1/accounts/{account_id}",
            json={"owner_id": "owner-1", "star_level": 4},
            headers=platform_headers(),
        )
        assert r.status == 201, await r.text()
        for device_id, kind in ((router_id, "router"), (f"cam-{suffix}", "camera")):
            r = await http.post(
                f"{gw.url}/platform/v1/accounts/{account_id}/devices",
                json={"device_id": device_id, "kind": kind},
                headers=platform_headers(),
            )
            assert r.status == 201, await r.text()
        device = RouterDevice(
            device_id=router_id,
            mqtt_url=broker.url,
            router=sim,
            telemetry_interval=telemetry_interval,
        )
        async with running(device):
            yield House(gw=gw, http=http, sim=sim, device=device, account_id=account_id)


async def commands_of(h: House) -> list[dict[str, Any]]:
    r = await h.http.get(
        f"{h.gw.url}/platform/v1/devices/{h.router_id}/commands", headers=platform_headers()
    )
    assert r.status == 200, await r.text()
    found: list[dict[str, Any]] = (await r.json())["commands"]
    return found


# --- pure pieces --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("timed_out", 504),
        ("telemetry_timeout", 504),
        ("invalid", 422),
        ("failed", 502),
        ("auth_failed", 502),
        ("host_key_changed", 502),
    ],
)
def test_router_failures_map_to_gateway_statuses(code: str, status: int) -> None:
    assert failure_status(code) == status


@pytest.mark.parametrize(
    ("payload", "radios"),
    [
        pytest.param({}, None, id="no-radios"),
        pytest.param({"radios": []}, None, id="empty"),
        pytest.param(
            {"radios": [{"band": "2.4", "channel": 6, "utilisation": 10, "noise": -92}]},
            None,
            id="generic-router-shape-lacks-radio-and-retry-rate",
        ),
        pytest.param(
            {
                "radios": [
                    {
                        "radio": "radio0",
                        "band": "2g",
                        "channel": 11,
                        "utilisation": 12.5,
                        "noise": -95,
                        "clients": 3,
                        "retry_rate": 0.05,
                    }
                ]
            },
            [("main", "radio0", 11, 3)],
            id="R13-router-telemetry",
        ),
    ],
)
def test_parse_router_telemetry(
    payload: dict[str, Any], radios: list[tuple[str, str, int, int]] | None
) -> None:
    parsed = parse_radios(payload)
    if radios is None:
        assert parsed is None
    else:
        assert parsed is not None
        assert [(t.node, t.radio, t.channel, t.clients) for t in parsed] == radios


# --- through the API ----------------------------------------------------------------------


async def test_provisioning_records_the_host_key_and_the_view_reads_the_router(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    async with house(broker, start_gateway, clock, home=BUSY_HOME) as h:
        # Before provisioning: no change is possible; the view says why.
        r = await h.wifi(ssid="Family")
        assert r.status == 409
        assert (await r.json())["error"]["code"] == "router_not_provisioned"
        assert (await h.view())["ssh"] == {
            "ok": False,
            "code": "not_provisioned",
            "message": "the router's SSH access is not provisioned",
        }

        r = await h.provision()
        assert r.status == 200, await r.text()
        access = await r.json()
        assert access["host_key"] == h.sim.host_public_key
        assert access["fingerprint"] == h.sim.host_key_fingerprint
        assert "password" not in access
        async with h.gw.services.db.session() as session:
            stored = await session.get(RouterAccess, h.router_id)
        assert stored is not None
        assert stored.host_key == h.sim.host_public_key

        async def has_telemetry() -> bool:
            return bool((await h.view())["telemetry"])

        await eventually(has_telemetry)
        view = await h.view()
        assert view["ssh"] == {"ok": True}
        assert view["provisioned"] is True
        assert view["suspended"] is False
        assert view["board"]["model"] == h.sim.model
        assert {r["name"]: (r["band"], r["channel"]) for r in view["radios"]} == {
            "radio0": ("2g", 6),
            "radio1": ("5g", 36),
        }
        assert {i["radio"]: i["ssid"] for i in view["interfaces"]} == {
            "radio0": "Kanjia",
            "radio1": "Kanjia",
        }
        assert all(i["has_key"] for i in view["interfaces"])
        # The mesh from telemetry: one 2.4 GHz client on the main router, one 5 GHz on sat1.
        assert {n["node"]: n["clients"] for n in view["mesh"]} == {"main": 1, "sat1": 1}
        assert view["clients"] == 2
        assert (
            PASSPHRASE not in await (await h.http.get(h.url(), headers=platform_headers())).text()
        )

        # Only routers have router access; the app sees its own router only (404 otherwise).
        camera = h.router_id.replace("rt-", "cam-")
        r = await h.http.put(
            f"{h.gw.url}/platform/v1/devices/{camera}/router/access",
            json={"host": h.sim.host, "port": h.sim.port, "username": "root", "password": "x"},
            headers=platform_headers(),
        )
        assert r.status == 404
        r = await h.http.get(
            f"{h.gw.url}/platform/v1/devices/rt-nobody/router", headers=platform_headers()
        )
        assert r.status == 404
        r = await h.http.put(
            f"{h.gw.url}/platform/v1/accounts/acc-other",
            json={"owner_id": "owner-2", "star_level": 1},
            headers=platform_headers(),
        )
        assert r.status == 201
        tokens = {}
        for account_id in (h.account_id, "acc-other"):
            r = await h.http.post(
                f"{h.gw.url}/platform/v1/app-tokens",
                json={"account_id": account_id, "user_id": "u1"},
                headers=platform_headers(),
            )
            tokens[account_id] = (await r.json())["token"]
        app_url = f"{h.gw.url}/app/v1/devices/{h.router_id}/router"
        r = await h.http.get(app_url, headers={"Authorization": f"Bearer {tokens[h.account_id]}"})
        assert r.status == 200
        assert (await r.json())["radios"] == view["radios"]
        r = await h.http.get(app_url, headers={"Authorization": "Bearer " + tokens["acc-other"]})
        assert r.status == 404


async def test_ssid_passphrase_and_channel_changes_show_in_uci_show(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    async with house(broker, start_gateway, clock, home=BUSY_HOME, telemetry_interval=None) as h:
        assert (await h.provision()).status == 200
        r = await h.wifi(ssid="Family-Home", passphrase="new secret 2027", channels={"radio0": 11})
        assert r.status == 200, await r.text()
        answer = await r.json()
        assert [(x["change"], x["status"]) for x in answer["results"]] == [
            ("ssid", "succeeded"),
            ("passphrase", "succeeded"),
            ("channels", "succeeded"),
        ]
        shown = h.uci()
        assert "wireless.default_radio0.ssid='Family-Home'" in shown
        assert "wireless.default_radio1.ssid='Family-Home'" in shown
        assert "wireless.default_radio0.key='new secret 2027'" in shown
        assert "wireless.radio0.channel='11'" in shown
        assert h.sim.radio.channels["radio0"] == 11  # applied by wifi reload, not only staged

        # A channel outside the band plan is the router configuration's refusal: 422.
        r = await h.wifi(channels={"radio0": 3})
        assert r.status == 422
        body = await r.json()
        assert body["error"]["code"] == "router_invalid"
        assert body["results"][0]["status"] == "failed"
        assert "wireless.radio0.channel='11'" in h.uci()

        # Each change is a command; the passphrase is never stored or echoed.
        commands = await commands_of(h)
        # (The manual clock stands still: all were created at the same instant.)
        assert sorted((c["method"], c["status"]) for c in commands) == [
            ("router.set_channels", "failed"),
            ("router.set_channels", "succeeded"),
            ("router.set_passphrase", "succeeded"),
            ("router.set_ssid", "succeeded"),
        ]
        by_method = {c["method"]: c for c in commands}
        assert by_method["router.set_passphrase"]["params"] == {"passphrase": "***"}
        assert "new secret 2027" not in str(commands) + str(answer)


async def test_timeout_refused_login_and_silent_telemetry_are_failed_results(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    async with house(broker, start_gateway, clock, home=BUSY_HOME, telemetry_interval=None) as h:
        # Short timeouts on the gateway's own pool (the services are fixed once built).
        manager = h.gw.services.router_manager
        manager.connect_timeout, manager.command_timeout = 3.0, 0.3
        assert (await h.provision()).status == 200

        h.sim.command_delay = 1.0
        r = await h.wifi(ssid="Slow", band_steering=True)
        assert r.status == 504
        body = await r.json()
        assert body["error"]["code"] == "router_timed_out"
        assert [(x["change"], x["status"], x.get("code")) for x in body["results"]] == [
            ("ssid", "timed_out", "timed_out"),
            ("band_steering", "skipped", None),
        ]
        h.sim.command_delay = 0.0

        # The router's password changed on the box: the stored one is refused.
        async with h.gw.services.db.session() as session:
            access = await session.get(RouterAccess, h.router_id)
            assert access is not None
            access.password = "not-the-password"
            session.add(access)
            await session.commit()
        r = await h.wifi(ssid="Refused")
        assert r.status == 502
        body = await r.json()
        assert body["error"]["code"] == "router_auth_failed"
        assert body["results"][0]["status"] == "failed"
        assert body["results"][0]["code"] == "auth_failed"
        r = await h.provision(password="also-wrong")
        assert r.status == 502
        assert (await r.json())["error"]["code"] == "router_auth_failed"

        # Tuning without any telemetry from the router: 504, after the bounded wait.
        assert (await h.provision()).status == 200
        r = await h.http.post(
            h.url("/tune"), json={"telemetry_timeout_seconds": 0.5}, headers=platform_headers()
        )
        assert r.status == 504
        assert (await r.json())["error"]["code"] == "telemetry_timeout"

        statuses = sorted((c["method"], c["status"]) for c in await commands_of(h))
        assert statuses == [
            ("router.set_ssid", "failed"),
            ("router.set_ssid", "timed_out"),
            ("router.tune", "timed_out"),
        ]


async def test_a_host_key_rotated_after_provisioning_is_refused(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    async with house(broker, start_gateway, clock, home=BUSY_HOME, telemetry_interval=None) as h:
        assert (await h.provision()).status == 200
        first = h.sim.host_public_key
        h.sim.rotate_host_key()

        r = await h.wifi(ssid="Hijacked")
        assert r.status == 502
        body = await r.json()
        assert body["error"]["code"] == "router_host_key_changed"
        assert body["results"][0]["code"] == "host_key_changed"
        assert "wireless.default_radio0.ssid='Kanjia'" in h.uci()
        assert (await h.view())["ssh"]["code"] == "host_key_changed"

        # Provisioning again keeps the pinned key unless told the box was replaced.
        r = await h.provision()
        assert r.status == 502
        assert (await r.json())["error"]["code"] == "router_host_key_changed"
        async with h.gw.services.db.session() as session:
            stored = await session.get(RouterAccess, h.router_id)
        assert stored is not None
        assert stored.host_key == first
        r = await h.provision(trust_new_host_key=True)
        assert r.status == 200
        assert (await r.json())["host_key"] == h.sim.host_public_key != first
        assert (await h.wifi(ssid="Replaced-Box")).status == 200


async def test_tuning_moves_the_radio_off_the_busiest_channel_and_improves_the_score(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    async with house(broker, start_gateway, clock, home=BUSY_HOME) as h:
        assert (await h.provision()).status == 200
        r = await h.http.post(h.url("/tune"), headers=platform_headers())
        assert r.status == 200, await r.text()
        report = await r.json()
        assert report["ok"] is True
        assert [(c["radio"], c["from_channel"], c["to_channel"]) for c in report["changes"]] == [
            ("radio0", 6, 11)
        ]
        assert report["rolled_back"] == []
        assert report["after"]["radio0"] > report["before"]["radio0"]
        assert report["after"]["radio1"] == report["before"]["radio1"]  # 5 GHz left alone
        assert "wireless.radio0.channel='11'" in h.uci()
        (command,) = await commands_of(h)
        assert (command["method"], command["status"]) == ("router.tune", "succeeded")
        assert command["result"]["changes"] == [{"radio": "radio0", "from": 6, "to": 11}]


async def test_tuning_a_home_already_on_the_best_channel_changes_nothing(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    async with house(broker, start_gateway, clock, home=BEST_HOME) as h:
        assert (await h.provision()).status == 200
        r = await h.http.post(h.url("/tune"), headers=platform_headers())
        assert r.status == 200, await r.text()
        report = await r.json()
        assert report["changes"] == []
        assert report["rolled_back"] == []
        assert report["after"] == report["before"]
        assert not [c for c in h.sim.commands if c.startswith(("uci set", "wifi"))]
        assert "wireless.radio0.channel='11'" in h.uci()


async def test_broadband_stopped_refuses_changes_and_the_router_follows_desired(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    """R12: while stopped, the API refuses changes, status works, and the router's own SSH
    refuses management commands because its desired state says suspended."""
    async with house(broker, start_gateway, clock, home=BUSY_HOME, telemetry_interval=None) as h:
        assert (await h.provision()).status == 200
        await h.set_broadband("stopped")

        for path, body in (("/wifi", {"ssid": "Nope"}), ("/tune", {}), ("/reboot", None)):
            r = await h.http.post(h.url(path), json=body, headers=platform_headers())
            assert r.status == 409, path
            assert (await r.json())["error"] == {
                "code": "broadband_inactive",
                "message": (
                    f"the broadband account {h.account_id} is stopped: managed networking is "
                    "suspended and the router cannot be changed until it is resumed"
                ),
                "rule": "R12",
            }
        view = await h.view()
        assert view["suspended"] is True
        assert view["ssh"] == {"ok": True}

        async def suspended(value: bool) -> bool:
            return h.sim.suspended is value

        await eventually(lambda: suspended(True))
        async with h.gw.services.db.session() as session:
            access = await session.get(RouterAccess, h.router_id)
        assert access is not None
        refused = await h.gw.services.router_manager.set_ssid(credentials(access), "Direct")
        assert refused.code == "failed"
        assert refused.error is not None
        assert SUSPENDED_MESSAGE in refused.error
        assert "wireless.default_radio0.ssid='Kanjia'" in h.uci()

        await h.set_broadband("active")
        await eventually(lambda: suspended(False))
        assert (await h.wifi(ssid="Back")).status == 200
        assert "wireless.default_radio0.ssid='Back'" in h.uci()


async def test_an_unbound_router_is_released_and_bound_again_starts_clean(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    """Issue 17 item 2: unbinding a router forgets its SSH access and releases its managed
    networking: its desired document is an unbound device's (nothing suspended, so a router
    suspended by R12 comes back), the old account's views answer 404, and bound to another
    account it is not provisioned until the platform provisions it again."""
    async with house(broker, start_gateway, clock, home=BUSY_HOME, telemetry_interval=None) as h:
        assert (await h.provision()).status == 200
        await h.set_broadband("stopped")
        await eventually(lambda: _is(h.sim.suspended, True))

        unbind = f"{h.gw.url}/platform/v1/accounts/{h.account_id}/devices/{h.router_id}"
        r = await h.http.delete(unbind, headers=platform_headers())
        assert r.status == 200, await r.text()
        body = await r.json()
        assert (body["kind"], body["router_access_released"]) == ("router", True)
        async with h.gw.services.db.session() as session:
            assert await session.get(RouterAccess, h.router_id) is None
            desired = await session.get(DesiredState, h.router_id)
        assert desired is not None
        assert desired.document == {"service": {"suspended": False}}
        await eventually(lambda: _is(h.sim.suspended, False))
        r = await h.http.get(h.url(), headers=platform_headers())
        assert r.status == 404
        r = await h.http.get(
            f"{h.gw.url}/platform/v1/accounts/{h.account_id}/devices", headers=platform_headers()
        )
        assert h.router_id not in [d["device_id"] for d in (await r.json())["devices"]]

        other = f"{h.account_id}-b"
        r = await h.http.put(
            f"{h.gw.url}/platform/v1/accounts/{other}",
            json={"owner_id": "owner-2", "star_level": 4},
            headers=platform_headers(),
        )
        assert r.status == 201
        r = await h.http.post(
            f"{h.gw.url}/platform/v1/accounts/{other}/devices",
            json={"device_id": h.router_id, "kind": "router"},
            headers=platform_headers(),
        )
        assert r.status == 201, await r.text()
        view = await h.view()
        assert view["provisioned"] is False
        assert view["ssh"]["code"] == "not_provisioned"
        r = await h.wifi(ssid="Theirs")
        assert (await r.json())["error"]["code"] == "router_not_provisioned"


async def _is(value: bool, expected: bool) -> bool:
    return value is expected
