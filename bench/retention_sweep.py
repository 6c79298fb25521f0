"""Benchmark: the retention sweeper on SeaweedFS against raw S3 batch deletes (issue 7, #5).

Starts a private SeaweedFS (``weed mini``) and a gateway on SQLite with the S3 store and a
manual clock. Puts ``2 × --segments`` small objects: the first half is indexed as expired
segments and removed by :func:`gateway.retention.sweep_expired` (store deletes, then the
index, in batches of 1,000); the second half is removed by bare ``DeleteObjects`` calls of
1,000 keys, the baseline, in the same run. Prints objects deleted per second and the ratio.

Run: ``.venv/bin/python -m bench.retention_sweep [--segments 20000]`` (200,000 as in the
issue takes about ten minutes here, mostly the PUTs that prepare it).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devices.clock import ManualClock
from gateway.config import load_settings
from gateway.retention import sweep_expired
from gateway.service import Gateway
from replay import index_store
from storage.objects import ObjectStore
from tests.seaweed import seaweed_server

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
PAYLOAD = b"\x47" * 1316  # seven MPEG-TS packets: small, so the PUTs do not dominate


async def put_all(store: ObjectStore, keys: list[str], concurrency: int = 32) -> None:
    queue = iter(keys)

    async def worker() -> None:
        for key in queue:
            await store.put(key, PAYLOAD)

    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(worker())


def keys_for(device: str, count: int) -> list[str]:
    return [f"rec/7d/{device}/2026/11/01/{i:06d}-continuous-{device}-{i}.ts" for i in range(count)]


async def amain(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, seaweed_server(Path(tmp)) as weed:
        settings = load_settings(
            environ={},
            overrides={
                "database_url": f"sqlite:///{Path(tmp) / 'bench.db'}",
                "object_store_url": weed.url_for_bucket("sweep-bench"),
                "http_port": 0,
                "platform_token": "bench",
            },
        )
        async with Gateway(settings=settings, clock=ManualClock(NOW), mqtt=False) as gw:
            store = gw.services.store
            swept_keys = keys_for("cam-sweep", args.segments)
            raw_keys = keys_for("cam-raw", args.segments)
            started = time.perf_counter()
            await put_all(store, swept_keys + raw_keys)
            put_s = time.perf_counter() - started
            print(
                f"put {2 * args.segments} objects in {put_s:.1f} s "
                f"({2 * args.segments / put_s:.0f}/s)",
                flush=True,
            )
            expired = NOW - timedelta(days=1)
            async with gw.services.db.session() as session:
                for i in range(0, len(swept_keys), 20_000):
                    await index_store.add_segments(  # as indexing does
                        session,
                        [
                            {
                                "segment_id": f"s{i + j}",
                                "device_id": "cam-sweep",
                                "account_id": "acc",
                                "subscription_id": "sub",
                                "kind": "continuous",
                                "start": expired - timedelta(seconds=10),
                                "end": expired,
                                "bytes": len(PAYLOAD),
                                "sha256": "0" * 64,
                                "event_id": None,
                                "object_key": key,
                                "retention_class": "7d",
                                "expires_at": expired,
                                "indexed_at": expired,
                            }
                            for j, key in enumerate(swept_keys[i : i + 20_000])
                        ],
                    )
                await session.commit()
            started = time.perf_counter()
            swept = await sweep_expired(gw.services)
            sweep_s = time.perf_counter() - started
            started = time.perf_counter()
            for i in range(0, len(raw_keys), 1000):
                await store.delete_many(raw_keys[i : i + 1000])
            raw_s = time.perf_counter() - started
            left = [info.key async for info in store.list("rec/")]
            sweep_rate, raw_rate = swept / sweep_s, len(raw_keys) / raw_s
            print(f"sweeper: {swept} segments in {sweep_s:.2f} s = {sweep_rate:.0f}/s")
            print(f"raw DeleteObjects: {len(raw_keys)} keys in {raw_s:.2f} s = {raw_rate:.0f}/s")
            print(f"ratio sweeper / raw = {sweep_rate / raw_rate:.2f}; objects left: {len(left)}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--segments", type=int, default=20_000)
    asyncio.run(amain(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
