"""S3 object store (SeaweedFS here; MinIO, Ceph or AWS S3 elsewhere), over aiobotocore.

Opened from ``s3://bucket?endpoint=http://host:port&region=us-east-1``; credentials come
from the usual AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``) unless the
URL carries ``access_key`` and ``secret_key`` (tests do). Requests use path-style
addressing and signature v4, which every S3-compatible store understands.

Every key is checked by :func:`validate_key` before any request is made. S3 answers
``NoSuchKey``/404 become :class:`ObjectNotFound`; every other refusal, and an unreachable
endpoint, becomes :class:`S3StoreError` carrying the operation and S3's error code.

Presigned PUTs are conditional writes (``If-None-Match: *``, signed): an upload never
replaces an object. They also bind the body: ``Content-Length`` and
``x-amz-checksum-sha256`` are signed headers, so the store refuses, before storing, a body
of another length (403: the signature) or another digest (400 ``BadDigest``). Found on
SeaweedFS 4.48 by ``tests/test_s3store.py``; AWS S3 documents both; see docs/uploads.md.
Indexing then confirms uploads by listing (:meth:`S3ObjectStore.stat_many`), never by
reading them back. Presigned URLs are signed with the wall clock: the store checks them
against its own clock, so the injected service clock cannot take part.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from storage.objects import (
    ObjectInfo,
    ObjectNotFound,
    PresignedPut,
    check_upload,
    validate_key,
    validate_prefix,
)
from storage.s3wire import (
    MISSING_BUCKET_CODES,
    S3StoreError,
    error_code,
    object_info,
    s3_errors,
    timestamp,
    translate,
)
from storage.sigv4 import Signer

_log = logging.getLogger(__name__)

DEFAULT_REGION = "us-east-1"
MAX_DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys per request
MAX_LIST_PAGE = 1000  # ListObjectsV2 returns at most 1000 keys per page
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # signature v4 presigned URLs live at most 7 days
STAT_CONCURRENCY = 16  # requests of one batch existence check in flight at once
#: Pages one span listing reads at most; the keys it has not reached by then get a HEAD each
#: (a span stretched by one late key must not list a whole busy directory).
STAT_SPAN_PAGES = 3
STAT_LIST_SLACK = 16  # a span listing's page holds this many keys beyond twice those looked for

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z0-9-]+$")
_URL_PARAMS = frozenset({"endpoint", "region", "access_key", "secret_key"})
__all__ = ["S3ObjectStore", "S3StoreError"]

#: The HTTP method of each operation presigned, and the header of each parameter it binds.
_HTTP_METHODS = {"get_object": "GET", "put_object": "PUT"}
_HEADERS = {
    "IfNoneMatch": "If-None-Match",
    "ContentLength": "Content-Length",
    "ChecksumSHA256": "x-amz-checksum-sha256",
}


class S3ObjectStore:
    """An :class:`~storage.objects.ObjectStore` on one S3 bucket."""

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        region: str = DEFAULT_REGION,
        access_key: str | None = None,
        secret_key: str | None = None,
        create_bucket: bool = True,
        list_page_size: int = MAX_LIST_PAGE,
        delete_batch_size: int = MAX_DELETE_BATCH,
    ) -> None:
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise ValueError(
                f"bucket {bucket!r} is not a valid S3 bucket name: use 3 to 63 lowercase "
                "letters, digits, dots and hyphens, starting and ending with a letter or digit"
            )
        if endpoint_url is not None:
            parts = urlsplit(endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    f"endpoint {endpoint_url!r} is not an http:// or https:// URL with a host"
                )
            if parts.path not in ("", "/") or parts.query:
                raise ValueError(f"endpoint {endpoint_url!r} must name only scheme, host, port")
        if not _REGION.match(region):
            raise ValueError(f"region {region!r} is not a region name such as us-east-1")
        if (access_key is None) != (secret_key is None):
            raise ValueError("give both access_key and secret_key, or neither")
        if access_key == "" or secret_key == "":
            raise ValueError("access_key and secret_key must not be empty")
        if not 1 <= list_page_size <= MAX_LIST_PAGE:
            raise ValueError(f"list_page_size must be between 1 and {MAX_LIST_PAGE}")
        if not 1 <= delete_batch_size <= MAX_DELETE_BATCH:
            raise ValueError(f"delete_batch_size must be between 1 and {MAX_DELETE_BATCH}")
        self.bucket = bucket
        self.endpoint_url = endpoint_url.rstrip("/") if endpoint_url else None
        self.region = region
        self._access_key = access_key
        self._secret_key = secret_key
        self._create_bucket = create_bucket
        self._list_page_size = list_page_size
        self._delete_batch_size = delete_batch_size
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        #: Signs presigned URLs without botocore's request pipeline (:mod:`storage.sigv4`),
        #: when the credentials are static and the endpoint named; else ``None``.
        self._signer: Signer | None = None

    def __repr__(self) -> str:  # never shows the secret key
        return f"S3ObjectStore(bucket={self.bucket!r}, endpoint_url={self.endpoint_url!r})"

    @classmethod
    def from_url(cls, url: str, *, create_bucket: bool = True) -> S3ObjectStore:
        """``s3://bucket?endpoint=http://host:port&region=...[&access_key=..&secret_key=..]``.

        Error messages never repeat the URL, which may carry a secret key.
        """
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise ValueError("the object store URL cannot be parsed") from exc
        if parts.scheme != "s3":
            raise ValueError(f"an S3 object store URL starts with s3://, not {parts.scheme}://")
        if "@" in parts.netloc:
            raise ValueError(
                "an S3 URL carries no user or password before the bucket: use the AWS "
                "variables or the access_key and secret_key parameters"
            )
        bucket = parts.netloc
        if not bucket:
            raise ValueError("the S3 URL names no bucket: use s3://bucket?endpoint=...")
        if parts.path not in ("", "/"):
            raise ValueError("an S3 URL names a bucket only, without a path after it")
        try:
            query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        except ValueError as exc:
            raise ValueError("the S3 URL's query is not name=value pairs joined by &") from exc
        unknown = sorted(set(query) - _URL_PARAMS)
        if unknown:
            raise ValueError(
                f"the S3 URL has unknown parameters {unknown}; known: {sorted(_URL_PARAMS)}"
            )
        repeated = sorted(name for name, values in query.items() if len(values) > 1)
        if repeated:
            raise ValueError(f"the S3 URL gives {repeated} more than once")
        params = {name: values[0] for name, values in query.items()}
        return cls(
            bucket=bucket,
            endpoint_url=params.get("endpoint"),
            region=params.get("region", DEFAULT_REGION),
            access_key=params.get("access_key"),
            secret_key=params.get("secret_key"),
            create_bucket=create_bucket,
        )

    # -- lifecycle ---------------------------------------------------------------------
    async def open(self) -> None:
        """Create the client and, unless told not to, the bucket if it is missing."""
        if self._stack is not None:
            raise RuntimeError("the S3 object store is already open")
        config = AioConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            # Checksums only where S3 requires them (DeleteObjects, lifecycle): the
            # streaming checksum trailers of newer botocore trip older S3 lookalikes.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
        )
        session = get_session()
        session.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=timestamp
        )
        stack = AsyncExitStack()
        try:
            self._client = await stack.enter_async_context(
                session.create_client(
                    "s3",
                    region_name=self.region,
                    endpoint_url=self.endpoint_url,
                    aws_access_key_id=self._access_key,
                    aws_secret_access_key=self._secret_key,
                    config=config,
                )
            )
            self._signer = await self._static_signer(session)
            if self._create_bucket:
                await self._ensure_bucket()
        except BaseException:
            self._client = None
            await stack.aclose()
            raise
        self._stack = stack

    async def _static_signer(self, session: Any) -> Signer | None:
        """A :class:`Signer` when the endpoint is named and the credentials do not change
        (given, or the environment's); refreshed credentials (an instance role) are left
        to botocore, which renews them."""
        if self.endpoint_url is None:
            return None
        if self._access_key is not None and self._secret_key is not None:
            access, secret, token = self._access_key, self._secret_key, None
        else:
            credentials = await session.get_credentials()
            if credentials is None or getattr(credentials, "refresh_needed", None) is not None:
                return None
            frozen = await credentials.get_frozen_credentials()
            access, secret, token = frozen.access_key, frozen.secret_key, frozen.token
        return Signer(self.endpoint_url, self.bucket, self.region, access, secret, token)

    async def _ensure_bucket(self) -> None:
        client = self._require_client()
        try:
            await client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if error_code(exc) not in MISSING_BUCKET_CODES:
                raise translate(exc, "HeadBucket", None) from exc
        except BotoCoreError as exc:
            raise translate(exc, "HeadBucket", None) from exc
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != DEFAULT_REGION:
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            await client.create_bucket(**kwargs)
        except ClientError as exc:
            if error_code(exc) != "BucketAlreadyOwnedByYou":  # created meanwhile: fine
                raise translate(exc, "CreateBucket", None) from exc
        except BotoCoreError as exc:
            raise translate(exc, "CreateBucket", None) from exc
        else:
            _log.info("created bucket %s", self.bucket)

    async def close(self) -> None:
        stack, self._stack, self._client, self._signer = self._stack, None, None, None
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _require_client(self) -> Any:
        if self._client is None:
            raise RuntimeError("the S3 object store is not open: use 'async with' or open()")
        return self._client

    # -- data --------------------------------------------------------------------------
    async def put(
        self, key: str, data: bytes, *, content_type: str = "application/octet-stream"
    ) -> None:
        validate_key(key)
        client = self._require_client()
        with s3_errors("PutObject"):
            await client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type
            )

    async def get(self, key: str) -> bytes:
        validate_key(key)
        client = self._require_client()
        with s3_errors("GetObject", key):
            response = await client.get_object(Bucket=self.bucket, Key=key)
            async with response["Body"] as body:
                data = await body.read()
        return bytes(data)

    async def stat_many(self, keys: Sequence[str]) -> builtins.list[ObjectInfo | None]:
        """Sizes of a batch of keys in a few requests, never one read per object.

        The keys are grouped by their directory (a recording's is one minute of every
        camera's segments, in the order they ended: ``replay.object_keys``): a directory
        asked for one key gets a HEAD; one asked for several gets a listing of just their
        span (``StartAfter`` the first, until the last is passed, at most
        :data:`STAT_SPAN_PAGES` pages). A key the listing did not show is confirmed by a
        HEAD, so an answer never depends on a store's listing order (SeaweedFS walks its
        tree; a flat directory is in key order), and costs an extra request only for an
        object that is really missing or beyond the pages read. At most
        :data:`STAT_CONCURRENCY` requests are in flight.
        """
        for key in keys:
            validate_key(key)
        groups: dict[str, set[str]] = {}
        for key in keys:
            groups.setdefault(key.rpartition("/")[0] + "/", set()).add(key)
        gate = asyncio.Semaphore(STAT_CONCURRENCY)
        found: dict[str, ObjectInfo] = {}

        async def listed(prefix: str, wanted: set[str]) -> None:
            if len(wanted) > 1:
                async with gate:
                    found.update(await self._list_span(prefix, sorted(wanted)))
            await asyncio.gather(*(headed(key) for key in wanted if key not in found))

        async def headed(key: str) -> None:
            async with gate:
                info = await self.head(key)
            if info is not None:
                found[key] = info

        await asyncio.gather(*(listed(prefix, wanted) for prefix, wanted in groups.items()))
        return [found.get(key) for key in keys]

    async def _list_span(self, prefix: str, wanted: builtins.list[str]) -> dict[str, ObjectInfo]:
        """The objects among ``wanted`` (sorted, all directly in ``prefix``) that one span
        of ListObjectsV2 pages shows, from just before the first to past the last or to
        :data:`STAT_SPAN_PAGES` pages."""
        client = self._require_client()
        seen: dict[str, ObjectInfo] = {}
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": prefix,
            "Delimiter": "/",
            # The first key less its last character sorts just before it.
            "StartAfter": wanted[0][:-1],
            # Enough for the keys looked for and as many others between them (the batch's
            # neighbours in the order segments ended); further pages if not.
            "MaxKeys": min(self._list_page_size, 2 * len(wanted) + STAT_LIST_SLACK),
        }
        targets = set(wanted)
        for _ in range(STAT_SPAN_PAGES):
            with s3_errors("ListObjectsV2"):
                page = await client.list_objects_v2(**kwargs)
            items = page.get("Contents", [])
            for item in items:
                if item["Key"] in targets:
                    seen[item["Key"]] = object_info(
                        item["Key"], item["Size"], item.get("LastModified"), item.get("ETag")
                    )
            last = items[-1]["Key"] if items else None
            token = page.get("NextContinuationToken")
            done = len(seen) == len(targets) or last is None or last >= wanted[-1]
            if done or not page.get("IsTruncated") or not token:
                break
            kwargs["ContinuationToken"] = token
        return seen

    async def head(self, key: str) -> ObjectInfo | None:
        validate_key(key)
        client = self._require_client()
        try:
            with s3_errors("HeadObject", key):
                response = await client.head_object(Bucket=self.bucket, Key=key)
        except ObjectNotFound:
            return None
        return object_info(
            key, response["ContentLength"], response.get("LastModified"), response.get("ETag")
        )

    async def copy(self, source: str, dest: str) -> None:
        validate_key(source)
        validate_key(dest)
        client = self._require_client()
        with s3_errors("CopyObject", source):
            await client.copy_object(
                Bucket=self.bucket, Key=dest, CopySource={"Bucket": self.bucket, "Key": source}
            )

    async def delete_many(self, keys: Sequence[str]) -> int:
        for key in keys:
            validate_key(key)
        client = self._require_client()
        size = self._delete_batch_size
        for start in range(0, len(keys), size):
            batch = keys[start : start + size]
            with s3_errors("DeleteObjects"):
                response = await client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                )
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise S3StoreError(
                    operation="DeleteObjects",
                    code=str(first.get("Code", "unknown")),
                    message=f"{len(errors)} of {len(batch)} keys not deleted, first: "
                    f"{first.get('Message', '')}",
                    key=first.get("Key"),
                )
        return len(keys)

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Page through ListObjectsV2. Order is the store's: byte order on AWS S3 and
        MinIO; SeaweedFS walks its directory tree, so ``a/z`` may come before ``a-b``."""
        validate_prefix(prefix)
        client = self._require_client()
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "Bucket": self.bucket,
                "Prefix": prefix,
                "MaxKeys": self._list_page_size,
            }
            if token is not None:
                kwargs["ContinuationToken"] = token
            with s3_errors("ListObjectsV2"):
                page = await client.list_objects_v2(**kwargs)
            for item in page.get("Contents", []):
                yield object_info(
                    item["Key"], item["Size"], item.get("LastModified"), item.get("ETag")
                )
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")
            if not token:
                raise S3StoreError(
                    operation="ListObjectsV2",
                    code="NoContinuationToken",
                    message="a truncated page came without a continuation token",
                )

    # -- presigned URLs ----------------------------------------------------------------
    async def _presign(self, method: str, key: str, expires_in: int, **params: Any) -> str:
        validate_key(key)
        if not 1 <= expires_in <= MAX_PRESIGN_SECONDS:
            raise ValueError(f"expires_in must be between 1 and {MAX_PRESIGN_SECONDS} seconds")
        client = self._require_client()
        if self._signer is not None:
            # The wall clock, as botocore's: the store checks the URL against its own.
            return self._signer.presign(
                _HTTP_METHODS[method],
                key,
                now=datetime.now(UTC),
                expires_in=expires_in,
                headers={_HEADERS[name]: str(value) for name, value in params.items()},
            )
        with s3_errors(f"presign {method}", key):
            url = await client.generate_presigned_url(
                method,
                Params={"Bucket": self.bucket, "Key": key, **params},
                ExpiresIn=expires_in,
            )
        return str(url)

    async def presign_get(self, key: str, *, expires_in: int) -> str:
        return await self._presign("get_object", key, expires_in)

    async def presign_put(
        self, key: str, *, expires_in: int, size: int, sha256: str
    ) -> PresignedPut:
        """A conditional write of exactly the granted bytes. botocore lists ``content-length``,
        ``if-none-match`` and ``x-amz-checksum-sha256`` among the URL's signed headers, so
        the PUT must carry them as signed. What SeaweedFS 4.48 does (tests/test_s3store.py):
        a body of another length, or the checksum header dropped or changed, is 403
        ``SignatureDoesNotMatch``; a body of the right length with another SHA-256 is 400
        ``BadDigest`` (its message names Content-MD5, but the SHA-256 is what it checks);
        an existing key is 412; none of them leaves an object. AWS S3 documents the same
        (a signed header must match; a checksum header that differs from the body fails
        the PUT). A store that ignored ``x-amz-checksum-sha256`` (older Ceph RGW) would
        still hold the size, not the digest: run tests/test_s3store.py against it.

        The headers to send: ``If-None-Match`` and ``x-amz-checksum-sha256`` (base64 of
        the digest, as S3 wants it); ``Content-Length`` is the body's own, which any HTTP
        client sends (not chunked)."""
        check_upload(size, sha256)
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode("ascii")
        url = await self._presign(
            "put_object",
            key,
            expires_in,
            IfNoneMatch="*",
            ContentLength=size,
            ChecksumSHA256=checksum,
        )
        return PresignedPut(url, {"If-None-Match": "*", "x-amz-checksum-sha256": checksum})

    # -- retention ---------------------------------------------------------------------
    async def set_lifecycle_expiry(self, rules: Mapping[str, int]) -> bool:
        """Ask the bucket to expire objects under each prefix after N days.

        Replaces the bucket's whole lifecycle configuration; an empty mapping removes it.
        Returns False (and logs why) when the store refuses: expiry is then up to the
        service's own sweeper, which must run in any case (``weed mini`` runs lifecycle
        expiry only once a day).
        """
        for prefix, days in rules.items():
            validate_prefix(prefix)
            if not prefix:
                raise ValueError("a lifecycle rule needs a prefix; the whole bucket is refused")
            if isinstance(days, bool) or not isinstance(days, int) or days < 1:
                raise ValueError(f"expiry for {prefix!r} must be a whole number of days >= 1")
        client = self._require_client()
        try:
            if not rules:
                await client.delete_bucket_lifecycle(Bucket=self.bucket)
            else:
                await client.put_bucket_lifecycle_configuration(
                    Bucket=self.bucket,
                    LifecycleConfiguration={
                        "Rules": [
                            {
                                "ID": f"expire-{prefix}"[:255],
                                "Filter": {"Prefix": prefix},
                                "Status": "Enabled",
                                "Expiration": {"Days": days},
                            }
                            for prefix, days in sorted(rules.items())
                        ]
                    },
                )
        except ClientError as exc:
            _log.warning(
                "bucket %s refused lifecycle rules (%s): %s; the sweeper alone expires objects",
                self.bucket,
                error_code(exc),
                exc,
            )
            return False
        except BotoCoreError as exc:
            _log.warning("could not set lifecycle rules on bucket %s: %s", self.bucket, exc)
            return False
        return True
