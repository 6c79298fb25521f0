"""Prometheus metrics of one gateway process (a registry per process, so tests can run many)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    # Over 60 lines: one declaration per metric, no logic; the list reads best whole.
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.mqtt_messages = Counter(
            "kanjia_mqtt_messages", "Device messages received, by topic kind", ["kind"], registry=r
        )
        self.mqtt_malformed = Counter(
            "kanjia_mqtt_malformed",
            "Device messages dropped as malformed, by topic kind and reason (a fixed set)",
            ["kind", "reason"],
            registry=r,
        )
        self.mqtt_unknown_device = Counter(
            "kanjia_mqtt_unknown_device", "Messages from devices no account has bound", registry=r
        )
        self.mqtt_connected = Gauge(
            "kanjia_mqtt_connected", "1 while the gateway's MQTT session is up", registry=r
        )
        self.dependency_up = Gauge(
            "kanjia_dependency_up",
            "1 while a dependency answered its last check (database, object_store, mqtt)",
            ["dependency"],
            registry=r,
        )
        self.credentials_need_rotation = Gauge(
            "kanjia_credentials_need_rotation",
            "Credentialed devices the broker did not know at start: their password is lost",
            registry=r,
        )
        self.broker_hook_lookups = Counter(
            "kanjia_broker_hook_lookups",
            "Credential lookups of the broker's HTTP hooks, by source (cache or database)",
            ["source"],
            registry=r,
        )
        self.broker_hook_reads = Counter(
            "kanjia_broker_hook_reads",
            "Database queries of the broker hooks' credential cache (misses and refreshes)",
            registry=r,
        )
        self.mqtt_reconnects = Counter(
            "kanjia_mqtt_reconnects", "MQTT session (re)connections", registry=r
        )
        self.mqtt_handler_errors = Counter(
            "kanjia_mqtt_handler_errors",
            "Device messages whose handling failed",
            ["kind"],
            registry=r,
        )
        self.presence_changes = Counter(
            "kanjia_presence_changes",
            "Devices going online or offline",
            ["to", "cause"],
            registry=r,
        )
        self.http_requests = Counter(
            "kanjia_http_requests",
            "HTTP requests, by route and status",
            ["route", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "kanjia_http_request_seconds", "HTTP request latency", ["route"], registry=r
        )
        self.upload_decisions = Counter(
            "kanjia_upload_decisions",
            "Upload requests by decision (accepted or the refusal)",
            ["decision"],
            registry=r,
        )
        self.segments_indexed = Counter(
            "kanjia_segments_indexed", "Segments verified and indexed", registry=r
        )
        self.events_indexed = Counter(
            "kanjia_events_indexed", "Camera events stored (repeats not counted)", registry=r
        )
        self.segments_rejected = Counter(
            "kanjia_segments_rejected",
            "Segment notices not indexed, by reason",
            ["reason"],
            registry=r,
        )
        self.segments_swept = Counter(
            "kanjia_segments_swept",
            "Expired segments deleted by the retention sweeper",
            registry=r,
        )
        self.queue_depth = Gauge(
            "kanjia_queue_depth",
            "Device messages waiting for their group commit, by queue",
            ["queue"],
            registry=r,
        )
        self.write_retries = Counter(
            "kanjia_write_retries",
            "Group-commit batches tried again after a transient failure (a dependency down)",
            ["queue"],
            registry=r,
        )
        self.batch_size = Histogram(
            "kanjia_batch_size",
            "Items written per group commit, by queue",
            ["queue"],
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=r,
        )
        self.job_runs = Counter(
            "kanjia_job_runs",
            "Background job runs, by job and outcome",
            ["job", "outcome"],
            registry=r,
        )
