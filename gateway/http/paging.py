"""Keyset paging for list routes: an opaque cursor names the last item of a page.

A cursor is the sort key of the last item handed out (one or more strings), as JSON in
URL-safe base64 without padding. Clients pass it back unchanged; what it holds may change
between releases, so they never build one. A page asks for one item more than it shows:
that item's presence is what says another page follows.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import TypeVar

from gateway.http.api import ApiError

T = TypeVar("T")

#: The largest cursor accepted (a sort key is a few ids and a time).
MAX_CURSOR = 512


def encode_cursor(*keys: str) -> str:
    """The opaque cursor of a sort key."""
    raw = json.dumps(list(keys), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, arity: int) -> tuple[str, ...]:
    """The sort key a cursor holds: ``arity`` strings; anything else is a 400
    ``invalid_cursor`` (never a guess at what was meant)."""
    if len(cursor) > MAX_CURSOR:
        raise ApiError(400, "invalid_cursor", "the cursor is too long")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        keys = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, "invalid_cursor", "the cursor is not one this service gave") from exc
    if (
        not isinstance(keys, list)
        or len(keys) != arity
        or not all(isinstance(k, str) for k in keys)
    ):
        raise ApiError(400, "invalid_cursor", "the cursor is not one this service gave")
    return tuple(keys)


def page(
    rows: Sequence[T], limit: int, key: Callable[[T], tuple[str, ...]]
) -> tuple[list[T], str | None]:
    """The first ``limit`` of ``rows`` (read with ``limit + 1``) and the cursor of the next
    page, or None when these were the last."""
    if limit < 1:
        raise ValueError("a page holds at least one item")
    shown = list(rows[:limit])
    if len(rows) <= limit:
        return shown, None
    return shown, encode_cursor(*key(shown[-1]))
