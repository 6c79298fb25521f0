"""What the gateway asks of the broker about device identities (issue 13).

A deployment's broker integration implements :class:`BrokerAdmin`: with Mosquitto's
dynamic security the gateway creates and removes the broker's clients itself; a broker
that calls out (HTTP hooks) asks the gateway instead, so there is nothing to push and
:class:`NoBrokerAdmin` serves.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class BrokerAdmin(Protocol):
    async def issue(self, device_id: str, username: str, password: str) -> None:
        """The device may connect as ``username``/``password`` (client id = device id);
        a previous password stops working and a live connection with it is dropped."""

    async def revoke(self, device_id: str) -> None:
        """The device can no longer connect; a live connection is dropped."""

    async def sync(self, credentialed: Iterable[str]) -> set[str]:
        """Make the broker's device clients those of ``credentialed`` (remove the others);
        return the credentialed devices the broker does not know (they need rotation)."""


class NoBrokerAdmin:
    """A broker that asks the gateway (HTTP hooks) or one without authentication."""

    async def issue(self, device_id: str, username: str, password: str) -> None:
        return None

    async def revoke(self, device_id: str) -> None:
        return None

    async def sync(self, credentialed: Iterable[str]) -> set[str]:
        return set()
