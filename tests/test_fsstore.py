"""The filesystem object store and its presigned URLs served by the gateway (issue 2, #4);
uploads bound to their granted size and SHA-256 (issue 16, item 2; issue 14, item 5)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import pytest
from yarl import URL

from devices.clock import ManualClock
from storage.fsstore import (
    UPLOAD_FLUSH_BYTES,
    FilesystemObjectStore,
    SignatureError,
    SignedUpload,
)
from storage.objects import InvalidKey, ObjectExists, ObjectNotFound, UploadRefused
from tests.conftest import T0, StartGateway, eventually


@pytest.fixture
def store(tmp_path: Path) -> FilesystemObjectStore:
    return FilesystemObjectStore(
        root=tmp_path / "objects", base_url="http://x", signing_key=b"k", now=ManualClock(T0).now
    )


async def test_put_get_head_copy_list_delete(store: FilesystemObjectStore) -> None:
    await store.put("rec/7d/cam-1/a.ts", b"aaa")
    await store.put("rec/7d/cam-1/b.ts", b"bbbb")
    await store.put("rec/1d/cam-2/c.ts", b"c")
    assert await store.get("rec/7d/cam-1/a.ts") == b"aaa"
    info = await store.head("rec/7d/cam-1/b.ts")
    assert info is not None
    assert info.size == 4
    assert await store.head("rec/7d/cam-1/zzz.ts") is None
    await store.copy("rec/7d/cam-1/a.ts", "family/acc-1/a.ts")
    assert await store.get("family/acc-1/a.ts") == b"aaa"
    listed = [i.key async for i in store.list("rec/7d/")]
    assert listed == ["rec/7d/cam-1/a.ts", "rec/7d/cam-1/b.ts"]
    assert [i.key async for i in store.list("rec/")] == [
        "rec/1d/cam-2/c.ts",
        "rec/7d/cam-1/a.ts",
        "rec/7d/cam-1/b.ts",
    ]
    assert await store.delete_many(["rec/7d/cam-1/a.ts", "rec/7d/cam-1/gone.ts"]) == 2
    with pytest.raises(ObjectNotFound):
        await store.get("rec/7d/cam-1/a.ts")
    with pytest.raises(ObjectNotFound):
        await store.copy("nope/x", "y/x")


async def test_stat_many_keeps_the_order_and_marks_the_absent(
    store: FilesystemObjectStore,
) -> None:
    await store.put("rec/7d/cam-1/a.ts", b"aaa")
    await store.put("rec/7d/cam-1/b.ts", b"bbbb")
    (store.root / "rec/7d/cam-1/dir.ts").mkdir()
    (store.root / "rec/7d/cam-1/link.ts").symlink_to(store.root / "rec/7d/cam-1/a.ts")
    found = await store.stat_many(
        [
            "rec/7d/cam-1/link.ts",  # a symlink is no object (the store never makes one)
            "rec/7d/cam-1/b.ts",
            "rec/7d/cam-1/gone.ts",
            "rec/7d/cam-1/dir.ts",
            "rec/7d/cam-1/a.ts",
            "rec/7d/cam-1/a.ts/under-a-file.ts",
        ]
    )
    assert [None if info is None else (info.key, info.size) for info in found] == [
        None,
        ("rec/7d/cam-1/b.ts", 4),
        None,
        None,
        ("rec/7d/cam-1/a.ts", 3),
        None,
    ]
    assert await store.stat_many([]) == []
    with pytest.raises(InvalidKey):
        await store.stat_many(["rec/7d/cam-1/a.ts", "../etc/passwd"])


async def test_create_never_replaces_an_object(store: FilesystemObjectStore) -> None:
    """Issue 13: what a presigned PUT does. The first write wins; nothing is left behind."""
    await store.create("rec/7d/cam-1/a.ts", b"original")
    with pytest.raises(ObjectExists):
        await store.create("rec/7d/cam-1/a.ts", b"attacker")
    await store.put("rec/7d/cam-1/b.ts", b"by the service")
    with pytest.raises(ObjectExists):
        await store.create("rec/7d/cam-1/b.ts", b"attacker")
    assert await store.get("rec/7d/cam-1/a.ts") == b"original"
    assert await store.get("rec/7d/cam-1/b.ts") == b"by the service"
    assert sorted(p.name for p in (store.root / "rec/7d/cam-1").iterdir()) == ["a.ts", "b.ts"]


async def test_of_racing_creates_exactly_one_wins(store: FilesystemObjectStore) -> None:
    bodies = [bytes([i]) * 100_000 for i in range(16)]
    results = await asyncio.gather(
        *(store.create("rec/7d/cam-1/race.ts", body) for body in bodies), return_exceptions=True
    )
    winners = [body for body, result in zip(bodies, results, strict=True) if result is None]
    assert len(winners) == 1
    assert all(isinstance(r, ObjectExists) for r in results if r is not None)
    assert await store.get("rec/7d/cam-1/race.ts") == winners[0]
    assert [p.name for p in (store.root / "rec/7d/cam-1").iterdir()] == ["race.ts"]


@pytest.mark.parametrize(
    "key", ["../etc/passwd", "a/../../b", "/abs/key", "a//b", "a/./b", "a\\b", "", "a/b/"]
)
async def test_keys_that_could_escape_are_refused(store: FilesystemObjectStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        await store.put(key, b"x")
    with pytest.raises(InvalidKey):
        await store.presign_get(key, expires_in=60)
    assert not (store.root.parent / "etc").exists()


def granted(data: bytes) -> dict[str, Any]:
    """``presign_put``'s binding of ``data``: its size and SHA-256."""
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


async def test_signature_checks(store: FilesystemObjectStore) -> None:
    def parts(url: str) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(url).query))

    url = (await store.presign_put("a/b.ts", expires_in=60, **granted(b"abc"))).url
    q = parts(url)
    sha = hashlib.sha256(b"abc").hexdigest()
    assert (q["bytes"], q["sha256"]) == ("3", sha)
    signed = {"expires": q["expires"], "sig": q["sig"], "size": "3", "sha256": sha}
    assert store.verify_put("a/b.ts", **signed) == SignedUpload(3, sha)
    with pytest.raises(SignatureError, match="does not match"):
        store.verify("GET", "a/b.ts", q["expires"], q["sig"])  # a PUT URL does not GET
    with pytest.raises(SignatureError, match="verify_put"):
        store.verify("PUT", "a/b.ts", q["expires"], q["sig"])
    for changed in (
        {"expires": str(int(q["expires"]) + 3600)},
        {"size": "4"},  # the size and the digest are covered by the signature
        {"sha256": hashlib.sha256(b"abd").hexdigest()},
    ):
        with pytest.raises(SignatureError, match="does not match"):
            store.verify_put("a/b.ts", **(signed | changed))
    with pytest.raises(SignatureError, match="does not match"):
        store.verify_put("a/c.ts", **signed)
    with pytest.raises(SignatureError, match="missing expires"):
        store.verify_put("a/b.ts", **(signed | {"expires": None}))
    with pytest.raises(SignatureError, match="missing bytes"):
        store.verify_put("a/b.ts", **(signed | {"sha256": None}))
    with pytest.raises(SignatureError, match="malformed"):
        store.verify_put("a/b.ts", **(signed | {"size": "-3"}))
    with pytest.raises(ValueError, match="sha256"):
        await store.presign_put("a/b.ts", expires_in=60, size=3, sha256="ABC")


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        await asyncio.sleep(0)
        yield data[start : start + size]


def leftovers(store: FilesystemObjectStore) -> list[str]:
    """Every file under the store's root, temporary ones included."""
    return sorted(
        p.relative_to(store.root).as_posix() for p in store.root.rglob("*") if p.is_file()
    )


async def test_create_verified_stores_only_the_granted_bytes(store: FilesystemObjectStore) -> None:
    data = bytes(range(256)) * 40
    grant = SignedUpload(len(data), hashlib.sha256(data).hexdigest())
    refusals = {
        "too_large": data + b"x",
        "size_mismatch": data[:-1],
        "checksum_mismatch": b"\x47" + data[1:],
    }
    for reason, body in refusals.items():
        with pytest.raises(UploadRefused) as caught:
            await store.create_verified("rec/7d/cam-1/a.ts", chunks_of(body, 1000), grant=grant)
        assert caught.value.reason == reason
        assert leftovers(store) == []
    await store.create_verified("rec/7d/cam-1/a.ts", chunks_of(data, 1000), grant=grant)
    assert await store.get("rec/7d/cam-1/a.ts") == data
    with pytest.raises(ObjectExists):
        await store.create_verified("rec/7d/cam-1/a.ts", chunks_of(data, 1000), grant=grant)
    assert leftovers(store) == ["rec/7d/cam-1/a.ts"]


async def test_create_verified_refuses_more_bytes_as_they_come(
    store: FilesystemObjectStore,
) -> None:
    """A body past its grant is refused at the first chunk too many: the rest is never read
    (a client that lies about its length cannot make the store take a large object)."""
    grant = SignedUpload(10, hashlib.sha256(b"0123456789").hexdigest())
    read = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal read
        while True:
            read += 1
            yield b"01234567"

    with pytest.raises(UploadRefused, match="more than the 10 bytes"):
        await store.create_verified("rec/7d/cam-1/big.ts", endless(), grant=grant)
    assert read == 2
    assert leftovers(store) == []


async def test_create_verified_streams_to_disk(store: FilesystemObjectStore) -> None:
    """The body goes to a temporary file as it comes, not into memory first: past
    UPLOAD_FLUSH_BYTES, what was received is already on disk before the body ends."""
    data = bytes(range(256)) * (3 * UPLOAD_FLUSH_BYTES // 256)
    grant = SignedUpload(len(data), hashlib.sha256(data).hexdigest())
    on_disk: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        async for chunk in chunks_of(data, 64 * 1024):
            yield chunk
        on_disk.extend(p.stat().st_size for p in store.root.rglob(".tmp-*"))

    await store.create_verified("rec/7d/cam-1/long.ts", body(), grant=grant)
    assert len(on_disk) == 1
    assert on_disk[0] >= len(data) - UPLOAD_FLUSH_BYTES
    assert await store.get("rec/7d/cam-1/long.ts") == data
    assert leftovers(store) == ["rec/7d/cam-1/long.ts"]


def tamper(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


async def test_presigned_put_then_get_round_trips_through_the_gateway(
    start_gateway: StartGateway, clock: ManualClock
) -> None:
    payload = bytes(range(256)) * 100
    async with start_gateway(clock=clock, mqtt=False) as gw, aiohttp.ClientSession() as http:
        store = gw.services.fs_store
        assert store is not None
        put = await store.presign_put("rec/7d/cam-1/seg.ts", expires_in=60, **granted(payload))
        assert put.headers == {}, "the URL carries the grant; the route refuses an overwrite"
        put_url = put.url
        assert put_url.startswith(gw.url)
        r = await http.put(put_url, data=payload)
        assert r.status == 200
        # The same URL, still valid, cannot replace what it stored (issue 13).
        r = await http.put(put_url, data=payload)
        assert r.status == 412
        assert (await r.json())["error"]["code"] == "object_exists"
        get_url = await store.presign_get("rec/7d/cam-1/seg.ts", expires_in=60)
        r = await http.get(get_url)
        assert r.status == 200
        assert await r.read() == payload

        # Tampered: another signature, or the same signature on another key.
        sig = dict(parse_qsl(urlsplit(get_url).query))["sig"]
        bad_sig = ("0" if sig[0] != "0" else "1") + sig[1:]
        r = await http.get(tamper(get_url, sig=bad_sig))
        assert r.status == 403
        assert (await r.json())["error"]["code"] == "forbidden"
        other = get_url.replace("seg.ts", "other.ts")
        assert (await http.get(other)).status == 403

        # Expired: the manual clock moves past the expiry.
        clock.advance(61)
        r = await http.get(get_url)
        assert r.status == 403
        assert "expired" in (await r.json())["error"]["message"]


async def test_a_dotdot_key_is_refused_over_http(
    start_gateway: StartGateway, clock: ManualClock
) -> None:
    async with start_gateway(clock=clock, mqtt=False) as gw, aiohttp.ClientSession() as http:
        # Encoded so that neither client nor server normalises the path away.
        r = await http.get(URL(f"{gw.url}/objects/rec/../../secret?expires=1&sig=x", encoded=True))
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "invalid_key"
        r = await http.put(
            URL(f"{gw.url}/objects/..%2F..%2Fescape?expires=99999999999&sig=x", encoded=True),
            data=b"x",
        )
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "invalid_key"
        assert not any(
            p.name == "escape"
            for p in Path(gw.settings.object_store_url[7:]).parent.rglob("escape")
        )


async def test_an_upload_of_other_bytes_is_refused_before_it_is_stored(
    start_gateway: StartGateway, clock: ManualClock
) -> None:
    """Issue 16 item 2, issue 14 item 5: the PUT route takes only the granted bytes. A
    Content-Length other than the grant's is refused before the body is read; the right
    length with other bytes once they are hashed; nothing is left in the store."""
    data = bytes(range(256)) * 300
    key = "rec/7d/cam-1/bound.ts"
    async with start_gateway(clock=clock, mqtt=False) as gw, aiohttp.ClientSession() as http:
        store = gw.services.fs_store
        assert store is not None
        url = (await store.presign_put(key, expires_in=60, **granted(data))).url

        async def refused(body: object, status: int, code: str, *, to: str = url) -> None:
            r = await http.put(to, data=body)
            assert (r.status, (await r.json())["error"]["code"]) == (status, code)
            assert leftovers(store) == []

        await refused(data + b"x", 413, "too_large")
        await refused(data * 10, 413, "too_large")
        await refused(data[:-1], 400, "size_mismatch")
        await refused(b"\x47" + data[1:], 400, "checksum_mismatch")
        await refused(chunks_of(data, 4096), 411, "length_required")  # chunked: no length
        other = granted(b"\x47" + data[1:])
        await refused(data, 403, "forbidden", to=tamper(url, sha256=str(other["sha256"])))
        assert (await http.put(url, data=data)).status == 200
        assert await store.get(key) == data
        r = await http.put(url, data=data)
        assert (r.status, (await r.json())["error"]["code"]) == (412, "object_exists")
        assert leftovers(store) == [key]


async def test_a_client_gone_mid_body_leaves_nothing(
    start_gateway: StartGateway, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """No temporary file left, and no error logged: a camera losing its link mid-upload
    is an outcome, not a fault of the service."""
    # Four flushes' worth: the half sent is past one flush, so a temporary file exists.
    data = bytes(range(256)) * (4 * UPLOAD_FLUSH_BYTES // 256)
    key = "rec/7d/cam-1/cut.ts"
    async with start_gateway(clock=clock, mqtt=False) as gw:
        store = gw.services.fs_store
        assert store is not None
        url = URL((await store.presign_put(key, expires_in=60, **granted(data))).url)
        reader, writer = await asyncio.open_connection(url.host, url.port)
        head = (
            f"PUT {url.raw_path_qs} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        writer.write(head.encode() + data[: len(data) // 2])
        await writer.drain()
        await asyncio.sleep(0.2)  # the half body is taken in (and written to a temp file)
        writer.close()
        await writer.wait_closed()
        del reader
        answered = {"route": "/objects/{key}", "status": "400"}
        registry = gw.services.metrics.registry

        async def handled() -> bool:
            # The handler has seen the client go (a body within one flush leaves no file
            # at all, so an empty store alone would not say the handler is done).
            return registry.get_sample_value("kanjia_http_requests_total", answered) is not None

        async def cleaned() -> bool:
            return leftovers(store) == []

        await eventually(handled)
        await eventually(cleaned)
        assert await store.head(key) is None
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == []
        assert registry.get_sample_value("kanjia_http_requests_total", answered) == 1
