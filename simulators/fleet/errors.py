"""What goes wrong in setting up a fleet."""

from __future__ import annotations


class FleetError(Exception):
    """The fleet could not be set up (the message says what the service answered)."""


class ProvisioningError(FleetError):
    def __init__(self, what: str, status: int, body: str) -> None:
        super().__init__(f"{what}: HTTP {status}: {body[:300]}")
        self.what = what
        self.status = status
