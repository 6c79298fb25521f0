"""``create_app(services=...)``: the aiohttp application of one gateway."""

from __future__ import annotations

import hmac
import logging
import time
from datetime import timedelta
from typing import Any

from aiohttp import web

from devices.accounts import resolve_app_token
from gateway.errors import REFUSALS, http_status
from gateway.http.api import ApiError, RouteSpec, error_response, openapi_document
from gateway.http.requests import APP_TOKEN, OPENAPI, ROUTES, SERVICES, services_of
from gateway.http.routes import (
    app,
    broadband,
    charges,
    clips,
    commands,
    credentials,
    family_cloud,
    home_network,
    memberships,
    ops,
    platform,
    playback,
    router,
    subscriptions,
    thumbnails,
)
from gateway.http.sessions import SESSION_PARAM, authenticated_session
from gateway.services import Services
from storage.objects import InvalidKey

log = logging.getLogger(__name__)

#: Every route module's routes, in the order of the OpenAPI document.
APIS = (
    ops.api,
    platform.api,
    credentials.api,
    subscriptions.api,
    charges.api,
    home_network.api,
    broadband.api,
    commands.api,
    app.api,
    playback.api,
    clips.api,
    family_cloud.api,
    memberships.api,
    thumbnails.api,
    router.api,
)


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def _authorize(spec: RouteSpec, request: web.Request) -> None:
    """The route's caller: the platform's token, the broker hooks' own token (the hooks
    are 404, as if absent, while ``KANJIA_BROKER_HOOK_TOKEN`` is unset), an app token, or
    a playback session's credential in the query (``app_or_session``: when one is given)."""
    if spec.auth == "none":
        return
    if spec.auth == "session" or (spec.auth == "app_or_session" and SESSION_PARAM in request.query):
        authenticated_session(request)
        return
    services = services_of(request)
    if spec.auth == "broker" and not services.settings.broker_hook_token:
        raise ApiError(404, "not_found", "the broker hooks are off (no KANJIA_BROKER_HOOK_TOKEN)")
    token = _bearer(request)
    if token is None:
        raise ApiError(401, "unauthorized", "a bearer token is required")
    if spec.auth in ("platform", "broker"):
        expected = {
            "platform": services.settings.platform_token,
            "broker": services.settings.broker_hook_token,
        }[spec.auth]
        if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
            raise ApiError(401, "unauthorized", f"the {spec.auth} token is not valid")
        return
    async with services.db.session() as session:
        app_token = await resolve_app_token(
            session,
            token,
            now=services.clock.now(),
            ttl=timedelta(days=services.settings.app_token_ttl_days),
        )
    if app_token is None:
        raise ApiError(401, "unauthorized", "the app token is not valid")
    request[APP_TOKEN] = app_token


def _wrap(spec: RouteSpec) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        await _authorize(spec, request)
        return await spec.handler(request)

    handler.__name__ = spec.handler.__name__
    return handler


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every failure leaves as the JSON error shape; counts every request."""
    services = request.app[SERVICES]
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    started = time.perf_counter()
    try:
        response: web.StreamResponse = await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.code, exc.message, exc.rule)
    except REFUSALS as exc:
        response = error_response(http_status(exc), exc.code, exc.message, exc.rule)
    except InvalidKey as exc:
        response = error_response(400, "invalid_key", str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status, "http_error"
        )
        response = error_response(exc.status, code, exc.reason)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        response = error_response(500, "internal", "internal error")
    services.metrics.http_requests.labels(name, str(response.status)).inc()
    services.metrics.http_latency.labels(name).observe(time.perf_counter() - started)
    return response


def create_app(*, services: Services) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=64 * 1024 * 1024)
    app[SERVICES] = services
    routes: list[RouteSpec] = []
    for api in APIS:
        api.install(app, _wrap)
        routes.extend(api.routes)
    app[ROUTES] = routes
    app[OPENAPI] = openapi_document(routes, title="Kanjia", version="1")
    return app
