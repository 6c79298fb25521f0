"""Device commands: the queued → sent → succeeded | failed | timed_out machine (issue 5).

Pure table tests of :func:`devices.commands.tick` and :func:`devices.commands.answer`,
then one run through a real Mosquitto with a device that answers ``rpc/req``. Times are
seconds after ``T``; a 30-second deadline with 3 attempts gives each attempt 10 seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import aiomqtt
import pytest

from devices.clock import ManualClock
from devices.commands import CommandState, CommandStatus, answer, new_command, tick
from gateway.mqtt.session import broker_address
from simulators.device import SimulatedDevice
from tests.conftest import StartGateway, eventually, platform_headers
from tests.services import Broker
from tests.test_presence import running, setup_account

T = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
Q, S, OK, FAIL, TIMEOUT = (
    CommandStatus.QUEUED,
    CommandStatus.SENT,
    CommandStatus.SUCCEEDED,
    CommandStatus.FAILED,
    CommandStatus.TIMED_OUT,
)


def at(seconds: float) -> datetime:
    return T + timedelta(seconds=seconds)


def state(
    status: CommandStatus,
    attempts: int,
    check: float | None,
    *,
    max_attempts: int = 3,
    attempt: float = 10,
    deadline: float = 30,
    error: dict[str, Any] | None = None,
) -> CommandState:
    return CommandState(
        status=status,
        attempts=attempts,
        max_attempts=max_attempts,
        attempt_timeout=timedelta(seconds=attempt),
        deadline=at(deadline),
        check_at=None if check is None else at(check),
        error=error,
    )


def test_a_new_command_is_queued_with_an_equal_share_of_the_deadline_per_attempt() -> None:
    assert new_command(now=T, deadline_seconds=30, max_attempts=3) == state(Q, 0, 0)


TICKS = [
    # id, before, tick time, device reachable, after, publish an rpc/req
    pytest.param(state(Q, 0, 0), 0, True, state(S, 1, 10), True, id="queued-online-is-sent"),
    pytest.param(state(Q, 0, 0), 0, False, state(Q, 0, 30), False, id="queued-offline-waits"),
    pytest.param(
        state(Q, 0, 30), 12, True, state(S, 1, 22), True, id="waiting-device-returns-sent"
    ),
    pytest.param(state(S, 1, 10), 9.999, True, state(S, 1, 10), False, id="attempt-still-open"),
    pytest.param(state(S, 1, 10), 10, True, state(S, 2, 20), True, id="no-answer-retried"),
    pytest.param(
        state(S, 2, 20), 25, True, state(S, 3, 30), True, id="last-attempt-capped-at-deadline"
    ),
    pytest.param(
        state(S, 1, 10), 10, False, state(Q, 1, 30), False, id="device-gone-back-to-queued"
    ),
    pytest.param(
        state(Q, 1, 30), 15, True, state(S, 2, 25), True, id="requeued-sent-again-same-count"
    ),
    pytest.param(
        state(S, 3, 30),
        30,
        True,
        state(
            TIMEOUT,
            3,
            None,
            error={"code": "timed_out", "message": "no answer by the deadline after 3 attempt(s)"},
        ),
        False,
        id="deadline-after-3-attempts",
    ),
    pytest.param(
        state(S, 3, 25),
        25,
        True,
        state(
            TIMEOUT,
            3,
            None,
            error={"code": "timed_out", "message": "no answer after 3 attempt(s)"},
        ),
        False,
        id="attempts-exhausted-before-deadline",
    ),
    pytest.param(
        state(Q, 0, 30),
        31,
        True,
        state(
            TIMEOUT,
            0,
            None,
            error={
                "code": "timed_out",
                "message": "the device was not reachable before the deadline",
            },
        ),
        False,
        id="never-reachable-times-out-unsent",
    ),
    pytest.param(state(OK, 1, None), 99, True, state(OK, 1, None), False, id="succeeded-final"),
    pytest.param(
        state(FAIL, 1, None, error={"message": "busy"}),
        99,
        True,
        state(FAIL, 1, None, error={"message": "busy"}),
        False,
        id="failed-final",
    ),
]


@pytest.mark.parametrize(("before", "now", "reachable", "after", "send"), TICKS)
def test_tick(
    before: CommandState, now: float, reachable: bool, after: CommandState, send: bool
) -> None:
    step = tick(before, now=at(now), reachable=reachable)
    assert step.state == after
    assert step.send is send


ANSWERS = [
    # id, before, ok, result, error, after (status, result, error)
    pytest.param(state(S, 1, 10), True, {"jpeg": "k"}, None, (OK, {"jpeg": "k"}, None), id="ok"),
    pytest.param(
        state(S, 2, 20),
        False,
        None,
        {"message": "busy"},
        (FAIL, None, {"message": "busy"}),
        id="device-error-is-final-not-retried",
    ),
    pytest.param(
        state(S, 1, 10),
        False,
        None,
        None,
        (FAIL, None, {"message": "the device reported a failure"}),
        id="error-without-detail",
    ),
    pytest.param(
        state(Q, 1, 30), True, None, None, (OK, None, None), id="answer-to-a-requeued-command"
    ),
    pytest.param(
        state(TIMEOUT, 3, None, error={"code": "timed_out", "message": "late"}),
        True,
        {"x": 1},
        None,
        (TIMEOUT, None, {"code": "timed_out", "message": "late"}),
        id="late-answer-ignored",
    ),
    pytest.param(
        state(OK, 1, None), False, None, {"message": "again"}, (OK, None, None), id="repeat-ignored"
    ),
]


@pytest.mark.parametrize(("before", "ok", "result", "error", "after"), ANSWERS)
def test_answer(
    before: CommandState,
    ok: bool,
    result: Any,
    error: dict[str, Any] | None,
    after: tuple[CommandStatus, Any, dict[str, Any] | None],
) -> None:
    got = answer(before, ok=ok, result=result, error=error)
    assert (got.status, got.result, got.error) == after
    assert got.attempts == before.attempts
    assert (got.check_at is None) is (got.status != Q and got.status != S)


def test_a_silent_device_gets_exactly_max_attempts_then_times_out() -> None:
    current = new_command(now=T, deadline_seconds=30, max_attempts=3)
    sends = 0
    for second in range(31):
        step = tick(current, now=at(second), reachable=True)
        sends += step.send
        current = step.state
    assert sends == 3
    assert current.status == TIMEOUT
    assert current.attempts == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"deadline_seconds": 0}, "deadline_seconds", id="zero-deadline"),
        pytest.param({"deadline_seconds": 86_401}, "deadline_seconds", id="deadline-over-a-day"),
        pytest.param({"deadline_seconds": 30, "max_attempts": 0}, "max_attempts", id="no-attempt"),
        pytest.param({"deadline_seconds": 30, "max_attempts": 11}, "max_attempts", id="11"),
    ],
)
def test_new_command_validates(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        new_command(now=T, **kwargs)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda: state(S, 0, 10), "at least one attempt", id="sent-unsent"),
        pytest.param(lambda: state(OK, 1, 10), "check_at", id="finished-with-check"),
        pytest.param(lambda: state(Q, 0, None), "check_at", id="open-without-check"),
        pytest.param(lambda: state(FAIL, 1, None, error={"code": "x"}), "message", id="no-msg"),
        pytest.param(lambda: state(S, 4, 10), "attempts", id="too-many-attempts"),
        pytest.param(lambda: state(Q, 0, 0, attempt=0), "attempt_timeout", id="zero-attempt"),
    ],
)
def test_command_state_invariants(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        tick(state(Q, 0, 0), now=datetime(2026, 11, 20), reachable=True)  # noqa: DTZ001


# --- through Mosquitto ---------------------------------------------------------------------


@asynccontextmanager
async def responder(broker: Broker, device_id: str, *, drop_first: int) -> AsyncIterator[list[str]]:
    """A device's RPC side: answers ``rpc/req`` ok, after ignoring the first ``drop_first``.

    Yields the ids of the requests received, in order (repeats included).
    """
    host, port, _, _ = broker_address(broker.url)
    seen: list[str] = []
    async with aiomqtt.Client(host, port, identifier=f"rpc-{device_id}") as client:
        await client.subscribe(f"kj/v1/dev/{device_id}/rpc/req", qos=1)

        async def serve() -> None:
            async for message in client.messages:
                request = json.loads(bytes(message.payload))
                seen.append(request["id"])
                if len(seen) <= drop_first:
                    continue
                reply = {"id": request["id"], "ok": True, "result": {"echo": request["params"]}}
                await client.publish(f"kj/v1/dev/{device_id}/rpc/res", json.dumps(reply), qos=1)

        task = asyncio.create_task(serve(), name=f"test[rpc-{device_id}]")
        try:
            yield seen
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_commands_are_sent_retried_answered_and_timed_out(
    broker: Broker, start_gateway: StartGateway, clock: ManualClock
) -> None:
    h = platform_headers()
    async with (
        start_gateway(clock=clock, mqtt_url=broker.url) as gw,
        aiohttp.ClientSession() as http,
    ):
        await setup_account(gw, http, "cam-rpc", "cam-gone")

        async def commands(device_id: str) -> list[dict[str, Any]]:
            r = await http.get(f"{gw.url}/platform/v1/devices/{device_id}/commands", headers=h)
            assert r.status == 200
            listed: list[dict[str, Any]] = (await r.json())["commands"]
            return listed

        async def status_is(device_id: str, wanted: str) -> bool:
            return bool((await commands(device_id))[0]["status"] == wanted)

        async def advance(seconds: float) -> None:
            r = await http.post(
                f"{gw.url}/ops/v1/clock", json={"advance_seconds": seconds}, headers=h
            )
            assert r.status == 200

        device = SimulatedDevice(
            device_id="cam-rpc", kind="camera", mqtt_url=broker.url, telemetry_interval=None
        )
        async with running(device), responder(broker, "cam-rpc", drop_first=1) as seen:

            async def online() -> bool:
                r = await http.get(f"{gw.url}/platform/v1/broadband/acc-1", headers=h)
                views = {d["device_id"]: d["online"] for d in (await r.json())["devices"]}
                return bool(views["cam-rpc"])

            await eventually(online)
            body: dict[str, Any] = {
                "order_id": "c-1",
                "method": "snapshot",
                "params": {"w": 640},
                "deadline_seconds": 30,
            }
            url = f"{gw.url}/platform/v1/devices/cam-rpc/commands"
            r = await http.post(url, json=body, headers=h)
            assert r.status == 201
            created = await r.json()
            assert (created["status"], created["attempts"]) == ("queued", 0)
            # Sent at once; the responder ignores the first request: no answer yet.
            await eventually(lambda: status_is("cam-rpc", "sent"))
            assert seen == [created["command_id"]]
            await advance(10)  # the attempt's 10 s are over: sent again, same id, answered
            await eventually(lambda: status_is("cam-rpc", "succeeded"))
            (done,) = await commands("cam-rpc")
            assert seen == [created["command_id"]] * 2
            assert done["attempts"] == 2
            assert done["result"] == {"echo": {"w": 640}}
            # The same order_id again: the first answer, no second command.
            r = await http.post(url, json=body, headers=h)
            assert (r.status, await r.json()) == (201, created)
            assert len(await commands("cam-rpc")) == 1

        # A device that never connects: queued until the deadline, then timed out, unsent.
        r = await http.post(
            f"{gw.url}/platform/v1/devices/cam-gone/commands",
            json={"method": "reboot", "deadline_seconds": 20},
            headers=h,
        )
        assert r.status == 201
        await advance(19)
        assert (await commands("cam-gone"))[0]["status"] == "queued"
        await advance(1)
        (gone,) = await commands("cam-gone")
        assert (gone["status"], gone["attempts"]) == ("timed_out", 0)
        assert gone["error"]["code"] == "timed_out"
        r = await http.get(f"{gw.url}/platform/v1/devices/cam-nope/commands", headers=h)
        assert r.status == 404
