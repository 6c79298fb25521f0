"""Device credentials: issue, rotate, revoke, and the broker's questions (issue 13).

The database is the truth: a password is issued or revoked in one commit, and only then
is the broker integration told (:attr:`gateway.services.Services.broker_admin`: with
Mosquitto's dynamic security it creates or removes the broker's client; with HTTP hooks
it has nothing to do, since the broker asks :func:`authenticate` and :func:`authorize`).
The hooks answer from :class:`gateway.credential_cache.CredentialCache` (what it read of a
device's stored hash, kept a few seconds; this process forgets a device's entry once its
credentials change) and a fast keyed hash, so they stay cheap at the rate a broker calls
them. Passwords never reach a log.
"""

from __future__ import annotations

import logging

from devices import credentials
from devices.credentials import Issued
from devices.errors import Conflict
from gateway.config import Settings, derived_key
from gateway.services import Services

log = logging.getLogger(__name__)

__all__ = [
    "ReservedClientId",
    "authenticate",
    "authorize",
    "credential_key",
    "issue_credentials",
    "resync_broker",
    "revoke_credentials",
]


class ReservedClientId(Conflict):
    """The device id is this gateway's own MQTT client id: no device may take it."""

    code = "reserved_client_id"

    def __init__(self, device_id: str) -> None:
        super().__init__(f"{device_id} is the gateway's MQTT client id; no device may use it")
        self.device_id = device_id


def credential_key(settings: Settings) -> bytes:
    """The key of stored password hashes: ``KANJIA_CREDENTIAL_KEY``, or one derived from
    the platform token (rotating that token then invalidates every device password)."""
    return derived_key(settings, settings.credential_key, b"kanjia-device-credentials")


async def issue_credentials(services: Services, device_id: str) -> Issued:
    """New credentials for a bound device (again: rotation); the broker is told after the
    commit, so a device is never admitted with a password the database does not hold."""
    if device_id == services.settings.mqtt_client_id:
        raise ReservedClientId(device_id)
    async with services.db.writing() as session:
        issued = await credentials.issue(
            session,
            device_id=device_id,
            key=credential_key(services.settings),
            now=services.clock.now(),
        )
        await session.commit()
    services.credential_cache.forget(device_id)
    await services.broker_admin.issue(issued.device_id, issued.username, issued.password)
    _rotated(services, device_id)
    log.info("credentials issued to device %s", device_id)
    return issued


async def revoke_credentials(services: Services, device_id: str) -> None:
    """Revoke the device's credentials (none current: not found), then tell the broker."""
    async with services.db.writing() as session:
        await credentials.revoke(session, device_id=device_id, now=services.clock.now())
        await session.commit()
    services.credential_cache.forget(device_id)
    await services.broker_admin.revoke(device_id)
    _rotated(services, device_id)
    log.info("credentials of device %s revoked", device_id)


def _rotated(services: Services, device_id: str) -> None:
    """The device's credentials were issued again or revoked: no rotation is owed."""
    services.need_rotation.discard(device_id)
    services.metrics.credentials_need_rotation.set(len(services.need_rotation))


async def resync_broker(services: Services) -> set[str]:
    """At start: make the broker's device clients those with current credentials in the
    database (the others, revoked or unknown, are removed) and report the credentialed
    devices the broker lacks; their passwords are not kept, so they need a rotation
    (shown by the platform's device list and ``kanjia_credentials_need_rotation``)."""
    async with services.db.session() as session:
        credentialed = await credentials.credentialed_devices(session)
    missing = await services.broker_admin.sync(credentialed)
    services.need_rotation.clear()
    services.need_rotation.update(missing)
    services.metrics.credentials_need_rotation.set(len(missing))
    if missing:
        log.warning(
            "%d credentialed devices are unknown to the broker and need their credentials "
            "issued again (first ones: %s)",
            len(missing),
            ", ".join(sorted(missing)[:20]),
        )
    return missing


async def authenticate(
    services: Services, *, client_id: str | None, username: str | None, password: str | None
) -> bool:
    """The broker's question on connect: is this a device with current credentials, its
    client id its username, its password right? Anonymous clients are refused."""
    if not username or not password or client_id != username:
        return False
    if not credentials.is_device_id(username):
        return False  # never a device: no read
    return credentials.may_connect(
        await services.credential_cache.stored_hash(username),
        key=credential_key(services.settings),
        client_id=client_id,
        username=username,
        password=password,
    )


async def authorize(
    services: Services, *, client_id: str | None, username: str | None, topic: str, action: str
) -> bool:
    """The broker's question on publish and subscribe: the topic rule for the device the
    client is, and its credentials still current (so a revocation bites at the next call,
    through another gateway process within ``KANJIA_BROKER_HOOK_CACHE_SECONDS``)."""
    if not username or client_id != username:
        return False
    if not credentials.may_access(username, topic, action):
        return False
    return await services.credential_cache.stored_hash(username) is not None
