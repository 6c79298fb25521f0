"""The HTTP plumbing shared by every route: declared routes, errors, bodies, OpenAPI.

Every route is declared once with :meth:`Api.route` (method, path, auth, body and
response models, the error codes it answers); the same declaration registers the aiohttp
handler and produces the OpenAPI 3 document, so the published contract cannot drift from
the code. Every error leaves as ``{"error": {"code", "message", "rule"?}}`` with its
status.

An operation's ``description`` is its handler's docstring; its error responses are the
codes the route declares (``errors=``, each checked against
:data:`gateway.errors.ERROR_CODES`) and those every route of its kind can answer
(:func:`shared_errors`), grouped by status, each status listing its codes
(``x-error-codes`` and an ``enum`` on ``error.code``).
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from devices.orders import Answer
from gateway.answers import Out as Out
from gateway.answers import error_body as error_body
from gateway.errors import ERROR_CODES, Declared, declared_status

log = logging.getLogger(__name__)

#: Who may call a route: anyone, the platform, an app user, the broker (its HTTP hooks),
#: the holder of a playback session (its ``session`` query value, gateway.http.sessions),
#: or an app user or a session holder alike.
Auth = Literal["none", "platform", "app", "broker", "session", "app_or_session"]

#: The security requirements of each kind of caller (OpenAPI: any one of them will do).
_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "platform": [{"platform": []}],
    "app": [{"app": []}],
    "broker": [{"broker": []}],
    "session": [{"session": []}],
    "app_or_session": [{"app": []}, {"session": []}],
}
M = TypeVar("M", bound=BaseModel)


class ApiError(Exception):
    """An answer other than success, with its stable code and the rule it enforces."""

    def __init__(self, status: int, code: str, message: str, *, rule: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.rule = rule


def error_response(status: int, code: str, message: str, rule: str | None = None) -> web.Response:
    return web.json_response(error_body(code, message, rule), status=status)


def answer_out(answer: Answer) -> web.Response:
    """An order's answer (:func:`gateway.orders.execute_order`) as sent."""
    return web.json_response(answer.body, status=answer.status)


class Body(BaseModel):
    """Base of request bodies: unknown fields are refused (a typo never passes silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorDetail(Out):
    code: str
    message: str
    rule: str | None = None


class ErrorOut(Out):
    error: ErrorDetail


def parse_body(raw: bytes, model: type[M]) -> M:
    """Validate a JSON body; a malformed or invalid one is a 400 ``invalid_body``."""
    if not raw:
        raise ApiError(400, "invalid_body", "a JSON body is required")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, "invalid_body", _describe(exc)) from exc


def parse_query(request: web.Request, model: type[M]) -> M:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise ApiError(400, "invalid_query", _describe(exc)) from exc


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def json_out(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        body=model.model_dump_json(exclude_none=True),
        status=status,
        content_type="application/json",
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class RouteSpec:
    method: str
    path: str
    handler: Handler
    auth: Auth
    summary: str
    body: type[BaseModel] | None
    response: type[BaseModel] | None
    query: type[BaseModel] | None
    status: int
    tag: str
    content_type: str
    #: The codes the route declares it answers, with their statuses (:func:`shared_errors`
    #: adds those of every route of its kind).
    errors: tuple[tuple[str, int], ...]
    #: The handler's docstring: the operation's description.
    description: str = ""
    #: Statuses answered with a body of their own instead of the error shape, and what
    #: they mean (a router's failed change answers its per-change results).
    answers: Mapping[int, tuple[type[BaseModel], str]] = field(default_factory=dict)


@dataclass
class Api:
    """A set of declared routes; ``install`` adds them to an application."""

    routes: list[RouteSpec] = field(default_factory=list)

    def route(
        self,
        method: str,
        path: str,
        *,
        auth: Auth,
        summary: str = "",
        body: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        status: int = 200,
        tag: str = "ops",
        content_type: str = "application/json",
        errors: tuple[Declared, ...] = (),
        answers: Mapping[int, tuple[type[BaseModel], str]] | None = None,
    ) -> Callable[[Handler], Handler]:
        """Declare a route. ``errors``: the codes of :data:`gateway.errors.ERROR_CODES` it
        answers beyond :func:`shared_errors` (``("not_found", "router_busy")``; a code of
        several statuses as a pair, ``("broadband_inactive", 403)``); an unknown code is a
        ``ValueError`` here, at import. ``summary`` defaults to the docstring's first line."""
        resolved = tuple(declared_status(d) for d in errors)

        def register(handler: Handler) -> Handler:
            description = inspect.getdoc(handler) or ""
            self.routes.append(
                RouteSpec(
                    method=method.upper(),
                    path=path,
                    handler=handler,
                    auth=auth,
                    summary=summary or description.partition("\n")[0],
                    body=body,
                    response=response,
                    query=query,
                    status=status,
                    tag=tag,
                    content_type=content_type,
                    errors=resolved,
                    description=description,
                    answers=dict(answers or {}),
                )
            )
            return handler

        return register

    def install(self, app: web.Application, wrap: Callable[[RouteSpec], Handler]) -> None:
        for spec in self.routes:
            app.router.add_route(spec.method, spec.path, wrap(spec))


_PATH_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")


def openapi_path(path: str) -> str:
    """A route's path as OpenAPI writes it: ``{name:regex}`` becomes ``{name}``."""
    return _PATH_PARAM.sub(r"{\1}", path)


def _parameters(spec: RouteSpec) -> list[dict[str, Any]]:
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(spec.path)
    ]
    if spec.query is not None:
        qschema = spec.query.model_json_schema()
        required = set(qschema.get("required", []))
        for name, prop in qschema.get("properties", {}).items():
            params.append(
                {"name": name, "in": "query", "required": name in required, "schema": prop}
            )
    return params


def shared_errors(spec: RouteSpec) -> tuple[tuple[str, int], ...]:
    """The codes every route of ``spec``'s kind can answer, whatever it declares: a fault
    (500), a missing or wrong token (401), a body or query that does not parse (400), an
    id in the path that names nothing (404), the broker's hooks while they are off (404)."""
    codes = ["internal"]
    if spec.auth != "none":
        codes.append("unauthorized")
    if spec.body is not None:
        codes += ["invalid_body", "invalid_json"]
    if spec.query is not None:
        codes.append("invalid_query")
    if spec.auth == "broker" or _PATH_PARAM.search(spec.path):
        codes.append("not_found")
    return tuple((code, ERROR_CODES[code].status) for code in codes)


def error_codes(spec: RouteSpec) -> dict[int, list[str]]:
    """Every code the route can answer, by status (declared and shared, once each)."""
    by_status: dict[int, list[str]] = {}
    for code, status in (*spec.errors, *shared_errors(spec)):
        if code not in by_status.setdefault(status, []):
            by_status[status].append(code)
    return dict(sorted(by_status.items()))


def _error_response(
    codes: list[str], error_ref: dict[str, Any], answer: tuple[Any, str] | None
) -> dict[str, Any]:
    """One error status: its codes (each with its meaning), its body's schema."""
    meanings = "; ".join(f"`{code}`: {ERROR_CODES[code].meaning}" for code in codes)
    if answer is not None:
        schema, what = answer
        description = f"{what}. Codes: {meanings}" if codes else what
    else:
        schema = {
            "allOf": [
                error_ref,
                {"properties": {"error": {"properties": {"code": {"enum": codes}}}}},
            ]
        }
        description = meanings
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if codes:
        out["x-error-codes"] = codes
    return out


def _responses(
    spec: RouteSpec,
    ref: Callable[[type[BaseModel]], dict[str, Any]],
    error_ref: dict[str, Any],
) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "success"}
    if spec.response is not None:
        ok["content"] = {spec.content_type: {"schema": ref(spec.response)}}
    elif spec.content_type != "application/json":
        ok["content"] = {spec.content_type: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {str(spec.status): ok}
    by_status = error_codes(spec)
    for status in spec.answers:
        by_status.setdefault(status, [])
    for status, codes in sorted(by_status.items()):
        answer = spec.answers.get(status)
        other = None if answer is None else (ref(answer[0]), answer[1])
        responses[str(status)] = _error_response(codes, error_ref, other)
    return responses


def _operation(
    spec: RouteSpec,
    ref: Callable[[type[BaseModel]], dict[str, Any]],
    error_ref: dict[str, Any],
) -> dict[str, Any]:
    """One route's operation object; ``ref`` names a model's schema."""
    op: dict[str, Any] = {
        "summary": spec.summary,
        "operationId": f"{spec.method.lower()}_{spec.handler.__name__}",
        "tags": [spec.tag],
    }
    if spec.description:
        op["description"] = spec.description
    params = _parameters(spec)
    if params:
        op["parameters"] = params
    if spec.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref(spec.body)}},
        }
    op["responses"] = _responses(spec, ref, error_ref)
    if spec.auth != "none":
        op["security"] = _SECURITY[spec.auth]
    return op


def openapi_document(routes: list[RouteSpec], *, title: str, version: str) -> dict[str, Any]:
    """An OpenAPI 3.1 document of the declared routes."""
    schemas: dict[str, Any] = {}

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            schemas[name] = sub
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    error_ref = ref(ErrorOut)
    paths: dict[str, dict[str, Any]] = {}
    for spec in routes:
        path = openapi_path(spec.path)
        paths.setdefault(path, {})[spec.method.lower()] = _operation(spec, ref, error_ref)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "platform": {"type": "http", "scheme": "bearer"},
                "app": {"type": "http", "scheme": "bearer"},
                "broker": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "query", "name": "session"},
            },
        },
    }
