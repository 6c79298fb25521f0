"""The one place where what went wrong becomes an HTTP status.

Domain errors carry a code, a sentence and the rule they cite, never a status
(:mod:`devices.errors`); here each kind of refusal gets its status. A domain error of no
kind listed is a fault, not a refusal (router output that does not parse, a stored state
that does not decode): it is no answer, and leaves as any other failure does, a 500.

A router-side failure is a result, not a refusal (the router timed out, refused the
value, or failed): :data:`ROUTER_FAILURES` gives its status.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

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
