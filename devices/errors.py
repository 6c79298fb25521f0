"""The domain's errors: one root, a few kinds of refusal, and no HTTP.

Every error the domain packages (``devices``, ``replay``) raise derives from
:class:`DomainError`: a stable ``code``, a sentence (``message``) and, where a rule of
RULES.md is the why, the ``rule`` it cites. Subclasses carry the data of their case
(``NotFound("router", "rt-1")``, ``OrderIdReused(order_id)``). The kind of a refusal says
what it is; the gateway alone decides how to answer each kind (``gateway/http/errors.py``):

- :class:`Invalid`: a request the rules cannot take as given (an unknown plan, R1);
- :class:`Unauthenticated`: a credential that names no party, or no longer does (an
  expired playback session);
- :class:`Forbidden`: the rules refuse this party or this action (only the owner orders, R7);
- :class:`NotFound`: no such thing, or not this account's (never "forbidden": no probing);
- :class:`Gone`: it existed and is no more (video past its retention, R5);
- :class:`Conflict`: the current state refuses it (one product per camera, R2).

A domain error of none of these kinds is a fault, not a refusal: router output that does
not parse, a stored state that does not decode, a plans file that cannot be used. Nobody
is answered with it; it propagates as any other failure does.
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "DomainError",
    "Forbidden",
    "Gone",
    "Invalid",
    "NotFound",
    "Unauthenticated",
]


class DomainError(Exception):
    """Root of the domain's errors; ``code`` is stable, ``rule`` cites RULES.md.

    ``code`` and ``rule`` default to the class's; a refusal decided as data (a playback
    refusal, say) passes its own.
    """

    code: str = "domain_error"
    rule: str | None = None

    def __init__(self, message: str, *, code: str | None = None, rule: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if rule is not None:
            self.rule = rule


class Invalid(DomainError):
    """A request the rules cannot take as given."""

    code = "invalid"


class Unauthenticated(DomainError):
    """The credential presented does not name a party, or no longer does."""

    code = "unauthorized"


class Forbidden(DomainError):
    """The rules refuse this party, or this action, whatever the state."""

    code = "forbidden"


class NotFound(DomainError):
    """No ``what`` called ``ident`` (``on`` narrows where it was looked for)."""

    code = "not_found"

    def __init__(self, what: str, ident: str, *, on: str | None = None) -> None:
        super().__init__(f"{what} {ident} not found" + (f" on {on}" if on else ""))
        self.what = what
        self.ident = ident
        self.on = on


class Gone(DomainError):
    """What was asked for existed, and is no more."""

    code = "gone"


class Conflict(DomainError):
    """The current state refuses the request."""

    code = "conflict"
