"""Mosquitto's dynamic security plugin as the gateway's :class:`BrokerAdmin` (issue 13).

The gateway administers the plugin the way ``mosquitto_ctrl`` does: JSON commands
published to ``$CONTROL/dynamic-security/v1``, answered on ``.../response``, over its own
connection with the admin identity of ``KANJIA_MQTT_URL``. Several commands travel in one
``{"commands": [...]}`` message; each carries a ``correlationData`` so that answers meant
for another admin connection (another gateway) are told apart.

What it sets up, idempotently, on entering:

- the default ACL access: everything not granted is denied;
- the role :data:`DEVICE_ROLE`, without rules: it marks the broker's device clients (what
  :meth:`DynsecAdmin.sync` may remove). Each device gets a role of its own,
  ``kanjia-device:{device_id}``: it publishes only its own
  ``kj/v1/dev/{id}/(state|telemetry|event|upload/req|segment|reported|rpc/res)`` and
  subscribes to and receives only its own ``desired``, ``upload/res`` and ``rpc/req``.
  The plugin of Mosquitto 2.0.11 substitutes no ``%c``/``%u`` in its ACLs (measured: with
  ``publishClientSend kj/v1/dev/%c/state`` a device's own state is denied, and so is its
  ``subscribePattern kj/v1/dev/%c/desired``), hence one role per device, literally;
- the role :data:`SERVICE_ROLE` and a client for this gateway's service identity, named
  after its client id and bound to it (no other client can take that id). It may
  subscribe to what devices send (also through ``$share/...``) and publish ``desired``,
  ``upload/res`` and ``rpc/req``, nothing on a device's behalf. Its password is made anew
  at each start; :attr:`DynsecAdmin.service_url` carries it for the gateway's session.

A device's broker client has username = client id = device id. The plugin rewrites its
JSON file after each change: issuing a fleet costs about a file write per command.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any, Final, Self
from urllib.parse import quote, urlsplit

import aiomqtt

from gateway.lifecycle import running
from gateway.mqtt.messages import INBOUND, PREFIX
from gateway.mqtt.session import _as_bytes, broker_address, broker_tls

log = logging.getLogger(__name__)

CONTROL: Final = "$CONTROL/dynamic-security/v1"
RESPONSE: Final = f"{CONTROL}/response"
DEVICE_ROLE: Final = "kanjia-device"
SERVICE_ROLE: Final = "kanjia-service"
#: Service → device suffixes: what a device subscribes to and the gateway publishes.
OUTBOUND: Final = ("desired", "upload/res", "rpc/req")
#: Commands per control message when many go at once (sync).
BATCH: Final = 100

Command = dict[str, Any]


class DynsecError(RuntimeError):
    """The plugin refused a command (``error`` is its own sentence) or did not answer."""

    def __init__(self, command: str, error: str) -> None:
        super().__init__(f"dynamic security {command}: {error}")
        self.command = command
        self.error = error


def acl(acltype: str, topic: str) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "allow": True}


def device_role(device_id: str) -> str:
    return f"{DEVICE_ROLE}:{device_id}"


def device_acls(device_id: str) -> list[dict[str, Any]]:
    """One device's rules, its own topics literally (2.0.11 substitutes no ``%c``)."""
    own = f"{PREFIX}{device_id}/"
    rules = [acl("publishClientSend", own + suffix) for suffix in INBOUND]
    for suffix in OUTBOUND:
        rules += [
            acl(kind, own + suffix)
            for kind in ("publishClientReceive", "subscribeLiteral", "unsubscribeLiteral")
        ]
    return rules


def service_acls() -> list[dict[str, Any]]:
    """The gateway's rights: receive what devices send, send what the service sends."""
    rules = []
    for suffix in INBOUND:
        topic = f"{PREFIX}+/{suffix}"
        for filter_ in (topic, f"$share/+/{topic}"):
            rules += [acl("subscribePattern", filter_), acl("unsubscribePattern", filter_)]
        rules.append(acl("publishClientReceive", topic))
    rules += [acl("publishClientSend", f"{PREFIX}+/{suffix}") for suffix in OUTBOUND]
    return rules


def deny_by_default() -> Command:
    kinds = ("publishClientSend", "publishClientReceive", "subscribe", "unsubscribe")
    return {
        "command": "setDefaultACLAccess",
        "acls": [{"acltype": kind, "allow": False} for kind in kinds],
    }


def new_client(username: str, password: str, roles: Sequence[str]) -> Command:
    return {
        "command": "createClient",
        "username": username,
        "clientid": username,
        "password": password,
        "textname": "kanjia",
        "roles": [{"rolename": role} for role in roles],
    }


def check(answer: Mapping[str, Any], *, tolerate: Iterable[str] = ()) -> None:
    """Raise the plugin's error of one answer unless it is one of ``tolerate``."""
    error = answer.get("error")
    if error and error not in tolerate:
        raise DynsecError(str(answer.get("command")), str(error))


def _acl_key(rule: Mapping[str, Any]) -> tuple[str, str, bool]:
    return (rule["acltype"], rule["topic"], bool(rule.get("allow")))


class DynsecAdmin:
    """``async with DynsecAdmin(url=..., client_id=...) as admin``: the broker's device
    clients, kept by the gateway (a :class:`gateway.broker_admin.BrokerAdmin`). An
    ``mqtts://`` URL is verified against ``ca_file`` (``KANJIA_MQTT_CA_FILE``)."""

    def __init__(
        self, *, url: str, client_id: str, timeout: float = 10.0, ca_file: str | None = None
    ) -> None:
        self._host, self._port, user, password = broker_address(url)
        if not user or not password:
            raise ValueError("the MQTT URL must carry the dynamic security admin's user:password")
        if not client_id:
            raise ValueError("the gateway's client id must not be empty")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._url = url
        self._admin_user = user
        self._tag = secrets.token_hex(4)
        #: How the admin connection is opened (aiomqtt.Client's arguments).
        self._connection: dict[str, Any] = {
            "hostname": self._host,
            "port": self._port,
            "username": user,
            "password": password,
            "identifier": f"{client_id}.dynsec.{self._tag}",
            "tls_context": broker_tls(url, ca_file),
        }
        self._client_id = client_id
        self._timeout = timeout
        self._service_password = secrets.token_urlsafe(24)
        self._serial = itertools.count()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._client: aiomqtt.Client | None = None
        self._ready = asyncio.Event()
        self._last_error = ""
        self._stack = AsyncExitStack()

    @property
    def service_url(self) -> str:
        """The broker's URL with this gateway's service identity (for its MQTT session)."""
        parts = urlsplit(self._url)
        netloc = f"{quote(self._client_id, safe='')}:{quote(self._service_password, safe='')}"
        return parts._replace(netloc=f"{netloc}@{self._host}:{self._port}").geturl()

    def _reserved(self) -> set[str]:
        return {self._admin_user, self._client_id}

    async def __aenter__(self) -> Self:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(running(("gateway[dynsec].rx", self._connected)))
            try:
                async with asyncio.timeout(self._timeout):
                    await self._ready.wait()
            except TimeoutError as exc:
                raise DynsecError("connect", self._last_error or "no connection") from exc
            await self._set_up()
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def _connected(self) -> None:
        """Keep the admin connection, reconnecting with capped backoff (a restarted
        broker keeps what the plugin saved: nothing to set up again)."""
        delay = 0.5
        while True:
            try:
                async with aiomqtt.Client(**self._connection) as client:
                    # Concurrent issues each wait for their answer: not a backlog to warn of.
                    client.pending_calls_threshold = 1_000
                    await client.subscribe(RESPONSE, qos=1)
                    self._client, delay = client, 0.5
                    self._ready.set()
                    async for message in client.messages:
                        self._answer(_as_bytes(message.payload))
            except aiomqtt.MqttError as exc:
                self._last_error = str(exc)
                log.warning("dynamic security: admin connection lost (%s)", exc)
            finally:
                self._client = None
                self._ready.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _answer(self, payload: bytes) -> None:
        try:
            answers = json.loads(payload).get("responses", [])
        except (ValueError, AttributeError):
            log.warning("dynamic security: an answer that is not JSON was ignored")
            return
        for answer in answers:
            future = self._pending.get(str(answer.get("correlationData")))
            if future is not None and not future.done():
                future.set_result(answer)

    async def call(self, commands: Sequence[Command]) -> list[dict[str, Any]]:
        """Send the commands in one control message; their answers in the same order
        (an answer with an ``error`` is returned, not raised)."""
        client = self._client
        if client is None:
            raise DynsecError("call", "the admin connection is not open")
        loop = asyncio.get_running_loop()
        keys = [f"{self._tag}-{next(self._serial)}" for _ in commands]
        futures = [loop.create_future() for _ in commands]
        self._pending.update(zip(keys, futures, strict=True))
        sent = [{**cmd, "correlationData": key} for cmd, key in zip(commands, keys, strict=True)]
        try:
            async with asyncio.timeout(self._timeout):
                await client.publish(CONTROL, json.dumps({"commands": sent}).encode(), qos=1)
                return list(await asyncio.gather(*futures))
        except TimeoutError as exc:
            raise DynsecError(commands[0]["command"], "no answer in time") from exc
        except aiomqtt.MqttError as exc:
            raise DynsecError(commands[0]["command"], str(exc)) from exc
        finally:
            for key in keys:
                self._pending.pop(key, None)

    async def run(self, commands: Sequence[Command], *, tolerate: Iterable[str] = ()) -> None:
        """Send the commands; raise on any error but those in ``tolerate``."""
        for start in range(0, len(commands), BATCH):
            for answer in await self.call(commands[start : start + BATCH]):
                check(answer, tolerate=tolerate)

    async def _ensure_role(self, name: str, acls: list[dict[str, Any]]) -> None:
        """The role exists with exactly these ACLs."""
        [created] = await self.call([{"command": "createRole", "rolename": name, "acls": acls}])
        if not created.get("error"):
            return
        [found] = await self.call([{"command": "getRole", "rolename": name}])
        check(found)
        have = {_acl_key(rule) for rule in found["data"]["role"].get("acls", [])}
        want = {_acl_key(rule) for rule in acls}
        changes: list[Command] = [
            {"command": "removeRoleACL", "rolename": name, "acltype": kind, "topic": topic}
            for kind, topic, _ in have - want
        ] + [
            {"command": "addRoleACL", "rolename": name, "acltype": kind, "topic": topic, "allow": a}
            for kind, topic, a in want - have
        ]
        await self.run(changes)

    async def _set_up(self) -> None:
        await self.run([deny_by_default()])
        await self._ensure_role(DEVICE_ROLE, [])
        await self._ensure_role(SERVICE_ROLE, service_acls())
        await self._put_client(self._client_id, self._service_password, [SERVICE_ROLE], first=[])
        log.info("dynamic security ready: service identity %s", self._client_id)

    async def _put_client(
        self, username: str, password: str, roles: Sequence[str], *, first: Sequence[Command]
    ) -> None:
        """The client exists with this password and these roles (client id = username).
        ``first`` (creating roles; one that exists is kept) go in the same message.

        Each change is a rewrite of the plugin's file, so an existing client gets only
        what it lacks. A new password drops the live connection: 2.0.11's
        ``setClientPassword`` kicks the client itself (measured; the rotation test holds
        it), so no disable and enable, two more rewrites, are needed."""
        *made, created = await self.call([*first, new_client(username, password, roles)])
        for answer in made:
            check(answer, tolerate=["Role already exists"])
        if created.get("error") != "Client already exists":
            check(created)
            return
        [found] = await self.call([{"command": "getClient", "username": username}])
        check(found)
        client = found["data"]["client"]
        have = {role["rolename"] for role in client.get("roles", [])}
        changes: list[Command] = []
        if client.get("clientid") != username:
            changes.append({"command": "setClientId", "username": username, "clientid": username})
        changes.append({"command": "setClientPassword", "username": username, "password": password})
        # 2.0.11 answers "Internal error" to a role the client already has: add only new ones.
        changes += [
            {"command": "addClientRole", "username": username, "rolename": role}
            for role in roles
            if role not in have
        ]
        if client.get("disabled"):
            changes.append({"command": "enableClient", "username": username})
        await self.run(changes)

    def _check_device(self, device_id: str) -> None:
        # A "+" or "#" in an id would turn its literal rules into wildcards over others.
        wild = any(char in device_id for char in "+#/\0")
        if not device_id or wild or device_id in self._reserved():
            raise ValueError(f"{device_id!r} cannot be a device's broker identity")

    async def issue(self, device_id: str, username: str, password: str) -> None:
        """Create the device's broker client, or give it a new password and drop its
        live connection."""
        self._check_device(device_id)
        if username != device_id:
            raise ValueError("a device's broker username is its device id")
        role = device_role(device_id)
        await self._put_client(
            device_id,
            password,
            [DEVICE_ROLE, role],
            first=[{"command": "createRole", "rolename": role, "acls": device_acls(device_id)}],
        )
        log.info("dynamic security: credentials issued for device %s", device_id)

    async def revoke(self, device_id: str) -> None:
        """Delete the device's client (which drops its connection) and its role."""
        self._check_device(device_id)
        await self.run(_deletions([device_id]), tolerate=["Client not found", "Role not found"])
        log.info("dynamic security: device %s revoked", device_id)

    async def device_clients(self) -> set[str]:
        """The broker clients that are devices (they hold :data:`DEVICE_ROLE`)."""
        [listed] = await self.call([{"command": "listClients", "verbose": True, "count": -1}])
        check(listed)
        return {
            client["username"]
            for client in listed["data"]["clients"]
            if any(role.get("rolename") == DEVICE_ROLE for role in client.get("roles", []))
        } - self._reserved()

    async def _device_roles(self) -> list[str]:
        """The per-device roles (``kanjia-device:<id>``) the broker has."""
        [listed] = await self.call([{"command": "listRoles", "count": -1}])
        check(listed)
        return [role for role in listed["data"]["roles"] if role.startswith(f"{DEVICE_ROLE}:")]

    async def sync(self, credentialed: Iterable[str]) -> set[str]:
        """Remove the device clients the database does not know, and device roles left
        without a client; return the credentialed devices the broker lacks (their
        password is not kept: they need rotation)."""
        wanted = set(credentialed)
        present = await self.device_clients()
        unknown = sorted(present - wanted)
        await self.run(_deletions(unknown), tolerate=["Client not found", "Role not found"])
        if unknown:
            log.warning("dynamic security: removed %d unknown device clients", len(unknown))
        kept = present - set(unknown)
        orphans = [
            role for role in await self._device_roles() if role[len(DEVICE_ROLE) + 1 :] not in kept
        ]
        await self.run(
            [{"command": "deleteRole", "rolename": role} for role in orphans],
            tolerate=["Role not found"],
        )
        missing = wanted - present
        if missing:
            log.warning("dynamic security: %d credentialed devices need rotation", len(missing))
        return missing


def _deletions(device_ids: Iterable[str]) -> list[Command]:
    commands: list[Command] = []
    for device_id in device_ids:
        commands.append({"command": "deleteClient", "username": device_id})
        commands.append({"command": "deleteRole", "rolename": device_role(device_id)})
    return commands
