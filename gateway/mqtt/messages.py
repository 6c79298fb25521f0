"""The MQTT contract's device topics, parsed once at the edge into frozen values.

Device → service topics live under ``kj/v1/dev/{device_id}/``; a message whose topic or
payload does not fit the contract raises :class:`Malformed` with a short ``reason`` that
the caller counts and logs (it never stops the loop).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

PREFIX = "kj/v1/dev/"

#: Device → service suffixes (the gateway subscribes to each of these).
INBOUND = ("state", "telemetry", "event", "upload/req", "segment", "reported", "rpc/res")


class Malformed(ValueError):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DeviceMessage:
    device_id: str
    kind: str
    payload: dict[str, Any]


def subscriptions(shared_group: str = "") -> list[str]:
    prefix = f"$share/{shared_group}/" if shared_group else ""
    return [f"{prefix}{PREFIX}+/{suffix}" for suffix in INBOUND]


def topic(device_id: str, suffix: str) -> str:
    return f"{PREFIX}{device_id}/{suffix}"


def parse(topic_name: str, payload: bytes) -> DeviceMessage:
    if not topic_name.startswith(PREFIX):
        raise Malformed("unknown", "topic outside kj/v1/dev/")
    device_id, _, kind = topic_name[len(PREFIX) :].partition("/")
    if not device_id or kind not in INBOUND:
        raise Malformed("unknown", f"unexpected topic {topic_name!r}")
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Malformed(kind, "not JSON") from exc
    if not isinstance(data, dict):
        raise Malformed(kind, "not a JSON object")
    return DeviceMessage(device_id=device_id, kind=kind, payload=data)


@dataclass(frozen=True, slots=True)
class StatePayload:
    online: bool
    device_kind: str | None
    firmware: str | None

    @classmethod
    def of(cls, msg: DeviceMessage) -> StatePayload:
        online = msg.payload.get("online")
        if not isinstance(online, bool):
            raise Malformed(msg.kind, "'online' must be true or false")
        kind = msg.payload.get("kind")
        fw = msg.payload.get("fw")
        if kind is not None and kind not in ("camera", "router"):
            raise Malformed(msg.kind, "'kind' must be camera or router")
        if fw is not None and not isinstance(fw, str):
            raise Malformed(msg.kind, "'fw' must be a string")
        return cls(online=online, device_kind=kind, firmware=fw)
