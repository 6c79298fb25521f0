"""The OpenAPI document (issue 15 item 7): every operation described by its handler's
docstring, and every error it can answer documented, code by code, at its status.

The document is built from the same declarations that register the routes
(:mod:`gateway.http.api`); ``tests/test_http.py`` reads it from a running gateway.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from openapi_spec_validator import validate

from devices.errors import DomainError
from gateway.errors import (
    ERROR_CODES,
    REFUSALS,
    STATUSES,
    Declared,
    declared_status,
    failure_status,
)
from gateway.http.api import Api, RouteSpec, openapi_document, openapi_path
from gateway.http.app import APIS

ROUTES: list[RouteSpec] = [spec for api in APIS for spec in api.routes]
METHODS = ("get", "put", "post", "delete", "patch")


def document() -> dict[str, Any]:
    return openapi_document(ROUTES, title="Kanjia", version="1")


def operations(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{method.upper()} {path}", op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def test_the_document_is_valid_openapi() -> None:
    validate(document())


def test_every_operation_has_a_summary_and_a_description() -> None:
    missing = [name for name, op in operations(document()) if not op.get("description")]
    assert missing == [], f"handlers without a docstring: {missing}"
    assert all(op["summary"] for _, op in operations(document()))


def test_every_operation_documents_its_errors_code_by_code() -> None:
    undocumented: list[str] = []
    for name, op in operations(document()):
        errors = {s: r for s, r in op["responses"].items() if int(s) >= 400}
        if not errors:
            undocumented.append(name)
        for status, response in errors.items():
            for code in response.get("x-error-codes", []):
                assert int(status) in ERROR_CODES[code].statuses, f"{name}: {code} at {status}"
            schema = response["content"]["application/json"]["schema"]
            if "allOf" in schema:  # the error shape: its code is one of those listed
                code_schema = schema["allOf"][1]["properties"]["error"]["properties"]["code"]
                assert code_schema["enum"] == response["x-error-codes"], name
                assert response["x-error-codes"], name
    assert undocumented == [], f"operations with no error documented: {undocumented}"


def codes_at(op: dict[str, Any], status: int) -> list[str]:
    return list(op["responses"].get(str(status), {}).get("x-error-codes", []))


def test_the_shared_errors_are_documented_by_kind_of_route() -> None:
    """Every route can fail (500); one with a token answers 401, one with a body or a
    query 400 when it does not parse, one with an id in its path 404."""
    doc = document()
    for spec in ROUTES:
        op = doc["paths"][openapi_path(spec.path)][spec.method.lower()]
        name = f"{spec.method} {spec.path}"
        assert "internal" in codes_at(op, 500), name
        assert ("unauthorized" in codes_at(op, 401)) == (spec.auth != "none"), name
        if spec.body is not None:
            assert {"invalid_body", "invalid_json"} <= set(codes_at(op, 400)), name
        if spec.query is not None:
            assert "invalid_query" in codes_at(op, 400), name
        if "{" in spec.path:
            assert "not_found" in codes_at(op, 404), name


def test_declared_codes_land_at_their_status() -> None:
    doc = document()
    save = doc["paths"]["/app/v1/segments/{segment_id}/save"]["post"]
    assert codes_at(save, 409) == [
        "family_cloud_closed",
        "family_cloud_read_only",
        "quota_exceeded",
    ]
    assert "broadband_inactive" in codes_at(save, 403), "watching refuses 403 (R8)"
    subscribe = doc["paths"]["/platform/v1/subscriptions"]["post"]
    assert "broadband_inactive" in codes_at(subscribe, 409), "ordering refuses 409 (R8)"
    assert codes_at(subscribe, 403) == ["not_account_owner"]
    health = doc["paths"]["/healthz"]["get"]["responses"]["503"]
    assert health["content"]["application/json"]["schema"]["$ref"].endswith("/HealthOut")
    reboot = doc["paths"]["/platform/v1/devices/{device_id}/router/reboot"]["post"]
    failed = reboot["responses"]["504"]
    assert failed["content"]["application/json"]["schema"]["$ref"].endswith("/ChangesOut")
    assert failed["x-error-codes"] == ["router_timed_out"]


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        pytest.param("not_found", ("not_found", 404), id="a-code"),
        pytest.param("quota_exceeded", ("quota_exceeded", 409), id="a-rule's-code"),
        pytest.param("broadband_inactive", ("broadband_inactive", 409), id="its-first-status"),
        pytest.param(("broadband_inactive", 403), ("broadband_inactive", 403), id="pair"),
        pytest.param("no_such_code", ValueError, id="unknown-code"),
        pytest.param(("not_found", 409), ValueError, id="a-status-it-never-has"),
        pytest.param(404, ValueError, id="a-bare-status"),
    ],
)
def test_a_declared_error_is_checked_against_the_table(
    declared: Declared, expected: tuple[str, int] | type[Exception]
) -> None:
    if isinstance(expected, tuple):
        assert declared_status(declared) == expected
    else:
        with pytest.raises(expected):
            declared_status(declared)


def test_a_route_declaring_an_unknown_code_fails_at_import() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        """Nothing."""
        return web.Response()

    with pytest.raises(ValueError, match=r"not in gateway\.errors\.ERROR_CODES"):
        Api().route("GET", "/x", auth="none", errors=("teapot",))(handler)


def _subclasses(kind: type[DomainError]) -> list[type[DomainError]]:
    found = []
    for sub in kind.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


#: Refusals answered over MQTT only (an upload request's answer), never over HTTP.
MQTT_ONLY = {"invalid_upload"}


def test_every_refusal_of_the_domain_is_in_the_table_at_its_status() -> None:
    """A refusal class's code (R-cited or not) is documented, at its kind's status."""
    checked = 0
    for kind in REFUSALS:
        for refusal in _subclasses(kind):
            if refusal.code in MQTT_ONLY:
                continue
            known = ERROR_CODES.get(refusal.code)
            assert known is not None, f"{refusal.__qualname__}: {refusal.code}"
            assert STATUSES[kind] in known.statuses, refusal.__qualname__
            checked += 1
    assert checked >= 10


@pytest.mark.parametrize("code", ["failed", "timed_out", "auth_failed", "host_key_changed"])
def test_router_failures_are_in_the_table_at_their_status(code: str) -> None:
    assert ERROR_CODES[f"router_{code}"].status == failure_status(code)
