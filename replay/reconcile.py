"""Reconciling the object store with the index (R5): what may be deleted, and what never.

Acknowledged video is never deleted by reconcile. The rule, in the order it is applied to
each recording object listed in the store (tested by table in ``tests/test_playback.py``):

1. **Indexed** (a segment row owns its key): kept. An indexed segment is acknowledged data;
   only the sweeper deletes it, when its retention has run out.
2. **Granted** (an upload grant owns its key): kept. Either the upload is in flight, or it
   landed and its ``segment`` notice is still to be indexed: queued, retried while the
   database or the store is down, or held by the broker for the next session.
3. **Guarded**: when a device's orphans would be more than ``max_fraction`` (half) of that
   device's listed objects, none of them is deleted unless ``allow_mass_delete`` is set (a
   lost index must not become lost video).
4. Otherwise the object is an orphan and is deleted.

Rule 2 holds only as long as grants are kept, so a grant's fate is a rule too
(:func:`grant_fate`): a grant is kept while its URL may still be used, and, once its object
has landed, until the segment would have expired anyway, so a late notice is indexed and
its object never becomes an orphan. Only a grant whose upload never landed is dropped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Set
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from devices.clock import aware_utc
from replay.object_keys import parse_object_key

#: How long after its URL expired a grant waits for an upload that may still be running.
UPLOAD_GRACE = timedelta(hours=1)


class GrantFate(StrEnum):
    """What becomes of an upload grant that has not been indexed (yet)."""

    #: Its URL may still be in use, or an upload started before expiry may still run.
    IN_FLIGHT = "in_flight"
    #: Its object landed: the notice may still come (a camera offline, a gateway retrying).
    LANDED = "landed"
    #: Its upload never landed and its URL is long dead: it is dropped.
    DROP = "drop"


def grant_fate(
    *,
    granted_at: datetime,
    url_ttl: timedelta,
    landed: bool,
    expires_at: datetime,
    now: datetime,
) -> GrantFate:
    """The fate of an unindexed grant at ``now``: kept while its upload may be in flight
    (``url_ttl`` plus :data:`UPLOAD_GRACE`), kept while its landed object's segment would
    still be within retention (``expires_at``), dropped otherwise."""
    now = aware_utc(now, "now")
    if now < aware_utc(granted_at, "granted_at") + url_ttl + UPLOAD_GRACE:
        return GrantFate.IN_FLIGHT
    if landed and now < aware_utc(expires_at, "expires_at"):
        return GrantFate.LANDED
    return GrantFate.DROP


@dataclass(frozen=True, slots=True, kw_only=True)
class RefusedDevice:
    """A device whose orphans the guard kept: ``orphans`` of its ``objects`` listed objects."""

    device_id: str
    orphans: tuple[str, ...]
    objects: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcilePlan:
    """What one reconcile run should do and report; every list is sorted.

    ``delete``: orphan keys to delete (``delete_bytes`` in all). ``missing``: indexed keys
    with no object. ``refused_devices``: devices whose orphans the guard kept. ``foreign``:
    listed keys that do not follow the recording layout, never deleted.
    """

    delete: tuple[str, ...]
    delete_bytes: int
    missing: tuple[str, ...]
    refused_devices: tuple[RefusedDevice, ...]
    foreign: tuple[str, ...]


def _guard(
    device_id: str, found: list[tuple[str, int]], total: int, max_fraction: float
) -> RefusedDevice | None:
    """The guard's refusal when a device's orphans are more than ``max_fraction`` of its
    ``total`` listed objects: a lost index must not become lost video."""
    if len(found) <= max_fraction * total:
        return None
    return RefusedDevice(
        device_id=device_id,
        orphans=tuple(sorted(key for key, _ in found)),
        objects=total,
        reason=(
            f"{len(found)} of the device's {total} objects have no index row, "
            f"more than {max_fraction:.0%}: pass allow_mass_delete to delete them"
        ),
    )


def reconcile_plan(
    objects: Iterable[tuple[str, int, datetime]],
    indexed_keys: Set[str],
    *,
    now: datetime,
    grace_s: float,
    allow_mass_delete: bool = False,
    max_fraction: float = 0.5,
) -> ReconcilePlan:
    """Plan a reconcile of ``(key, size, modified)`` listings against the index's keys.

    An orphan is a listed recording object with no index row, last modified more than
    ``grace_s`` before ``now`` (an upload in flight is indexed only after it lands). Per
    device, the orphans are deleted when they are at most ``max_fraction`` of the device's
    listed objects (exactly half passes), or when ``allow_mass_delete`` is set.

    Read ``indexed_keys`` *before* listing the store: an object is indexed only after it
    landed, so it is then either listed or young enough for the grace period. The listing
    must cover every recording prefix the index uses, or its rows are reported missing.
    """
    now = aware_utc(now, "now")
    if not grace_s >= 0:
        raise ValueError(f"grace_s must not be negative, not {grace_s!r}")
    if not 0 < max_fraction <= 1:
        raise ValueError(f"max_fraction must be more than 0 and at most 1, not {max_fraction!r}")
    settled = now - timedelta(seconds=grace_s)
    listed: set[str] = set()
    foreign: list[str] = []
    per_device: dict[str, int] = defaultdict(int)
    orphans: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for key, size, modified in objects:
        listed.add(key)
        parsed = parse_object_key(key)
        if parsed is None:
            foreign.append(key)
            continue
        per_device[parsed.device_id] += 1
        if key not in indexed_keys and aware_utc(modified, "modified") < settled:
            orphans[parsed.device_id].append((key, size))
    delete: list[str] = []
    delete_bytes = 0
    refused: list[RefusedDevice] = []
    for device_id in sorted(orphans):
        found = orphans[device_id]
        guard = _guard(device_id, found, per_device[device_id], max_fraction)
        if guard is not None and not allow_mass_delete:
            refused.append(guard)
            continue
        delete.extend(key for key, _ in found)
        delete_bytes += sum(size for _, size in found)
    return ReconcilePlan(
        delete=tuple(sorted(delete)),
        delete_bytes=delete_bytes,
        missing=tuple(sorted(set(indexed_keys) - listed)),
        refused_devices=tuple(refused),
        foreign=tuple(sorted(foreign)),
    )
