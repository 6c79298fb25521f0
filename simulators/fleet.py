"""``kanjia simulate``: run a fleet of simulated households (see :func:`main`)."""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    raise SystemExit("kanjia simulate is not built yet")
