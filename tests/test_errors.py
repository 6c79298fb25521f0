"""Domain errors carry data, never a status; the gateway's one table answers them."""

from __future__ import annotations

import importlib
import pkgutil
from typing import get_args

import pytest

import devices
import replay
from devices import home_network as hn
from devices.accounts import DeviceBoundElsewhere, KindMismatch
from devices.broadband import Refusal as BroadbandRefusal
from devices.broadband_store import CorruptState
from devices.clock import ClockNotAdjustable
from devices.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    Unauthenticated,
)
from devices.orders import OrderIdReused
from devices.router import ProvisioningError
from devices.router_store import BroadbandInactive as RouterBroadbandInactive
from devices.router_store import NotProvisioned
from devices.uci import InvalidSetting, RouterOutputError
from gateway.errors import STATUSES, http_status
from replay.clips import NothingRecorded
from replay.ledger import MonthNotClosed
from replay.membership import (
    MembershipHeld,
    MembershipNotActive,
    NotOwner,
    ReadOnly,
    UnknownTier,
)
from replay.plans import PlansError, PlansFileError, UnknownPlan
from replay.playback import PlaybackCode, Refusal
from replay.playback_sessions import SessionRefused
from replay.recording import InvalidUpload
from replay.subscriptions import (
    AlreadySubscribed,
    InvalidTime,
    NotAccountOwner,
    NotActive,
    SubscriptionActive,
    UnknownPlanRequested,
)
from replay.subscriptions import BroadbandInactive as ReplayBroadbandInactive

#: Every domain error and the status it is answered with; 500: a fault, not a refusal.
EXPECTED: dict[type[DomainError], int] = {
    Invalid: 400,
    Unauthenticated: 401,
    SessionRefused: 401,  # issue 15: session_invalid, session_expired
    Forbidden: 403,
    NotFound: 404,
    Gone: 404,
    Conflict: 409,
    DeviceBoundElsewhere: 409,
    KindMismatch: 409,
    OrderIdReused: 409,
    RouterBroadbandInactive: 409,  # R12
    NotProvisioned: 409,
    NotAccountOwner: 403,  # R7
    AlreadySubscribed: 409,  # R2
    ReplayBroadbandInactive: 409,  # R8
    NotActive: 409,  # R5
    SubscriptionActive: 409,  # R9: unbinding a subscribed camera
    MonthNotClosed: 409,  # R7: the ledger has no such month yet
    UnknownPlanRequested: 400,  # R1
    InvalidTime: 400,
    UnknownTier: 400,  # R18
    NotOwner: 403,  # R7, a membership's orderer
    MembershipHeld: 409,  # R18: one per account
    MembershipNotActive: 409,  # R18
    ReadOnly: 409,  # R18: three months after an overflow
    NothingRecorded: 404,  # an MP4 export of a range without viewable video (issue 15)
    InvalidUpload: 400,
    InvalidSetting: 400,
    # issue 18: home-network packages (R16, R17)
    hn.UnknownProduct: 400,
    hn.TooManyDevices: 400,
    hn.InvalidTime: 400,
    hn.NotAccountOwner: 403,  # R7
    hn.TuningNotCovered: 403,  # R16
    hn.TuningsUsedUp: 403,  # R17
    hn.BroadbandInactive: 409,  # R12
    hn.AlreadyCovered: 409,  # R16
    hn.PackageNotActive: 409,
    hn.VisitDone: 409,
    hn.AlreadyVisited: 409,
    DomainError: 500,
    ClockNotAdjustable: 500,
    RouterOutputError: 500,
    ProvisioningError: 500,
    CorruptState: 500,
    PlansError: 500,
    UnknownPlan: 500,
    PlansFileError: 500,
}


def _domain_errors() -> set[type[DomainError]]:
    """Every subclass of DomainError the domain packages define (all modules imported)."""
    for package in (devices, replay):
        for module in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
            importlib.import_module(module.name)
    found: set[type[DomainError]] = set()
    todo: list[type[DomainError]] = [DomainError]
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith(("devices.", "replay.")):
            found.add(cls)
        todo.extend(cls.__subclasses__())
    return found


def _instance(cls: type[DomainError]) -> DomainError:
    """An instance for ``isinstance`` only: the constructors take each case's data."""
    return cls.__new__(cls)


def test_every_domain_error_is_in_the_table() -> None:
    assert _domain_errors() == set(EXPECTED)


@pytest.mark.parametrize(
    ("cls", "status"),
    [pytest.param(cls, status, id=cls.__qualname__) for cls, status in EXPECTED.items()],
)
def test_each_domain_error_maps_to_its_status(cls: type[DomainError], status: int) -> None:
    assert cls.code
    assert http_status(_instance(cls)) == status


def test_domain_errors_name_no_status() -> None:
    for cls in _domain_errors():
        assert not hasattr(cls, "status"), cls


#: Playback refusals are values; each code's kind decides its status.
PLAYBACK: dict[str, int] = {
    "unsubscribed": 403,  # R5
    "not_entitled": 403,  # R1
    "broadband_inactive": 403,  # R8
    "previous_subscription": 403,  # R6
    "expired": 404,  # R5: gone
}


def test_every_playback_code_is_in_the_table() -> None:
    assert set(get_args(PlaybackCode)) == set(PLAYBACK)


@pytest.mark.parametrize(("code", "status"), PLAYBACK.items())
def test_playback_refusals_map_by_their_kind(code: PlaybackCode, status: int) -> None:
    error = Refusal(code=code, rule="R5", message="refused").error()
    assert (http_status(error), error.code, error.rule, error.message) == (
        status,
        code,
        "R5",
        "refused",
    )


def test_kinds_are_inherited_and_unknown_errors_are_faults() -> None:
    class NewConflict(Conflict):
        code = "new_conflict"

    class NewFault(DomainError):
        code = "new_fault"

    assert http_status(NewConflict("taken")) == 409
    assert http_status(NewFault("broken")) == 500
    assert http_status(DomainError("no kind", code="whatever")) == 500


def test_the_table_lists_only_the_kinds() -> None:
    assert set(STATUSES) == {Invalid, Unauthenticated, Forbidden, NotFound, Gone, Conflict}


def test_errors_carry_their_data() -> None:
    missing = NotFound("camera", "cam-1", on="account acc-1")
    assert (missing.code, missing.message, missing.what, missing.ident) == (
        "not_found",
        "camera cam-1 not found on account acc-1",
        "camera",
        "cam-1",
    )
    held = AlreadySubscribed("cam-1", held="event-7d", asked="event-7d")
    assert (held.code, held.rule, held.message) == (
        "already_subscribed",
        "R2",
        "camera cam-1 already holds the same product; unsubscribe first",
    )
    other = AlreadySubscribed("cam-1", held="event-7d", asked="continuous-1d")
    assert other.message == "camera cam-1 already holds event-7d; unsubscribe first"
    assert DomainError("m", code="c", rule="R9").rule == "R9"
    assert Conflict("m").rule is None


@pytest.mark.parametrize(
    ("code", "rule"),
    [("torn_down", "R9"), ("active_subscriptions", "R9"), ("emergency_not_allowed", "R11")],
)
def test_broadband_refusals_are_conflicts(code: str, rule: str) -> None:
    error = BroadbandRefusal(code=code, message="refused", rule=rule).error()
    assert (http_status(error), error.code, error.rule) == (409, code, rule)
