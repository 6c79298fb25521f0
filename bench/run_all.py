"""Every benchmark of ``bench/`` in turn, each in its own process, with its figures.

Run: ``KANJIA_TEST_POSTGRES_URL=postgresql://... .venv/bin/python -m bench.run_all``
(``--only ingest,stop_fanout`` for some; ``--quick`` for smaller sizes). It prints the
machine and the date first, then each benchmark's output as it comes; the whole suite
takes about half an hour here (2 cores). Nothing in CI runs it.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence

#: (name, module, arguments); the quick variant follows each default one.
RUNS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("ingest", "bench.ingest", ("--per-kind",), ("--messages", "3000")),
    (
        "ingest",
        "bench.ingest",
        ("--db", "postgresql"),
        ("--db", "postgresql", "--messages", "3000"),
    ),
    ("fleet_size", "bench.fleet_size", (), ("--sizes", "100,250", "--step-seconds", "30")),
    ("stop_fanout", "bench.stop_fanout", (), ("--accounts", "200")),
    (
        "stop_fanout",
        "bench.stop_fanout",
        ("--db", "postgresql"),
        ("--db", "postgresql", "--accounts", "200"),
    ),
    ("replay_queries", "bench.replay_queries", (), ("--runs", "50")),
    ("retention_sweep", "bench.retention_sweep", (), ("--segments", "5000")),
    ("router_tuning", "bench.router_tuning", (), ("--routers", "50")),
    (
        "broker_hooks",
        "bench.broker_hooks",
        ("--db", "both"),
        ("--db", "both", "--seconds", "5", "--warmup", "5"),
    ),
)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            names = [
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", help="comma-separated names: " + ", ".join(sorted({r[0] for r in RUNS}))
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, a few minutes in all")
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    print(f"# Kanjia benchmarks, {time.strftime('%Y-%m-%d %H:%M %Z')}", flush=True)
    print(f"# machine: {machine()}", flush=True)
    failed = []
    for name, module, full, quick in RUNS:
        if only is not None and name not in only:
            continue
        extra = quick if args.quick else full
        command = [sys.executable, "-m", module, *extra]
        print(f"\n$ python -m {module} {' '.join(extra)}", flush=True)
        began = time.monotonic()
        code = subprocess.call(command)
        print(f"  ({time.monotonic() - began:.0f} s, exit {code})", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
