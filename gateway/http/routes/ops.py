"""Ops routes: health, metrics, OpenAPI, the clock, and the filesystem store's URLs."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Field

from devices.clock import ClockNotAdjustable
from gateway import health, retention
from gateway.http.api import Api, ApiError, Body, Out, json_out, parse_body
from gateway.http.requests import OPENAPI, services_of
from storage.fsstore import FilesystemObjectStore, SignatureError, SignedUpload
from storage.objects import ObjectExists, ObjectNotFound, UploadRefused

api = Api()


class HealthOut(Out):
    """Each dependency's state; ``mqtt`` is false too for a gateway run without MQTT."""

    status: str
    mqtt: bool
    database: bool
    object_store: bool


@api.route(
    "GET",
    "/healthz",
    auth="none",
    summary="Liveness and dependencies: 503, with this same report, while any is down",
    response=HealthOut,
    answers={503: (HealthOut, "a dependency is down: the same report, status degraded")},
)
async def healthz(request: web.Request) -> web.StreamResponse:
    """Check each dependency now (MQTT, the database, the object store) and report it: 200
    while all answer, 503 with the same report (status degraded) while any is down. Load
    balancers and orchestrators probe it; it needs no token."""
    # The documented exception to the error envelope: a 503 carries the report itself.
    report = await health.check(services_of(request))
    out = HealthOut(
        status="ok" if report.ok else "degraded",
        mqtt=bool(report.mqtt),
        database=report.database,
        object_store=report.object_store,
    )
    return json_out(out, 200 if report.ok else 503)


@api.route("GET", "/metrics", auth="none", summary="Prometheus metrics", content_type="text/plain")
async def metrics(request: web.Request) -> web.StreamResponse:
    """The gateway's Prometheus metrics in the text exposition format: HTTP and MQTT traffic,
    ingest batches, jobs, and the dependency gauges, read fresh at each scrape."""
    services = services_of(request)
    await health.check(services)  # the dependency gauges are read fresh, not remembered
    body = generate_latest(services.metrics.registry)
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


@api.route("GET", "/openapi.json", auth="none", summary="This OpenAPI document")
async def openapi(request: web.Request) -> web.StreamResponse:
    """This OpenAPI 3.1 document: every route with its parameters, bodies, answers and the
    error codes it can answer, built from the same declarations that register the routes."""
    return web.json_response(request.app[OPENAPI])


class ClockIn(Body):
    advance_seconds: float = Field(ge=0, le=10 * 365 * 86400)


class ClockOut(Out):
    now: str
    adjustable: bool


@api.route("GET", "/ops/v1/clock", auth="platform", summary="The service clock", response=ClockOut)
async def get_clock(request: web.Request) -> web.StreamResponse:
    """The service clock's current time and whether it can be moved (a manual or simulated
    clock, as the demo and the fleet simulator run; never the wall clock)."""
    clock = services_of(request).clock
    return json_out(ClockOut(now=clock.now().isoformat(), adjustable=clock.adjustable))


@api.route(
    "POST",
    "/ops/v1/clock",
    auth="platform",
    body=ClockIn,
    response=ClockOut,
    summary="Move a manual or simulated clock; Clock-driven jobs then run",
    errors=("not_found",),
)
async def advance_clock(request: web.Request) -> web.StreamResponse:
    """Move a manual or simulated clock forward by advance_seconds, then run every clock-driven
    job (renewals, retention, emergency-resume expiry) once at the new time. The wall clock
    cannot be moved: 404 not_found."""
    services = services_of(request)
    if not services.clock.adjustable:
        raise ApiError(404, "not_found", "the wall clock cannot be moved")
    body = parse_body(await request.read(), ClockIn)
    try:
        now = services.clock.advance(body.advance_seconds)
    except ClockNotAdjustable as exc:
        raise ApiError(404, "not_found", str(exc)) from exc
    await services.jobs.run_all()
    return json_out(ClockOut(now=now.isoformat(), adjustable=True))


def _fs_store(request: web.Request) -> FilesystemObjectStore:
    store = services_of(request).fs_store
    if store is None:
        raise ApiError(404, "not_found", "this gateway does not serve objects")
    return store


def _refused(exc: SignatureError) -> ApiError:
    return ApiError(403, "forbidden", f"presigned URL refused: {exc.reason}")


@api.route(
    "GET",
    "/objects/{key:.+}",
    auth="none",
    tag="objects",
    summary="Download through a presigned URL",
    content_type="application/octet-stream",
    errors=("forbidden", "not_found", "invalid_key"),
)
async def get_object(request: web.Request) -> web.StreamResponse:
    """Download an object of the filesystem store through a presigned URL (expires and sig in
    the query, as presign_get made them). A gateway on S3 serves no objects (404); a URL
    expired or signed for another key is 403."""
    store = _fs_store(request)
    key = request.match_info["key"]
    try:
        store.verify("GET", key, request.query.get("expires"), request.query.get("sig"))
    except SignatureError as exc:
        raise _refused(exc) from exc
    try:
        data = await store.get(key)
    except ObjectNotFound as exc:
        raise ApiError(404, "not_found", f"no object {key}") from exc
    content_type = {".ts": "video/mp2t", ".mp4": "video/mp4"}.get(
        key[key.rfind(".") :], "application/octet-stream"
    )
    return web.Response(body=data, content_type=content_type)


#: Read size of an upload's body (the store batches these into larger writes).
UPLOAD_CHUNK = 64 * 1024


def _granted(request: web.Request) -> tuple[FilesystemObjectStore, str, SignedUpload]:
    """The store, the key and what the upload URL's signature binds (size, SHA-256); the
    request's ``Content-Length`` must be that size, checked before any body is read."""
    store = _fs_store(request)
    key = request.match_info["key"]
    query = request.query
    try:
        grant = store.verify_put(
            key,
            expires=query.get("expires"),
            sig=query.get("sig"),
            size=query.get("bytes"),
            sha256=query.get("sha256"),
        )
    except SignatureError as exc:
        raise _refused(exc) from exc
    length = request.content_length
    if length is None:
        raise ApiError(411, "length_required", f"send Content-Length: {grant.size}")
    if length > grant.size:
        raise ApiError(413, "too_large", f"{length} bytes sent, {grant.size} granted")
    if length < grant.size:
        raise ApiError(400, "size_mismatch", f"{length} bytes sent, {grant.size} granted")
    return store, key, grant


@api.route(
    "PUT",
    "/objects/{key:.+}",
    auth="none",
    tag="objects",
    summary="Upload a new object through a presigned URL: exactly the granted bytes (size "
    "and SHA-256 bound into the URL), checked before it is stored; never a replacement",
    errors=(
        "forbidden",
        "not_found",
        "invalid_key",
        "length_required",
        "too_large",
        "size_mismatch",
        "checksum_mismatch",
        "upload_incomplete",
        "object_exists",
    ),
)
async def put_object(request: web.Request) -> web.StreamResponse:
    """Upload a new object of the filesystem store through a presigned URL: exactly the granted
    bytes (size and SHA-256 bound into the URL and checked before the object is stored), with
    Content-Length. An existing object is never replaced (412 object_exists, as S3 answers If-
    None-Match)."""
    store, key, grant = _granted(request)
    try:
        await store.create_verified(key, request.content.iter_chunked(UPLOAD_CHUNK), grant=grant)
    except ObjectExists as exc:
        # 412 as S3 answers a PUT with ``If-None-Match: *`` onto an existing key.
        raise ApiError(412, "object_exists", f"an object is already stored at {key}") from exc
    except UploadRefused as exc:
        status = 413 if exc.reason == "too_large" else 400
        raise ApiError(status, exc.reason, str(exc)) from exc
    except ConnectionResetError as exc:
        # The client went away mid-body: nothing was stored; an outcome, not a fault.
        raise ApiError(400, "upload_incomplete", "the connection closed mid-body") from exc
    return web.Response(status=200)


#: The console's files (plain HTML, JavaScript modules and CSS, no build step), read once.
_CONSOLE_DIR = Path(__file__).parents[1] / "console"
_CONSOLE_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
_CONSOLE = {
    path.name: (path.read_bytes(), _CONSOLE_TYPES[path.suffix])
    for path in sorted(_CONSOLE_DIR.iterdir())
    if path.suffix in _CONSOLE_TYPES
}
#: The console talks to this origin only; the player may read HLS from the object store.
_CONSOLE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; media-src * blob:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _console_file(name: str) -> web.Response:
    try:
        body, content_type = _CONSOLE[name]
    except KeyError as exc:
        raise ApiError(404, "not_found", f"the console has no file {name}") from exc
    return web.Response(
        body=body, content_type=content_type, charset="utf-8", headers=_CONSOLE_HEADERS
    )


@api.route(
    "GET",
    "/console",
    auth="none",
    summary="The web console: the family's and the operator's views",
    content_type="text/html",
)
async def console(request: web.Request) -> web.StreamResponse:
    """The web console's page. Signed in with an app token it shows the family's devices,
    each camera's day (recordings, gaps by cause, events with thumbnails), playback from
    any moment, export and save of a range, the saved clips and the router's WiFi; with
    the platform token, the operator's accounts, devices, broadband, orders, subscriptions,
    charges and the fleet's health. The token is kept in the tab's session storage; one
    handed over as ``#token=`` or ``?token=`` is taken out of the address at once."""
    return _console_file("index.html")


@api.route(
    "GET",
    "/console/{name:[a-z]+\\.(?:js|css)}",
    auth="none",
    summary="The web console's scripts and style sheet",
    content_type="text/plain",
    errors=("not_found",),
)
async def console_asset(request: web.Request) -> web.StreamResponse:
    """One of the console's JavaScript modules or its style sheet, served as stored."""
    return _console_file(request.match_info["name"])


class ReconcileIn(Body):
    allow_mass_delete: bool = False


class RefusedOut(Out):
    device_id: str
    orphans: int
    objects: int
    reason: str


class ReconcileOut(Out):
    deleted: int
    missing: list[str]
    refused_devices: list[RefusedOut]


@api.route(
    "POST",
    "/ops/v1/reconcile",
    auth="platform",
    body=ReconcileIn,
    response=ReconcileOut,
    summary="Remove unindexed recordings; report indexed ones with no object",
)
async def run_reconcile(request: web.Request) -> web.StreamResponse:
    """Reconcile the object store with the index: delete stored recordings no segment indexes,
    report indexed segments whose object is missing. A device whose orphans look like a mass
    deletion is refused and reported unless allow_mass_delete is true."""
    body = parse_body(await request.read(), ReconcileIn)
    result = await retention.reconcile(
        services_of(request), allow_mass_delete=body.allow_mass_delete
    )
    return json_out(
        ReconcileOut(
            deleted=result.deleted,
            missing=list(result.plan.missing),
            refused_devices=[
                RefusedOut(
                    device_id=r.device_id,
                    orphans=len(r.orphans),
                    objects=r.objects,
                    reason=r.reason,
                )
                for r in result.plan.refused_devices
            ],
        )
    )
