"""What issuing broker credentials for a fleet costs with Mosquitto's dynamic security.

The plugin rewrites its whole JSON file after every change, so the cost of one more
client grows with the clients already there. A private Mosquitto with the plugin is
started in a temporary directory; :class:`gateway.mqtt.dynsec.DynsecAdmin` then:

1. issues ``--devices`` devices one after the other (``issue``: two control messages,
   a role and a client);
2. issues as many more, ``--concurrency`` at a time;
3. creates as many more in batched control messages (100 commands each), as a bulk
   import would;
4. rotates the first ``--devices`` (disable and enable kick; a file write each);
5. removes all of them with ``sync([])`` (batched deletions).

Run: ``.venv/bin/python -m bench.dynsec_issue [--devices 200] [--concurrency 16]``.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from bench.common import heading, row
from gateway.mqtt.dynsec import DEVICE_ROLE, DynsecAdmin, device_acls, device_role, new_client
from tests.services import dynsec_mosquitto


async def timed(label: str, count: int, work: Callable[[], Awaitable[object]]) -> None:
    started = time.perf_counter()
    await work()
    elapsed = time.perf_counter() - started
    row(label, f"{elapsed:7.2f} s  ({elapsed / count * 1000:6.1f} ms per device)")


async def bench(devices: int, concurrency: int, tmp: Path) -> None:
    password = secrets.token_urlsafe(16)
    ids = [f"cam-{n:05d}" for n in range(devices * 3)]
    first, second, third = ids[:devices], ids[devices : 2 * devices], ids[2 * devices :]
    with dynsec_mosquitto(tmp) as broker:
        async with DynsecAdmin(url=broker.url, client_id="kanjia-bench") as admin:
            heading(f"dynamic security: {devices} devices per step")

            async def one_by_one() -> None:
                for device_id in first:
                    await admin.issue(device_id, device_id, password)

            async def at_once() -> None:
                gate = asyncio.Semaphore(concurrency)

                async def issue(device_id: str) -> None:
                    async with gate:
                        await admin.issue(device_id, device_id, password)

                await asyncio.gather(*(issue(device_id) for device_id in second))

            async def batched() -> None:
                commands = []
                for device_id in third:
                    role = device_role(device_id)
                    commands += [
                        {"command": "createRole", "rolename": role, "acls": device_acls(device_id)},
                        new_client(device_id, password, [DEVICE_ROLE, role]),
                    ]
                await admin.run(commands)

            async def rotate() -> None:
                for device_id in first:
                    await admin.issue(device_id, device_id, secrets.token_urlsafe(16))

            await timed("issue, one after the other", devices, one_by_one)
            await timed(f"issue, {concurrency} at a time", devices, at_once)
            await timed("create, 100 commands per message", devices, batched)
            await timed("rotate (kick), one after the other", devices, rotate)
            size = broker.state_file.stat().st_size
            row("plugin file with all of them", f"{size / 1024:7.0f} KiB")
            await timed("remove all (sync, batched)", 3 * devices, lambda: admin.sync([]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(bench(args.devices, args.concurrency, Path(tmp)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
