"""A device's MQTT identity, as the platform hands it out.

``POST /platform/v1/devices/{device_id}/credentials`` answers ``{"device_id", "username",
"password", "issued_at"}`` once (the service keeps only a hash of the password); a device
keeps that answer, e.g. in the file that ``kanjia device --credentials-file`` reads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class CredentialsError(ValueError):
    """A credentials answer or file that a device cannot sign in with."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    device_id: str
    username: str
    password: str = field(repr=False)
    issued_at: str | None = None

    @classmethod
    def from_answer(cls, body: Mapping[str, Any]) -> Credentials:
        """The route's answer, checked: text device id, username and password."""
        values = {name: body.get(name) for name in ("device_id", "username", "password")}
        if not all(isinstance(value, str) and value for value in values.values()):
            raise CredentialsError("credentials need device_id, username and password as text")
        issued_at = body.get("issued_at")
        return cls(
            device_id=str(values["device_id"]),
            username=str(values["username"]),
            password=str(values["password"]),
            issued_at=issued_at if isinstance(issued_at, str) else None,
        )

    @classmethod
    def read(cls, path: Path) -> Credentials:
        """The answer kept in a JSON file."""
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CredentialsError(f"cannot read credentials file {path}: {exc}") from exc
        if not isinstance(body, dict):
            raise CredentialsError(f"credentials file {path} does not hold a JSON object")
        return cls.from_answer(body)
