"""Platform and app routes of home routers: access, status, WiFi settings, tuning (R12, R13).

The routes translate the wire; :mod:`gateway.router_ops` does the work.

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
  while the account's broadband is not active, 409 ``router_not_provisioned`` before
  the access is known, and 409 ``router_busy`` while another change of the router runs.

**Router-side failures** are answers, never 500s: the body carries the results and an
``error`` whose code is ``router_<code>`` of the failed :class:`~devices.router.CommandResult`;
the status is **504** for ``timed_out`` (and ``telemetry_timeout``: tuning heard no
telemetry in time), **422** for ``invalid`` (the router's own configuration refuses the
value, e.g. a channel outside the band plan), **502** for the rest (``failed``: the router
refused or errored, also while suspended; ``auth_failed``: login refused;
``host_key_changed``: the router presents another key than the one pinned).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from aiohttp import web
from pydantic import Field, StringConstraints, model_validator

from devices import router_store
from devices.router import ProvisioningError
from devices.tuning import RadioTelemetry, score
from gateway import home_network, router_ops
from gateway.errors import Declared, failure_status
from gateway.http.api import Api, ApiError, Body, ErrorDetail, Out, json_out, parse_body
from gateway.http.requests import app_token_of, path_id, services_of
from gateway.router_ops import TELEMETRY_TIMEOUT_SECONDS, ChangeName
from gateway.telemetry_hub import TelemetryTimeout

api = Api()

ChangeStatus = Literal["succeeded", "failed", "timed_out", "skipped"]
RadioName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_]{1,32}$")]


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
        return cls.model_validate(access, from_attributes=True)


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

    @classmethod
    def of(cls, view: router_ops.RouterView) -> RouterOut:
        device, board, config = view.device, view.board, view.config
        return cls(
            device_id=device.device_id,
            online=device.online,
            last_seen=device.last_seen,
            suspended=view.suspended,
            provisioned=view.provisioned,
            ssh=SshOut.model_validate(view.ssh, from_attributes=True),
            board=None if board is None else BoardOut.model_validate(board, from_attributes=True),
            radios=[
                RadioOut.model_validate(r, from_attributes=True)
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
            mesh=[
                NodeOut(node=n.node, clients=n.clients, radios=list(n.radios)) for n in view.mesh
            ],
            clients=view.clients,
            telemetry=[RadioTelemetryOut.of(t) for t in view.telemetry],
        )


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
    #: The household's tuning (the app's): the package whose tuning it used (R16, R17).
    package_id: str | None = None

    @classmethod
    def of(cls, tuning: router_ops.Tuning) -> TuneOut:
        report = tuning.outcome
        if isinstance(report, TelemetryTimeout):
            return cls(
                device_id=tuning.device_id,
                ok=False,
                command_id=tuning.command_id,
                before={},
                after={},
                changes=[],
                rolled_back=[],
                error=ErrorDetail(code="telemetry_timeout", message=str(report)),
            )
        error: ErrorDetail | None = None
        if report.failure is not None:
            code = report.failure.code
            error = ErrorDetail(code=f"router_{code}", message=report.failure.error or "failed")
        return cls(
            device_id=tuning.device_id,
            ok=report.ok,
            command_id=tuning.command_id,
            before=router_ops.rounded(report.scores("before")),
            after=router_ops.rounded(report.scores("after")),
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


# --- translation ----------------------------------------------------------------------------


def _change_out(applied: router_ops.Applied) -> ChangeOut:
    r = applied.result
    status: ChangeStatus = (
        "succeeded" if r.ok else "timed_out" if r.code == "timed_out" else "failed"
    )
    return ChangeOut(
        change=applied.change,
        status=status,
        code=r.code,
        message=r.error,
        command_id=applied.command_id,
    )


def _changes_answer(changes: router_ops.Changes) -> web.Response:
    results = [_change_out(a) for a in changes.applied]
    results += [ChangeOut(change=change, status="skipped") for change in changes.skipped]
    failed = next((r for r in results if r.status in ("failed", "timed_out")), None)
    if failed is None:
        return json_out(ChangesOut(device_id=changes.device_id, ok=True, results=results))
    code = failed.code or "failed"
    error = ErrorDetail(code=f"router_{code}", message=failed.message or "the router failed")
    return json_out(
        ChangesOut(device_id=changes.device_id, ok=False, results=results, error=error),
        failure_status(code),
    )


def _tune_answer(tuning: router_ops.Tuning, package_id: str | None = None) -> web.Response:
    outcome = tuning.outcome
    if isinstance(outcome, TelemetryTimeout):
        status = failure_status("telemetry_timeout")
    else:
        status = 200 if outcome.failure is None else failure_status(outcome.failure.code)
    out = TuneOut.of(tuning)
    if package_id is not None:
        out = out.model_copy(update={"package_id": package_id})
    return json_out(out, status)


# --- access -------------------------------------------------------------------------------

_FAILED = "the router failed: the results so far, and the error"
#: Router-side failures answer the results, not the error shape (the module's docstring).
_FAILED_CHANGE = dict.fromkeys((422, 502, 504), (ChangesOut, _FAILED))
_FAILED_TUNING = dict.fromkeys((422, 502, 504), (TuneOut, _FAILED))


#: What a change run on the router over SSH can answer (R12: refused while stopped; the
#: router's own failures, :data:`gateway.errors.ROUTER_FAILURES`).
CHANGING: tuple[Declared, ...] = (
    "broadband_inactive",
    "router_not_provisioned",
    "router_busy",
    "router_invalid",
    "router_failed",
    "router_auth_failed",
    "router_host_key_changed",
    "router_timed_out",
)


@api.route(
    "PUT",
    "/platform/v1/devices/{device_id}/router/access",
    auth="platform",
    tag="routers",
    summary="Provision a router's SSH access; pins its host key (trust on first use)",
    body=AccessIn,
    response=AccessOut,
    errors=("router_failed", "router_auth_failed", "router_host_key_changed", "router_timed_out"),
)
async def put_router_access(request: web.Request) -> web.StreamResponse:
    """Provision how the service logs in to the router over SSH, and pin the host key it
    presents (trust on first use); answers its fingerprint. Later, the pinned key must still be
    presented unless trust_new_host_key says the box was replaced (502
    router_host_key_changed)."""
    services = services_of(request)
    device_id = path_id(request, "device_id")
    body = parse_body(await request.read(), AccessIn)
    try:
        access = await router_ops.provision_access(
            services,
            device_id,
            host=body.host,
            port=body.port,
            username=body.username,
            password=body.password,
            trust_new_host_key=body.trust_new_host_key,
        )
    except ProvisioningError as exc:
        message = exc.message
        if exc.code == "host_key_changed":
            message += "; if the router was replaced, PUT again with trust_new_host_key true"
        raise ApiError(failure_status(exc.code), f"router_{exc.code}", message) from exc
    return json_out(AccessOut.of(access))


# --- status -------------------------------------------------------------------------------


@api.route(
    "GET",
    "/platform/v1/devices/{device_id}/router",
    auth="platform",
    tag="routers",
    summary="A router's status, WiFi configuration, mesh and clients (SSH and telemetry)",
    response=RouterOut,
    errors=("not_found",),
)
async def get_router(request: web.Request) -> web.StreamResponse:
    """The router's status from SSH and its last telemetry: board, radios and WiFi interfaces,
    band steering, the mesh and its clients. When SSH fails the view still answers 200 from
    telemetry, and ssh says what failed."""
    services = services_of(request)
    view = await router_ops.router_view(services, path_id(request, "device_id"))
    return json_out(RouterOut.of(view))


@api.route(
    "GET",
    "/app/v1/devices/{device_id}/router",
    auth="app",
    tag="app",
    summary="The family's router: status, WiFi, mesh and clients (read-only)",
    response=RouterOut,
    errors=("not_found",),
)
async def app_router(request: web.Request) -> web.StreamResponse:
    """The family's router as the app sees it (read-only): the same view as the platform's, for
    a router of the token's account only."""
    services = services_of(request)
    token = app_token_of(request)
    view = await router_ops.router_view(
        services, path_id(request, "device_id"), for_account=token.account_id
    )
    return json_out(RouterOut.of(view))


# --- changes ------------------------------------------------------------------------------


@api.route(
    "POST",
    "/platform/v1/devices/{device_id}/router/wifi",
    auth="platform",
    tag="routers",
    summary="Change SSID, passphrase, channels or band steering (R12: refused while stopped)",
    body=WifiIn,
    response=ChangesOut,
    answers=_FAILED_CHANGE,
    errors=(
        *CHANGING,
        "invalid_setting",
    ),
)
async def post_router_wifi(request: web.Request) -> web.StreamResponse:
    """Change the SSID, passphrase, channels or band steering; each change is recorded as a
    device command. Refused while broadband is stopped (409, R12). A router-side failure
    answers the per-change results with an error (422, 502, 504)."""
    services = services_of(request)
    device_id = path_id(request, "device_id")
    body = parse_body(await request.read(), WifiIn)
    wanted = router_ops.WifiChange(
        ssid=body.ssid,
        passphrase=body.passphrase,
        channels=body.channels,
        band_steering=body.band_steering,
    )
    return _changes_answer(await router_ops.change_wifi(services, device_id, wanted))


@api.route(
    "POST",
    "/platform/v1/devices/{device_id}/router/reboot",
    auth="platform",
    tag="routers",
    summary="Reboot the router (R12: refused while stopped)",
    response=ChangesOut,
    answers=_FAILED_CHANGE,
    errors=CHANGING,
)
async def post_router_reboot(request: web.Request) -> web.StreamResponse:
    """Reboot the router, recorded as a device command. Refused while broadband is stopped
    (409, R12); a router-side failure answers the result with an error (502, 504)."""
    services = services_of(request)
    changes = await router_ops.reboot(services, path_id(request, "device_id"))
    return _changes_answer(changes)


@api.route(
    "POST",
    "/platform/v1/devices/{device_id}/router/tune",
    auth="platform",
    tag="routers",
    summary="Tune the WiFi channels from telemetry and a scan; before/after scores (R13)",
    body=TuneIn,
    response=TuneOut,
    answers=_FAILED_TUNING,
    errors=(
        *CHANGING,
        "telemetry_timeout",
    ),
)
async def post_router_tune(request: web.Request) -> web.StreamResponse:
    """Tune the WiFi channels (R13): from telemetry and a scan, pick better channels, apply
    them, and compare scores before and after, rolling back a change that made things worse.
    504 telemetry_timeout when no telemetry came in time."""
    services = services_of(request)
    device_id = path_id(request, "device_id")
    raw = await request.read()
    body = parse_body(raw, TuneIn) if raw.strip() else TuneIn()
    tuning = await router_ops.tune_router(
        services, device_id, telemetry_timeout=body.telemetry_timeout_seconds
    )
    return _tune_answer(tuning)


@api.route(
    "POST",
    "/app/v1/devices/{device_id}/tune",
    auth="app",
    tag="app",
    summary="The family's own WiFi tuning, paid by a package's tuning (R13, R16, R17)",
    body=TuneIn,
    response=TuneOut,
    answers=_FAILED_TUNING,
    errors=(
        "not_found",
        "tuning_not_covered",
        "tunings_used_up",
        *CHANGING,
        "telemetry_timeout",
    ),
)
async def app_tune(request: web.Request) -> web.StreamResponse:
    """The household's own tuning of its router (R13), allowed only while a whole-home WiFi
    package or a tuning pack covers the router with a tuning left (403 tuning_not_covered, R16;
    403 tunings_used_up, R17). A completed run uses that tuning (package_id says whose); a run
    the router failed gives it back. Another family's router is 404."""
    services = services_of(request)
    raw = await request.read()
    body = parse_body(raw, TuneIn) if raw.strip() else TuneIn()
    done = await home_network.household_tune(
        services,
        path_id(request, "device_id"),
        account_id=app_token_of(request).account_id,
        telemetry_timeout=body.telemetry_timeout_seconds,
    )
    return _tune_answer(done.tuning, done.package_id)
