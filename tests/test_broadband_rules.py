"""Table tests of the broadband stop/resume/teardown/emergency-resume rules (R8–R12, R15).

Times are written in UTC with the Asia/Shanghai wall time (UTC+8) beside them where a
natural day or a calendar month matters. Expectations are worked out by hand per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from devices.broadband import (
    ARREARS_TYPES,
    BroadbandState,
    EmergencyCondition,
    EmergencyResume,
    Order,
    Outcome,
    Refusal,
    Resume,
    Stop,
    StopType,
    Teardown,
    apply,
    expire,
    family_cloud_status,
    managed_networking_suspended,
    replay_suspended,
)

REQ = StopType.REQUESTED
LOST = StopType.LOST
KEEP = StopType.KEEP_NUMBER
ARR = StopType.ARREARS
ONEWAY = StopType.ARREARS_ONEWAY
TWOWAY = StopType.ARREARS_TWOWAY
PRE = StopType.PRE_TEARDOWN
VIOL = StopType.VIOLATION


def t(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def stop(kind: StopType, at: str) -> Stop:
    return Stop(stop_type=kind, issued_at=t(at))


def resume(kind: StopType, at: str) -> Resume:
    return Resume(stop_type=kind, issued_at=t(at))


def teardown(at: str) -> Teardown:
    return Teardown(issued_at=t(at))


def emergency(at: str) -> EmergencyResume:
    return EmergencyResume(issued_at=t(at))


def run(
    orders: Sequence[Order],
    *,
    state: BroadbandState | None = None,
    star: int = 3,
    subs: bool = False,
) -> list[Outcome]:
    """Apply ``orders`` in turn, the service clock standing at each order's issued_at."""
    current = BroadbandState() if state is None else state
    outcomes = []
    for order in orders:
        outcome = apply(
            current, order, now=order.issued_at, star_level=star, has_active_subscription=subs
        )
        outcomes.append(outcome)
        current = outcome.state
    return outcomes


def final(
    orders: Sequence[Order], *, state: BroadbandState | None = None, star: int = 3
) -> BroadbandState:
    return run(orders, state=state, star=star)[-1].state


T1, T2, T3, T4 = (
    "2026-03-01T00:00:00Z",
    "2026-03-02T00:00:00Z",
    "2026-03-03T00:00:00Z",
    "2026-03-04T00:00:00Z",
)
ALL_EIGHT = [REQ, LOST, KEEP, ARR, ONEWAY, TWOWAY, PRE, VIOL]


# --- R10: the stop set, and the staleness convention --------------------------------------

STOP_SET_CASES = [
    # id, orders, stops in force after, account state, (last order applied, its reason)
    pytest.param([stop(REQ, T1)], {REQ}, "stopped", (True, None), id="R10-stop-one-type"),
    pytest.param(
        [stop(REQ, T1), resume(REQ, T2)], set(), "active", (True, None), id="R10-stop-then-resume"
    ),
    pytest.param(
        [stop(REQ, T1), stop(ARR, T2)], {REQ, ARR}, "stopped", (True, None), id="R10-two-types"
    ),
    pytest.param(
        [stop(REQ, T1), stop(ARR, T2), resume(REQ, T3)],
        {ARR},
        "stopped",
        (True, None),
        id="R10-two-types-partial-resume-stays-stopped",
    ),
    pytest.param(
        [stop(REQ, T1), stop(ARR, T2), resume(REQ, T3), resume(ARR, T4)],
        set(),
        "active",
        (True, None),
        id="R10-two-types-both-resumed-active",
    ),
    pytest.param(
        [stop(kind, T1) for kind in ALL_EIGHT],
        set(ALL_EIGHT),
        "stopped",
        (True, None),
        id="R10-all-eight-types-in-force",
    ),
    pytest.param(
        [stop(kind, T1) for kind in ALL_EIGHT] + [resume(kind, T2) for kind in ALL_EIGHT[:7]],
        {VIOL},
        "stopped",
        (True, None),
        id="R10-all-eight-seven-resumed",
    ),
    pytest.param(
        [stop(REQ, T1), resume(LOST, T2)],
        {REQ},
        "stopped",
        (False, "not_stopped"),
        id="R10-resume-lifts-only-its-own-type",
    ),
    pytest.param(
        [resume(ARR, T1)], set(), "active", (False, "not_stopped"), id="R10-resume-active"
    ),
    pytest.param(
        [stop(REQ, T1), stop(REQ, T2)],
        {REQ},
        "stopped",
        (False, "already_stopped"),
        id="R10-duplicate-type-already-stopped",
    ),
    pytest.param(
        [stop(REQ, T2), resume(REQ, T1)],
        {REQ},
        "stopped",
        (False, "stale"),
        id="conv-stale-resume-older-than-its-stop",
    ),
    pytest.param(
        [stop(REQ, T1), resume(REQ, T3), stop(REQ, T2)],
        set(),
        "active",
        (False, "stale"),
        id="conv-stale-stop-older-than-the-resume",
    ),
    pytest.param(
        [stop(REQ, T1), resume(REQ, T1)],
        set(),
        "active",
        (True, None),
        id="conv-same-instant-is-not-stale",
    ),
    pytest.param(
        [stop(REQ, T3), stop(LOST, T1)],
        {REQ, LOST},
        "stopped",
        (True, None),
        id="conv-staleness-is-per-stop-type",
    ),
    pytest.param(
        [resume(REQ, T2), stop(REQ, T1)],
        set(),
        "active",
        (False, "stale"),
        id="conv-resume-overtaken-by-its-older-stop",
    ),
    pytest.param(
        [stop(REQ, T1), stop(REQ, T3), resume(REQ, T2)],
        {REQ},
        "stopped",
        (False, "stale"),
        id="conv-repeated-stop-is-the-newest-word",
    ),
]


@pytest.mark.parametrize(("orders", "in_force", "account", "last"), STOP_SET_CASES)
def test_stop_set(
    orders: list[Order],
    in_force: set[StopType],
    account: str,
    last: tuple[bool, str | None],
) -> None:
    outcome = run(orders)[-1]
    assert outcome.state.in_force == in_force
    assert outcome.state.stops == in_force  # no emergency resume here: recorded == in force
    assert outcome.state.state == account
    assert (outcome.applied, outcome.reason) == last
    assert outcome.refusal is None


def test_R10_repeated_stop_keeps_the_original_start() -> None:
    state = final([stop(REQ, T1), stop(REQ, T2)])
    assert state.stopped_since == {REQ: t(T1)}
    assert state.inactive_since == t(T1)


@pytest.mark.parametrize(
    ("orders", "late"),
    [
        pytest.param([stop(REQ, T2)], resume(REQ, T1), id="conv-stale-resume"),
        pytest.param([stop(REQ, T1), resume(REQ, T3)], stop(REQ, T2), id="conv-stale-stop"),
        pytest.param([stop(REQ, T1), teardown(T3)], teardown(T2), id="R9-torn-down-first"),
    ],
)
def test_conv_a_refused_or_stale_order_changes_nothing(orders: list[Order], late: Order) -> None:
    before = final(orders)
    (outcome,) = run([late], state=before)
    assert not outcome.applied
    assert outcome.state == before


# --- R9: teardown -------------------------------------------------------------------------

TEARDOWN_CASES = [
    # id, orders before, active subscription, refusal code (None: torn down), state after
    pytest.param(
        [], True, "active_subscriptions", "active", id="R9-refused-with-active-subscription"
    ),
    pytest.param(
        [stop(PRE, T1)],
        True,
        "active_subscriptions",
        "stopped",
        id="R9-refused-while-pre-teardown-stopped-with-subscription",
    ),
    pytest.param([], False, None, "torn_down", id="R9-active-without-subscription"),
    pytest.param([stop(PRE, T1)], False, None, "torn_down", id="R9-after-pre-teardown-stop"),
]


@pytest.mark.parametrize(("orders", "subs", "code", "account"), TEARDOWN_CASES)
def test_teardown(orders: list[Order], subs: bool, code: str | None, account: str) -> None:
    before = final(orders) if orders else BroadbandState()
    (outcome,) = run([teardown(T2)], state=before, subs=subs)
    assert outcome.state.state == account
    if code is None:
        assert outcome.applied
        assert outcome.state.torn_down
    else:
        assert outcome.refusal is not None
        assert (outcome.applied, outcome.reason) == (False, code)
        assert (outcome.refusal.code, outcome.refusal.rule) == (code, "R9")
        assert outcome.state == before


def test_R9_teardown_during_an_emergency_resume_ends_it() -> None:
    state = final([stop(ARR, T1), emergency(T2), teardown(T3)])
    assert state.state == "torn_down"
    assert state.emergency_until is None
    assert state.emergency_suspended == frozenset()
    assert state.inactive_since == t(T3)  # active during the emergency, inactive from teardown


@pytest.mark.parametrize(
    "order",
    [
        pytest.param(stop(ARR, T4), id="R9-torn-down-stop"),
        pytest.param(resume(PRE, T4), id="R9-torn-down-resume-of-a-recorded-stop"),
        pytest.param(resume(ARR, T4), id="R9-torn-down-resume-not-stopped"),
        pytest.param(teardown(T4), id="R9-torn-down-teardown-again"),
        pytest.param(emergency(T4), id="R9-torn-down-emergency-resume"),
        pytest.param(stop(ARR, T1), id="R9-torn-down-order-issued-before-teardown"),
    ],
)
def test_R9_every_order_after_teardown_is_refused(order: Order) -> None:
    torn = final([stop(PRE, T2), teardown(T3)])
    (outcome,) = run([order], state=torn, star=5)
    assert outcome.refusal is not None
    assert (outcome.applied, outcome.reason, outcome.refusal.code) == (
        False,
        "torn_down",
        "torn_down",
    )
    assert outcome.state == torn


# --- R11: emergency resume conditions -----------------------------------------------------

S = "2026-03-01T16:30:00Z"  # 2026-03-02 00:30 Shanghai: day 1 is 2 March, day 7 is 8 March
ASK = "2026-03-03T02:00:00Z"  # 2026-03-03 10:00 Shanghai: day 2
PHRASES: dict[EmergencyCondition, str] = {
    "not_stopped": "not stopped",
    "star_level": "star level",
    "stop_types": "stop types",
    "window": "window",
    "monthly_limit": "monthly limit",
}

EMERGENCY_CASES = [
    # id, star level, stops (type, start), request, month of a previous grant, failed conditions
    pytest.param(2, [(ARR, S)], ASK, None, ("star_level",), id="R11-star-2-refused"),
    pytest.param(3, [(ARR, S)], ASK, None, (), id="R11-star-3-arrears-alone-granted"),
    pytest.param(7, [(ARR, S)], ASK, None, (), id="R11-star-7-granted"),
    pytest.param(0, [(ARR, S)], ASK, None, ("star_level",), id="R11-star-0-refused"),
    pytest.param(3, [(ONEWAY, S)], ASK, None, (), id="R11-arrears-oneway-granted"),
    pytest.param(3, [(TWOWAY, S)], ASK, None, (), id="R11-arrears-twoway-granted"),
    pytest.param(
        3, [(ONEWAY, S), (TWOWAY, ASK)], ASK, None, (), id="R11-oneway-and-twoway-granted"
    ),
    pytest.param(3, [(REQ, S)], ASK, None, ("stop_types",), id="R11-requested-alone-refused"),
    pytest.param(3, [(KEEP, S)], ASK, None, ("stop_types",), id="R11-keep-number-refused"),
    pytest.param(
        3, [(ARR, S), (VIOL, S)], ASK, None, ("stop_types",), id="R11-arrears-and-violation"
    ),
    pytest.param(
        3, [(ARR, S), (REQ, S)], ASK, None, ("stop_types",), id="R11-arrears-and-requested"
    ),
    pytest.param(3, [], ASK, None, ("not_stopped",), id="R11-not-stopped-refused"),
    pytest.param(3, [(ARR, S)], S, None, (), id="R11-day-1-at-the-stop-instant"),
    pytest.param(
        3, [(ARR, S)], "2026-03-08T15:59:59Z", None, (), id="R11-day-7-last-second-granted"
    ),
    pytest.param(
        3,
        [(ARR, S)],
        "2026-03-08T16:00:00Z",  # 2026-03-09 00:00 Shanghai
        None,
        ("window",),
        id="R11-day-8-first-second-refused",
    ),
    pytest.param(
        3,
        [(ARR, "2026-03-01T15:59:00Z")],  # 2026-03-01 23:59 Shanghai: day 1 is 1 March
        "2026-03-07T15:59:59Z",  # 2026-03-07 23:59:59 Shanghai: day 7
        None,
        (),
        id="R11-stop-before-shanghai-midnight-day-7-granted",
    ),
    pytest.param(
        3,
        [(ARR, "2026-03-01T15:59:00Z")],
        "2026-03-07T16:00:00Z",  # still 7 March in UTC, but 8 March (day 8) in Shanghai
        None,
        ("window",),
        id="R11-stop-before-shanghai-midnight-day-8-refused",
    ),
    pytest.param(
        3,
        [(ARR, S)],
        "2026-03-01T15:00:00Z",  # 2026-03-01 23:00 Shanghai: the day before the stop day
        None,
        ("window",),
        id="R11-request-before-the-stop-day-refused",
    ),
    pytest.param(
        3,
        [(ONEWAY, S), (TWOWAY, "2026-03-03T16:30:00Z")],  # 单停 on 2 March, 双停 on 4 March
        "2026-03-08T16:00:00Z",  # day 8 from 2 March (day 6 from 4 March)
        None,
        ("window",),
        id="R11-window-counts-from-the-earliest-arrears-stop",
    ),
    pytest.param(
        3, [(ARR, S)], ASK, "2026-03", ("monthly_limit",), id="R11-second-in-same-month-refused"
    ),
    pytest.param(3, [(ARR, S)], ASK, "2026-02", (), id="R11-previous-month-grant-allows"),
    pytest.param(
        2,
        [(ARR, S), (VIOL, S)],
        "2026-03-08T16:00:00Z",
        "2026-03",
        ("star_level", "stop_types", "window", "monthly_limit"),
        id="R11-every-failed-condition-is-named",
    ),
]


@pytest.mark.parametrize(("star", "stops", "ask", "prior", "failed"), EMERGENCY_CASES)
def test_emergency_resume_conditions(
    star: int,
    stops: list[tuple[StopType, str]],
    ask: str,
    prior: str | None,
    failed: tuple[EmergencyCondition, ...],
) -> None:
    before = BroadbandState()
    if stops:
        before = final([stop(kind, at) for kind, at in stops])
    before = replace(before, last_emergency_month=prior)
    (outcome,) = run([emergency(ask)], state=before, star=star)
    if not failed:
        assert outcome.applied
        assert outcome.state.state == "active"
        assert outcome.state.in_force == frozenset()
        assert outcome.state.emergency_suspended == {kind for kind, _ in stops}
        assert outcome.state.emergency_until == t(ask) + timedelta(days=7)
        assert outcome.state.last_emergency_month == "2026-03"  # every request is in March
        assert outcome.state.inactive_since is None
    else:
        refusal = outcome.refusal
        assert refusal is not None
        assert (refusal.code, refusal.rule, refusal.failed) == (
            "emergency_not_allowed",
            "R11",
            failed,
        )
        assert outcome.reason == "emergency_not_allowed"
        for condition in failed:
            assert PHRASES[condition] in refusal.message
        assert outcome.state == before


def test_R11_star_level_message_names_the_level() -> None:
    (outcome,) = run([emergency(ASK)], state=final([stop(ARR, S)]), star=2)
    assert outcome.refusal is not None
    assert "star level 2" in outcome.refusal.message


@pytest.mark.parametrize("star", [-1, 8], ids=["star-minus-1", "star-8"])
def test_R11_star_level_outside_0_to_7_is_invalid_input(star: int) -> None:
    with pytest.raises(ValueError, match="star_level"):
        run([emergency(ASK)], state=final([stop(ARR, S)]), star=star)


MONTHLY_CASES = [
    # id, orders after a first grant on 2 March (and a paid resume on 5 March), last outcome
    pytest.param(
        [stop(ARR, "2026-03-19T16:30:00Z"), emergency("2026-03-20T02:00:00Z")],
        (False, "emergency_not_allowed"),
        id="R11-second-request-same-month-refused",
    ),
    pytest.param(
        [
            stop(ARR, "2026-03-30T16:30:00Z"),  # 31 March 00:30 Shanghai
            emergency("2026-03-31T15:00:00Z"),  # 31 March 23:00 Shanghai
        ],
        (False, "emergency_not_allowed"),
        id="R11-second-request-last-shanghai-hour-of-month-refused",
    ),
    pytest.param(
        [
            stop(ARR, "2026-03-31T16:30:00Z"),  # 1 April 00:30 Shanghai
            emergency("2026-03-31T17:00:00Z"),  # 1 April 01:00 Shanghai (31 March in UTC)
        ],
        (True, None),
        id="R11-second-request-next-shanghai-month-granted",
    ),
]


@pytest.mark.parametrize(("orders", "last"), MONTHLY_CASES)
def test_R11_once_per_calendar_month(orders: list[Order], last: tuple[bool, str | None]) -> None:
    first: list[Order] = [
        stop(ARR, S),
        emergency("2026-03-02T02:00:00Z"),
        resume(ARR, "2026-03-05T00:00:00Z"),
    ]
    outcomes = run(first + orders)
    assert [o.applied for o in outcomes[:4]] == [True, True, True, True]
    assert (outcomes[-1].applied, outcomes[-1].reason) == last
    if not last[0]:
        refusal = outcomes[-1].refusal
        assert refusal is not None
        assert refusal.failed == ("monthly_limit",)


def test_R11_no_second_grant_while_one_runs() -> None:
    outcomes = run([stop(ARR, S), emergency(ASK), emergency("2026-03-04T02:00:00Z")])
    refusal = outcomes[-1].refusal
    assert refusal is not None
    assert refusal.failed == ("not_stopped",)


# --- R11: the 7 days of service and what follows ------------------------------------------

GRANT = "2026-03-02T02:00:00Z"  # day 1 (the stop S is 2 March 00:30 Shanghai)
UNTIL = "2026-03-09T02:00:00Z"  # GRANT + 7 days

EXPIRY_CASES = [
    # id, arrears stops, orders inside the window, expiry job time,
    # in force after the job, account state, inactive_since after the job
    pytest.param(
        [ARR], [], "2026-03-09T01:59:59Z", set(), "active", None, id="R11-one-second-early"
    ),
    pytest.param([ARR], [], UNTIL, {ARR}, "stopped", UNTIL, id="R11-expiry-reimposes-arrears"),
    pytest.param(
        [ARR], [], "2026-03-11T00:00:00Z", {ARR}, "stopped", UNTIL, id="R11-late-job-same-end"
    ),
    pytest.param(
        [ARR],
        [resume(ARR, "2026-03-05T00:00:00Z")],
        UNTIL,
        set(),
        "active",
        None,
        id="R11-regular-resume-in-window-lifts-for-good",
    ),
    pytest.param(
        [ONEWAY, TWOWAY],
        [resume(ONEWAY, "2026-03-05T00:00:00Z")],
        UNTIL,
        {TWOWAY},
        "stopped",
        UNTIL,
        id="R11-resume-of-one-of-two-arrears-types",
    ),
    pytest.param(
        [ARR],
        [stop(VIOL, "2026-03-04T00:00:00Z")],
        UNTIL,
        {ARR, VIOL},
        "stopped",
        "2026-03-04T00:00:00Z",
        id="R11-new-violation-stop-in-window-applies-at-once",
    ),
    pytest.param(
        [ARR],
        [stop(ARR, "2026-03-04T00:00:00Z")],
        UNTIL,
        {ARR},
        "stopped",
        UNTIL,
        id="R11-repeated-arrears-stop-in-window-waits-for-the-end",
    ),
    pytest.param(
        [ARR],
        [resume(ARR, "2026-03-04T00:00:00Z"), stop(ARR, "2026-03-05T00:00:00Z")],
        UNTIL,
        {ARR},
        "stopped",
        "2026-03-05T00:00:00Z",
        id="R11-new-arrears-stop-after-a-resume-applies-at-once",
    ),
]


@pytest.mark.parametrize(
    ("arrears", "orders", "job_at", "in_force", "account", "inactive"), EXPIRY_CASES
)
def test_emergency_window_and_expiry(
    arrears: list[StopType],
    orders: list[Order],
    job_at: str,
    in_force: set[StopType],
    account: str,
    inactive: str | None,
) -> None:
    granted = run([*(stop(kind, S) for kind in arrears), emergency(GRANT)])[-1]
    assert granted.applied
    after = expire(final(orders, state=granted.state) if orders else granted.state, t(job_at))
    assert after.in_force == in_force
    assert after.state == account
    assert after.inactive_since == (None if inactive is None else t(inactive))
    ended = t(job_at) >= t(UNTIL)
    assert (after.emergency_until is None) == (ended or not after.emergency_suspended)


def test_R11_a_later_order_sees_the_expired_window() -> None:
    """apply() lets the window lapse by ``now`` first, even if the job has not run yet."""
    state = final([stop(ARR, S), emergency(GRANT)])
    (outcome,) = run([stop(REQ, "2026-03-12T00:00:00Z")], state=state)
    assert outcome.state.in_force == {ARR, REQ}
    assert outcome.state.emergency_until is None
    assert outcome.state.inactive_since == t(UNTIL)


def test_R11_expire_before_the_end_returns_the_same_state() -> None:
    state = final([stop(ARR, S), emergency(GRANT)])
    assert expire(state, t("2026-03-05T00:00:00Z")) is state
    assert expire(BroadbandState(), t(UNTIL)) == BroadbandState()


# --- R12 and R8: what follows the account state -------------------------------------------


@pytest.mark.parametrize(
    ("orders", "job_at", "suspended"),
    [
        pytest.param([], None, False, id="R12-active-not-suspended"),
        pytest.param([stop(REQ, T1)], None, True, id="R12-stopped-suspended"),
        pytest.param([stop(PRE, T1), teardown(T2)], None, True, id="R12-torn-down-suspended"),
        pytest.param([stop(ARR, S), emergency(GRANT)], None, False, id="R12-emergency-restores"),
        pytest.param([stop(ARR, S), emergency(GRANT)], UNTIL, True, id="R12-emergency-ended"),
        pytest.param([stop(REQ, T1), resume(REQ, T2)], None, False, id="R12-resumed"),
    ],
)
def test_R12_R8_suspension_follows_broadband(
    orders: list[Order], job_at: str | None, suspended: bool
) -> None:
    state = final(orders) if orders else BroadbandState()
    if job_at is not None:
        state = expire(state, t(job_at))
    assert managed_networking_suspended(state.state) is suspended
    assert replay_suspended(state.state) is suspended


# --- R15: family cloud after long stops ---------------------------------------------------

S0 = "2026-01-09T16:00:00Z"  # 2026-01-10 00:00 Shanghai

FAMILY_CLOUD_CASES = [
    # id, orders, check time, status
    pytest.param([], "2026-12-01T00:00:00Z", "open", id="R15-active-open"),
    pytest.param(
        [stop(REQ, S0)],
        "2026-04-07T16:00:00Z",  # 8 April 00:00 Shanghai: 2 months 29 days
        "open",
        id="R15-2-months-29-days-open",
    ),
    pytest.param([stop(REQ, S0)], "2026-04-09T15:59:59Z", "open", id="R15-a-second-short"),
    pytest.param(
        [stop(REQ, S0)], "2026-04-09T16:00:00Z", "closed", id="R15-3-months-closed"
    ),  # 10 April 00:00 Shanghai
    pytest.param([stop(REQ, S0)], "2026-07-09T15:59:59Z", "closed", id="R15-before-6-months"),
    pytest.param([stop(REQ, S0)], "2026-07-09T16:00:00Z", "deleted", id="R15-6-months-deleted"),
    pytest.param([stop(ARR, S0)], "2026-04-09T16:00:00Z", "closed", id="R15-any-stop-type"),
    pytest.param(
        [stop(REQ, S0), stop(LOST, "2026-02-01T00:00:00Z"), resume(REQ, "2026-02-02T00:00:00Z")],
        "2026-04-09T16:00:00Z",
        "closed",
        id="R15-change-of-stop-type-without-a-break-is-continuous",
    ),
    pytest.param(
        [
            stop(REQ, S0),
            resume(REQ, "2026-02-01T00:00:00Z"),
            stop(REQ, "2026-02-14T16:00:00Z"),  # 15 February 00:00 Shanghai
        ],
        "2026-04-09T16:00:00Z",
        "open",
        id="R15-resumed-in-between-resets",
    ),
    pytest.param(
        [
            stop(REQ, S0),
            resume(REQ, "2026-02-01T00:00:00Z"),
            stop(REQ, "2026-02-14T16:00:00Z"),
        ],
        "2026-05-14T16:00:00Z",  # 15 May 00:00 Shanghai: 3 months after the new stop
        "closed",
        id="R15-reset-count-closes-3-months-after-the-new-stop",
    ),
    pytest.param(
        [stop(REQ, "2025-11-29T16:00:00Z")],  # 30 November 00:00 Shanghai
        "2026-02-27T15:59:59Z",
        "open",
        id="R15-month-end-clamp-before",
    ),
    pytest.param(
        [stop(REQ, "2025-11-29T16:00:00Z")],
        "2026-02-27T16:00:00Z",  # 28 February 00:00 Shanghai (no 30 February)
        "closed",
        id="R15-month-end-clamp-closed",
    ),
    pytest.param(
        [stop(REQ, "2025-08-30T16:00:00Z")],  # 31 August 00:00 Shanghai
        "2026-02-27T16:00:00Z",  # 28 February 00:00 Shanghai
        "deleted",
        id="R15-month-end-clamp-deleted",
    ),
    pytest.param(
        [stop(REQ, "2026-02-28T16:30:00Z")],  # 1 March 00:30 Shanghai
        "2026-05-30T00:00:00Z",  # 30 May Shanghai: 3 months counted in UTC, not in Shanghai
        "open",
        id="R15-months-counted-in-shanghai",
    ),
    pytest.param(
        [stop(ARR, S0), emergency("2026-01-10T02:00:00Z")],  # service back 10–17 January
        "2026-04-09T16:00:00Z",
        "open",
        id="R15-emergency-resume-breaks-the-count",
    ),
    pytest.param(
        [stop(ARR, S0), emergency("2026-01-10T02:00:00Z")],
        "2026-04-17T02:00:00Z",  # 3 months after the arrears stop applied again
        "closed",
        id="R15-count-restarts-when-the-emergency-ends",
    ),
    pytest.param(
        [stop(PRE, S0), teardown("2026-01-20T00:00:00Z")],
        "2026-07-09T16:00:00Z",
        "deleted",
        id="R15-torn-down-keeps-counting",
    ),
]


@pytest.mark.parametrize(("orders", "check_at", "status"), FAMILY_CLOUD_CASES)
def test_R15_family_cloud_status(orders: list[Order], check_at: str, status: str) -> None:
    state = final(orders, star=3) if orders else BroadbandState()
    assert family_cloud_status(state, t(check_at)) == status


# --- values: validation and immutability --------------------------------------------------


def test_arrears_types() -> None:
    assert {ARR, ONEWAY, TWOWAY} == ARREARS_TYPES
    assert len(StopType) == 8


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: Stop(stop_type=ARR, issued_at=datetime(2026, 3, 1)), id="stop"),  # noqa: DTZ001
        pytest.param(lambda: Resume(stop_type=ARR, issued_at=datetime(2026, 3, 1)), id="resume"),  # noqa: DTZ001
        pytest.param(lambda: Teardown(issued_at=datetime(2026, 3, 1)), id="teardown"),  # noqa: DTZ001
        pytest.param(lambda: EmergencyResume(issued_at=datetime(2026, 3, 1)), id="emergency"),  # noqa: DTZ001
    ],
)
def test_orders_need_an_aware_issued_at(make: object) -> None:
    assert callable(make)
    with pytest.raises(ValueError, match="timezone"):
        make()


def test_unknown_stop_type_is_invalid() -> None:
    with pytest.raises(ValueError, match="holiday"):
        StopType("holiday")


def test_apply_needs_an_aware_now() -> None:
    with pytest.raises(ValueError, match="timezone"):
        apply(
            BroadbandState(),
            stop(REQ, T1),
            now=datetime(2026, 3, 1),  # noqa: DTZ001
            star_level=3,
            has_active_subscription=False,
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"stopped_since": {REQ: t(T1)}, "inactive_since": t(T1), "emergency_suspended": {REQ}},
            "arrears stops only",
            id="suspends-non-arrears",
        ),
        pytest.param(
            {"emergency_suspended": frozenset({ARR}), "emergency_until": t(T2)},
            "only stops that are recorded",
            id="suspends-unrecorded",
        ),
        pytest.param(
            {"stopped_since": {ARR: t(T1)}, "inactive_since": t(T1), "emergency_until": t(T2)},
            "emergency_until",
            id="until-without-suspended",
        ),
        pytest.param({"stopped_since": {ARR: t(T1)}}, "inactive_since", id="stopped-no-since"),
        pytest.param({"inactive_since": t(T1)}, "inactive_since", id="active-with-since"),
        pytest.param({"last_emergency_month": "2026-13"}, "YYYY-MM", id="bad-month"),
        pytest.param({"last_issued": {"holiday": t(T1)}}, "holiday", id="unknown-issued-key"),
        pytest.param(
            {"stopped_since": {ARR: datetime(2026, 3, 1)}, "inactive_since": t(T1)},  # noqa: DTZ001
            "timezone",
            id="naive-stop-start",
        ),
    ],
)
def test_state_invariants(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BroadbandState(**kwargs)  # type: ignore[arg-type]


def test_state_is_immutable_and_compares_by_value() -> None:
    built = final([stop(ARR, T1), stop(REQ, T2)])
    by_hand = BroadbandState(
        stopped_since={REQ: t(T2), ARR: t(T1)},
        last_issued={"requested": t(T2), "arrears": t(T1)},
        inactive_since=t(T1),
    )
    assert built == by_hand
    assert hash(built) == hash(by_hand)
    with pytest.raises(TypeError):
        built.stopped_since[VIOL] = t(T3)  # type: ignore[index]


def test_refusal_and_outcome_validate() -> None:
    with pytest.raises(ValueError, match="rule"):
        Refusal(code="torn_down", message="torn down", rule="rule 9")
    with pytest.raises(ValueError, match="applied"):
        Outcome(state=BroadbandState(), applied=True, reason="stale")
    with pytest.raises(ValueError, match="reason"):
        Outcome(state=BroadbandState(), applied=False)
