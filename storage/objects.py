"""The object-store interface shared by the filesystem and S3 backends.

Keys are ``/``-separated relative paths of safe characters. A key that could escape its
store (``..``, absolute paths, empty segments, backslashes, control characters) is refused
with :class:`InvalidKey` before any backend sees it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


class ObjectStoreError(Exception):
    """Root of object-store errors."""


class InvalidKey(ObjectStoreError, ValueError):
    """A key that is not a safe relative path."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"invalid object key {key!r}: {reason}")
        self.key = key
        self.reason = reason


class ObjectExists(ObjectStoreError):
    """An object is already stored under that key, and the write may not replace it."""

    def __init__(self, key: str) -> None:
        super().__init__(f"an object already exists under {key!r}")
        self.key = key


class UploadRefused(ObjectStoreError):
    """A presigned upload's body is not what its URL was granted for; nothing was stored.

    ``reason`` is ``too_large`` (more bytes than granted: refused as soon as they came),
    ``size_mismatch`` (fewer) or ``checksum_mismatch`` (the SHA-256 differs).
    """

    def __init__(self, key: str, reason: str, message: str) -> None:
        super().__init__(f"upload to {key!r} refused: {message}")
        self.key = key
        self.reason = reason


class ObjectNotFound(ObjectStoreError, KeyError):
    """No object under that key."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime | None = None
    etag: str | None = None


@dataclass(frozen=True, slots=True)
class PresignedPut:
    """An upload URL and the headers its PUT must carry (signed into it where the store
    checks them: a client that drops one is refused)."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_upload(size: int, sha256: str) -> None:
    """Raise ``ValueError`` unless ``size`` and ``sha256`` can bind a presigned upload."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"an upload's size must be a whole number of bytes >= 1, not {size!r}")
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise ValueError(f"sha256 must be 64 lower-case hexadecimal digits, not {sha256!r}")


_SEGMENT = re.compile(r"^[A-Za-z0-9._=+@:-]+$")
MAX_KEY_LENGTH = 512


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise :class:`InvalidKey`."""
    if not key:
        raise InvalidKey(key, "empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(key, f"longer than {MAX_KEY_LENGTH} characters")
    if key.startswith("/"):
        raise InvalidKey(key, "absolute path")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKey(key, "empty, '.' or '..' path segment")
        if not _SEGMENT.match(segment):
            raise InvalidKey(key, "only letters, digits and ._=+@:- are allowed in a segment")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a key that may end with ``/``."""
    if prefix == "":
        return prefix
    validate_key(prefix.rstrip("/") or "/")
    return prefix


class ObjectStore(Protocol):
    """Where video segments, clips and family-cloud copies live."""

    async def put(
        self, key: str, data: bytes, *, content_type: str = "application/octet-stream"
    ) -> None: ...

    async def get(self, key: str) -> bytes:
        """The object's bytes; :class:`ObjectNotFound` if absent."""
        ...

    async def stat_many(self, keys: Sequence[str]) -> list[ObjectInfo | None]:
        """Each key's size (and metadata) in the keys' order, ``None`` for an absent one:
        the indexer confirms hundreds of uploads at once, in a few requests, never reading
        an object (the store checked its bytes on the way in: :meth:`presign_put`)."""
        ...

    async def head(self, key: str) -> ObjectInfo | None:
        """Size and metadata, or ``None`` if absent."""
        ...

    async def copy(self, source: str, dest: str) -> None:
        """Server-side copy (family-cloud saves); :class:`ObjectNotFound` if absent."""
        ...

    async def delete_many(self, keys: Sequence[str]) -> int:
        """Delete the keys (absent ones are not an error); return how many were asked."""
        ...

    def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order."""
        ...

    async def presign_get(self, key: str, *, expires_in: int) -> str:
        """A URL that GETs the object for ``expires_in`` seconds without other credentials."""
        ...

    async def presign_put(
        self, key: str, *, expires_in: int, size: int, sha256: str
    ) -> PresignedPut:
        """A URL that PUTs a new object for ``expires_in`` seconds without other
        credentials; it never replaces an object already stored under ``key``.

        The URL binds the body: the store refuses, before storing anything, a body that is
        not exactly ``size`` bytes whose SHA-256 is ``sha256`` (hex). So an object found
        under a key presigned so *is* those bytes, and indexing need not read it back
        (issue 16, item 2; docs/uploads.md says how each store enforces it)."""
        ...

    async def close(self) -> None: ...
