"""The JSON of answers, shared by the HTTP routes and the orders that store their answer.

An order's answer is stored with it and replayed for a repeated ``order_id``
(:mod:`gateway.orders`), so the orchestration that builds it writes the same JSON the
route sends: answer models derive from :class:`Out`, and every error has the shape of
:func:`error_body`. :mod:`gateway.http.api` re-exports both.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Out(BaseModel):
    """Base of response bodies."""

    model_config = ConfigDict(frozen=True)


def error_body(code: str, message: str, rule: str | None = None) -> dict[str, Any]:
    """``{"error": {"code", "message", "rule"?}}``."""
    error: dict[str, Any] = {"code": code, "message": message}
    if rule:
        error["rule"] = rule
    return {"error": error}
