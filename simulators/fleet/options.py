"""The options of a fleet run (pure): durations, the plan mix, device pacing."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from simulators.camera import Media

NO_PLAN = "none"
DEFAULT_PLANS = (
    "continuous-7d=3,event-7d=3,continuous-1d=1,continuous-30d=1,event-1d=1,event-30d=1,none=2"
)
#: Home-network products of households (R16, R17): the router's, by weight (issue 18).
DEFAULT_HOME_PRODUCTS = "wifi-gift-299=2,wifi-gift-499=1,wifi-tuning-70=1,wifi-addon-30=1,none=5"
#: Family-cloud memberships of households (R18): a tier by weight, ordered at provisioning.
DEFAULT_MEMBERSHIPS = "ordinary=1,gold=1,none=4"
DEFAULT_START = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h)?$")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Real seconds from ``90``, ``90s``, ``2m``, ``1.5h``; positive."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"duration {text!r} is not like 90s, 2m or 1h")
    seconds = float(match.group(1)) * _UNIT[match.group(2) or "s"]
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be more than zero")
    return seconds


@dataclass(frozen=True, slots=True)
class PlanShare:
    """One entry of ``--plans``: a plan id (or ``none``) and its weight."""

    plan: str | None
    weight: int


_PLAN_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def parse_plan_mix(text: str, option: str = "--plans") -> tuple[PlanShare, ...]:
    """``continuous-7d=3,event-7d=2,none=1``: plans (or none) with whole weights (also the
    home-network products of ``--home-products`` and the membership tiers of ``--memberships``;
    ``option`` names the option in errors)."""
    shares: list[PlanShare] = []
    seen: set[str] = set()
    for part in text.split(","):
        name, sep, weight_text = part.strip().partition("=")
        name = name.strip()
        if not _PLAN_ID.match(name):
            raise ValueError(f"plan {name!r} in {option} is not a plan id")
        if name in seen:
            raise ValueError(f"plan {name!r} is given twice in {option}")
        seen.add(name)
        try:
            weight = int(weight_text) if sep else 1
        except ValueError:
            raise ValueError(f"the weight of {name!r} in {option} is not a whole number") from None
        if weight < 0:
            raise ValueError(f"the weight of {name!r} in {option} is negative")
        shares.append(PlanShare(plan=None if name == NO_PLAN else name, weight=weight))
    if not any(share.weight for share in shares):
        raise ValueError(f"{option} gives no plan a positive weight")
    return tuple(shares)


@dataclass(frozen=True, slots=True, kw_only=True)
class Pacing:
    """Device cadences in clock seconds, never faster than the real-time floor."""

    telemetry_every: float
    segment_seconds: float
    segment_every: float
    event_gap: tuple[float, float]

    @classmethod
    def for_speed(
        cls, *, speed: float, telemetry_s: float, segment_s: float, min_real_s: float
    ) -> Pacing:
        if speed <= 0 or telemetry_s <= 0 or min_real_s < 0:
            raise ValueError("speed and telemetry must be positive, the floor not negative")
        if not 0 < segment_s <= 60:
            raise ValueError("segments last more than 0 and at most 60 seconds")
        floor = speed * min_real_s
        return cls(
            telemetry_every=max(telemetry_s, floor),
            segment_seconds=segment_s,
            segment_every=max(segment_s, floor),
            # An event clip is a minute long (R1): events at least a minute apart.
            event_gap=(max(60.0, 2 * floor), max(300.0, 6 * floor)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetOptions:
    households: int = 10
    clock_speed: float = 1.0
    duration: float = 60.0
    media: Media = "synthetic"
    plans: tuple[PlanShare, ...] = field(default_factory=lambda: parse_plan_mix(DEFAULT_PLANS))
    #: The routers' home-network products (R16, R17), ordered at provisioning.
    home_products: tuple[PlanShare, ...] = field(
        default_factory=lambda: parse_plan_mix(DEFAULT_HOME_PRODUCTS, "--home-products")
    )
    #: The households' family-cloud membership tiers (R18), ordered at provisioning.
    memberships: tuple[PlanShare, ...] = field(
        default_factory=lambda: parse_plan_mix(DEFAULT_MEMBERSHIPS, "--memberships")
    )
    #: Broadband stop/resume orders per simulated hour (fleet-wide).
    stop_rate: float = 2.0
    #: Companion-app timeline/playlist requests per simulated hour (fleet-wide).
    app_rate: float = 6.0
    seed: int = 1
    #: Share of cameras whose firmware ignores the desired state and always records.
    rogue_share: float = 0.05
    telemetry_seconds: float = 30.0
    segment_seconds: float = 10.0
    #: Size of a synthetic segment (``--media synthetic``).
    synthetic_bytes: int = 66_000
    min_real_interval: float = 5.0
    workers: int = 1
    #: Devices connecting at once; ``None``: one for the embedded amqtt broker, else 64.
    connect_concurrency: int | None = None
    start: datetime = DEFAULT_START
    prefix: str = ""
    service_url: str | None = None
    platform_token: str | None = None
    mqtt_url: str | None = None
    #: The CA (PEM) that an ``mqtts://`` broker is verified against (else the system's).
    ca_file: str | None = None
    status_interval: float = 1.0
    #: Further gateways of the service (scale-out on a shared subscription): their
    #: ``/metrics`` are added to ``service_url``'s, so the backlog counts every gateway.
    metrics_urls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.households < 1:
            raise ValueError("households must be at least 1")
        if self.clock_speed <= 0 or self.duration <= 0:
            raise ValueError("clock speed and duration must be positive")
        if self.media not in ("real", "synthetic"):
            raise ValueError("media must be real or synthetic")
        if self.stop_rate < 0 or self.app_rate < 0:
            raise ValueError("stop and app rates must not be negative")
        if self.synthetic_bytes < 1:
            raise ValueError("a synthetic segment holds at least one byte")
        if not 0 <= self.rogue_share <= 1:
            raise ValueError("the rogue share is a fraction from 0 to 1")
        if self.workers < 0 or (self.connect_concurrency or 1) < 1:
            raise ValueError("workers must not be negative; connect concurrency at least 1")
        if self.start.tzinfo is None:
            raise ValueError("the start must carry a timezone offset")
        if self.service_url and not (self.platform_token and self.mqtt_url):
            raise ValueError("--service-url needs --platform-token and --mqtt-url")
        if self.metrics_urls and not self.service_url:
            raise ValueError("--metrics-url needs --service-url (the gateways of one service)")
        if self.ca_file and not (self.mqtt_url or "").startswith("mqtts://"):
            raise ValueError("--ca-file needs an mqtts:// --mqtt-url")
        if self.prefix and not re.fullmatch(r"[A-Za-z0-9-]{1,20}", self.prefix):
            raise ValueError("the id prefix is 1-20 letters, digits or hyphens")
        Pacing.for_speed(
            speed=self.clock_speed,
            telemetry_s=self.telemetry_seconds,
            segment_s=self.segment_seconds,
            min_real_s=self.min_real_interval,
        )

    @property
    def id_prefix(self) -> str:
        return self.prefix or f"sim{self.seed}"

    @property
    def pacing(self) -> Pacing:
        return Pacing.for_speed(
            speed=self.clock_speed,
            telemetry_s=self.telemetry_seconds,
            segment_s=self.segment_seconds,
            min_real_s=self.min_real_interval,
        )

    def summary(self) -> dict[str, Any]:
        return {
            "households": self.households,
            "clock_speed": self.clock_speed,
            "duration_s": self.duration,
            "media": self.media,
            "plans": {share.plan or NO_PLAN: share.weight for share in self.plans},
            "home_products": {s.plan or NO_PLAN: s.weight for s in self.home_products},
            "memberships": {s.plan or NO_PLAN: s.weight for s in self.memberships},
            "stop_rate_per_sim_hour": self.stop_rate,
            "app_rate_per_sim_hour": self.app_rate,
            "seed": self.seed,
            "rogue_share": self.rogue_share,
            "telemetry_s": self.telemetry_seconds,
            "segment_s": self.segment_seconds,
            "synthetic_bytes": self.synthetic_bytes,
            "min_real_interval_s": self.min_real_interval,
            "workers": self.workers,
        }
