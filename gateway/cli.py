"""The ``kanjia`` command: ``demo``, ``serve`` and ``device``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.config import ConfigError, Settings, load_settings, require_for_serve
from replay.plans import PlansError
from storage.db import DatabaseError


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    extra = {k: v for k, v in overrides.items() if v is not None}
    return load_settings(config_file=args.config, overrides=extra)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "simulate":
        from simulators.fleet import main as fleet_main

        return fleet_main(args_list[1:])
    if args_list and args_list[0] == "device":
        from simulators.device import main as device_main

        device_main(args_list[1:])
        return 0
    parser = argparse.ArgumentParser(prog="kanjia", description=__doc__)
    parser.add_argument("--config", type=Path, help="a TOML file of settings")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="everything embedded: broker, gateway, a household")
    demo.add_argument("--http-port", type=int, help="HTTP port (default 8080; 0: any free)")
    sub.add_parser("serve", help="the service against the configured broker, DB and store")
    sub.add_parser("device", help="run one simulated device (see kanjia device --help)")
    sub.add_parser("simulate", help="run a fleet of households (see kanjia simulate --help)")
    args = parser.parse_args(args_list)

    try:
        if args.command == "demo":
            settings = _settings(args, http_port=args.http_port)
            logging.basicConfig(
                level=settings.log_level, format="%(levelname)s %(name)s: %(message)s"
            )
            for noisy in ("amqtt", "transitions", "aiohttp.access"):  # chatter
                logging.getLogger(noisy).setLevel(logging.WARNING)
            from gateway.demo import run_demo

            asyncio.run(run_demo(settings))
            return 0
        settings = _settings(args)
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        require_for_serve(settings)
        from gateway.service import serve

        asyncio.run(serve(settings))
        return 0
    except (ConfigError, PlansError, DatabaseError) as exc:
        # Settings, a plans file or a database that cannot start the service.
        print(f"kanjia: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
