"""What the HTTP routes, MQTT handlers and jobs share in one gateway process.

Built once by :class:`gateway.service.Gateway` and never changed afterwards (frozen): the
components it names are started and stopped by the gateway, in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from devices.clock import Clock
from devices.desired import ReportedVersions
from devices.presence import PresenceTracker
from devices.router import RouterManager
from devices.router_store import new_router_manager
from gateway.batching import HeldAcks
from gateway.broker_admin import BrokerAdmin, NoBrokerAdmin
from gateway.coalesce import Coalescer
from gateway.config import Settings
from gateway.credential_cache import CredentialCache
from gateway.jobs import JobRunner
from gateway.metrics import Metrics
from gateway.mqtt.session import MqttSession
from gateway.telemetry_hub import RouterHub
from replay.catalog import DEFAULT_PRODUCTS, ProductCatalog
from replay.membership import TierCatalog
from replay.plans import PlanCatalog
from storage.db import Database
from storage.fsstore import FilesystemObjectStore
from storage.objects import ObjectStore


@dataclass(frozen=True, slots=True, kw_only=True)
class Services:
    settings: Settings
    clock: Clock
    db: Database
    store: ObjectStore
    metrics: Metrics
    presence: PresenceTracker
    jobs: JobRunner
    catalog: PlanCatalog
    #: The gateway's MQTT session; ``None`` in a gateway started without MQTT.
    mqtt: MqttSession | None
    #: What the broker's HTTP hooks read of device credentials (a component).
    credential_cache: CredentialCache
    #: Everything on sale: ``catalog`` (the plans) and the home-network products and
    #: membership tiers (:mod:`replay.catalog`), from the same plans file.
    products: ProductCatalog = DEFAULT_PRODUCTS
    reported: ReportedVersions = field(default_factory=ReportedVersions)
    #: Acknowledgements of ``state``, ``telemetry`` and ``reported`` messages, held until
    #: the presence flush that writes them commits (:func:`gateway.presence.flush`).
    presence_acks: HeldAcks = field(default_factory=HeldAcks)
    #: The gateway's pool of router SSH sessions (R13).
    router_manager: RouterManager = field(default_factory=new_router_manager)
    router_hub: RouterHub = field(default_factory=RouterHub)
    #: The broker integration told of issued and revoked device credentials (issue 13).
    broker_admin: BrokerAdmin = field(default_factory=NoBrokerAdmin)
    #: Credentialed devices the broker lacked at start (:func:`gateway.credentials.resync_broker`):
    #: they cannot connect until their credentials are issued again. Issuing clears one.
    need_rotation: set[str] = field(default_factory=set)
    #: Broadband orders sent one by one, decided together when they arrive together
    #: (:func:`gateway.broadband_batch.run_single`).
    broadband_orders: Coalescer[Any, Any] = field(default_factory=Coalescer)

    @property
    def tiers(self) -> TierCatalog:
        """The family-cloud membership tiers (R18), from the plans file's ``memberships``."""
        return self.products.tiers

    @property
    def fs_store(self) -> FilesystemObjectStore | None:
        """The filesystem store, whose presigned URLs this gateway serves itself."""
        return self.store if isinstance(self.store, FilesystemObjectStore) else None
