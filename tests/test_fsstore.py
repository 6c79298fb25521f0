"""The filesystem object store and its presigned URLs served by the gateway (issue 2, #4)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import pytest
from yarl import URL

from devices.clock import ManualClock
from storage.fsstore import FilesystemObjectStore, SignatureError
from storage.objects import InvalidKey, ObjectExists, ObjectNotFound
from tests.conftest import T0, StartGateway


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


async def test_get_many_keeps_the_order_and_marks_the_absent(
    store: FilesystemObjectStore,
) -> None:
    await store.put("rec/7d/cam-1/a.ts", b"aaa")
    await store.put("rec/7d/cam-1/b.ts", b"bbbb")
    (store.root / "rec/7d/cam-1/dir.ts").mkdir()
    found = await store.get_many(
        ["rec/7d/cam-1/b.ts", "rec/7d/cam-1/gone.ts", "rec/7d/cam-1/dir.ts", "rec/7d/cam-1/a.ts"]
    )
    assert found == [b"bbbb", None, None, b"aaa"]
    with pytest.raises(InvalidKey):
        await store.get_many(["rec/7d/cam-1/a.ts", "../etc/passwd"])


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


async def test_signature_checks(store: FilesystemObjectStore) -> None:
    def parts(url: str) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(url).query))

    url = (await store.presign_put("a/b.ts", expires_in=60)).url
    q = parts(url)
    store.verify("PUT", "a/b.ts", q["expires"], q["sig"])
    with pytest.raises(SignatureError, match="does not match"):
        store.verify("GET", "a/b.ts", q["expires"], q["sig"])  # a PUT URL does not GET
    with pytest.raises(SignatureError, match="does not match"):
        store.verify("PUT", "a/c.ts", q["expires"], q["sig"])
    with pytest.raises(SignatureError, match="does not match"):
        store.verify("PUT", "a/b.ts", str(int(q["expires"]) + 3600), q["sig"])
    with pytest.raises(SignatureError, match="missing"):
        store.verify("PUT", "a/b.ts", None, q["sig"])


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
        put = await store.presign_put("rec/7d/cam-1/seg.ts", expires_in=60)
        assert put.headers == {}, "the route refuses an overwrite whatever is sent"
        put_url = put.url
        assert put_url.startswith(gw.url)
        r = await http.put(put_url, data=payload)
        assert r.status == 200
        # The same URL, still valid, cannot replace what it stored (issue 13).
        r = await http.put(put_url, data=b"other bytes")
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
