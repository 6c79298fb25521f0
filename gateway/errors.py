"""The one place where what went wrong becomes an HTTP status.

Domain errors carry a code, a sentence and the rule they cite, never a status
(:mod:`devices.errors`); here each kind of refusal gets its status. A domain error of no
kind listed is a fault, not a refusal (router output that does not parse, a stored state
that does not decode): it is no answer, and leaves as any other failure does, a 500.

A router-side failure is a result, not a refusal (the router timed out, refused the
value, or failed): :data:`ROUTER_FAILURES` gives its status.

:data:`ERROR_CODES` is the table of every ``error.code`` an answer can carry, with its
status; routes declare the codes they answer from it (the OpenAPI document lists them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, TypeAlias

from devices.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    Unauthenticated,
)

#: The status of each kind of refusal.
STATUSES: Final[Mapping[type[DomainError], int]] = MappingProxyType(
    {
        Invalid: 400,
        Unauthenticated: 401,
        Forbidden: 403,
        NotFound: 404,
        Gone: 404,  # the contract answers video past its retention 404, never 410 (R5)
        Conflict: 409,
    }
)

#: The domain errors that are answered: those of a kind in :data:`STATUSES`.
REFUSALS: Final[tuple[type[DomainError], ...]] = tuple(STATUSES)

#: The status of a domain error of no kind (a fault).
FAULT_STATUS: Final = 500


def http_status(error: DomainError) -> int:
    """The status that answers ``error``: its kind's, or 500 for a fault."""
    return next(
        (status for kind, status in STATUSES.items() if isinstance(error, kind)), FAULT_STATUS
    )


#: The status of a router-side failure by its code; any other code: 502 (the router failed).
ROUTER_FAILURES: Final[Mapping[str, int]] = MappingProxyType(
    {"timed_out": 504, "telemetry_timeout": 504, "invalid": 422}
)


def failure_status(code: str) -> int:
    """The HTTP status of a router-side failure (``failed`` and any other code: 502)."""
    return ROUTER_FAILURES.get(code, 502)


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """What one ``error.code`` of an answer means, and its status.

    ``also``: other statuses the same code answers on some routes (a route that answers it
    so declares the pair, ``("broadband_inactive", 403)``).
    """

    status: int
    meaning: str
    also: tuple[int, ...] = ()

    @property
    def statuses(self) -> tuple[int, ...]:
        return (self.status, *self.also)


#: Every code an HTTP error can carry (``{"error": {"code", ...}}``), with its status: the
#: OpenAPI document lists, per operation, the codes its route declares (``Api.route``'s
#: ``errors=``) and those every route of its kind can answer, each checked against this.
ERROR_CODES: Final[Mapping[str, ErrorCode]] = MappingProxyType(
    {
        # 400: the request cannot be taken as given
        "invalid_body": ErrorCode(400, "the JSON body is missing or does not fit its schema"),
        "invalid_json": ErrorCode(400, "the body is not valid JSON"),
        "invalid_query": ErrorCode(400, "the query parameters do not fit their schema"),
        "invalid": ErrorCode(400, "a value the rules cannot take (e.g. an unknown channel)"),
        "invalid_key": ErrorCode(400, "the object key is not one the store can hold"),
        "invalid_setting": ErrorCode(400, "a router setting its configuration cannot take"),
        "invalid_time": ErrorCode(400, "a time out of order (unsubscribed before ordered)"),
        "invalid_range": ErrorCode(400, "a time range that ends before it starts"),
        "range_too_long": ErrorCode(400, "a range longer than the route allows (12 h, 1 h)"),
        "unknown_plan": ErrorCode(400, "no such cloud-replay plan (R1)"),
        "unknown_product": ErrorCode(400, "no such home-network product (R16, R17)"),
        "too_many_devices": ErrorCode(400, "more (or fewer) routers than the product covers"),
        "unknown_tier": ErrorCode(400, "no such family-cloud membership tier (R18)"),
        "size_mismatch": ErrorCode(400, "fewer bytes sent than the upload URL grants"),
        "checksum_mismatch": ErrorCode(400, "the bytes' SHA-256 is not the one granted"),
        "upload_incomplete": ErrorCode(400, "the connection closed before the whole body"),
        # 401, 403: who asks
        "unauthorized": ErrorCode(401, "no bearer token, or not a valid one for this route"),
        "session_invalid": ErrorCode(401, "the playback session credential is not valid"),
        "session_expired": ErrorCode(401, "the playback session has expired"),
        "session_scope": ErrorCode(403, "the playback session is for another device"),
        "forbidden": ErrorCode(403, "refused whatever the state (e.g. a bad presigned URL)"),
        "not_account_owner": ErrorCode(403, "only the broadband account's owner orders (R7)"),
        "not_entitled": ErrorCode(403, "the camera has no cloud-replay plan (R1)"),
        "tuning_not_covered": ErrorCode(
            403, "no package in force covers the router: no household tuning (R16, R17)"
        ),
        "tunings_used_up": ErrorCode(
            403, "the router's included tunings are used: a tuning pack is needed (R17)"
        ),
        "unsubscribed": ErrorCode(403, "the subscription was unsubscribed: no viewing (R5)"),
        "previous_subscription": ErrorCode(
            403, "recorded under an earlier subscription: not viewable under this one (R6)"
        ),
        # 404: nothing there (or not this caller's: never 403, no probing)
        "not_found": ErrorCode(404, "no such resource, or not the caller's"),
        "expired": ErrorCode(404, "the video is past its plan's retention (R5)"),
        "no_recording": ErrorCode(404, "nothing recorded in the asked range"),
        "family_cloud_deleted": ErrorCode(404, "the family cloud was deleted by a long stop (R15)"),
        # 409: the current state refuses it
        "broadband_inactive": ErrorCode(
            409,
            "the broadband account is not active: no new product, no router change, no "
            "video served (R8, R12); 403 where video is asked for",
            also=(403,),
        ),
        "already_subscribed": ErrorCode(409, "the camera holds a product already (R2)"),
        "not_active": ErrorCode(409, "the subscription is not active (R5)"),
        "already_covered": ErrorCode(409, "the router holds a whole-home WiFi package (R16)"),
        "package_not_active": ErrorCode(409, "the home-network package is not active"),
        "visit_done": ErrorCode(409, "the engineer's visit is recorded: no unsubscription"),
        "already_visited": ErrorCode(409, "the engineer's visit is recorded already"),
        "order_id_reused": ErrorCode(409, "the order_id was used for a different request"),
        "device_bound_elsewhere": ErrorCode(409, "the device is bound to another account"),
        "device_kind_mismatch": ErrorCode(409, "the device is of another kind"),
        "reserved_client_id": ErrorCode(409, "the device id is the gateway's MQTT client id"),
        "subscription_active": ErrorCode(409, "a product is active on the device: no unbind (R9)"),
        "month_not_closed": ErrorCode(409, "the month is not closed in the charge ledger yet"),
        "active_subscriptions": ErrorCode(409, "a product is active: no teardown (R9)"),
        "torn_down": ErrorCode(409, "the broadband account is torn down (R9)"),
        "emergency_not_allowed": ErrorCode(409, "no emergency resume now (R11)"),
        "family_cloud_closed": ErrorCode(409, "the family cloud is closed by a long stop (R15)"),
        "quota_exceeded": ErrorCode(409, "the family cloud's quota is used up (R14)"),
        "family_cloud_read_only": ErrorCode(
            409, "read-only for three months after a membership ended in overflow (R18)"
        ),
        "membership_held": ErrorCode(409, "the account holds a family-cloud membership (R18)"),
        "membership_not_active": ErrorCode(409, "the membership is unsubscribed or ended (R18)"),
        "router_not_provisioned": ErrorCode(409, "the router's SSH access is not known yet"),
        "router_busy": ErrorCode(409, "another change of the router is running"),
        # 411-413: presigned uploads
        "length_required": ErrorCode(411, "an upload needs its Content-Length"),
        "object_exists": ErrorCode(412, "an object is stored at that key: never replaced"),
        "too_large": ErrorCode(413, "more bytes than granted"),
        # 422, 502, 504: the router's own answer (ROUTER_FAILURES)
        "not_decodable": ErrorCode(422, "the segment holds no decodable video"),
        "router_invalid": ErrorCode(422, "the router's configuration refused the value"),
        "router_failed": ErrorCode(502, "the router refused or failed the change"),
        "router_auth_failed": ErrorCode(502, "the router refused the login"),
        "router_host_key_changed": ErrorCode(502, "the router presents another host key"),
        "router_timed_out": ErrorCode(504, "the router did not answer in time"),
        "telemetry_timeout": ErrorCode(504, "no telemetry from the router in time (tuning)"),
        # 500: a fault, not a refusal
        "internal": ErrorCode(FAULT_STATUS, "an unexpected failure (logged)"),
    }
)

#: A route's declaration of one code it answers: the code, or the code and which of its
#: statuses (a code answered with several, :attr:`ErrorCode.also`).
Declared: TypeAlias = str | tuple[str, int]


def declared_status(declared: Declared) -> tuple[str, int]:
    """The code and status of a route's declaration, checked against :data:`ERROR_CODES`;
    ``ValueError`` for a code not in the table, a status it never has, or a bare status."""
    if isinstance(declared, int):
        raise ValueError(f"errors= takes codes of gateway.errors.ERROR_CODES, not {declared}")
    code, status = declared if isinstance(declared, tuple) else (declared, None)
    known = ERROR_CODES.get(code)
    if known is None:
        raise ValueError(f"error code {code!r} is not in gateway.errors.ERROR_CODES")
    if status is None:
        return code, known.status
    if status not in known.statuses:
        raise ValueError(f"error code {code!r} is answered {known.statuses}, not {status}")
    return code, status
