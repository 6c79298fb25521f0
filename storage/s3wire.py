"""How S3's answers are read (split from :mod:`storage.s3store`): botocore's errors as this
package's (:class:`S3StoreError`, :class:`~storage.objects.ObjectNotFound`), timestamps,
and an object's listing or header as an :class:`~storage.objects.ObjectInfo`."""

from __future__ import annotations

import email.utils
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from botocore.utils import parse_timestamp

from storage.objects import ObjectInfo, ObjectNotFound, ObjectStoreError

NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
MISSING_BUCKET_CODES = frozenset({"NoSuchBucket", "404", "NotFound"})


class S3StoreError(ObjectStoreError):
    """S3 refused a request or could not be reached."""

    def __init__(self, *, operation: str, code: str, message: str, key: str | None = None):
        where = f" for {key!r}" if key is not None else ""
        super().__init__(f"S3 {operation}{where} failed: {code}: {message}")
        self.operation = operation
        self.code = code
        self.key = key


def translate(
    exc: ClientError | BotoCoreError, operation: str, key: str | None
) -> ObjectStoreError:
    """A botocore error as this module's: a 404 on a key becomes ObjectNotFound."""
    if isinstance(exc, BotoCoreError):
        return S3StoreError(operation=operation, code="unreachable", message=str(exc), key=key)
    code = error_code(exc)
    if key is not None and code in NOT_FOUND_CODES:
        return ObjectNotFound(key)
    message = str(exc.response.get("Error", {}).get("Message", exc))
    return S3StoreError(operation=operation, code=code, message=message, key=key)


@contextmanager
def s3_errors(operation: str, key: str | None = None) -> Iterator[None]:
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, operation, key) from exc


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "unknown"))


def timestamp(value: str) -> datetime:
    """An S3 timestamp: a listing's ISO 8601 (``2026-12-03T15:14:05.000Z``) or a header's
    RFC 1123 (``Thu, 03 Dec 2026 15:14:05 GMT``), read by the standard library; anything
    else by botocore's own parser. (Botocore's parser, dateutil, cost a tenth of a busy
    gateway's CPU in its listings: a timestamp per object listed; issue 16.)"""
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        pass
    try:
        return email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        parsed: datetime = parse_timestamp(value)
        return parsed


def object_info(key: str, size: int, modified: Any, etag: Any) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=int(size),
        modified=modified,
        etag=str(etag).strip('"') if etag is not None else None,
    )
