"""What each device's desired document holds, composed from the rules (R1, R8, R12).

:mod:`devices.desired` versions and stores the documents; this module decides their
content with the table-tested rule functions, and nothing else:

- a camera's ``recording.mode``: :func:`replay.recording.desired_recording_mode`, the
  family of its active product (R1), ``off`` without one or while replay is suspended;
- a camera's ``service.suspended``: :func:`devices.broadband.replay_suspended` (R8);
- a router's ``service.suspended``: :func:`devices.broadband.managed_networking_suspended`
  (R12).

It lives in ``replay`` because it reads both domains: replay builds on devices, never the
reverse.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from devices import desired
from devices.broadband import (
    AccountState,
    account_state,
    managed_networking_suspended,
    replay_suspended,
)
from devices.models import Account, DesiredState, Device, DeviceKind
from replay.plans import Family
from replay.recording import desired_recording_mode
from replay.subscriptions import active_families

__all__ = ["composer", "desired_document", "refresh"]


def desired_document(
    *, kind: str, broadband_state: AccountState, replay_family: Family | None
) -> dict[str, Any]:
    """The desired document (without its version) of one device of ``kind``."""
    if kind == DeviceKind.CAMERA:
        suspended = replay_suspended(broadband_state)
        return {
            "service": {"suspended": suspended},
            "recording": {"mode": desired_recording_mode(replay_family, not suspended)},
        }
    return {"service": {"suspended": managed_networking_suspended(broadband_state)}}


async def refresh(
    session: AsyncSession, device_ids: Iterable[str], *, now: datetime
) -> list[DesiredState]:
    """Recompute the devices' documents in ``session``; those whose version moved.

    The family of each camera's active product is read once for all the devices.
    """
    ids = list(device_ids)
    families = await active_families(session, ids)
    return await desired.refresh(session, ids, now=now, compose=composer(families))


def composer(families: Mapping[str, str]) -> desired.Compose:
    """The compose function of :func:`devices.desired.refresh`, given the family of each
    camera's active product (``active_families``: devices without one are absent)."""

    def compose(device: Device, account: Account) -> dict[str, Any]:
        family = families.get(device.device_id)
        return desired_document(
            kind=device.kind,
            broadband_state=account_state(account.broadband_state),
            replay_family=None if family is None else Family(family),
        )

    return compose
