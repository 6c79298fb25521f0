"""What the HTTP routes, MQTT handlers and jobs share in one gateway process."""

from __future__ import annotations

from dataclasses import dataclass, field

from devices.clock import Clock
from devices.desired import ReportedVersions
from devices.presence import PresenceTracker
from gateway.config import Settings
from gateway.jobs import JobRunner
from gateway.metrics import Metrics
from gateway.mqtt import MqttSession
from replay.plans import PlanCatalog
from storage.db import Database
from storage.fsstore import FilesystemObjectStore
from storage.objects import ObjectStore


@dataclass(slots=True)
class Services:
    settings: Settings
    clock: Clock
    db: Database
    store: ObjectStore
    metrics: Metrics
    presence: PresenceTracker
    jobs: JobRunner
    catalog: PlanCatalog
    reported: ReportedVersions = field(default_factory=ReportedVersions)
    mqtt: MqttSession | None = None

    @property
    def fs_store(self) -> FilesystemObjectStore | None:
        """The filesystem store, whose presigned URLs this gateway serves itself."""
        return self.store if isinstance(self.store, FilesystemObjectStore) else None
