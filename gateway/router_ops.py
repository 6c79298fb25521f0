"""Home routers: access, the router view, WiFi changes, reboot and tuning (R12, R13).

Each function takes the gateway's :class:`~gateway.services.Services` and answers data;
the HTTP routes (:mod:`gateway.http.routes.router`) translate it to the wire.

- :func:`provision_access` records how the service logs in and the host key the router
  presents (trust on first use); again later, the pinned key must still be presented
  unless ``trust_new_host_key`` says the box was replaced.
- :func:`router_view`: board, wireless configuration, band steering, the mesh and its
  clients, from SSH and the last telemetry. When SSH fails the view still carries the
  telemetry, and ``ssh`` says what failed.
- :func:`change_wifi`, :func:`reboot`, :func:`tune_router`: management changes, each
  recorded as a device command (``router.set_ssid``, ``router.tune`` ...). Refused with
  ``broadband_inactive`` (R12) while the account's broadband is not active, and with
  ``router_not_provisioned`` before the access is known; one change at a time per router
  (:meth:`~gateway.telemetry_hub.RouterHub.changing`). Router-side failures are results,
  never exceptions.

WiFi changes are applied in the order ssid, passphrase, channels, band_steering, over one
SSH session; the first failure stops the rest (reported ``skipped``).

:func:`on_telemetry` hands every router telemetry message to the gateway's hub, where
tuning waits for the next one after a change.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from devices import router_store
from devices.errors import Invalid, NotFound
from devices.models import Account, Device
from devices.router import CommandResult, RouterCredentials, RouterManager, RouterSession
from devices.tuning import RadioTelemetry, TuneReport, tune
from devices.uci import BoardInfo, RouterOutputError, WirelessConfig, parse_board, parse_wireless
from gateway.mqtt.messages import Telemetry
from gateway.services import Services
from gateway.telemetry_hub import TelemetryTimeout, parse_radios

log = logging.getLogger(__name__)

#: How long tuning waits for one telemetry message unless the request says otherwise.
TELEMETRY_TIMEOUT_SECONDS: Final = 60.0

ChangeName = Literal["ssid", "passphrase", "channels", "band_steering", "reboot"]


async def on_telemetry(services: Services, msg: Telemetry) -> None:
    """A router's telemetry arrived (tuning waits for the next one after a change)."""
    services.router_hub.notify(msg.device_id, msg.payload)


# --- the router ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouterTarget:
    device: Device
    account: Account
    creds: RouterCredentials | None


async def find_router(services: Services, device_id: str) -> RouterTarget:
    """The router, its account and its credentials (None before the access is known)."""
    async with services.db.session() as session:
        device, account = await router_store.router_of(session, device_id)
        access = await router_store.get_access(session, device_id)
    creds = router_store.credentials(access) if access is not None else None
    return RouterTarget(device=device, account=account, creds=creds)


async def _changeable(services: Services, device_id: str) -> tuple[RouterTarget, RouterCredentials]:
    """The router to change and its credentials: R12 and provisioning checked."""
    target = await find_router(services, device_id)
    router_store.require_managed(target.account)
    if target.creds is None:
        raise router_store.NotProvisioned(device_id)
    return target, target.creds


# --- access -------------------------------------------------------------------------------


class InvalidAccess(Invalid):
    """The access given cannot be used (e.g. an empty host)."""

    code = "invalid_body"


async def provision_access(
    services: Services,
    device_id: str,
    *,
    host: str,
    port: int,
    username: str,
    password: str,
    trust_new_host_key: bool,
) -> router_store.RouterAccess:
    """Log in once, pin the host key presented and save the access.

    Raises :class:`~devices.router.ProvisioningError` when the router cannot be reached,
    refuses the login or presents another key than the one pinned.
    """
    async with services.db.session() as session:
        await router_store.router_of(session, device_id)
        existing = await router_store.get_access(session, device_id)
    pinned = None if existing is None or trust_new_host_key else existing.host_key
    try:
        creds = RouterCredentials(
            host=host, port=port, username=username, password=password, pinned_host_key=pinned
        )
    except ValueError as exc:
        raise InvalidAccess(str(exc)) from exc
    host_key = await services.router_manager.provision_host_key(creds)
    async with services.db.writing() as session:
        await router_store.router_of(session, device_id)  # still bound
        access = await router_store.save_access(
            session, device_id=device_id, creds=creds, host_key=host_key, now=services.clock.now()
        )
        await session.commit()
    log.info("router %s: access provisioned, host key %s", device_id, access.fingerprint)
    return access


# --- the view -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SshStatus:
    ok: bool
    code: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class MeshNode:
    """One node of the home's mesh (``main``: the router itself) and its clients."""

    node: str
    clients: int
    radios: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RouterView:
    device: Device
    #: R12: managed networking is suspended while the broadband account is not active.
    suspended: bool
    provisioned: bool
    ssh: SshStatus
    board: BoardInfo | None
    config: WirelessConfig | None
    telemetry: tuple[RadioTelemetry, ...]

    @property
    def mesh(self) -> list[MeshNode]:
        nodes: dict[str, MeshNode] = {}
        for t in self.telemetry:
            node = nodes.get(t.node)
            if node is None:
                nodes[t.node] = MeshNode(node=t.node, clients=t.clients, radios=(t.radio,))
            else:
                nodes[t.node] = MeshNode(
                    node=t.node, clients=node.clients + t.clients, radios=(*node.radios, t.radio)
                )
        return list(nodes.values())

    @property
    def clients(self) -> int:
        return sum(t.clients for t in self.telemetry)


async def _read_router(
    manager: RouterManager, creds: RouterCredentials
) -> tuple[SshStatus, BoardInfo | None, WirelessConfig | None]:
    async with manager.session(creds) as session:
        status = await session.read_status()
        if not status.ok:
            return SshStatus(ok=False, code=status.code, message=status.error), None, None
        shown = await session.read_wireless()
    if not shown.ok:
        return SshStatus(ok=False, code=shown.code, message=shown.error), None, None
    try:
        return SshStatus(ok=True), parse_board(status.output), parse_wireless(shown.output)
    except RouterOutputError as exc:
        return SshStatus(ok=False, code="failed", message=str(exc)), None, None


async def router_view(
    services: Services, device_id: str, *, for_account: str | None = None
) -> RouterView:
    """The router as SSH and its last telemetry show it.

    ``for_account``: the view of that family (the app): another account's router is not
    found (404, never 403), and an SSH failure is shown without the operator's details.
    """
    target = await find_router(services, device_id)
    if for_account is not None and target.account.account_id != for_account:
        raise NotFound("router", device_id)
    if target.creds is None:
        ssh = SshStatus(
            ok=False, code="not_provisioned", message="the router's SSH access is not provisioned"
        )
        board: BoardInfo | None = None
        config: WirelessConfig | None = None
    else:
        ssh, board, config = await _read_router(services.router_manager, target.creds)
    if for_account is not None and not ssh.ok:
        # The family sees that management is unavailable, not the operator's addresses.
        ssh = SshStatus(ok=False, code=ssh.code)
    return RouterView(
        device=target.device,
        suspended=target.account.broadband_state != "active",
        provisioned=target.creds is not None,
        ssh=ssh,
        board=board,
        config=config,
        telemetry=parse_radios(target.device.telemetry or {}) or (),
    )


# --- changes ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Applied:
    """One operation run on the router, recorded as the device command ``command_id``."""

    change: ChangeName
    result: CommandResult
    command_id: str


@dataclass(frozen=True, slots=True)
class Changes:
    """The operations run, in order; a failure stops the rest, which are ``skipped``."""

    device_id: str
    applied: tuple[Applied, ...]
    skipped: tuple[ChangeName, ...] = ()


@dataclass(slots=True)
class _Done:
    """One operation run, to be recorded as a command."""

    change: ChangeName
    method: str
    params: dict[str, Any]
    result: CommandResult
    started_at: datetime
    finished_at: datetime
    output: Any = None


async def _record(services: Services, target: RouterTarget, done: Sequence[_Done]) -> list[str]:
    """Record the operations as device commands; their ids, in order."""
    async with services.db.writing() as session:
        rows = [
            router_store.record_operation(
                session,
                device_id=target.device.device_id,
                account_id=target.account.account_id,
                method=d.method,
                params=d.params,
                result=d.output,
                started_at=d.started_at,
                finished_at=d.finished_at,
                **router_store.result_fields(d.result),
            )
            for d in done
        ]
        ids = [row.command_id for row in rows]
        await session.commit()
    return ids


@dataclass(frozen=True, slots=True, kw_only=True)
class WifiChange:
    """WiFi settings to change; ``channels`` maps radios to a channel or ``auto``."""

    ssid: str | None = None
    passphrase: str | None = None
    channels: Mapping[str, int | Literal["auto"]] | None = None
    band_steering: bool | None = None

    def plan(self) -> list[tuple[ChangeName, str, dict[str, Any]]]:
        """The operations to run, in order: (change, command method, its params)."""
        plan: list[tuple[ChangeName, str, dict[str, Any]]] = []
        if self.ssid is not None:
            plan.append(("ssid", "router.set_ssid", {"ssid": self.ssid}))
        if self.passphrase is not None:
            plan.append(("passphrase", "router.set_passphrase", {"passphrase": self.passphrase}))
        if self.channels is not None:
            plan.append(("channels", "router.set_channels", {"channels": dict(self.channels)}))
        if self.band_steering is not None:
            plan.append(
                ("band_steering", "router.set_band_steering", {"enabled": self.band_steering})
            )
        return plan


async def _apply(ssh: RouterSession, change: ChangeName, params: dict[str, Any]) -> CommandResult:
    if change == "ssid":
        return await ssh.set_ssid(params["ssid"])
    if change == "passphrase":
        return await ssh.set_passphrase(params["passphrase"])
    if change == "channels":
        return await ssh.set_channels(params["channels"])
    return await ssh.set_band_steering(params["enabled"])


async def change_wifi(services: Services, device_id: str, wanted: WifiChange) -> Changes:
    """Apply the WiFi changes in order over one session; the first failure stops the rest."""
    target, creds = await _changeable(services, device_id)
    plan = wanted.plan()
    done: list[_Done] = []
    async with (
        services.router_hub.changing(device_id),
        services.router_manager.session(creds) as ssh,
    ):
        for change, method, params in plan:
            started = services.clock.now()
            result = await _apply(ssh, change, params)
            done.append(_Done(change, method, params, result, started, services.clock.now()))
            if not result.ok:
                break
    ids = await _record(services, target, done)
    return Changes(
        device_id=device_id,
        applied=tuple(Applied(d.change, d.result, i) for d, i in zip(done, ids, strict=True)),
        skipped=tuple(change for change, _, _ in plan[len(done) :]),
    )


async def reboot(services: Services, device_id: str) -> Changes:
    target, creds = await _changeable(services, device_id)
    async with services.router_hub.changing(device_id):
        started = services.clock.now()
        result = await services.router_manager.reboot(creds)
        done = _Done("reboot", "router.reboot", {}, result, started, services.clock.now())
    (command_id,) = await _record(services, target, [done])
    return Changes(device_id=device_id, applied=(Applied(done.change, result, command_id),))


# --- tuning -------------------------------------------------------------------------------


def rounded(scores: Mapping[str, float]) -> dict[str, float]:
    """Scores as answered and recorded: to two decimals."""
    return {radio: round(value, 2) for radio, value in scores.items()}


def _tune_output(report: TuneReport) -> dict[str, Any]:
    return {
        "before": rounded(report.scores("before")),
        "after": rounded(report.scores("after")),
        "changes": [
            {"radio": c.radio, "from": c.from_channel, "to": c.to_channel} for c in report.changes
        ],
        "rolled_back": list(report.rolled_back),
    }


@dataclass(frozen=True, slots=True)
class Tuning:
    """A tuning run, recorded as the command ``command_id``: its report, or, when the
    router sent no telemetry in time, the timeout instead."""

    device_id: str
    command_id: str
    outcome: TuneReport | TelemetryTimeout


async def tune_router(
    services: Services, device_id: str, *, telemetry_timeout: float = TELEMETRY_TIMEOUT_SECONDS
) -> Tuning:
    """Tune the WiFi channels from telemetry and a scan (R13); see :func:`devices.tuning.tune`."""
    target, creds = await _changeable(services, device_id)
    hub = services.router_hub

    async def from_database() -> tuple[Any, ...]:
        async with services.db.session() as session:
            row = await session.get(Device, device_id)
        return (None, None) if row is None else (row.last_seen, row.telemetry)

    async def read_telemetry() -> tuple[RadioTelemetry, ...]:
        return await hub.next_telemetry(
            device_id, timeout=telemetry_timeout, from_database=from_database
        )

    async with hub.changing(device_id):
        started = services.clock.now()
        try:
            report = await tune(services.router_manager, creds, read_telemetry)
        except TelemetryTimeout as exc:
            failure = CommandResult.failure("timed_out", str(exc))
            done = _Done("channels", "router.tune", {}, failure, started, services.clock.now())
            (command_id,) = await _record(services, target, [done])
            return Tuning(device_id=device_id, command_id=command_id, outcome=exc)
        result = report.failure if report.failure is not None else CommandResult.success()
        finished = services.clock.now()
        done = _Done("channels", "router.tune", {}, result, started, finished, _tune_output(report))
    (command_id,) = await _record(services, target, [done])
    return Tuning(device_id=device_id, command_id=command_id, outcome=report)
