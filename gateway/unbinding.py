"""Unbinding a device from its account, so that it can be bound to another (issue 17).

A camera sold, replaced or moved to another family leaves its account; the new owner must
never see the old household's video. :func:`unbind` does it in one commit:

- **R9.** Refused (``subscription_active``, 409) while a cloud-replay product is active on
  the camera: unsubscribe first, as for a teardown.
- **The device leaves.** Its row goes: every app view of the old account answers 404 for
  it (``devices.accounts.device_of_account``); its unfinished commands fail
  (``device_unbound``); its MQTT credentials are revoked (the broker is told after the
  commit, as :mod:`gateway.credentials` does); its desired document becomes that of an
  unbound device (recording off, nothing suspended), a new version published to it. A
  router's SSH access is forgotten and its managed-networking state (desired document,
  commands) released.
- **The video stays, unseen.** Segments keep the old account and subscription ids, and the
  retention sweeper removes them at their expiry (R5) as for any other. Every app view
  filters by the viewing account and by the device's *current* subscription (R5, R6), so a
  later account sees none of it; uploads are judged against the subscriptions of the
  device's *current* account only (:func:`replay.subscriptions.upload_subscriptions`).
- **Binding again starts clean**: a new device row, no credentials until issued, no
  subscription until ordered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from devices import accounts, credentials, router_store
from devices import commands as device_commands
from devices import desired as device_desired
from devices.models import DeviceKind
from gateway.desired import PUBLISH_JOB
from gateway.services import Services
from replay.desired import desired_document
from replay.subscriptions import SubscriptionActive, active_subscription

log = logging.getLogger(__name__)

__all__ = ["Unbound", "unbind"]


@dataclass(frozen=True, slots=True)
class Unbound:
    """What unbinding released."""

    device_id: str
    account_id: str
    kind: str
    credentials_revoked: bool
    router_access_released: bool
    commands_abandoned: int


async def unbind(services: Services, account_id: str, device_id: str) -> Unbound:
    """Unbind ``device_id`` from ``account_id`` (404 if it is not that account's)."""
    now = services.clock.now()
    async with services.db.writing() as session:
        device = await accounts.device_of_account(session, account_id, device_id)
        if device.kind == DeviceKind.CAMERA:
            current = await active_subscription(session, device_id)
            if current is not None:
                raise SubscriptionActive(device_id, current.subscription_id)
        credential = await credentials.current_credential(session, device_id)
        if credential is not None:
            await credentials.revoke(session, device_id=device_id, now=now)
        released = await router_store.release_access(session, device_id)
        abandoned = await device_commands.abandon_pending(session, device_id, now)
        unbound = desired_document(kind=device.kind, broadband_state="active", replay_family=None)
        await device_desired.release(session, device_id, unbound, now=now)
        kind = device.kind
        await accounts.unbind_device(session, device)
        await session.commit()
    if credential is not None:
        services.credential_cache.forget(device_id)
        await services.broker_admin.revoke(device_id)
        services.need_rotation.discard(device_id)
        services.metrics.credentials_need_rotation.set(len(services.need_rotation))
    services.jobs.trigger(PUBLISH_JOB)
    log.info("device %s unbound from account %s", device_id, account_id)
    return Unbound(
        device_id=device_id,
        account_id=account_id,
        kind=kind,
        credentials_revoked=credential is not None,
        router_access_released=released,
        commands_abandoned=abandoned,
    )
