"""The fleet runner (``kanjia simulate``, issue 7): its pure parts by tables, and a small
fleet of ten households end to end against the embedded service (amqtt, SQLite, files)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devices.clock import SimClock
from simulators.clips import floor_to
from simulators.fleet import (
    FleetCamera,
    FleetOptions,
    HouseholdSpec,
    Pacing,
    PlanShare,
    Samples,
    StatusLine,
    Uploads,
    WorkerCounters,
    WorkerHandle,
    WorkerPool,
    WorkerSpec,
    app_verdict,
    backlog,
    cadences,
    main,
    parse_duration,
    parse_metrics,
    parse_plan_mix,
    percentile,
    plan_fleet,
    run_fleet,
    verdict,
)
from simulators.fleet.cli import (
    build_parser,
    cost_line,
    summary_lines,
    verdict_lines,
    work_directory,
)
from simulators.fleet.report import runner_cost
from simulators.scene import Actor, Scene
from tests.services import Broker, mosquitto


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("2m", 120.0), ("1.5h", 5400.0), (" 30s ", 30.0)],
)
def test_durations_are_read_in_real_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2x", "-1m", "0s", "m", "1 m"])
def test_durations_that_mean_nothing_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "shares"),
    [
        (
            "continuous-7d=3,none=1",
            (PlanShare("continuous-7d", 3), PlanShare(None, 1)),
        ),
        ("event-1d", (PlanShare("event-1d", 1),)),
        (
            " event-7d = 2 , continuous-1d=0",
            (PlanShare("event-7d", 2), PlanShare("continuous-1d", 0)),
        ),
    ],
)
def test_a_plan_mix_is_plans_with_weights(text: str, shares: tuple[PlanShare, ...]) -> None:
    assert parse_plan_mix(text) == shares


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("event-7d=1,event-7d=2", "twice"),
        ("event-7d=-1", "negative"),
        ("event-7d=x", "whole number"),
        ("none=0", "no plan a positive weight"),
        ("Bad Plan=1", "not a plan id"),
    ],
)
def test_a_bad_plan_mix_is_refused_with_the_reason(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_plan_mix(text)


@pytest.mark.parametrize(
    ("speed", "min_real", "telemetry", "segment_every", "event_gap"),
    [
        # Real time: the clock cadences themselves (30 s telemetry, 10-s segments).
        (1.0, 5.0, 30.0, 10.0, (60.0, 300.0)),
        # 3600x: the floor of 5 real s is 18,000 clock s; events 2 to 6 floors apart.
        (3600.0, 5.0, 18000.0, 18000.0, (36000.0, 108000.0)),
        # 100x with a 0.1-s floor (10 clock s): cadences stay, events at least a minute apart.
        (100.0, 0.1, 30.0, 10.0, (60.0, 300.0)),
    ],
)
def test_cadences_are_clock_seconds_with_a_real_time_floor(
    speed: float,
    min_real: float,
    telemetry: float,
    segment_every: float,
    event_gap: tuple[float, float],
) -> None:
    pacing = Pacing.for_speed(speed=speed, telemetry_s=30, segment_s=10, min_real_s=min_real)
    assert pacing.telemetry_every == telemetry
    assert pacing.segment_seconds == 10
    assert pacing.segment_every == segment_every
    assert pacing.event_gap == event_gap


@pytest.mark.parametrize("segment_s", [0.0, 61.0])
def test_segments_last_at_most_a_minute(segment_s: float) -> None:
    with pytest.raises(ValueError, match="segments"):
        Pacing.for_speed(speed=1, telemetry_s=30, segment_s=segment_s, min_real_s=1)


def test_a_seed_gives_the_same_fleet_and_households_have_the_designed_make_up() -> None:
    plans = parse_plan_mix("continuous-7d=1,event-30d=1,none=1")
    first = plan_fleet(households=50, plans=plans, seed=7, prefix="t", rogue_share=0.0)
    again = plan_fleet(households=50, plans=plans, seed=7, prefix="t", rogue_share=0.0)
    other = plan_fleet(households=50, plans=plans, seed=8, prefix="t", rogue_share=0.0)
    assert first == again
    assert first != other
    ids = [d.device_id for h in first for d in h.devices]
    assert len(ids) == len(set(ids))
    for home in first:
        roles = [d.role for d in home.devices]
        assert 1 <= roles.count("camera") <= 3
        assert roles.count("router") == 1
        assert 0 <= roles.count("satellite") <= 2
        assert 1 <= home.star_level <= 7
        assert {c.plan for c in home.cameras} <= {"continuous-7d", "event-30d", None}
        assert not any(d.rogue for d in home.devices)
    # Over 50 homes every role count and every plan of the mix turns up.
    cams = [len(h.cameras) for h in first]
    sats = [sum(d.role == "satellite" for d in h.devices) for h in first]
    assert set(cams) == {1, 2, 3}
    assert set(sats) == {0, 1, 2}
    assert {c.plan for h in first for c in h.cameras} == {"continuous-7d", "event-30d", None}


def test_home_products_are_drawn_apart_and_change_nothing_else() -> None:
    """Issue 18: a household's router holds a product of the --home-products mix (R16,
    R17); the rest of the fleet is the same with or without the mix."""
    plans = parse_plan_mix("event-7d")
    mix = parse_plan_mix("wifi-gift-299=1,wifi-addon-30=1,none=1", "--home-products")
    bare = plan_fleet(households=40, plans=plans, seed=5, prefix="p")
    held = plan_fleet(households=40, plans=plans, seed=5, prefix="p", home_products=mix)
    assert [h.devices for h in held] == [h.devices for h in bare]
    assert {h.home_product for h in bare} == {None}
    assert {h.home_product for h in held} == {"wifi-gift-299", "wifi-addon-30", None}
    assert all(h.router is not None and h.router.role == "router" for h in held)
    assert held == plan_fleet(households=40, plans=plans, seed=5, prefix="p", home_products=mix)


def test_a_bad_home_product_mix_names_its_option() -> None:
    with pytest.raises(ValueError, match="--home-products gives no plan a positive weight"):
        parse_plan_mix("wifi-gift-299=0", "--home-products")


@pytest.mark.parametrize(
    ("text", "shares"),
    [
        (
            "ordinary=1,gold=1,none=2",
            (PlanShare("ordinary", 1), PlanShare("gold", 1), PlanShare(None, 2)),
        ),
        ("platinum", (PlanShare("platinum", 1),)),
        (" gold = 3 , none=0", (PlanShare("gold", 3), PlanShare(None, 0))),
    ],
)
def test_a_membership_mix_is_tiers_with_weights(text: str, shares: tuple[PlanShare, ...]) -> None:
    """Issue 18: ``--memberships`` reads as ``--plans`` does (R18 tiers, or none)."""
    assert parse_plan_mix(text, "--memberships") == shares


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("none=0", "--memberships gives no plan a positive weight"),
        ("gold=1,gold=1", "'gold' is given twice in --memberships"),
        ("gold=-1", "'gold' in --memberships is negative"),
        ("Gold Tier=1", "in --memberships is not a plan id"),
    ],
)
def test_a_bad_membership_mix_names_its_option(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_plan_mix(text, "--memberships")


def test_memberships_are_drawn_apart_and_change_nothing_else() -> None:
    """Issue 18: an account holds a tier of the --memberships mix (R18); devices and home
    products are the same with or without the mix."""
    plans = parse_plan_mix("event-7d")
    products = parse_plan_mix("wifi-gift-299=1,none=1", "--home-products")
    mix = parse_plan_mix("ordinary=1,gold=1,none=1", "--memberships")
    bare = plan_fleet(households=40, plans=plans, seed=5, prefix="p", home_products=products)
    held = plan_fleet(
        households=40, plans=plans, seed=5, prefix="p", home_products=products, memberships=mix
    )
    assert [(h.devices, h.home_product) for h in held] == [
        (h.devices, h.home_product) for h in bare
    ]
    assert {h.membership for h in bare} == {None}
    assert {h.membership for h in held} == {"ordinary", "gold", None}


def test_the_rogue_share_picks_cameras_only() -> None:
    plans = parse_plan_mix("event-7d")
    homes = plan_fleet(households=5, plans=plans, seed=1, prefix="r", rogue_share=1.0)
    assert all(d.rogue == (d.role == "camera") for h in homes for d in h.devices)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 99, 0.0),
        ([5.0], 99, 5.0),
        ([3.0, 1.0, 2.0], 100, 3.0),
        ([float(v) for v in range(1, 101)], 50, 50.0),
        ([float(v) for v in range(1, 101)], 99, 99.0),
        ([float(v) for v in range(1, 11)], 95, 10.0),  # rank ceil(9.5) = 10
    ],
)
def test_percentiles_are_nearest_rank(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected


@pytest.mark.parametrize(
    ("status", "code", "verdict"),
    [
        (200, None, "ok"),
        (403, "not_entitled", "refused"),  # R1
        (403, "broadband_inactive", "refused"),  # R8
        (403, "tuning_not_covered", "refused"),  # R16
        (403, "tunings_used_up", "refused"),  # R17
        (409, "router_not_provisioned", "refused"),  # a fleet router has no SSH access
        (409, "broadband_inactive", "refused"),  # R12
        (409, "order_id_reused", "error"),
        (404, "no_recording", "refused"),
        (201, None, "ok"),  # a range saved to the family cloud (R14)
        (409, "quota_exceeded", "refused"),  # R14, the membership's quota (R18)
        (409, "family_cloud_closed", "refused"),  # R15
        (409, "family_cloud_read_only", "refused"),  # R18
        (404, "family_cloud_deleted", "refused"),  # R15
        (403, "unsubscribed", "refused"),  # R5
        (400, "range_too_long", "error"),  # the app asks for 20 s
        (409, "membership_held", "error"),  # not an app answer
        (404, "not_found", "error"),  # the family's own camera must be found
        (403, None, "error"),
        (500, "internal", "error"),
        (401, "unauthorized", "error"),
    ],
)
def test_app_answers_the_rules_give_are_not_errors(
    status: int, code: str | None, verdict: str
) -> None:
    assert app_verdict(status, code) == verdict


def test_metrics_text_is_read_by_name_and_labels() -> None:
    text = (
        "# HELP kanjia_mqtt_messages_total Device messages\n"
        "# TYPE kanjia_mqtt_messages_total counter\n"
        'kanjia_mqtt_messages_total{kind="state"} 3.0\n'
        'kanjia_mqtt_messages_total{kind="telemetry"} 40.0\n'
        "kanjia_segments_indexed_total 7.0\n"
        "kanjia_segments_indexed_created 1.7e9\n"
    )
    metrics = parse_metrics(text)
    assert metrics["kanjia_mqtt_messages_total"] == {
        '{kind="state"}': 3.0,
        '{kind="telemetry"}': 40.0,
    }
    assert metrics["kanjia_segments_indexed_total"] == {"": 7.0}


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--households", "0"], "households must be at least 1"),
        (["--duration", "soon"], "duration"),
        (["--service-url", "http://x"], "--platform-token and --mqtt-url"),
        (["--metrics-url", "http://x"], "--metrics-url needs --service-url"),
    ],
)
def test_the_command_refuses_bad_options(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert says in capsys.readouterr().err


def _ten_households() -> tuple[HouseholdSpec, ...]:
    """Ten homes of the default mix, and one camera that ignores its desired state."""
    homes = list(
        plan_fleet(
            households=10,
            plans=parse_plan_mix("continuous-7d=2,event-7d=2,continuous-1d=1,none=1"),
            seed=3,
            prefix="t-fleet",
            home_products=parse_plan_mix(
                "wifi-gift-299=1,wifi-tuning-70=1,none=1", "--home-products"
            ),
        )
    )
    first = homes[0]
    rogue = dataclasses.replace(first.cameras[0], plan=None, rogue=True)
    homes[0] = dataclasses.replace(
        first, devices=(rogue, *(d for d in first.devices if d != first.cameras[0]))
    )
    return tuple(homes)


async def test_ten_households_run_end_to_end_with_no_error(tmp_path: Path, broker: Broker) -> None:
    """Acceptance 1 (small): provisioning, devices, uploads, refusals, orders, app, report.

    The embedded gateway (SQLite, files, a 3600x clock shared with the fleet) on the
    suite's Mosquitto: amqtt leaves its client sockets open at shutdown.
    """
    homes = _ten_households()
    options = FleetOptions(
        households=len(homes),
        clock_speed=3600,
        duration=8.0,
        stop_rate=1.0,  # per simulated hour: one order a real second at 3600x
        app_rate=4.0,
        min_real_interval=1.0,
        seed=3,
        prefix="t-fleet",
        mqtt_url=broker.url,
    )
    report: dict[str, Any] = await run_fleet(options, workdir=tmp_path, households=homes)
    assert report["errors"] == {"total": 0}, json.dumps(report["errors"])
    total = sum(len(h.devices) for h in homes)
    devices = report["devices"]
    assert devices["total"] == total
    assert devices["connected_peak"] == total
    assert devices["converged_at_end"] == devices["known_to_service"] == total
    assert report["messages"]["gateway_processed"] >= report["messages"]["published"]
    uploads = report["uploads"]
    assert uploads["ok"] > 0
    assert uploads["gateway_indexed"] == uploads["ok"]
    # The camera without a plan that records anyway is refused by R1.
    assert uploads["refused"].get("not_entitled", 0) > 0
    orders = report["orders"]["counts"]
    assert orders["applied"] > 0
    assert orders["converged"] == orders["applied"]
    assert report["app"]["requests"] > 0
    # The family's tunings are answered by the rules: no package (R16), a stopped account
    # (R12), or entitled but the fleet's routers have no SSH access (never an error).
    tunes = {k for k in report["app"]["outcomes"] if k.startswith("tune")}
    assert tunes <= {
        "tune 403 tuning_not_covered",
        "tune 409 broadband_inactive",
        "tune 409 router_not_provisioned",
    }
    assert report["events"] > 0
    assert all(sample["backlog"] >= 0 for sample in report["samples"])
    # 3600x with a 1-s floor: a segment and a telemetry message every real second.
    assert report["cadences"]["segment_every_real_s"] == 1.0
    assert report["cadences"]["telemetry_every_real_s"] == 1.0
    assert report["verdict"]["figures"]["errors"] == 0
    assert report["verdict"]["figures"]["telemetry_nominal_per_s"] == total
    # The runner's own cost over the measured run (issue 16): its worker process worked.
    runner = report["runner"]
    assert runner["devices"] == total
    assert runner["inline"] is False
    assert runner["worker_cores"] > 0
    # (the report rounds the cores to three decimals)
    assert runner["devices_per_worker_core"] * runner["worker_cores"] == pytest.approx(
        total, rel=0.02
    )
    assert runner["worker_rss_mib"] > 0
    assert report["window"]["ended"] - report["window"]["began"] >= options.duration


class _TimedCamera(FleetCamera):
    """A fleet camera whose uploads only take time (three clock seconds) and are noted."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cut: list[tuple[datetime, datetime]] = []
        self.six = asyncio.Event()

    async def _upload_one(
        self, start: datetime, seconds: float, kind: str, event_id: str | None
    ) -> None:
        self.cut.append((start, start + timedelta(seconds=seconds)))
        if len(self.cut) == 6:
            self.six.set()
        await self.clock.sleep(3)


async def test_a_fleet_camera_cuts_contiguous_segments_however_long_its_uploads_take() -> None:
    """Segments are due on the camera's own cadence, not a segment after the last upload
    ended: slow uploads neither open gaps nor let cameras drift onto one phase."""
    clock = SimClock(datetime(2026, 12, 1, tzinfo=UTC), speed=2000)
    go = asyncio.Event()
    go.set()
    async with aiohttp.ClientSession() as http:
        camera = _TimedCamera(
            pacing=Pacing.for_speed(speed=2000, telemetry_s=30, segment_s=10, min_real_s=0),
            http=http,
            uploads=Uploads(),
            rogue=True,  # records continuously whatever it is told
            horizon_s=120,
            clock=clock,
            device_id="cam-cadence",
            counters=WorkerCounters(),
            go=go,
            mqtt_url="mqtt://127.0.0.1:1",
            media="synthetic",
        )
        recording = asyncio.create_task(camera._continuous())
        await asyncio.wait_for(camera.six.wait(), 10)
        recording.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await recording
    ends = [end for _, end in camera.cut]
    assert all(b - a == timedelta(seconds=10) for a, b in itertools.pairwise(ends))
    assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(camera.cut))


class _EventCamera(FleetCamera):
    """A fleet camera whose people pass at set times; its events and uploads are noted."""

    def __init__(self, *, mode: str, offsets: list[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        start = self.clock.now()
        self.scene = Scene(
            seed=self.device_id,
            actors=[
                Actor(kind="person", start=start + timedelta(seconds=s), duration_s=4)
                for s in offsets
            ],
        )
        self.desired = {"version": 1, "recording": {"mode": mode}}
        self.reported: list[datetime] = []
        self.cut: list[tuple[datetime, datetime, str | None]] = []

    async def report_event(self, *, event_id: str, kind: str, at: datetime, score: float) -> None:
        self.reported.append(at)

    async def _upload_one(
        self, start: datetime, seconds: float, kind: str, event_id: str | None
    ) -> None:
        self.cut.append((start, start + timedelta(seconds=seconds), event_id))


#: Fast enough for a short test, slow enough that a loaded machine's stalls (tens of ms)
#: never pass an actor's instant before the camera's loop reaches it (an actor 20 s of
#: scene time after another is 0.4 s of real time apart).
SPEED = 50


def _event_camera(http: aiohttp.ClientSession, mode: str, offsets: list[float]) -> _EventCamera:
    go = asyncio.Event()
    go.set()
    return _EventCamera(
        mode=mode,
        offsets=offsets,
        pacing=Pacing.for_speed(speed=SPEED, telemetry_s=30, segment_s=10, min_real_s=0),
        http=http,
        uploads=Uploads(),
        rogue=False,
        horizon_s=600,
        clock=SimClock(datetime(2026, 12, 1, tzinfo=UTC), speed=SPEED),
        device_id="cam-events",
        counters=WorkerCounters(),
        go=go,
        mqtt_url="mqtt://127.0.0.1:1",
        media="synthetic",
    )


@pytest.mark.parametrize(
    ("mode", "clips"),
    [
        # Events are reported in every mode; only an event plan records clips.
        ("continuous", []),
        ("off", []),
        # 20 s apart: one clip carries both (R1); 110 s on, a clip of its own.
        ("event", [(10, 30), (140,)]),
    ],
)
async def test_a_fleet_camera_reports_events_in_every_mode_and_never_overlaps_clips(
    mode: str, clips: list[tuple[float, ...]]
) -> None:
    """``clips``: the events (seconds from the first actor's start - 10 s) each clip holds."""
    offsets: list[float] = [10, 30, 140]
    async with aiohttp.ClientSession() as http:
        camera = _event_camera(http, mode, offsets)
        t0 = camera.scene.actors[0].start - timedelta(seconds=10)
        await asyncio.wait_for(camera._events(), 30)
    assert [(at - t0).total_seconds() for at in camera.reported] == offsets
    assert len(camera.cut) == len(clips)
    for (start, end, event_id), held in zip(camera.cut, clips, strict=True):
        first = t0 + timedelta(seconds=held[0])
        assert event_id == f"cam-events-ev-{int(first.timestamp() * 1000)}"
        assert end - start == timedelta(seconds=60)
        # Pre-roll: 10 s, back to a key frame of the 2-s grid.
        assert start == floor_to(first - timedelta(seconds=10), timedelta(seconds=2))
        assert all(start <= t0 + timedelta(seconds=s) < end for s in held)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(camera.cut))


# --- the terminal (issue 15 item 8) --------------------------------------------------------


class _Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_off_a_terminal_the_status_is_plain_lines_at_each_phase_and_every_few_seconds() -> None:
    out, ticks = io.StringIO(), _Ticks()
    status = StatusLine(out, plain_every=5.0, monotonic=ticks)
    assert not status.tty
    status.show("connecting", "0/4 devices connected")
    ticks.now += 1
    status.show("connecting", "2/4 devices connected")  # too soon: not printed
    ticks.now += 4
    status.show("connecting", "3/4 devices connected")
    ticks.now += 0.5
    status.show("connected", "4/4 devices in 5.5 s")  # a new phase: at once
    status.show("running", "1/60 s", "devices 4/4 connected")
    status.done()
    assert out.getvalue().splitlines() == [
        "connecting | 0/4 devices connected",
        "connecting | 3/4 devices connected",
        "connected | 4/4 devices in 5.5 s",
        "running | 1/60 s | devices 4/4 connected",
    ]
    assert "\r" not in out.getvalue()
    assert "\x1b" not in out.getvalue()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_status_redraws_in_place() -> None:
    out = _Terminal()
    status = StatusLine(out)
    status.show("connecting", "1/4 devices connected")
    status.show("connecting", "2/4 devices connected")
    status.show("running", "1/60 s", "devices 4/4 connected")
    status.done()
    text = out.getvalue()
    assert status.tty
    assert "2/4 devices connected" in text
    assert "devices 4/4 connected" in text
    # Each redraw goes back over the block drawn before: cursor up, erase the line.
    assert text.count("\x1b[1A\x1b[2K") >= 1
    assert " | " not in text, "no plain lines on a terminal"


@pytest.mark.parametrize(
    ("published", "processed", "expected"),
    [
        (120, 100, 20),
        (100, 100, 0),
        # The gateway counted more than the devices sent (a broker's Last Will, a QoS 1
        # message delivered twice): that is no backlog.
        (100, 103, 0),
        (0, 0, 0),
    ],
)
def test_the_backlog_is_never_negative(published: int, processed: int, expected: int) -> None:
    assert backlog(published, processed) == expected


def test_a_sample_never_has_a_negative_backlog() -> None:
    samples = Samples()
    zero = {"connected": 4, "published": 0, "uploads": 0}
    samples.begin(0.0, zero, 0.0)
    row = samples.take(1.0, {"connected": 4, "published": 50, "uploads": 2}, 53.0)
    assert row["backlog"] == 0
    row = samples.take(2.0, {"connected": 4, "published": 90, "uploads": 3}, 80.0)
    assert row["backlog"] == 10


def _spec() -> WorkerSpec:
    return WorkerSpec(
        mqtt_url="mqtt://127.0.0.1:1",
        clock_start=datetime(2026, 12, 1, tzinfo=UTC).isoformat(),
        clock_speed=1.0,
        clock_mono=0.0,
        devices=(),
        media="synthetic",
        synthetic_bytes=1,
        pacing=Pacing.for_speed(speed=1, telemetry_s=30, segment_s=10, min_real_s=0),
        horizon_s=1.0,
        connect_concurrency=1,
        report_every=0.5,
    )


async def test_fresh_totals_wait_for_snapshots_taken_after_the_gateway_was_read() -> None:
    """The devices' count is read after the gateway's: the backlog's lag cannot go negative."""
    pool = WorkerPool(on_version=lambda *_: None)
    handle = WorkerHandle(
        _spec(), clock=SimClock(datetime(2026, 12, 1, tzinfo=UTC), speed=1), inline=True
    )
    handle.on_snapshot = pool._take
    pool.handles.append(handle)
    handle._take({"at": 10.0, "connected": 1, "devices": 1, "published": 5})
    waiting = asyncio.create_task(pool.fresh_totals(20.0, within=60))
    await asyncio.sleep(0)
    handle._take({"at": 15.0, "connected": 1, "devices": 1, "published": 7})  # still older
    for _ in range(10):  # the waiter sees it, and waits on
        await asyncio.sleep(0)
    assert not waiting.done()
    handle._take({"at": 21.0, "connected": 1, "devices": 1, "published": 9})
    totals = await waiting
    assert totals["published"] == 9
    assert totals["at"] == 21.0


@pytest.mark.parametrize(
    ("speed", "min_real", "segment_real", "telemetry_real", "floored"),
    [
        pytest.param(1.0, 5.0, 10.0, 30.0, False, id="real-time"),
        pytest.param(60.0, 5.0, 5.0, 5.0, True, id="60x-at-the-floor"),
        pytest.param(3600.0, 1.0, 1.0, 1.0, True, id="3600x"),
        pytest.param(2.0, 0.0, 5.0, 15.0, False, id="2x-no-floor"),
    ],
)
def test_the_report_gives_the_effective_cadences_in_real_seconds(
    speed: float, min_real: float, segment_real: float, telemetry_real: float, floored: bool
) -> None:
    options = FleetOptions(clock_speed=speed, min_real_interval=min_real)
    pace = cadences(options)
    assert pace["segment_every_real_s"] == segment_real
    assert pace["telemetry_every_real_s"] == telemetry_real
    assert pace["segment_every_sim_s"] == segment_real * speed
    assert pace["floored"] is floored


_PASSING: dict[str, Any] = {
    "devices": 100,
    "telemetry_sent": 2000,  # 100 devices, one every 5 s, over 100 s: nominal 20/s
    "run_s": 100.0,
    "telemetry_every_real_s": 5.0,
    "segment_every_real_s": 5.0,
    "uploads": 500,
    "upload_p99_ms": 800.0,
    "errors": 0,
}


@pytest.mark.parametrize(
    ("change", "passes", "says"),
    [
        pytest.param({}, True, None, id="passes"),
        pytest.param({"telemetry_sent": 1900}, True, None, id="95-percent-offered"),
        pytest.param({"telemetry_sent": 1899}, False, "under 95 %", id="under-95-percent"),
        pytest.param(
            {"telemetry_sent": 10, "run_s": 9.0}, True, None, id="too-short-to-judge-the-rate"
        ),
        pytest.param({"upload_p99_ms": 5000.0}, False, "upload p99", id="p99-a-whole-segment"),
        pytest.param({"upload_p99_ms": 4999.0}, True, None, id="p99-under-a-segment"),
        pytest.param({"uploads": 0, "upload_p99_ms": 0.0}, True, None, id="no-uploads"),
        pytest.param({"errors": 1}, False, "1 error(s)", id="an-error"),
    ],
)
def test_the_verdict_and_its_thresholds(
    change: dict[str, Any], passes: bool, says: str | None
) -> None:
    judged = verdict(**{**_PASSING, **change})
    assert judged["pass"] is passes
    assert judged["thresholds"] == {
        "telemetry_offered_min_share": 0.95,
        "upload_p99_max_ms": 5000.0,
        "errors_max": 0,
    }
    if says is None:
        assert judged["reasons"] == []
    else:
        assert any(says in reason for reason in judged["reasons"]), judged["reasons"]


def test_the_summary_tells_the_cadences_and_the_verdict() -> None:
    options = FleetOptions(clock_speed=60.0)
    report = {
        "cadences": cadences(options),
        "verdict": verdict(**{**_PASSING, "errors": 2}),
    }
    lines = verdict_lines(report)
    assert lines[0].startswith("cadences at x60: a 10-s segment every 5 s real (300 s simulated)")
    assert "telemetry every 5 s real" in lines[0]
    assert lines[1].startswith("verdict: FAIL")
    assert "upload p99 under 5000 ms" in lines[2]
    assert lines[3] == "  fails: 2 error(s)"


def test_the_work_directory_is_under_the_current_one_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first, second = work_directory(None), work_directory(None)
    assert first.parent == second.parent == tmp_path / "var" / "simulate"
    assert first != second
    assert first.is_dir()
    given = work_directory(Path("mine"))
    assert given == tmp_path / "mine"
    assert "./var/simulate" in build_parser().format_help()


@pytest.mark.parametrize(
    ("cpu_s", "wall_s", "devices", "cores", "per_core", "ms_per_device"),
    [
        pytest.param(30.0, 60.0, 1000, 0.5, 2000, 0.5, id="half-a-core-for-1000"),
        pytest.param(120.0, 60.0, 4000, 2.0, 2000, 0.5, id="two-cores-for-4000"),
        pytest.param(0.0, 60.0, 10, 0.0, None, 0.0, id="idle"),
        pytest.param(6.0, 60.0, 0, 0.1, 0, None, id="no-device"),
    ],
)
def test_the_runner_reports_its_cost_per_simulated_device(
    cpu_s: float,
    wall_s: float,
    devices: int,
    cores: float,
    per_core: int | None,
    ms_per_device: float | None,
) -> None:
    cost = runner_cost(
        devices=devices,
        wall_s=wall_s,
        worker_cpu_s=cpu_s,
        coordinator_cpu_s=3.0,
        worker_rss_mib=150.0,
        inline=False,
    )
    assert cost["worker_cores"] == cores
    assert cost["devices_per_worker_core"] == per_core
    assert cost["worker_cpu_ms_per_device_s"] == ms_per_device
    assert cost["coordinator_cores"] == 0.05


def test_inline_devices_cost_what_the_whole_process_costs() -> None:
    """With ``--workers 0`` the coordinator is the process the devices run in."""
    cost = runner_cost(
        devices=100,
        wall_s=10.0,
        worker_cpu_s=5.0,
        coordinator_cpu_s=5.0,
        worker_rss_mib=90.0,
        inline=True,
    )
    assert cost["coordinator_cores"] is None
    line = cost_line(cost)
    assert line.startswith("runner cost: 0.50 cores busy in this process, inline")
    assert "200 simulated devices per core" in line
    assert "coordinator" not in line


def test_the_pool_adds_up_its_workers_cost() -> None:
    pool = WorkerPool(on_version=lambda *_: None)
    clock = SimClock(datetime(2026, 12, 1, tzinfo=UTC), speed=1)
    for cpu, rss in ((3.5, 100.0), (1.5, 120.0)):
        handle = WorkerHandle(_spec(), clock=clock, inline=True)
        handle._take({"at": 1.0, "devices": 1, "cpu_s": cpu, "rss_mib": rss})
        pool.handles.append(handle)
    totals = pool.totals()
    assert (totals["cpu_s"], totals["rss_mib"]) == (5.0, 220.0)


async def test_households_with_memberships_save_recent_ranges_to_the_family_cloud(
    tmp_path: Path,
) -> None:
    """Issue 18 (R18, R14): provisioning orders each account its membership; the app saves
    20-s ranges of real H.264 ending a minute ago and lists the family cloud, and the
    refusals of the rules (nothing recorded yet, a tuning not covered) are no errors.

    At 30x with a 1-s floor a 10-s segment starts every 30 clock seconds, so every 20-s
    range overlaps one; one camera a household keeps the encoding cheap. Its own
    Mosquitto: the suite's keeps the retained messages of other fleets' devices.
    """
    planned = plan_fleet(
        households=2,
        plans=parse_plan_mix("continuous-7d"),
        seed=7,
        prefix="t-save",
        memberships=parse_plan_mix("ordinary=1,gold=1", "--memberships"),
    )
    homes = tuple(
        dataclasses.replace(
            h, devices=(h.cameras[0], *(d for d in h.devices if d.role == "router"))
        )
        for h in planned
    )
    assert all(h.membership is not None for h in homes)
    options = FleetOptions(
        households=len(homes),
        clock_speed=30,
        duration=8.0,
        media="real",
        stop_rate=0.0,
        app_rate=1800.0,  # per simulated hour: 15 requests a real second at 30x
        min_real_interval=1.0,
        seed=7,
        prefix="t-save",
    )
    (tmp_path / "mosquitto").mkdir()
    with mosquitto(tmp_path / "mosquitto") as broker:
        options = dataclasses.replace(options, mqtt_url=broker.url)
        report: dict[str, Any] = await run_fleet(options, workdir=tmp_path, households=homes)
    assert report["errors"] == {"total": 0}, json.dumps(report["errors"])
    outcomes = report["app"]["outcomes"]
    assert outcomes.get("family-cloud save 201", 0) > 0, outcomes
    assert outcomes.get("family-cloud list 200", 0) > 0, outcomes
    saves = {k for k in outcomes if k.startswith("family-cloud save")}
    # (200: that exact range saved before, R14)
    allowed = {"201", "200", "404 no_recording"}
    assert saves <= {f"family-cloud save {answer}" for answer in allowed}, outcomes
    assert report["fleet"]["memberships"] == {"gold": 1, "ordinary": 1}
    saved = outcomes["family-cloud save 201"] + outcomes.get("family-cloud save 200", 0)
    assert f"family-cloud saves {saved}" in "\n".join(summary_lines(report))
