"""``kanjia simulate``: a fleet of simulated households against one gateway.

Each household is a broadband account with 1-3 cameras, a router and 0-2 mesh satellites
(routers too); cameras get a cloud-replay plan drawn from ``--plans`` (or none). The
runner provisions them through the platform API, then runs every device as its own MQTT
connection (own client id, own Last Will) in one or more worker processes, and meanwhile
plays the platform (broadband stop/resume orders, ``--stop-rate`` per simulated hour) and
the companion app (timeline and playlist requests, ``--app-rate`` per simulated hour).

Without ``--service-url`` it starts an embedded service: an amqtt broker (or the broker
named by ``--mqtt-url``) and a gateway on SQLite and the filesystem store in the run's
work directory (``--workdir``; by default a new one under ``./var/simulate``), on a
:class:`~devices.clock.SimClock` that the fleet shares. With it, the fleet
reads the service's clock once and runs a clock of ``--clock-speed`` from there.

Accelerated time and real cadence: device cadences are clock seconds (telemetry every 30,
10-s segments), but no device sends telemetry, and no camera a segment, more often than
once per ``--min-real-interval`` real seconds (5). At 3600x a continuous camera therefore
uploads a 10-s segment every five simulated hours, and an event camera sees an event
every 10-30 real seconds: the wire and the rules run at a rate one machine can carry.

Progress goes to stderr: one status block redrawn in place on a terminal (``rich``),
plain lines elsewhere. The report (JSON with ``--report FILE``) gives the effective
cadences (real seconds between segments and telemetry at the clock's speed) and a verdict
(``report.verdict``): the devices offered at least 95 % of their nominal telemetry, the
upload p99 stayed under a segment's real cadence, and nothing counted as an error; the
exit status is 1 when it fails. Errors are what should never happen: device or upload
failures, unexpected HTTP answers, orders whose devices did not converge, and the
gateway's own failure counters.
Refusals (``not_entitled``, ``suspended``...) are the rules at work and are only counted.

The modules: ``options`` and ``households`` (pure: what to run), ``devices`` and
``workers`` (the devices, in worker processes), ``target`` (the service under test; the
only module of ``simulators`` that embeds the gateway), ``platform``, ``orders`` and
``app`` (the platform's and the families' calls), ``progress``, ``metrics`` and
``report`` (what is counted and told), ``run`` (one run), ``cli`` (the command).
"""

from simulators.fleet.app import app_verdict
from simulators.fleet.cli import main
from simulators.fleet.devices import FleetCamera, FleetDevice, FleetRouter, Uploads, WorkerCounters
from simulators.fleet.errors import FleetError, ProvisioningError
from simulators.fleet.households import DeviceSpec, HouseholdSpec, Role, plan_fleet
from simulators.fleet.metrics import parse_metrics, percentile
from simulators.fleet.options import (
    DEFAULT_PLANS,
    DEFAULT_START,
    NO_PLAN,
    FleetOptions,
    Pacing,
    PlanShare,
    parse_duration,
    parse_plan_mix,
)
from simulators.fleet.progress import Samples, StatusLine, backlog
from simulators.fleet.report import cadences, verdict
from simulators.fleet.run import run_fleet
from simulators.fleet.workers import WorkerHandle, WorkerPool, WorkerSpec

__all__ = [
    "DEFAULT_PLANS",
    "DEFAULT_START",
    "NO_PLAN",
    "DeviceSpec",
    "FleetCamera",
    "FleetDevice",
    "FleetError",
    "FleetOptions",
    "FleetRouter",
    "HouseholdSpec",
    "Pacing",
    "PlanShare",
    "ProvisioningError",
    "Role",
    "Samples",
    "StatusLine",
    "Uploads",
    "WorkerCounters",
    "WorkerHandle",
    "WorkerPool",
    "WorkerSpec",
    "app_verdict",
    "backlog",
    "cadences",
    "main",
    "parse_duration",
    "parse_metrics",
    "parse_plan_mix",
    "percentile",
    "plan_fleet",
    "run_fleet",
    "verdict",
]
