"""The S3 object store against a real SeaweedFS (``weed mini``) started for this module."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import socket
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError
from botocore.utils import parse_timestamp
from yarl import URL

from storage.objects import InvalidKey, ObjectNotFound
from storage.s3store import STAT_SPAN_PAGES, S3ObjectStore, S3StoreError
from storage.s3wire import timestamp
from storage.sigv4 import Signer
from tests.seaweed import SeaweedServer, seaweed_server

BUCKET = "kanjia-test"


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    with seaweed_server(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture(scope="module")
async def store(seaweed: SeaweedServer) -> AsyncIterator[S3ObjectStore]:
    async with S3ObjectStore.from_url(seaweed.url_for_bucket(BUCKET)) as opened:
        yield opened


def _store_on(seaweed: SeaweedServer, **options: Any) -> S3ObjectStore:
    values: dict[str, Any] = {
        "bucket": BUCKET,
        "endpoint_url": seaweed.endpoint,
        "region": seaweed.region,
        "access_key": seaweed.access_key,
        "secret_key": seaweed.secret_key,
    }
    values.update(options)
    return S3ObjectStore(**values)


@pytest.fixture(scope="module")
async def offline_store() -> AsyncIterator[S3ObjectStore]:
    """Opened without creating the bucket, on a port where nothing listens: any request
    it made would fail as unreachable. The port stays bound (never listening) for the
    fixture's lifetime, so no server started meanwhile can take it."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        url = f"s3://{BUCKET}?endpoint=http://127.0.0.1:{port}&access_key=a&secret_key=b"
        async with S3ObjectStore.from_url(url, create_bucket=False) as opened:
            yield opened


async def _keys(store: S3ObjectStore, prefix: str) -> list[str]:
    return [info.key async for info in store.list(prefix)]


# -- from_url --------------------------------------------------------------------------


def test_from_url_reads_bucket_endpoint_and_region() -> None:
    store = S3ObjectStore.from_url("s3://kj-media?endpoint=http://127.0.0.1:8333&region=cn-east-1")
    assert (store.bucket, store.endpoint_url, store.region) == (
        "kj-media",
        "http://127.0.0.1:8333",
        "cn-east-1",
    )


def test_from_url_defaults_region_and_hides_secret_in_repr() -> None:
    store = S3ObjectStore.from_url("s3://kj-media?access_key=AK&secret_key=topsecret")
    assert (store.endpoint_url, store.region) == (None, "us-east-1")
    assert "topsecret" not in repr(store)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("http://kj-media", "starts with s3://", id="wrong-scheme"),
        pytest.param("s3://?endpoint=http://127.0.0.1:1", "names no bucket", id="no-bucket"),
        pytest.param("s3://kj-media/some/path", "without a path", id="path"),
        pytest.param("s3://Kj_Media", "not a valid S3 bucket name", id="bad-bucket"),
        pytest.param("s3://ab", "not a valid S3 bucket name", id="short-bucket"),
        pytest.param("s3://kj-media?endpoint=ftp://h:21", "not an http", id="ftp-endpoint"),
        pytest.param("s3://kj-media?endpoint=127.0.0.1:8333", "not an http", id="bare-endpoint"),
        pytest.param("s3://kj-media?region=US%20East", "not a region name", id="bad-region"),
        pytest.param("s3://kj-media?colour=red", "unknown parameters", id="unknown-param"),
        pytest.param("s3://kj-media?region=a&region=b", "more than once", id="repeated-param"),
        pytest.param("s3://kj-media?access_key=AK", "both access_key", id="half-credentials"),
        pytest.param("s3://user:pw@kj-media", "no user or password", id="userinfo"),
    ],
)
def test_from_url_refuses_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        S3ObjectStore.from_url(url)


def test_from_url_error_does_not_repeat_the_secret() -> None:
    with pytest.raises(ValueError, match="unknown parameters") as caught:
        S3ObjectStore.from_url("s3://kj-media?secret_key=topsecret&access_key=AK&colour=red")
    assert "topsecret" not in str(caught.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"list_page_size": 0}, "list_page_size", id="page-0"),
        pytest.param({"list_page_size": 1001}, "list_page_size", id="page-1001"),
        pytest.param({"delete_batch_size": 1001}, "delete_batch_size", id="batch-1001"),
    ],
)
def test_constructor_refuses_out_of_range_sizes(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        S3ObjectStore(bucket="kj-media", **options)


async def test_operations_need_an_open_store() -> None:
    store = S3ObjectStore.from_url("s3://kj-media?endpoint=http://127.0.0.1:1")
    with pytest.raises(RuntimeError, match="not open"):
        await store.get("a/b")


# -- keys are checked before any request -----------------------------------------------

Operation = Callable[[S3ObjectStore, str], Awaitable[object]]


async def _list_all(store: S3ObjectStore, key: str) -> list[str]:
    return await _keys(store, key)


OPERATIONS: list[Any] = [
    pytest.param(lambda s, k: s.put(k, b"x"), id="put"),
    pytest.param(lambda s, k: s.get(k), id="get"),
    pytest.param(lambda s, k: s.head(k), id="head"),
    pytest.param(lambda s, k: s.copy(k, "ok/dest"), id="copy-source"),
    pytest.param(lambda s, k: s.copy("ok/source", k), id="copy-dest"),
    pytest.param(lambda s, k: s.delete_many(["ok/first", k]), id="delete-many"),
    pytest.param(lambda s, k: s.stat_many(["ok/first", k]), id="stat-many"),
    pytest.param(_list_all, id="list"),
    pytest.param(lambda s, k: s.presign_get(k, expires_in=60), id="presign-get"),
    pytest.param(
        lambda s, k: s.presign_put(k, expires_in=60, size=1, sha256="0" * 64), id="presign-put"
    ),
]


@pytest.mark.parametrize("key", ["../x", "/abs", "a//b"])
@pytest.mark.parametrize("operation", OPERATIONS)
async def test_unsafe_keys_are_refused_before_any_request(
    offline_store: S3ObjectStore, operation: Operation, key: str
) -> None:
    # The endpoint is unreachable, so reaching S3 would raise S3StoreError instead.
    with pytest.raises(InvalidKey):
        await operation(offline_store, key)


async def test_unreachable_endpoint_is_an_s3_store_error(offline_store: S3ObjectStore) -> None:
    # The control for the test above: a safe key does reach for the network.
    with pytest.raises(S3StoreError) as caught:
        await offline_store.get("ok/key")
    assert caught.value.code == "unreachable"


@pytest.mark.parametrize(
    "rules",
    [
        pytest.param({"": 1}, id="whole-bucket"),
        pytest.param({"seg/": 0}, id="zero-days"),
        pytest.param({"../seg/": 1}, id="unsafe-prefix"),
    ],
)
async def test_lifecycle_rules_are_checked_first(
    offline_store: S3ObjectStore, rules: dict[str, int]
) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - InvalidKey is a ValueError too
        await offline_store.set_lifecycle_expiry(rules)


# -- against SeaweedFS -----------------------------------------------------------------


async def test_put_get_head(store: S3ObjectStore) -> None:
    data = b"\x00\x01segment bytes\xff" * 100
    await store.put("rt/cam-1/0001.ts", data, content_type="video/mp2t")
    assert await store.get("rt/cam-1/0001.ts") == data
    info = await store.head("rt/cam-1/0001.ts")
    assert info is not None
    assert (info.key, info.size) == ("rt/cam-1/0001.ts", len(data))
    assert info.modified is not None
    assert info.modified.tzinfo is not None
    # A single-part upload's ETag is the MD5 of its bytes.
    assert info.etag == hashlib.md5(data, usedforsecurity=False).hexdigest()


async def test_missing_key(store: S3ObjectStore) -> None:
    with pytest.raises(ObjectNotFound) as caught:
        await store.get("missing/nothing.ts")
    assert caught.value.key == "missing/nothing.ts"
    assert await store.head("missing/nothing.ts") is None


@contextmanager
def counting(store: S3ObjectStore) -> Iterator[Counter[str]]:
    """The S3 operations the store calls meanwhile, by name."""
    calls: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    events = store._require_client().meta.events
    events.register("before-call.s3", count)
    try:
        yield calls
    finally:
        events.unregister("before-call.s3", count)


def day_key(camera: str, n: int) -> str:
    return f"stat/{camera}/2026/11/20/{n:06d}-continuous-{camera}-{n}.ts"


async def test_stat_many_lists_a_directory_once_and_heads_the_rest(store: S3ObjectStore) -> None:
    """Issue 16, item 2: a batch of one camera's day is confirmed with one listing, not a
    request per object; a lone key gets a HEAD; a key the listing lacks is confirmed
    absent by a HEAD."""
    asked = [day_key("cam-1", n) for n in range(0, 300, 10)]  # 30 keys in one directory
    missing = {asked[7], asked[-1]}
    for n, key in enumerate(asked):
        if key not in missing:
            await store.put(key, b"s" * (n + 1))
    for n in range(5, 300, 50):  # objects in the span nobody asked about
        await store.put(day_key("cam-1", n), b"other")
    await store.put(day_key("cam-2", 0), b"alone")
    batch = [day_key("cam-2", 0), *reversed(asked)]
    with counting(store) as calls:
        found = await store.stat_many(batch)
    assert calls == {"ListObjectsV2": 1, "HeadObject": 1 + len(missing)}
    sizes = {key: (None if key in missing else asked.index(key) + 1) for key in asked}
    assert [None if info is None else info.size for info in found] == [
        len(b"alone"),
        *(sizes[key] for key in reversed(asked)),
    ]
    assert [info.key if info else None for info in found] == [
        None if key in missing else key for key in batch
    ]
    assert await store.stat_many([]) == []


async def test_stat_many_follows_the_pages_of_a_span(seaweed: SeaweedServer) -> None:
    asked = [day_key("cam-3", n) for n in range(12)]
    async with _store_on(seaweed, list_page_size=5) as small_pages:
        for key in asked:
            await small_pages.put(key, b"x" * 7)
        with counting(small_pages) as calls:
            found = await small_pages.stat_many(asked)
    assert calls == {"ListObjectsV2": 3}
    assert [info.size if info else None for info in found] == [7] * 12


async def test_stat_many_reads_a_few_pages_of_a_span_then_heads_the_rest(
    seaweed: SeaweedServer,
) -> None:
    """A span stretched by a late key (a camera's backlog after an outage) is not listed
    to its end: after STAT_SPAN_PAGES pages, the keys not reached get a HEAD each."""
    asked = [day_key("cam-4", n) for n in range(12)]
    async with _store_on(seaweed, list_page_size=2) as small_pages:
        for key in asked:
            await small_pages.put(key, b"y" * 3)
        with counting(small_pages) as calls:
            found = await small_pages.stat_many(asked)
    assert calls == {"ListObjectsV2": STAT_SPAN_PAGES, "HeadObject": 12 - 2 * STAT_SPAN_PAGES}
    assert [info.size if info else None for info in found] == [3] * 12


async def test_copy(store: S3ObjectStore) -> None:
    await store.put("cp/rec/clip.mp4", b"clip")
    await store.copy("cp/rec/clip.mp4", "cp/family/acc-1/clip.mp4")
    assert await store.get("cp/family/acc-1/clip.mp4") == b"clip"
    assert await store.get("cp/rec/clip.mp4") == b"clip"
    with pytest.raises(ObjectNotFound) as caught:
        await store.copy("cp/rec/gone.mp4", "cp/family/acc-1/gone.mp4")
    assert caught.value.key == "cp/rec/gone.mp4"


async def test_list_by_prefix_follows_pages(seaweed: SeaweedServer, store: S3ObjectStore) -> None:
    keys = [
        "pg/cam1/0003.ts",
        "pg/cam1/0001.ts",
        "pg/cam1/0005.ts",
        "pg/cam1/0002.ts",
        "pg/cam1/0004.ts",
        "pg/cam10/0001.ts",
        "pg/cam2/0001.ts",
    ]
    await asyncio.gather(*(store.put(key, key.encode()) for key in keys))
    async with _store_on(seaweed, list_page_size=2) as paged:
        assert await _keys(paged, "pg/cam1/") == [
            "pg/cam1/0001.ts",
            "pg/cam1/0002.ts",
            "pg/cam1/0003.ts",
            "pg/cam1/0004.ts",
            "pg/cam1/0005.ts",
        ]
        assert await _keys(paged, "pg/cam1") == [
            "pg/cam1/0001.ts",
            "pg/cam1/0002.ts",
            "pg/cam1/0003.ts",
            "pg/cam1/0004.ts",
            "pg/cam1/0005.ts",
            "pg/cam10/0001.ts",
        ]
        assert await _keys(paged, "pg/cam3/") == []
    sizes = {info.key: info.size async for info in store.list("pg/cam2/")}
    assert sizes == {"pg/cam2/0001.ts": len(b"pg/cam2/0001.ts")}


async def test_delete_many_in_batches(seaweed: SeaweedServer, store: S3ObjectStore) -> None:
    keys = [f"del/cam-1/{n:04d}.ts" for n in range(5)]
    await asyncio.gather(*(store.put(key, b"x") for key in keys))
    await store.put("del/cam-2/keep.ts", b"keep")
    async with _store_on(seaweed, delete_batch_size=2) as batched:
        # 5 present + 1 absent key in batches of 2: three requests, all asked keys counted.
        assert await batched.delete_many([*keys, "del/cam-1/absent.ts"]) == 6
        assert await batched.delete_many([]) == 0
    assert await _keys(store, "del/") == ["del/cam-2/keep.ts"]
    for key in keys:
        assert await store.head(key) is None


async def test_bucket_is_created_once(seaweed: SeaweedServer) -> None:
    async with _store_on(seaweed, bucket="kanjia-fresh") as fresh:
        await fresh.put("a/b", b"1")
    async with _store_on(seaweed, bucket="kanjia-fresh") as again:  # exists: no error
        assert await again.get("a/b") == b"1"


async def test_missing_bucket_without_create(seaweed: SeaweedServer) -> None:
    async with _store_on(seaweed, bucket="kanjia-never", create_bucket=False) as store:
        with pytest.raises(S3StoreError) as caught:
            await store.put("a/b", b"1")
    assert caught.value.code == "NoSuchBucket"


async def test_wrong_secret_is_refused(seaweed: SeaweedServer, store: S3ObjectStore) -> None:
    async with _store_on(seaweed, secret_key="not-the-secret", create_bucket=False) as bad:
        with pytest.raises(S3StoreError) as caught:
            await bad.put("auth/x", b"1")
    assert caught.value.code == "SignatureDoesNotMatch"
    assert await store.head("auth/x") is None


# -- presigned URLs --------------------------------------------------------------------


def granted(data: bytes) -> dict[str, Any]:
    """``presign_put``'s binding of ``data``: its size and SHA-256."""
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


async def test_presigned_put_then_get(store: S3ObjectStore) -> None:
    data = bytes(range(256)) * 64
    put = await store.presign_put("ps/cam-1/upload.ts", expires_in=60, **granted(data))
    get_url = await store.presign_get("ps/cam-1/upload.ts", expires_in=60)
    async with aiohttp.ClientSession() as http:
        async with http.put(URL(put.url, encoded=True), data=data, headers=put.headers) as response:
            assert response.status == 200
        async with http.get(URL(get_url, encoded=True)) as response:
            assert response.status == 200
            assert await response.read() == data
    assert await store.get("ps/cam-1/upload.ts") == data


async def test_expired_presigned_url_is_refused(store: S3ObjectStore) -> None:
    await store.put("ps/expiry.ts", b"e")
    short = await store.presign_get("ps/expiry.ts", expires_in=1)
    long = await store.presign_get("ps/expiry.ts", expires_in=60)
    await asyncio.sleep(2.5)  # X-Amz-Date has whole seconds: 1 s lifetime + margin
    async with aiohttp.ClientSession() as http:
        async with http.get(URL(short, encoded=True)) as response:
            assert response.status == 403
        async with http.get(URL(long, encoded=True)) as response:  # control
            assert response.status == 200


def _flip_signature_character(url: str) -> str:
    def flip(match: re.Match[str]) -> str:
        signature = match.group(1)
        last = "0" if signature[-1] != "0" else "1"
        return f"X-Amz-Signature={signature[:-1]}{last}"

    changed = re.sub(r"X-Amz-Signature=([0-9a-f]+)", flip, url)
    assert changed != url
    return changed


def _other_key(url: str) -> str:
    assert "/ps/tamper/a.ts?" in url
    return url.replace("/ps/tamper/a.ts?", "/ps/tamper/b.ts?")


def _longer_expiry(url: str) -> str:
    changed = re.sub(r"X-Amz-Expires=\d+", "X-Amz-Expires=3600", url)
    assert changed != url
    return changed


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(_flip_signature_character, id="signature-character"),
        pytest.param(_other_key, id="other-key"),
        pytest.param(_longer_expiry, id="longer-expiry"),
    ],
)
async def test_tampered_presigned_get_is_refused(
    store: S3ObjectStore, tamper: Callable[[str], str]
) -> None:
    await store.put("ps/tamper/a.ts", b"a")
    await store.put("ps/tamper/b.ts", b"b")  # so other-key would otherwise be a 200
    url = await store.presign_get("ps/tamper/a.ts", expires_in=60)
    async with aiohttp.ClientSession() as http:
        async with http.get(URL(url, encoded=True)) as response:  # control
            assert response.status == 200
        async with http.get(URL(tamper(url), encoded=True)) as response:
            assert response.status == 403


async def test_presigned_put_to_another_key_is_refused(store: S3ObjectStore) -> None:
    put = await store.presign_put("ps/put/mine.ts", expires_in=60, **granted(b"forged"))
    url = put.url
    forged = url.replace("/ps/put/mine.ts?", "/ps/put/theirs.ts?")
    assert forged != url
    async with (
        aiohttp.ClientSession() as http,
        http.put(URL(forged, encoded=True), data=b"forged", headers=put.headers) as response,
    ):
        assert response.status == 403
    assert await store.head("ps/put/theirs.ts") is None


# What SeaweedFS 4.48 does with conditional writes (issue 13, item 5), found here:
# - a PUT with ``If-None-Match: *`` onto an existing key is refused 412 PreconditionFailed
#   (through the SDK and through a presigned URL), and the object is kept;
# - botocore puts ``if-none-match`` among a presigned URL's X-Amz-SignedHeaders; SeaweedFS
#   checks it: the same URL without the header, or with another value, is 403
#   SignatureDoesNotMatch, so a client holding the URL cannot drop the condition;
# - of 16 racing PUTs through one such URL to a fresh key exactly one gets 200;
# - a plain (unconditional) presigned PUT still replaces an object: the condition is
#   only as good as the URL that signs it.


async def _put(url: str, data: bytes, headers: Mapping[str, str]) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.put(URL(url, encoded=True), data=data, headers=headers) as response,
    ):
        return response.status, await response.text()


async def test_a_conditional_put_onto_an_existing_key_is_refused(store: S3ObjectStore) -> None:
    await store.put("inm/sdk.ts", b"original")
    with pytest.raises(ClientError) as caught:
        await store._require_client().put_object(
            Bucket=BUCKET, Key="inm/sdk.ts", Body=b"attacker", IfNoneMatch="*"
        )
    assert caught.value.response["Error"]["Code"] == "PreconditionFailed"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert await store.get("inm/sdk.ts") == b"original"


async def test_a_presigned_put_never_replaces_what_it_stored(store: S3ObjectStore) -> None:
    put = await store.presign_put("inm/cam-1/seg.ts", expires_in=60, **granted(b"original"))
    assert put.headers["If-None-Match"] == "*"
    assert "if-none-match" in parse_qs(urlsplit(put.url).query)["X-Amz-SignedHeaders"][0]
    assert (await _put(put.url, b"original", put.headers))[0] == 200
    status, body = await _put(put.url, b"original", put.headers)  # the very bytes granted
    assert (status, "PreconditionFailed" in body) == (412, True)
    await store.put("inm/cam-1/by-service.ts", b"the service's")
    other = await store.presign_put(
        "inm/cam-1/by-service.ts", expires_in=60, **granted(b"attacker")
    )
    assert (await _put(other.url, b"attacker", other.headers))[0] == 412
    assert await store.get("inm/cam-1/seg.ts") == b"original"
    assert await store.get("inm/cam-1/by-service.ts") == b"the service's"


CHECKSUM = base64.b64encode(hashlib.sha256(b"attacker").digest()).decode()


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"x-amz-checksum-sha256": CHECKSUM}, id="dropped"),
        pytest.param({"If-None-Match": '"etag"', "x-amz-checksum-sha256": CHECKSUM}, id="changed"),
    ],
)
async def test_the_condition_is_signed_into_the_url(
    store: S3ObjectStore, headers: dict[str, str]
) -> None:
    await store.put("inm/signed/kept.ts", b"original")
    for key in ("inm/signed/kept.ts", "inm/signed/fresh.ts"):
        put = await store.presign_put(key, expires_in=60, **granted(b"attacker"))
        status, body = await _put(put.url, b"attacker", headers)
        assert (status, "SignatureDoesNotMatch" in body) == (403, True)
    assert await store.get("inm/signed/kept.ts") == b"original"
    assert await store.head("inm/signed/fresh.ts") is None


async def test_of_racing_presigned_puts_exactly_one_wins(store: S3ObjectStore) -> None:
    body = bytes(range(250)) * 200
    put = await store.presign_put("inm/race.ts", expires_in=60, **granted(body))
    statuses = [
        status
        for status, _ in await asyncio.gather(
            *(_put(put.url, body, put.headers) for _ in range(16))
        )
    ]
    assert sorted(statuses) == [200] + [412] * 15
    assert await store.get("inm/race.ts") == body


# What SeaweedFS 4.48 does with an upload URL that binds the body (issue 16, item 2; issue
# 14, item 5), found here: botocore signs ``content-length`` and ``x-amz-checksum-sha256``
# (given as ContentLength and ChecksumSHA256) into the presigned PUT, and SeaweedFS
# - refuses a body of another length, longer or shorter, with 403 SignatureDoesNotMatch
#   (the Content-Length differs from the signed one);
# - refuses a body of the right length with other bytes with 400 BadDigest (its message
#   says "Content-Md5", but the SHA-256 header is what it compared);
# - refuses the PUT with the checksum header dropped or changed: 403 SignatureDoesNotMatch;
# - stores nothing on any of these refusals (HEAD finds nothing; a retry with the right
#   bytes through the same conditional URL still succeeds), and reports the checksum on a
#   HEAD with ``ChecksumMode=ENABLED``; listings do not carry it.
# A signed Content-Length alone (no checksum) lets other bytes of the same length in.


async def test_a_presigned_put_takes_only_the_granted_bytes(store: S3ObjectStore) -> None:
    data = bytes(range(256)) * 40
    key = "bind/cam-1/seg.ts"
    put = await store.presign_put(key, expires_in=60, **granted(data))
    checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert put.headers == {"If-None-Match": "*", "x-amz-checksum-sha256": checksum}
    signed = parse_qs(urlsplit(put.url).query)["X-Amz-SignedHeaders"][0].split(";")
    assert {"content-length", "if-none-match", "x-amz-checksum-sha256"} <= set(signed)
    other = b"\x47" + data[1:]
    other_checksum = base64.b64encode(hashlib.sha256(other).digest()).decode()
    refusals = [
        (data + b"x", put.headers, 403, "SignatureDoesNotMatch"),
        (data * 10, put.headers, 403, "SignatureDoesNotMatch"),
        (data[:-1], put.headers, 403, "SignatureDoesNotMatch"),
        (other, put.headers, 400, "BadDigest"),
        (other, {"If-None-Match": "*"}, 403, "SignatureDoesNotMatch"),
        (other, {"If-None-Match": "*", "x-amz-checksum-sha256": other_checksum}, 403,
         "SignatureDoesNotMatch"),
    ]  # fmt: skip
    for body, headers, status, code in refusals:
        got, text = await _put(put.url, body, headers)
        assert (got, code in text) == (status, True), (len(body), headers, text)
        assert await store.head(key) is None
    assert (await _put(put.url, data, put.headers))[0] == 200
    assert await store.get(key) == data
    response = await store._require_client().head_object(
        Bucket=BUCKET, Key=key, ChecksumMode="ENABLED"
    )
    assert response["ChecksumSHA256"] == checksum
    status, text = await _put(put.url, data, put.headers)
    assert (status, "PreconditionFailed" in text) == (412, True)


# -- lifecycle -------------------------------------------------------------------------


async def _lifecycle_rules(seaweed: SeaweedServer) -> dict[str, int]:
    """The bucket's expiry rules as SeaweedFS reports them, through a separate client."""
    async with get_session().create_client(
        "s3",
        region_name=seaweed.region,
        endpoint_url=seaweed.endpoint,
        aws_access_key_id=seaweed.access_key,
        aws_secret_access_key=seaweed.secret_key,
    ) as client:
        try:
            config = await client.get_bucket_lifecycle_configuration(Bucket=BUCKET)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "NoSuchLifecycleConfiguration":
                return {}
            raise
    return {rule["Filter"]["Prefix"]: rule["Expiration"]["Days"] for rule in config["Rules"]}


async def test_lifecycle_rules_are_accepted(seaweed: SeaweedServer, store: S3ObjectStore) -> None:
    # SeaweedFS 4.48 accepts lifecycle rules (weed mini applies them once a day).
    rules = {"rec/continuous-1d/": 1, "rec/event-7d/": 7, "rec/event-30d/": 30}
    assert await store.set_lifecycle_expiry(rules) is True
    assert await _lifecycle_rules(seaweed) == rules
    assert await store.set_lifecycle_expiry({}) is True
    assert await _lifecycle_rules(seaweed) == {}


async def test_refused_lifecycle_rules_are_reported_false(
    seaweed: SeaweedServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with _store_on(seaweed, secret_key="not-the-secret", create_bucket=False) as bad:
        with caplog.at_level(logging.WARNING, logger="storage.s3store"):
            assert await bad.set_lifecycle_expiry({"rec/event-1d/": 1}) is False
    assert any("refused lifecycle rules" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("2026-12-03T15:14:05.000Z", id="listing-iso-8601"),
        pytest.param("Thu, 03 Dec 2026 15:14:05 GMT", id="header-rfc-1123"),
        pytest.param("1796310845", id="epoch-seconds-by-botocore"),
    ],
)
def test_s3_timestamps_are_read_as_botocore_reads_them(text: str) -> None:
    assert timestamp(text) == parse_timestamp(text)
    assert timestamp(text).utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("method", "key", "params", "headers"),
    [
        pytest.param("get_object", "rec/7d/a.ts", {}, {}, id="get"),
        pytest.param(
            "put_object",
            "rec/7d/2026/05/01/1030/05-continuous-s_1@cam:1.ts",
            {"IfNoneMatch": "*", "ContentLength": 66_000, "ChecksumSHA256": "q6ur+q6u/q6u="},
            {"If-None-Match": "*", "Content-Length": "66000",
             "x-amz-checksum-sha256": "q6ur+q6u/q6u="},
            id="conditional-put-with-checksum",
        ),
    ],
)  # fmt: skip
async def test_the_signer_writes_botocores_url_byte_for_byte(
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    key: str,
    params: dict[str, Any],
    headers: dict[str, str],
) -> None:
    """storage.sigv4 signs what botocore's generate_presigned_url signs, at one instant,
    with and without a session token (SeaweedFS then accepts it: the tests above)."""
    at = datetime(2026, 12, 3, 15, 29, 25)  # noqa: DTZ001  # botocore's clock is naive UTC
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: at)
    for token in (None, "session-token/x+y="):
        async with get_session().create_client(
            "s3",
            region_name="us-east-1",
            endpoint_url="http://127.0.0.1:9000",
            aws_access_key_id="AKID",
            aws_secret_access_key="secret/key+1",
            aws_session_token=token,
            config=AioConfig(signature_version="s3v4", s3={"addressing_style": "path"}),
        ) as client:
            expected = await client.generate_presigned_url(
                method, Params={"Bucket": BUCKET, "Key": key, **params}, ExpiresIn=300
            )
        signer = Signer("http://127.0.0.1:9000", BUCKET, "us-east-1", "AKID", "secret/key+1", token)
        http = "GET" if method == "get_object" else "PUT"
        url = signer.presign(http, key, now=at.replace(tzinfo=UTC), expires_in=300, headers=headers)
        assert url == expected
        assert "secret" not in repr(signer)
