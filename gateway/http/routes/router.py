"""Platform and app routes of home routers: access, status, WiFi settings, tuning (R12, R13).

- ``PUT /platform/v1/devices/{id}/router/access``: how the service logs in; records the
  host key the router presents (trust on first use) and answers its fingerprint. Again
  later, the pinned key must still be presented (changing the password or the address
  keeps it) unless ``trust_new_host_key`` says the box was replaced.
- ``GET /platform/v1/devices/{id}/router`` (and the app's read-only
  ``GET /app/v1/devices/{id}/router``): board, wireless configuration, band steering, the
  mesh and its clients, from SSH and the last telemetry. When SSH fails the view still
  answers 200 with the telemetry, and ``ssh`` says what failed.
- ``POST .../router/wifi``, ``.../router/tune``, ``.../router/reboot``: management changes,
  each recorded as a device command (``router.set_ssid``, ``router.tune`` ...; listed by
  ``GET /platform/v1/devices/{id}/commands``). Refused 409 ``broadband_inactive`` (R12)
  while the account's broadband is not active, and 409 ``router_not_provisioned`` before
  the access is known.

**Router-side failures** are answers, never 500s: the body carries the results and an
``error`` whose code is ``router_<code>`` of the failed :class:`~devices.router.CommandResult`;
the status is **504** for ``timed_out`` (and ``telemetry_timeout``: tuning heard no
telemetry in time), **422** for ``invalid`` (the router's own configuration refuses the
value, e.g. a channel outside the band plan), **502** for the rest (``failed``: the router
refused or errored, also while suspended; ``auth_failed``: login refused;
``host_key_changed``: the router presents another key than the one pinned).

WiFi changes are applied in the order ssid, passphrase, channels, band_steering, over one
SSH session; the first failure stops the rest (reported ``skipped``).

Tuning's ``read_telemetry`` waits for the router's *next* telemetry message after the call:
:func:`on_telemetry` resolves the waiters of this process; a message that reaches another
gateway (shared subscriptions) is found in the database row the presence flush writes.
Messages arriving within :data:`TELEMETRY_SETTLE_SECONDS` of the call are not taken: they
were already on their way before a change and describe the old channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from aiohttp import web
from pydantic import Field, StringConstraints, model_validator

from devices import router_store
from devices.errors import NotFound
from devices.models import Account, Device
from devices.router import CommandResult, ProvisioningError, RouterCredentials, RouterManager
from devices.tuning import RadioTelemetry, TuneReport, score, tune
from devices.uci import BoardInfo, RouterOutputError, WirelessConfig, parse_board, parse_wireless
from gateway.http.api import Api, ApiError, Body, ErrorDetail, Out, json_out, parse_body
from gateway.http.requests import app_token_of, path_id, services_of
from gateway.mqtt.messages import DeviceMessage
from gateway.services import Services

log = logging.getLogger(__name__)

api = Api()

#: Telemetry arriving this soon after a wait began is taken as sent before it (seconds).
TELEMETRY_SETTLE_SECONDS: Final = 0.3
#: How long tuning waits for one telemetry message unless the request says otherwise.
TELEMETRY_TIMEOUT_SECONDS: Final = 60.0
#: How often a waiter looks for telemetry that reached another gateway (seconds).
TELEMETRY_POLL_SECONDS: Final = 0.5

ChangeName = Literal["ssid", "passphrase", "channels", "band_steering", "reboot"]
ChangeStatus = Literal["succeeded", "failed", "timed_out", "skipped"]
RadioName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_]{1,32}$")]


# --- telemetry waiters --------------------------------------------------------------------


class TelemetryTimeout(Exception):
    """No telemetry from the router within the time allowed."""

    def __init__(self, device_id: str, seconds: float) -> None:
        super().__init__(f"no telemetry from router {device_id} within {seconds:g} s")
        self.device_id = device_id
        self.seconds = seconds


def parse_radios(payload: Mapping[str, Any]) -> tuple[RadioTelemetry, ...] | None:
    """A router ``telemetry`` payload's radios; None when it is not in that shape."""
    radios = payload.get("radios")
    if not isinstance(radios, list) or not radios:
        return None
    try:
        return tuple(RadioTelemetry.from_dict(r) for r in radios)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


@dataclass(slots=True)
class _Waiter:
    not_before: float
    future: asyncio.Future[tuple[RadioTelemetry, ...]]


@dataclass(slots=True)
class RouterHub:
    """One gateway's in-flight router work: telemetry waiters and routers being changed."""

    waiters: dict[str, list[_Waiter]] = field(default_factory=dict)
    busy: set[str] = field(default_factory=set)

    def notify(self, device_id: str, payload: Mapping[str, Any]) -> None:
        waiting = self.waiters.get(device_id)
        if not waiting:
            return
        now = asyncio.get_running_loop().time()
        ready = [w for w in waiting if now >= w.not_before and not w.future.done()]
        if not ready:
            return
        radios = parse_radios(payload)
        if radios is None:
            log.info("router %s: telemetry without radios; still waiting", device_id)
            return
        for waiter in ready:
            waiter.future.set_result(radios)

    @contextlib.contextmanager
    def _waiting(self, device_id: str, waiter: _Waiter) -> Any:
        self.waiters.setdefault(device_id, []).append(waiter)
        try:
            yield
        finally:
            waiting = self.waiters.get(device_id, [])
            if waiter in waiting:
                waiting.remove(waiter)
            if not waiting:
                self.waiters.pop(device_id, None)

    async def next_telemetry(
        self,
        device_id: str,
        *,
        timeout: float,
        from_database: Callable[[], Awaitable[tuple[Any, ...]]],
    ) -> tuple[RadioTelemetry, ...]:
        """The radios of the device's next telemetry message (see the module docstring).

        ``from_database`` reads ``(last_seen, telemetry)`` of the device's row: a change
        after the settle time means a message that another gateway received.
        """
        loop = asyncio.get_running_loop()
        waiter = _Waiter(
            not_before=loop.time() + TELEMETRY_SETTLE_SECONDS, future=loop.create_future()
        )
        with self._waiting(device_id, waiter):
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.sleep(TELEMETRY_SETTLE_SECONDS)
                    seen = await from_database()
                    while True:
                        done, _ = await asyncio.wait(
                            {waiter.future}, timeout=TELEMETRY_POLL_SECONDS
                        )
                        if done:
                            return waiter.future.result()
                        row = await from_database()
                        if row != seen:
                            seen = row
                            radios = parse_radios(row[1] or {})
                            if radios is not None:
                                return radios
            except TimeoutError as exc:
                raise TelemetryTimeout(device_id, timeout) from exc

    @contextlib.asynccontextmanager
    async def changing(self, device_id: str) -> AsyncIterator[None]:
        """One management change at a time per router (in this gateway)."""
        if device_id in self.busy:
            raise ApiError(
                409, "router_busy", f"router {device_id} is being changed; try again shortly"
            )
        self.busy.add(device_id)
        try:
            yield
        finally:
            self.busy.discard(device_id)


_HUBS: weakref.WeakKeyDictionary[RouterManager, RouterHub] = weakref.WeakKeyDictionary()


def hub_of(services: Services) -> RouterHub:
    """The hub of this gateway (one per router manager, so per :class:`Services`)."""
    hub = _HUBS.get(services.router_manager)
    if hub is None:
        hub = _HUBS[services.router_manager] = RouterHub()
    return hub


async def on_telemetry(services: Services, msg: DeviceMessage) -> None:
    """A router's telemetry arrived (tuning waits for the next one after a change)."""
    hub = _HUBS.get(services.router_manager)
    if hub is not None:
        hub.notify(msg.device_id, msg.payload)


# --- bodies -------------------------------------------------------------------------------


class AccessIn(Body):
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(default=22, ge=1, le=65535)
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=128, repr=False)
    #: Accept the key presented now even though another one is pinned (a replaced box).
    trust_new_host_key: bool = False


class AccessOut(Out):
    device_id: str
    host: str
    port: int
    username: str
    host_key: str
    fingerprint: str
    provisioned_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, access: router_store.RouterAccess) -> AccessOut:
        return cls(
            device_id=access.device_id,
            host=access.host,
            port=access.port,
            username=access.username,
            host_key=access.host_key,
            fingerprint=access.fingerprint,
            provisioned_at=access.provisioned_at,
            updated_at=access.updated_at,
        )


class WifiIn(Body):
    """WiFi settings to change; at least one. ``channels`` maps radios to a channel or auto."""

    ssid: str | None = Field(default=None, min_length=1, max_length=32)
    passphrase: str | None = Field(default=None, min_length=8, max_length=64, repr=False)
    channels: dict[RadioName, int | Literal["auto"]] | None = Field(
        default=None, min_length=1, max_length=4
    )
    band_steering: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> WifiIn:
        if all(v is None for v in (self.ssid, self.passphrase, self.channels, self.band_steering)):
            raise ValueError("give at least one of ssid, passphrase, channels, band_steering")
        return self


class TuneIn(Body):
    telemetry_timeout_seconds: float = Field(default=TELEMETRY_TIMEOUT_SECONDS, gt=0, le=600)


# --- answers ------------------------------------------------------------------------------


class SshOut(Out):
    ok: bool
    code: str | None = None
    message: str | None = None


class BoardOut(Out):
    hostname: str
    model: str
    board_name: str
    release: str
    kernel: str


class RadioOut(Out):
    name: str
    band: str
    channel: int | None = None
    htmode: str
    disabled: bool


class InterfaceOut(Out):
    name: str
    radio: str
    ssid: str
    encryption: str
    mode: str
    has_key: bool
    bss_transition: bool
    ieee80211k: bool


class RadioTelemetryOut(Out):
    node: str
    radio: str
    band: str
    channel: int
    utilisation: float
    noise: float
    clients: int
    retry_rate: float
    signal: float | None = None
    score: float

    @classmethod
    def of(cls, t: RadioTelemetry) -> RadioTelemetryOut:
        return cls(
            node=t.node,
            radio=t.radio,
            band=t.band,
            channel=t.channel,
            utilisation=t.utilisation,
            noise=t.noise_dbm,
            clients=t.clients,
            retry_rate=t.retry_rate,
            signal=t.client_signal_dbm,
            score=round(score(t), 2),
        )


class NodeOut(Out):
    """One node of the home's mesh (``main``: the router itself) and its clients."""

    node: str
    clients: int
    radios: list[str]


class RouterOut(Out):
    device_id: str
    online: bool
    last_seen: datetime | None = None
    #: R12: managed networking is suspended while the broadband account is not active.
    suspended: bool
    provisioned: bool
    ssh: SshOut
    board: BoardOut | None = None
    radios: list[RadioOut]
    interfaces: list[InterfaceOut]
    band_steering: bool | None = None
    mesh: list[NodeOut]
    clients: int
    telemetry: list[RadioTelemetryOut]


class ChangeOut(Out):
    change: ChangeName
    status: ChangeStatus
    code: str | None = None
    message: str | None = None
    command_id: str | None = None


class ChangesOut(Out):
    """Per-change results; ``error`` is set exactly when the status is not 200."""

    device_id: str
    ok: bool
    results: list[ChangeOut]
    error: ErrorDetail | None = None


class ChannelChangeOut(Out):
    radio: str
    band: str
    from_channel: int | None = None
    to_channel: int
    score_before: float | None = None
    score_after: float | None = None
    rolled_back: bool


class TuneOut(Out):
    device_id: str
    ok: bool
    command_id: str
    before: dict[str, float]
    after: dict[str, float]
    changes: list[ChannelChangeOut]
    rolled_back: list[str]
    error: ErrorDetail | None = None


# --- helpers ------------------------------------------------------------------------------


def failure_status(code: str) -> int:
    """The HTTP status of a router-side failure (see the module docstring)."""
    if code in ("timed_out", "telemetry_timeout"):
        return 504
    if code == "invalid":
        return 422
    return 502


@dataclass(frozen=True, slots=True)
class _Target:
    device: Device
    account: Account
    creds: RouterCredentials | None


async def _target(services: Services, device_id: str, *, change: bool) -> _Target:
    """The router, its account and its credentials; for a change, R12 and provisioning."""
    async with services.db.session() as session:
        device, account = await router_store.router_of(session, device_id)
        access = await router_store.get_access(session, device_id)
    if change:
        router_store.require_managed(account)
        if access is None:
            raise router_store.NotProvisioned(device_id)
    creds = router_store.credentials(access) if access is not None else None
    return _Target(device=device, account=account, creds=creds)


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


async def _record(services: Services, target: _Target, done: Sequence[_Done]) -> list[str]:
    """Record the operations as device commands; their ids, in order."""
    async with services.db.session() as session:
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


def _change_out(done: _Done, command_id: str) -> ChangeOut:
    r = done.result
    status: ChangeStatus = (
        "succeeded" if r.ok else "timed_out" if r.code == "timed_out" else "failed"
    )
    return ChangeOut(
        change=done.change, status=status, code=r.code, message=r.error, command_id=command_id
    )


def _changes_answer(device_id: str, results: list[ChangeOut]) -> web.Response:
    failed = next((r for r in results if r.status in ("failed", "timed_out")), None)
    if failed is None:
        return json_out(ChangesOut(device_id=device_id, ok=True, results=results))
    code = failed.code or "failed"
    error = ErrorDetail(code=f"router_{code}", message=failed.message or "the router failed")
    return json_out(
        ChangesOut(device_id=device_id, ok=False, results=results, error=error),
        failure_status(code),
    )


# --- access -------------------------------------------------------------------------------


@api.route(
    "PUT",
    "/platform/v1/devices/{device_id}/router/access",
    auth="platform",
    tag="routers",
    summary="Provision a router's SSH access; pins its host key (trust on first use)",
    body=AccessIn,
    response=AccessOut,
    errors=(404, 422, 502, 504),
)
async def put_router_access(request: web.Request) -> web.StreamResponse:
    services = services_of(request)
    device_id = path_id(request, "device_id")
    body = parse_body(await request.read(), AccessIn)
    async with services.db.session() as session:
        await router_store.router_of(session, device_id)
        existing = await router_store.get_access(session, device_id)
    pinned = None if existing is None or body.trust_new_host_key else existing.host_key
    try:
        creds = RouterCredentials(
            host=body.host,
            port=body.port,
            username=body.username,
            password=body.password,
            pinned_host_key=pinned,
        )
    except ValueError as exc:
        raise ApiError(400, "invalid_body", str(exc)) from exc
    try:
        host_key = await services.router_manager.provision_host_key(creds)
    except ProvisioningError as exc:
        message = exc.message
        if exc.code == "host_key_changed":
            message += "; if the router was replaced, PUT again with trust_new_host_key true"
        raise ApiError(failure_status(exc.code), f"router_{exc.code}", message) from exc
    async with services.db.session() as session:
        await router_store.router_of(session, device_id)  # still bound
        access = await router_store.save_access(
            session, device_id=device_id, creds=creds, host_key=host_key, now=services.clock.now()
        )
        await session.commit()
    log.info("router %s: access provisioned, host key %s", device_id, access.fingerprint)
    return json_out(AccessOut.of(access))


# --- status -------------------------------------------------------------------------------


async def _read_router(
    manager: RouterManager, creds: RouterCredentials
) -> tuple[SshOut, BoardInfo | None, WirelessConfig | None]:
    async with manager.session(creds) as session:
        status = await session.read_status()
        if not status.ok:
            return SshOut(ok=False, code=status.code, message=status.error), None, None
        shown = await session.read_wireless()
    if not shown.ok:
        return SshOut(ok=False, code=shown.code, message=shown.error), None, None
    try:
        return SshOut(ok=True), parse_board(status.output), parse_wireless(shown.output)
    except RouterOutputError as exc:
        return SshOut(ok=False, code="failed", message=str(exc)), None, None


def _mesh(telemetry: Sequence[RadioTelemetry]) -> list[NodeOut]:
    nodes: dict[str, NodeOut] = {}
    for t in telemetry:
        node = nodes.get(t.node)
        if node is None:
            nodes[t.node] = NodeOut(node=t.node, clients=t.clients, radios=[t.radio])
        else:
            nodes[t.node] = NodeOut(
                node=t.node, clients=node.clients + t.clients, radios=[*node.radios, t.radio]
            )
    return list(nodes.values())


async def router_view(services: Services, target: _Target, *, for_app: bool) -> RouterOut:
    device = target.device
    if target.creds is None:
        ssh = SshOut(
            ok=False, code="not_provisioned", message="the router's SSH access is not provisioned"
        )
        board: BoardInfo | None = None
        config: WirelessConfig | None = None
    else:
        ssh, board, config = await _read_router(services.router_manager, target.creds)
    if for_app and not ssh.ok:
        # The family sees that management is unavailable, not the operator's addresses.
        ssh = SshOut(ok=False, code=ssh.code)
    telemetry = parse_radios(device.telemetry or {}) or ()
    return RouterOut(
        device_id=device.device_id,
        online=device.online,
        last_seen=device.last_seen,
        suspended=target.account.broadband_state != "active",
        provisioned=target.creds is not None,
        ssh=ssh,
        board=None if board is None else BoardOut(**_board_fields(board)),
        radios=[
            RadioOut(
                name=r.name, band=r.band, channel=r.channel, htmode=r.htmode, disabled=r.disabled
            )
            for r in (config.radios if config else ())
        ],
        interfaces=[
            InterfaceOut(
                name=i.name,
                radio=i.device,
                ssid=i.ssid,
                encryption=i.encryption,
                mode=i.mode,
                has_key=i.has_key,
                bss_transition=i.bss_transition,
                ieee80211k=i.ieee80211k,
            )
            for i in (config.interfaces if config else ())
        ],
        band_steering=config.band_steering if config else None,
        mesh=_mesh(telemetry),
        clients=sum(t.clients for t in telemetry),
        telemetry=[RadioTelemetryOut.of(t) for t in telemetry],
    )


def _board_fields(board: BoardInfo) -> dict[str, str]:
    return {
        "hostname": board.hostname,
        "model": board.model,
        "board_name": board.board_name,
        "release": board.release,
        "kernel": board.kernel,
    }


@api.route(
    "GET",
    "/platform/v1/devices/{device_id}/router",
    auth="platform",
    tag="routers",
    summary="A router's status, WiFi configuration, mesh and clients (SSH and telemetry)",
    response=RouterOut,
    errors=(404,),
)
async def get_router(request: web.Request) -> web.StreamResponse:
    services = services_of(request)
    target = await _target(services, path_id(request, "device_id"), change=False)
    return json_out(await router_view(services, target, for_app=False))


@api.route(
    "GET",
    "/app/v1/devices/{device_id}/router",
    auth="app",
    tag="app",
    summary="The family's router: status, WiFi, mesh and clients (read-only)",
    response=RouterOut,
    errors=(404,),
)
async def app_router(request: web.Request) -> web.StreamResponse:
    services = services_of(request)
    token = app_token_of(request)
    device_id = path_id(request, "device_id")
    target = await _target(services, device_id, change=False)
    if target.account.account_id != token.account_id:
        raise NotFound("router", device_id)  # 404, never 403
    return json_out(await router_view(services, target, for_app=True))


# --- changes ------------------------------------------------------------------------------


@api.route(
    "POST",
    "/platform/v1/devices/{device_id}/router/wifi",
    auth="platform",
    tag="routers",
    summary="Change SSID, passphrase, channels or band steering (R12: refused while stopped)",
    body=WifiIn,
    response=ChangesOut,
    errors=(404, 409, 422, 502, 504),
)
async def post_router_wifi(request: web.Request) -> web.StreamResponse:
    services = services_of(request)
    device_id = path_id(request, "device_id")
    body = parse_body(await request.read(), WifiIn)
    target = await _target(services, device_id, change=True)
    assert target.creds is not None
    plan: list[tuple[ChangeName, str, dict[str, Any]]] = []
    if body.ssid is not None:
        plan.append(("ssid", "router.set_ssid", {"ssid": body.ssid}))
    if body.passphrase is not None:
        plan.append(("passphrase", "router.set_passphrase", {"passphrase": body.passphrase}))
    if body.channels is not None:
        plan.append(("channels", "router.set_channels", {"channels": dict(body.channels)}))
    if body.band_steering is not None:
        plan.append(("band_steering", "router.set_band_steering", {"enabled": body.band_steering}))
    done: list[_Done] = []
    async with (
        hub_of(services).changing(device_id),
        services.router_manager.session(target.creds) as ssh,
    ):
        for change, method, params in plan:
            started = services.clock.now()
            if change == "ssid":
                result = await ssh.set_ssid(params["ssid"])
            elif change == "passphrase":
                result = await ssh.set_passphrase(params["passphrase"])
            elif change == "channels":
                result = await ssh.set_channels(params["channels"])
            else:
                result = await ssh.set_band_steering(params["enabled"])
            done.append(_Done(change, method, params, result, started, services.clock.now()))
            if not result.ok:
                break
    ids = await _record(services, target, done)
    results = [_change_out(d, i) for d, i in zip(done, ids, strict=True)]
    results += [ChangeOut(change=change, status="skipped") for change, _, _ in plan[len(done) :]]
    return _changes_answer(device_id, results)


@api.route(
    "POST",
    "/platform/v1/devices/{device_id}/router/reboot",
    auth="platform",
    tag="routers",
    summary="Reboot the router (R12: refused while stopped)",
    response=ChangesOut,
    errors=(404, 409, 502, 504),
)
async def post_router_reboot(request: web.Request) -> web.StreamResponse:
    services = services_of(request)
    device_id = path_id(request, "device_id")
    target = await _target(services, device_id, change=True)
    assert target.creds is not None
    async with hub_of(services).changing(device_id):
        started = services.clock.now()
        result = await services.router_manager.reboot(target.creds)
        done = _Done("reboot", "router.reboot", {}, result, started, services.clock.now())
    (command_id,) = await _record(services, target, [done])
    return _changes_answer(device_id, [_change_out(done, command_id)])


def _round(scores: Mapping[str, float]) -> dict[str, float]:
    return {radio: round(value, 2) for radio, value in scores.items()}


def _tune_output(report: TuneReport) -> dict[str, Any]:
    return {
        "before": _round(report.scores("before")),
        "after": _round(report.scores("after")),
        "changes": [
            {"radio": c.radio, "from": c.from_channel, "to": c.to_channel} for c in report.changes
        ],
        "rolled_back": list(report.rolled_back),
    }


@api.route(
    "POST",
    "/platform/v1/devices/{device_id}/router/tune",
    auth="platform",
    tag="routers",
    summary="Tune the WiFi channels from telemetry and a scan; before/after scores (R13)",
    body=TuneIn,
    response=TuneOut,
    errors=(404, 409, 502, 504),
)
async def post_router_tune(request: web.Request) -> web.StreamResponse:
    services = services_of(request)
    device_id = path_id(request, "device_id")
    raw = await request.read()
    body = parse_body(raw, TuneIn) if raw.strip() else TuneIn()
    target = await _target(services, device_id, change=True)
    assert target.creds is not None
    hub = hub_of(services)

    async def from_database() -> tuple[Any, ...]:
        async with services.db.session() as session:
            row = await session.get(Device, device_id)
        return (None, None) if row is None else (row.last_seen, row.telemetry)

    async def read_telemetry() -> tuple[RadioTelemetry, ...]:
        return await hub.next_telemetry(
            device_id, timeout=body.telemetry_timeout_seconds, from_database=from_database
        )

    async with hub.changing(device_id):
        started = services.clock.now()
        try:
            report = await tune(services.router_manager, target.creds, read_telemetry)
        except TelemetryTimeout as exc:
            failure = CommandResult.failure("timed_out", str(exc))
            done = _Done("channels", "router.tune", {}, failure, started, services.clock.now())
            (command_id,) = await _record(services, target, [done])
            silent = TuneOut(
                device_id=device_id,
                ok=False,
                command_id=command_id,
                before={},
                after={},
                changes=[],
                rolled_back=[],
                error=ErrorDetail(code="telemetry_timeout", message=str(exc)),
            )
            return json_out(silent, failure_status("telemetry_timeout"))
        result = report.failure if report.failure is not None else CommandResult.success()
        finished = services.clock.now()
        done = _Done("channels", "router.tune", {}, result, started, finished, _tune_output(report))
    (command_id,) = await _record(services, target, [done])
    error: ErrorDetail | None = None
    if report.failure is not None:
        code = report.failure.code
        error = ErrorDetail(code=f"router_{code}", message=report.failure.error or "failed")
    out = TuneOut(
        device_id=device_id,
        ok=report.ok,
        command_id=command_id,
        before=_round(report.scores("before")),
        after=_round(report.scores("after")),
        changes=[
            ChannelChangeOut(
                radio=c.radio,
                band=c.band,
                from_channel=c.from_channel,
                to_channel=c.to_channel,
                score_before=None if c.score_before is None else round(c.score_before, 2),
                score_after=None if c.score_after is None else round(c.score_after, 2),
                rolled_back=c.radio in report.rolled_back,
            )
            for c in report.changes
        ],
        rolled_back=list(report.rolled_back),
        error=error,
    )
    status = 200 if report.failure is None else failure_status(report.failure.code)
    return json_out(out, status)
