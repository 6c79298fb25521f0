"""Open the object store a URL names: ``file:///path`` or ``s3://bucket?endpoint=...``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from storage.fsstore import FilesystemObjectStore
from storage.objects import ObjectStore


@asynccontextmanager
async def open_object_store(
    url: str,
    *,
    base_url: str,
    signing_key: bytes,
    now: Callable[[], datetime],
    lifecycle: Mapping[str, int] | None = None,
) -> AsyncIterator[ObjectStore]:
    """The store; on S3, ``lifecycle`` (prefix → days) backs the sweeper up with expiry rules.

    ``now`` is the service's clock (presigned URLs of the filesystem store expire by it).
    """
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URLs name a local path, not host {parts.netloc!r}")
        store = FilesystemObjectStore(
            root=Path(unquote(parts.path)),
            base_url=base_url,
            signing_key=signing_key,
            now=now,
        )
        try:
            yield store
        finally:
            await store.close()
        return
    if parts.scheme == "s3":
        from storage.s3store import S3ObjectStore

        async with S3ObjectStore.from_url(url) as s3:
            if lifecycle:
                await s3.set_lifecycle_expiry(lifecycle)
            yield s3
        return
    raise ValueError(f"unsupported object store URL {url!r}: use file:///path or s3://bucket")
