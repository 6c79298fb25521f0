"""The broker's HTTP hooks (issue 13): ``POST /broker/v1/authenticate`` and ``authorize``
at a fixed offered rate, as a broker that calls out (EMQX) would send them.

A gateway as ``kanjia serve`` runs it (``KANJIA_MQTT_AUTH=http-hooks``, its session on a
private Mosquitto standing in for EMQX, ``log_level`` INFO with the access log, its start-up
heap frozen) runs in a child process on ``--db``, with ``--devices`` credentialed cameras
written straight into the database. This process offers ``--rate`` calls per second, open
loop: call *i* is due at ``t0 + i / rate`` and sent then whether or not the earlier ones
were answered, over ``--connections`` keep-alive connections (EMQX's HTTP pool), and its
latency counts from the instant it was due, so queueing on either side counts. The mix:
connects (the right password; 1 in 7 a wrong one), then publishes and subscribes to the
device's own topics, and 1 in 20 to another device's topic; every answer is checked.

The baseline, in the same run and the same way: a bare aiohttp handler in a child process
answering the same shape after checking the same bearer token, without a database.

Run: ``.venv/bin/python -m bench.broker_hooks [--db sqlite|postgresql|both] [--rate 500]
[--devices 2000] [--seconds 20] [--cache-seconds S]``. Goal: p99 < 10 ms at 500 calls/s.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hmac
import logging
import multiprocessing
import random
import secrets
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.common import bench_settings, database, heading, ratio, row
from devices.credentials import DeviceCredential, hash_password
from devices.models import Account, Device, DeviceKind
from gateway.config import Settings, load_settings
from gateway.credentials import credential_key
from gateway.lifecycle import freeze_heap, listening_socket
from gateway.service import Gateway
from replay.migrations import open_database
from simulators.fleet import parse_metrics, percentile
from simulators.fleet.metrics import metric_total
from tests.services import mosquitto

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
HOOK_TOKEN = "bench-broker-hook-token"  # noqa: S105 - of a throwaway local service
GOAL_P99 = 0.010
DEVICES_PER_ACCOUNT = 4
#: (what the broker asks, weight): connects and the device's own topics, a few attacks.
MIX = (
    ("connect", 12),
    ("connect-wrong-password", 2),
    ("publish-own", 66),
    ("subscribe-own", 15),
    ("publish-another", 5),
)
OWN_PUBLISH = ("state", "telemetry", "event", "upload/req", "segment", "reported", "rpc/res")
OWN_SUBSCRIBE = ("desired", "upload/res", "rpc/req")


@dataclass(frozen=True, slots=True)
class Call:
    """One hook call and the answer it must get."""

    hook: str
    body: dict[str, str]
    allow: bool


@dataclass(frozen=True, slots=True)
class Figures:
    latencies: list[float]
    wrong: int
    failed: int
    #: The server process's CPU time per measured call (seconds): what the load on the
    #: shared machine does not change much, unlike the latencies.
    cpu_per_call: float = 0.0

    def summary(self) -> str:
        p50, p99 = (percentile(self.latencies, q) * 1000 for q in (50, 99))
        return (
            f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {max(self.latencies) * 1000:.1f} ms, "
            f"server CPU {self.cpu_per_call * 1000:.2f} ms/call ({len(self.latencies)} calls, "
            f"{self.wrong} wrong answers, {self.failed} failed)"
        )

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 99)


def device_id(n: int) -> str:
    return f"cam-{n:05d}"


def plan_calls(count: int, passwords: Sequence[str], seed: int) -> list[Call]:
    rng = random.Random(seed)
    kinds = rng.choices([k for k, _ in MIX], weights=[w for _, w in MIX], k=count)
    calls = []
    for kind in kinds:
        n = rng.randrange(len(passwords))
        me = device_id(n)
        if kind.startswith("connect"):
            right = kind == "connect"
            password = passwords[n] if right else secrets.token_urlsafe(24)
            body = {"clientid": me, "username": me, "password": password, "peerhost": "192.0.2.7"}
            calls.append(Call("authenticate", body, right))
            continue
        owner, suffixes, action = {
            "publish-own": (me, OWN_PUBLISH, "publish"),
            "subscribe-own": (me, OWN_SUBSCRIBE, "subscribe"),
            "publish-another": (device_id((n + 1) % len(passwords)), OWN_PUBLISH, "publish"),
        }[kind]
        topic = f"kj/v1/dev/{owner}/{rng.choice(suffixes)}"
        body = {"clientid": me, "username": me, "topic": topic, "action": action}
        calls.append(Call("authorize", body, owner == me))
    return calls


async def provision(settings: Settings, devices: int) -> list[str]:
    """Accounts, bound cameras and their credentials straight into the database (and the
    schema made): the passwords, by device number."""
    passwords = [secrets.token_urlsafe(24) for _ in range(devices)]
    key = credential_key(settings)
    async with open_database(settings.database_url) as db, db.session() as session:
        accounts = -(-devices // DEVICES_PER_ACCOUNT)
        session.add_all(
            Account(account_id=f"acc-{a:05d}", owner_id=f"o-{a}", star_level=3,
                    created_at=T0, updated_at=T0)
            for a in range(accounts)
        )  # fmt: skip
        await session.commit()
        session.add_all(
            Device(device_id=device_id(n), account_id=f"acc-{n // DEVICES_PER_ACCOUNT:05d}",
                   kind=DeviceKind.CAMERA, bound_at=T0)
            for n in range(devices)
        )  # fmt: skip
        await session.commit()
        session.add_all(
            DeviceCredential(device_id=device_id(n), password_hash=hash_password(key, p),
                             issued_at=T0)
            for n, p in enumerate(passwords)
        )  # fmt: skip
        await session.commit()
    return passwords


# -- the two servers, each in a child process -------------------------------------------


def bare_app() -> web.Application:
    """The baseline: the hooks' shape, the token checked, nothing else."""

    async def answer(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        if not hmac.compare_digest(header.encode(), f"Bearer {HOOK_TOKEN}".encode()):
            return web.json_response({"error": {"code": "unauthorized"}}, status=401)
        await request.json()
        return web.json_response({"result": "allow", "is_superuser": False})

    app = web.Application()
    app.router.add_post("/broker/v1/authenticate", answer)
    app.router.add_post("/broker/v1/authorize", answer)
    return app


async def _obey(channel: Connection) -> None:
    """Answer the parent's "cpu" (this process's CPU seconds) until it says "stop"."""
    while await asyncio.to_thread(channel.recv) != "stop":
        channel.send(time.process_time())


def _server_process(
    kind: str, settings: dict[str, Any], log_file: str, channel: Connection
) -> None:
    """A child: serve (``gateway`` or ``bare``) until the parent says "stop"."""

    async def serve() -> None:
        if kind == "bare":
            sock = listening_socket("127.0.0.1", 0)
            runner = web.AppRunner(bare_app(), access_log=None)
            await runner.setup()
            await web.SockSite(runner, sock).start()
            channel.send(f"http://127.0.0.1:{sock.getsockname()[1]}")
            await _obey(channel)
            await runner.cleanup()
            return
        loaded = load_settings(environ={}, overrides=settings)
        logging.basicConfig(  # as kanjia serve does, into a file
            filename=log_file,
            level=loaded.log_level,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        async with Gateway(settings=loaded) as gateway:
            mqtt = gateway.services.mqtt
            assert mqtt is not None
            await asyncio.wait_for(mqtt.connected.wait(), 10)
            freeze_heap()  # as kanjia serve does
            channel.send(gateway.url)
            await _obey(channel)

    asyncio.run(serve())


class Server:
    """A server in a child process (spawned: nothing of this process's heap or loop)."""

    def __init__(self, kind: str, settings: Settings | None, log_file: Path) -> None:
        context = multiprocessing.get_context("spawn")
        self._channel, theirs = context.Pipe()
        dumped = settings.model_dump(mode="json") if settings is not None else {}
        self._process = context.Process(
            target=_server_process, args=(kind, dumped, str(log_file), theirs), daemon=True
        )
        self.url = ""

    @property
    def pid(self) -> int | None:
        return self._process.pid

    async def cpu(self) -> float:
        """The child's CPU seconds so far."""
        self._channel.send("cpu")
        return float(await asyncio.to_thread(self._channel.recv))

    async def __aenter__(self) -> Server:
        self._process.start()
        self.url = str(await asyncio.wait_for(asyncio.to_thread(self._channel.recv), 60))
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._channel.send("stop")
        await asyncio.to_thread(self._process.join, 30)
        if self._process.is_alive():
            self._process.kill()


# -- the load ----------------------------------------------------------------------------


async def offer(
    http: aiohttp.ClientSession, url: str, calls: Sequence[Call], *, rate: float, check: bool
) -> Figures:
    """Send each call when it is due (open loop); latency from that instant to the answer.
    With ``check``, an answer other than the call's expected one counts as wrong."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    wrong = failed = 0

    async def send(call: Call, due: float) -> None:
        nonlocal wrong, failed
        try:
            async with http.post(f"{url}/broker/v1/{call.hook}", json=call.body) as r:
                verdict = await r.json() if r.status == 200 else None
        except aiohttp.ClientError:
            failed += 1
            return
        latencies.append(loop.time() - due)
        if verdict is None:
            failed += 1
        elif check and (verdict["result"] == "allow") != call.allow:
            wrong += 1

    async with asyncio.TaskGroup() as group:
        t0 = loop.time() + 0.05
        for i, call in enumerate(calls):
            due = t0 + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            group.create_task(send(call, due), name=f"bench[call-{i}]")
    return Figures(latencies, wrong, failed)


async def measure(
    server: Server, calls: list[Call], args: argparse.Namespace, *, warmup: int, check: bool
) -> Figures:
    """The warm-up calls, then the measured ones, on the same keep-alive connections."""
    headers = {"Authorization": f"Bearer {HOOK_TOKEN}"}
    connector = aiohttp.TCPConnector(limit=args.connections)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:
        await offer(http, server.url, calls[:warmup], rate=args.rate, check=check)
        cpu = await server.cpu()
        figures = await offer(http, server.url, calls[warmup:], rate=args.rate, check=check)
        cpu = await server.cpu() - cpu
    return dataclasses.replace(figures, cpu_per_call=cpu / max(1, len(calls) - warmup))


async def cache_figures(url: str) -> str:
    """What the gateway's credential cache answered, from its own metrics."""
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as r:
        metrics = parse_metrics(await r.text())
    hits = metric_total(metrics, "kanjia_broker_hook_lookups_total", 'source="cache"')
    misses = metric_total(metrics, "kanjia_broker_hook_lookups_total", 'source="database"')
    reads = metric_total(metrics, "kanjia_broker_hook_reads_total")
    return (
        f"{hits:,.0f} from the cache, {misses:,.0f} read ({reads:,.0f} database queries, "
        "refreshes included)"
    )


async def run_db(args: argparse.Namespace, db: str) -> None:
    warmup = int(args.rate * args.warmup)
    cache = {} if args.cache_seconds is None else {"broker_hook_cache_seconds": args.cache_seconds}
    with tempfile.TemporaryDirectory(prefix="kanjia-bench-hooks-") as tmp_name:
        tmp = Path(tmp_name)
        with mosquitto(tmp) as broker:
            async with database(db, tmp) as url:
                settings = bench_settings(
                    tmp,
                    database_url=url,
                    mqtt_url=broker.url,
                    mqtt_auth="http-hooks",
                    broker_hook_token=HOOK_TOKEN,
                    log_level="INFO",
                    **cache,
                )
                passwords = await provision(settings, args.devices)
                calls = plan_calls(warmup + int(args.rate * args.seconds), passwords, args.seed)
                # The load's own collector pauses over this process's heap are not latency.
                freeze_heap()
                async with Server("bare", None, tmp / "bare.log") as bare:
                    # It allows everything: its answers are not checked.
                    baseline = await measure(bare, calls, args, warmup=warmup, check=False)
                async with Server("gateway", settings, tmp / "gateway.log") as gateway:
                    row(f"{db}: gateway process", f"pid {gateway.pid} (for py-spy)")
                    measured = await measure(gateway, calls, args, warmup=warmup, check=True)
                    lookups = await cache_figures(gateway.url)
    row(f"{db}: bare aiohttp handler (baseline)", baseline.summary())
    row(f"{db}: gateway hooks", measured.summary())
    row(f"{db}: credential lookups (whole run)", lookups)
    row(f"{db}: ratio p99 gateway / bare", ratio(measured.p99, baseline.p99))
    met = measured.p99 < GOAL_P99 and measured.wrong == 0 and measured.failed == 0
    row(f"{db}: goal p99 < 10 ms at {args.rate:.0f} calls/s", "met" if met else "missed")


async def run(args: argparse.Namespace) -> None:
    heading(
        f"broker hooks: {args.rate:.0f} calls/s offered (open loop) for {args.seconds:.0f} s "
        f"after {args.warmup:.0f} s of warm-up, {args.devices} credentialed devices, "
        f"{args.connections} connections"
    )
    for db in ("sqlite", "postgresql") if args.db == "both" else (args.db,):
        await run_db(args, db)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="sqlite")
    parser.add_argument("--rate", type=float, default=500.0, help="calls per second offered")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured, after warm-up")
    parser.add_argument(
        "--warmup", type=float, default=10.0, help="seconds offered first (the steady state)"
    )
    parser.add_argument("--devices", type=int, default=2_000)
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--cache-seconds", type=float, help="KANJIA_BROKER_HOOK_CACHE_SECONDS (default: its own)"
    )
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
