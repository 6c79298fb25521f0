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

#: The service's own loggers: they speak at ``KANJIA_LOG_LEVEL``; every other one
#: (asyncssh's per-connection lines, amqtt, transitions, botocore ...) only from WARNING,
#: unless ``--log-level`` sets one level for all.
OWN_LOGGERS = ("gateway", "devices", "replay", "storage", "simulators")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def configure_logging(
    level: str, *, everyone: str | None, fmt: str, heard: tuple[str, ...] = OWN_LOGGERS
) -> None:
    """Own loggers (``heard``) at ``level``, the others at WARNING; ``everyone``: all at
    that level (``--log-level``), third-party loggers included."""
    logging.basicConfig(level=everyone or logging.WARNING, format=fmt, force=True)
    for name in heard:
        logging.getLogger(name).setLevel(everyone or level)


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    extra = {k: v for k, v in overrides.items() if v is not None}
    return load_settings(config_file=args.config, overrides=extra)


def build_parser() -> argparse.ArgumentParser:
    """``kanjia demo`` and ``kanjia serve`` (``device`` and ``simulate`` parse their own)."""
    parser = argparse.ArgumentParser(prog="kanjia", description=__doc__)
    parser.add_argument("--config", type=Path, help="a TOML file of settings")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="everything embedded: broker, gateway, a household")
    demo.add_argument("--http-port", type=int, help="HTTP port (default 8080; 0: any free)")
    serve_cmd = sub.add_parser(
        "serve", help="the service against the configured broker, DB and store"
    )
    for command in (demo, serve_cmd):
        command.add_argument(
            "--log-level",
            type=str.upper,
            choices=LEVELS,
            help="one level for every logger, third-party ones included (asyncssh, amqtt, "
            "botocore ...); by default the service's own log at KANJIA_LOG_LEVEL and the "
            "others only from WARNING",
        )
    sub.add_parser("device", help="run one simulated device (see kanjia device --help)")
    sub.add_parser("simulate", help="run a fleet of households (see kanjia simulate --help)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "simulate":
        from simulators.fleet import main as fleet_main

        return fleet_main(args_list[1:])
    if args_list and args_list[0] == "device":
        from simulators.device import main as device_main

        device_main(args_list[1:])
        return 0
    parser = build_parser()
    args = parser.parse_args(args_list)

    try:
        if args.command == "demo":
            settings = _settings(args, http_port=args.http_port)
            configure_logging(
                settings.log_level,
                everyone=args.log_level,
                fmt="%(levelname)s %(name)s: %(message)s",
            )
            from gateway.demo import run_demo

            asyncio.run(run_demo(settings))
            return 0
        settings = _settings(args)
        configure_logging(
            settings.log_level,
            everyone=args.log_level,
            fmt="%(asctime)s %(levelname)s %(name)s: %(message)s",
            heard=(*OWN_LOGGERS, "aiohttp.access"),  # the access log is the service's own
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
